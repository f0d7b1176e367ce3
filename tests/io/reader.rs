//! `io::reader`: records of any `BufRead`, read only while there is demand.

use std::io::{BufReader, Cursor, Read};
use std::time::Duration;

use crossbeam_channel::Sender;
use stageflow::fns::ForEach;
use stageflow::io::{self, BadRecord, Framing};
use stageflow::{Reason, SubscribeOptions, Topology};

use crate::common::{joined, next, quiet, LIMIT};
use crate::Stalled;

/// Every record a finished source emits, in order.
fn all<T: Send + 'static>(source: impl stageflow::Producer<Out = T> + 'static) -> Vec<T> {
    let stage = stageflow::producer(source).spawn().unwrap();
    let got = stageflow::stream(&stage, SubscribeOptions::new().max_demand(3))
        .unwrap()
        .collect();
    assert_eq!(joined(&stage), Reason::Normal);
    got
}

#[test]
fn smoke() {
    let lines = io::reader(Cursor::new("one\ntwo\r\nthree"))
        .build()
        .unwrap();
    let stats = lines.stats();
    let source = stageflow::producer(lines).spawn().unwrap();
    let got: Vec<String> = stageflow::stream(&source, SubscribeOptions::new().max_demand(1))
        .unwrap()
        .collect();
    assert_eq!(got, ["one", "two", "three"]);
    assert_eq!(joined(&source), Reason::Normal);
    let c = stats.snapshot();
    assert_eq!((c.records, c.bytes_read, c.offset), (3, 14, 14));
}

#[test]
fn delimited_records_and_chunks_as_bytes() {
    let records = io::reader(Cursor::new(b"a\x1ebc\x1e\x1ed".to_vec()))
        .framing(Framing::Delimited(0x1e))
        .bytes()
        .build()
        .unwrap();
    assert_eq!(
        all(records),
        [b"a".to_vec(), b"bc".to_vec(), vec![], b"d".to_vec()]
    );
    let chunks = io::reader(Cursor::new("abcdefghij"))
        .framing(Framing::Chunks(4))
        .build()
        .unwrap();
    assert_eq!(all(chunks), ["abcd", "efgh", "ij"]);
}

const BAD: &[u8] = b"ok\n\xff\xfe\nyyyyyyyyyyyyyyyyyyyy\na\xc3\xa9\xffz\nend";

#[test]
fn bad_records_skipped_are_counted() {
    let source = io::reader(Cursor::new(BAD))
        .max_record(10)
        .on_invalid_utf8(BadRecord::Skip)
        .on_oversize(BadRecord::Skip)
        .build()
        .unwrap();
    let stats = source.stats();
    assert_eq!(all(source), ["ok", "end"]);
    let c = stats.snapshot();
    assert_eq!((c.records, c.invalid_utf8, c.oversize), (2, 2, 1));
    assert_eq!(c.offset, BAD.len() as u64);
}

#[test]
fn bad_records_repaired_are_counted() {
    let source = io::reader(Cursor::new(BAD))
        .max_record(10)
        .on_invalid_utf8(BadRecord::Repair)
        .on_oversize(BadRecord::Repair)
        .build()
        .unwrap();
    let stats = source.stats();
    assert_eq!(
        all(source),
        ["ok", "\u{fffd}\u{fffd}", "yyyyyyyyyy", "aé\u{fffd}z", "end"]
    );
    let c = stats.snapshot();
    assert_eq!((c.records, c.invalid_utf8, c.oversize), (5, 2, 1));
}

