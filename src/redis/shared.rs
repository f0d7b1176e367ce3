//! What a source's builder, producers and acknowledger share: the validated settings, the
//! shared state, and [`StreamSource`], which holds them. A leaf: the builder, the producers and
//! the acknowledger import it, and it imports none of them.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Client, Connection};

use super::counters::{Cells, StreamCounters};
use super::entry::Entry;
use crate::pipeline::Acknowledger;

/// The metadata key under which each [`Message`](crate::pipeline::Message) of a stream source
/// carries its entry's id.
pub const ID_KEY: &str = "redis.id";

/// The ids of the entries in flight, as numbers where they are (every id Redis makes is
/// `<milliseconds>-<sequence>`): no `String` and no SipHash per entry.
pub(crate) type InFlight = HashSet<EntryKey, crate::flow::KeyHasher>;

/// An entry id as the in-flight set keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum EntryKey {
    /// `<milliseconds>-<sequence>`.
    Id(u64, u64),
    /// Any other spelling (never made by Redis itself), kept as it is.
    Other(Box<str>),
}

impl EntryKey {
    pub(crate) fn of(id: &str) -> EntryKey {
        id.split_once('-')
            .and_then(|(ms, seq)| Some(EntryKey::Id(ms.parse().ok()?, seq.parse().ok()?)))
            .unwrap_or_else(|| EntryKey::Other(id.into()))
    }
}

/// Turns an entry into the source's type, or says why not.
pub(crate) type Decoder<T> = Arc<dyn Fn(Entry) -> Result<T, (String, String)> + Send + Sync>;

/// The validated options, shared by the producers and the acknowledger.
pub(crate) struct Settings {
    pub(crate) client: Client,
    pub(crate) opts: Options,
}

/// A source's options, as the builder collects them and its producers use them.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) stream: String,
    pub(crate) group: String,
    pub(crate) consumer: String,
    pub(crate) start_id: String,
    pub(crate) block: Duration,
    pub(crate) max_count: usize,
    pub(crate) claim_idle: Duration,
    pub(crate) claim_interval: Duration,
    pub(crate) dead_letter: Option<(String, u64)>,
    pub(crate) timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) backoff: (Duration, Duration),
}

/// What a source's producers and its acknowledger share.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) cells: Cells,
    /// Ids of the entries emitted and not yet acknowledged, in this process.
    pub(crate) in_flight: Mutex<InFlight>,
    /// The acknowledger's connection, and whether one was ever made (to count reconnects).
    pub(crate) ack_con: Mutex<(Option<Connection>, bool)>,
}

/// A consumer group's reader: make its [`producer`](StreamSource::producer)s (each with its
/// own connection; they share the acknowledger and the counters) and read its
/// [`counters`](StreamSource::counters). Cheap to clone.
pub struct StreamSource<T> {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ack: Arc<dyn Acknowledger>,
    pub(crate) decode: Decoder<T>,
}

impl<T> Clone for StreamSource<T> {
    fn clone(&self) -> Self {
        StreamSource {
            shared: self.shared.clone(),
            ack: self.ack.clone(),
            decode: self.decode.clone(),
        }
    }
}

impl<T> fmt::Debug for StreamSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared.settings;
        f.debug_struct("StreamSource")
            .field("stream", &s.opts.stream)
            .field("group", &s.opts.group)
            .field("consumer", &s.opts.consumer)
            .field("counters", &self.counters())
            .finish()
    }
}

impl<T> StreamSource<T> {
    /// What its producers and acknowledger have done so far.
    pub fn counters(&self) -> StreamCounters {
        self.shared.cells.snapshot()
    }

    /// The acknowledger its messages carry (`XACK`s in groups, dead-letters).
    pub fn acknowledger(&self) -> Arc<dyn Acknowledger> {
        self.ack.clone()
    }

    /// Entries emitted and not yet acknowledged, in this process.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::EntryKey;

    #[test]
    fn an_entry_id_is_keyed_by_its_two_numbers_and_any_other_spelling_as_it_is() {
        assert_eq!(
            EntryKey::of("1700000000000-5"),
            EntryKey::Id(1_700_000_000_000, 5)
        );
        assert_eq!(EntryKey::of("0-0"), EntryKey::Id(0, 0));
        assert_eq!(
            EntryKey::of("18446744073709551615-18446744073709551615"),
            EntryKey::Id(u64::MAX, u64::MAX)
        );
        for other in [
            "abc",
            "1-2-3",
            "-5",
            "5-",
            "",
            "1_2",
            "18446744073709551616-0",
        ] {
            assert_eq!(
                EntryKey::of(other),
                EntryKey::Other(other.into()),
                "{other:?}"
            );
        }
        // Two spellings of one number are one key (Redis never makes the second).
        assert_eq!(EntryKey::of("01-2"), EntryKey::of("1-2"));
    }
}
