//! [`Metadata`]: a message's free-form string map, boxed on first write so that the common
//! message, which has none, carries one pointer and drops it with one test.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

/// The map behind [`Metadata`].
type Map = BTreeMap<String, String>;

/// Free-form metadata a producer attaches to a message (a queue's delivery tag, a partition,
/// an offset): a `BTreeMap<String, String>`, which it dereferences to.
///
/// Most messages have none, so an empty `Metadata` is one null pointer: it allocates nothing,
/// and moving or dropping it costs next to nothing (an empty `BTreeMap` is three words and
/// takes some fifty instructions to drop, paid for every message a pipeline acknowledges).
/// The map is allocated on the first call that needs it mutably.
///
/// # Examples
///
/// ```
/// use stageflow::pipeline::Metadata;
///
/// let mut metadata = Metadata::new();
/// assert!(metadata.is_empty());
/// metadata.insert("topic".into(), "orders".into());
/// assert_eq!(metadata.get("topic").map(String::as_str), Some("orders"));
/// // Everything else a `BTreeMap` offers, through `Deref`:
/// assert_eq!(metadata.keys().collect::<Vec<_>>(), ["topic"]);
/// assert_eq!(metadata.remove("topic").as_deref(), Some("orders"));
/// assert!(metadata.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Metadata(Option<Box<Map>>);

/// What an empty `Metadata` dereferences to.
static EMPTY: Map = BTreeMap::new();

impl Metadata {
    /// Empty metadata (allocates nothing).
    pub const fn new() -> Metadata {
        Metadata(None)
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.as_ref()?.get(key)
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.map_mut().insert(key, value)
    }

    /// Removes `key`; returns its value. Allocates nothing when empty.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.as_mut()?.remove(key)
    }

    /// The map itself, taken out.
    pub fn into_map(self) -> BTreeMap<String, String> {
        self.0.map(|m| *m).unwrap_or_default()
    }

    fn map_mut(&mut self) -> &mut Map {
        self.0.get_or_insert_with(Box::default)
    }
}

impl Deref for Metadata {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Map {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for Metadata {
    /// Allocates the map if there is none yet.
    fn deref_mut(&mut self) -> &mut Map {
        self.map_mut()
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq for Metadata {
    /// Equal when they hold the same entries (an allocated empty map equals none).
    fn eq(&self, other: &Metadata) -> bool {
        **self == **other
    }
}

impl Eq for Metadata {}

impl std::hash::Hash for Metadata {
    /// As the map's (an allocated empty map hashes as none).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl PartialEq<BTreeMap<String, String>> for Metadata {
    fn eq(&self, other: &BTreeMap<String, String>) -> bool {
        **self == *other
    }
}

impl From<BTreeMap<String, String>> for Metadata {
    fn from(map: BTreeMap<String, String>) -> Metadata {
        if map.is_empty() {
            Metadata(None)
        } else {
            Metadata(Some(Box::new(map)))
        }
    }
}

impl From<Metadata> for BTreeMap<String, String> {
    fn from(metadata: Metadata) -> BTreeMap<String, String> {
        metadata.into_map()
    }
}

impl<const N: usize> From<[(String, String); N]> for Metadata {
    fn from(entries: [(String, String); N]) -> Metadata {
        Metadata::from(BTreeMap::from(entries))
    }
}

impl FromIterator<(String, String)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Metadata {
        Metadata::from(iter.into_iter().collect::<Map>())
    }
}

impl Extend<(String, String)> for Metadata {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, iter: I) {
        let mut iter = iter.into_iter().peekable();
        if iter.peek().is_some() {
            self.map_mut().extend(iter);
        }
    }
}

impl IntoIterator for Metadata {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_map().into_iter()
    }
}

impl<'a> IntoIterator for &'a Metadata {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;

    fn into_iter(self) -> Self::IntoIter {
        (**self).iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_metadata_is_one_pointer_and_allocates_nothing() {
        assert_eq!(size_of::<Metadata>(), size_of::<usize>());
        let mut m = Metadata::new();
        assert!(m.0.is_none());
        assert_eq!(m.remove("k"), None);
        assert_eq!(m.get("k"), None);
        assert!(m.iter().next().is_none());
        assert!(
            m.0.is_none(),
            "reading and removing from empty metadata allocate nothing"
        );
        m.extend(std::iter::empty());
        assert!(m.0.is_none());
    }

    #[test]
    fn it_behaves_as_the_map_it_holds() {
        let mut m = Metadata::new();
        assert_eq!(m.insert("b".into(), "2".into()), None);
        assert_eq!(m.insert("a".into(), "1".into()), None);
        assert_eq!(m.insert("a".into(), "one".into()).as_deref(), Some("1"));
        assert_eq!(m.len(), 2);
        assert_eq!(
            (&m).into_iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let map: BTreeMap<String, String> = m.clone().into();
        assert_eq!(m, map);
        assert_eq!(Metadata::from(map.clone()), m);
        assert_eq!(format!("{m:?}"), format!("{map:?}"));
        m.remove("a");
        m.remove("b");
        assert!(m.is_empty());
        assert_eq!(m, Metadata::new(), "an emptied map equals none");
        let collected: Metadata = [("k".to_string(), "v".to_string())].into_iter().collect();
        assert_eq!(
            collected,
            Metadata::from([("k".to_string(), "v".to_string())])
        );
    }
}