#[test]
fn a_bad_record_can_end_the_source_after_the_records_before_it() {
    let source = io::reader(Cursor::new(BAD))
        .on_invalid_utf8(BadRecord::Fail)
        .build()
        .unwrap();
    let stats = source.stats();
    let stage = stageflow::producer(source).name("strict").spawn().unwrap();
    let got: Vec<String> = stageflow::stream(&stage, SubscribeOptions::new())
        .unwrap()
        .collect();
    assert_eq!(got, ["ok"]);
    match joined(&stage) {
        Reason::Error(m) => assert!(m.contains("record at offset 3: not utf-8"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // A restart from the offset meets the bad record again: nothing is skipped silently.
    assert_eq!(stats.offset(), 3);

    let long = io::reader(Cursor::new(BAD))
        .max_record(10)
        .on_oversize(BadRecord::Fail)
        .build()
        .unwrap();
    let stage = stageflow::producer(long).spawn().unwrap();
    let got: Vec<String> = stageflow::stream(&stage, SubscribeOptions::new())
        .unwrap()
        .collect();
    assert_eq!(got, ["ok", "\u{fffd}\u{fffd}"]);
    match joined(&stage) {
        Reason::Error(m) => assert!(m.contains("offset 6 longer than max_record"), "{m}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let e = io::reader(Cursor::new(""))
        .max_record(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid io option max_record: expected max_record to be at least 1, got 0"
    );
    let e = io::reader(Cursor::new(""))
        .framing(Framing::Chunks(0))
        .build()
        .unwrap_err();
    assert!(
        e.to_string().starts_with("invalid io option framing"),
        "{e}"
    );
    let e = io::reader(Cursor::new("")).batch(0).build().unwrap_err();
    assert!(e.to_string().starts_with("invalid io option batch"), "{e}");
}

/// An endless input of 100-byte lines that reports, after each `read`, how many bytes it
/// has handed out in all.
struct Endless {
    given: u64,
    report: Sender<u64>,
}

const LINE: u64 = 100;

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        for b in buf.iter_mut() {
            *b = if self.given % LINE == LINE - 1 {
                b'\n'
            } else {
                b'x'
            };
            self.given += 1;
        }
        let _ = self.report.send(self.given);
        Ok(buf.len())
    }
}

#[test]
fn a_stalled_consumer_stops_the_reading() {
    const CAPACITY: usize = 1024;
    let (report, reads) = crossbeam_channel::unbounded();
    let input = BufReader::with_capacity(CAPACITY, Endless { given: 0, report });
    let lines = io::reader(input).build().unwrap();
    let stats = lines.stats();
    let source = stageflow::producer(lines).spawn().unwrap();
    let (sink, batches, key) = Stalled::<String>::new();
    let sink = stageflow::consumer(sink)
        .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    // The first batch arrived and the consumer holds it: no new demand will come.
    assert_eq!(next(&batches).len(), 5);
    // The one ask was for 10 lines: read in one turn, from one 1 KiB fill of the buffer.
    let mut read = next(&reads);
    quiet(&reads);
    while let Ok(r) = reads.try_recv() {
        read = r;
    }
    assert_eq!(
        read, CAPACITY as u64,
        "bytes handed to the BufReader while stalled"
    );
    let c = stats.snapshot();
    assert_eq!((c.records, c.bytes_read, c.offset), (10, 1000, 1000));

    // Let it go: it reads again, and a drain ends it with every line delivered.
    drop(key);
    let _ = next(&batches);
    let pipeline = Topology::new().with(&source).with(&sink);
    let report = pipeline.drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    let c = stats.snapshot();
    assert_eq!(c.records, sink.counters().events_in);
    assert_eq!(c.offset, c.records * LINE);
}

#[test]
fn a_drain_stops_an_endless_reader_with_nothing_lost() {
    let (report, _reads) = crossbeam_channel::unbounded();
    let lines = io::reader(BufReader::new(Endless { given: 0, report }))
        .build()
        .unwrap();
    let stats = lines.stats();
    let source = stageflow::producer(lines).spawn().unwrap();
    let (seen_tx, seen) = crossbeam_channel::bounded(1);
    let sink = stageflow::consumer(ForEach::new(move |_: String| {
        let _ = seen_tx.try_send(());
    }))
    .subscribe_to(&source, SubscribeOptions::new())
    .unwrap()
    .spawn()
    .unwrap();
    next(&seen); // running
    let report = Topology::new()
        .with(&source)
        .with(&sink)
        .drain(Duration::from_secs(10));
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(stats.snapshot().records, sink.counters().events_in);
    assert_eq!(source.counters().events_out, sink.counters().events_in);
}

#[test]
fn a_long_bad_record_is_skipped_over_many_turns() {
    // An 8-byte buffer: skipping 50 000 bytes takes thousands of fills, 64 a turn.
    let mut bytes = vec![b'y'; 50_000];
    bytes.extend(b"\nend\n");
    let input = BufReader::with_capacity(8, Cursor::new(bytes));
    let source = io::reader(input).max_record(10).build().unwrap();
    let stats = source.stats();
    assert_eq!(all(source), ["end"]);
    let c = stats.snapshot();
    assert_eq!((c.records, c.oversize, c.offset), (1, 1, 50_005));
}
