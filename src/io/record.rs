//! [`Record`], the types a source can emit (text or bytes), and [`BadRecord`], what it does
//! with a record it cannot emit as it came: not UTF-8, or longer than the limit. Pure: the
//! conversions are tested here without threads.

/// What a source does with a bad record: one that is not valid UTF-8 (for text records), or
/// one longer than the limit. Every bad record is counted in the source's
/// [`IoCounters`](super::IoCounters) whatever the choice, and never panics anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadRecord {
    /// Drop it (a warning is logged) and go on with the next record. It costs no demand.
    Skip,
    /// Emit what can be kept: invalid UTF-8 sequences replaced by U+FFFD
    /// (`String::from_utf8_lossy`); an over-long record cut to the limit (at a character
    /// boundary, for text).
    Repair,
    /// End the source with a [`Reason::Error`](crate::Reason::Error) naming the record's
    /// offset; records before it are delivered first.
    Fail,
}

pub(crate) use sealed::{Decoded, Sealed};

mod sealed {
    use super::BadRecord;

    /// What converting a record's bytes gave.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Decoded<T> {
        /// The record as it came.
        Good(T),
        /// The record, repaired (a bad one, counted).
        Repaired(T),
        /// A bad record, skipped (counted).
        Skipped,
        /// A bad record that ends the source: why.
        Failed(String),
    }

    /// The conversion behind [`Record`](super::Record), out of users' reach.
    pub trait Sealed {
        /// Makes a record of `bytes`, applying `utf8` to text that is not UTF-8. `cut`: the
        /// bytes were cut at the limit, so a character split at the end is dropped, not bad.
        fn decode(bytes: Vec<u8>, utf8: BadRecord, cut: bool) -> Decoded<Self>
        where
            Self: Sized;
    }
}

/// A type a source emits its records as: [`String`] (checked UTF-8) or `Vec<u8>` (raw bytes).
/// Sealed: these two are the only ones (map the records with a stage for anything else).
pub trait Record: Sealed + Send + 'static {}

impl Record for Vec<u8> {}
impl Record for String {}

impl Sealed for Vec<u8> {
    fn decode(bytes: Vec<u8>, _: BadRecord, _: bool) -> Decoded<Vec<u8>> {
        Decoded::Good(bytes)
    }
}

impl Sealed for String {
    fn decode(mut bytes: Vec<u8>, utf8: BadRecord, cut: bool) -> Decoded<String> {
        if cut {
            // A character split by the cut is dropped: only what is wrong before it is bad.
            if let Err(e) = std::str::from_utf8(&bytes) {
                if e.error_len().is_none() {
                    bytes.truncate(e.valid_up_to());
                }
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => Decoded::Good(s),
            Err(e) => match utf8 {
                BadRecord::Skip => Decoded::Skipped,
                BadRecord::Repair => {
                    Decoded::Repaired(String::from_utf8_lossy(e.as_bytes()).into_owned())
                }
                BadRecord::Fail => Decoded::Failed(format!("not utf-8: {}", e.utf8_error())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BadRecord, Decoded, Sealed};

    #[test]
    fn text_follows_its_policy() {
        let bad = b"a\xffb".to_vec();
        assert_eq!(
            String::decode(b"ok".to_vec(), BadRecord::Fail, false),
            Decoded::Good("ok".to_owned())
        );
        assert_eq!(
            String::decode(bad.clone(), BadRecord::Skip, false),
            Decoded::Skipped
        );
        assert_eq!(
            String::decode(bad.clone(), BadRecord::Repair, false),
            Decoded::Repaired("a\u{fffd}b".to_owned())
        );
        assert!(matches!(
            String::decode(bad.clone(), BadRecord::Fail, false),
            Decoded::Failed(m) if m.starts_with("not utf-8")
        ));
        assert_eq!(
            Vec::<u8>::decode(bad.clone(), BadRecord::Fail, false),
            Decoded::Good(bad)
        );
    }

    #[test]
    fn a_character_cut_at_the_limit_is_dropped_not_bad() {
        let cut = "aé".as_bytes()[..2].to_vec(); // `a` and half of `é`
        assert_eq!(
            String::decode(cut.clone(), BadRecord::Fail, true),
            Decoded::Good("a".to_owned())
        );
        assert_eq!(
            String::decode(cut, BadRecord::Skip, false),
            Decoded::Skipped
        );
    }
}
