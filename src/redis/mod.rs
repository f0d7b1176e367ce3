//! Redis Streams consumer groups as an acknowledged source, and a sink.
//!
//! (Guide below.)

mod ack;
mod conn;
mod counters;
mod entry;
mod error;
mod producer;
mod sink;
mod source;

pub use counters::StreamCounters;
pub use entry::{Entry, Fields};
pub use error::StreamError;
pub use producer::{ReadTurn, StreamProducer};
pub use sink::{sink, SinkBuilder, SinkCounters, SinkStats, StreamSink};
pub use source::{entry_id, stream, StreamBuilder, StreamSource, ID_KEY};
