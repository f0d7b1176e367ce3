//! [`ChildSource`]: a producing child's subscription endpoint across its restarts, whatever its
//! stage type; what [`ChildSpec::subscribe_to`](super::ChildSpec::subscribe_to) takes.

use std::fmt;
use std::sync::Arc;

use super::child::Child;
use crate::role::Emits;
use crate::{Source, Upstream};

/// The source a link subscribes to now: `None` while the producer is not running.
pub(crate) type CurrentSource<T> = Arc<dyn Fn() -> Option<Source<T>> + Send + Sync>;

/// A child of a group that emits `T`, typed by its events only (as [`Source`] is for a
/// stage): producers of different stage types but the same events have the same
/// `ChildSource<T>`. It follows the child across its restarts.
pub struct ChildSource<T: 'static> {
    pub(crate) id: u64,
    name: Arc<str>,
    pub(crate) current: CurrentSource<T>,
}

impl<T> Clone for ChildSource<T> {
    fn clone(&self) -> Self {
        ChildSource {
            id: self.id,
            name: self.name.clone(),
            current: self.current.clone(),
        }
    }
}

impl<T> fmt::Debug for ChildSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSource")
            .field("child", &self.name)
            .finish()
    }
}

impl<T> ChildSource<T> {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subscription endpoint of the incarnation running now, if one runs.
    pub fn current(&self) -> Option<Source<T>> {
        (self.current)()
    }
}

/// A producing child that other children of its group can subscribe to: a [`Child`] of a
/// producer or producer-consumer, or a [`ChildSource`].
pub trait ChildUpstream<T> {
    /// Its endpoint across restarts.
    fn child_source(&self) -> ChildSource<T>;
}

impl<T> ChildUpstream<T> for ChildSource<T> {
    fn child_source(&self) -> ChildSource<T> {
        self.clone()
    }
}

impl<S: Send + 'static, R: Emits<S>> ChildUpstream<R::Out> for Child<S, R> {
    fn child_source(&self) -> ChildSource<R::Out> {
        let slot = self.slot.clone();
        ChildSource {
            id: self.slot.id,
            name: self.name().into(),
            current: Arc::new(move || slot.current().map(|stage| stage.source())),
        }
    }
}
