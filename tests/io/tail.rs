//! `io::tail`: a real file followed as it grows, is rotated and truncated, holds bad bytes,
//! and is resumed from an offset; a stalled consumer stops the reading.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crossbeam_channel::Receiver;
use stageflow::io::{self, BadRecord, IoStats, TailSource};
use stageflow::{ProducerHandle, Reason, SubscribeOptions, Topology};

use crate::common::{joined, next, quiet, LIMIT};
use crate::{scratch, Stalled};

/// A quick poll, so that the tests do not wait on the default 250 ms.
const POLL: Duration = Duration::from_millis(10);

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("opening the file to append")
        .write_all(bytes)
        .expect("appending");
}

type Tail = ProducerHandle<TailSource<String>>;

/// Follows a file: the stage, its counters, and its lines as they come (a thread forwards
/// them, so that every wait on them is bounded; it ends with the stage).
fn follow(source: io::TailBuilder<String>) -> (Tail, IoStats, Receiver<String>) {
    let source = source.poll_interval(POLL).build().unwrap();
    let stats = source.stats();
    let stage = stageflow::producer(source).spawn().unwrap();
    let stream = stageflow::stream(&stage, SubscribeOptions::new().max_demand(1)).unwrap();
    let (tx, lines) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in stream {
            let _ = tx.send(line);
        }
    });
    (stage, stats, lines)
}

/// The next line, within the test's limit.
fn line(lines: &mut Receiver<String>) -> String {
    next(lines)
}

fn stop(stage: &Tail) {
    stage.stop();
    assert_eq!(joined(stage), Reason::Shutdown);
}

#[test]
fn smoke() {
    let dir = scratch("tail-smoke");
    let path = dir.join("app.log");
    fs::write(&path, "one\ntwo\n").unwrap();
    let (stage, stats, mut lines) = follow(io::tail(&path));
    assert_eq!(line(&mut lines), "one");
    assert_eq!(line(&mut lines), "two");
    append(&path, b"three\n");
    assert_eq!(line(&mut lines), "three");
    stop(&stage);
    assert_eq!(stats.snapshot().offset, 14);
}

#[test]
fn a_line_being_written_waits_for_its_end() {
    let dir = scratch("tail-partial");
    let path = dir.join("app.log");
    fs::write(&path, "whole\nhal").unwrap();
    let (stage, stats, mut lines) = follow(io::tail(&path));
    assert_eq!(line(&mut lines), "whole");
    append(&path, b"f a line");
    append(&path, b"\r\nnext\n");
    assert_eq!(line(&mut lines), "half a line");
    assert_eq!(line(&mut lines), "next");
    stop(&stage);
    assert_eq!(stats.snapshot().offset, 6 + 13 + 5);
}

#[test]
fn a_missing_file_is_waited_for() {
    let dir = scratch("tail-missing");
    let path = dir.join("later.log");
    let (stage, _, mut lines) = follow(io::tail(&path));
    fs::write(&path, "here\n").unwrap();
    assert_eq!(line(&mut lines), "here");
    stop(&stage);
}

#[test]
fn a_rotated_file_is_read_to_its_end_then_the_new_one_from_its_start() {
    let dir = scratch("tail-rotate");
    let path = dir.join("app.log");
    fs::write(&path, "a\nb\n").unwrap();
    let (stage, stats, mut lines) = follow(io::tail(&path));
    assert_eq!(line(&mut lines), "a");
    assert_eq!(line(&mut lines), "b");
    // Rotate as logrotate does: rename, the writer finishes in the old file, a new one.
    fs::rename(&path, dir.join("app.log.1")).unwrap();
    append(&dir.join("app.log.1"), b"c\nlast unfinished");
    fs::write(&path, "d\n").unwrap();
    assert_eq!(line(&mut lines), "c");
    assert_eq!(line(&mut lines), "last unfinished");
    assert_eq!(line(&mut lines), "d");
    append(&path, b"e\n");
    assert_eq!(line(&mut lines), "e");
    stop(&stage);
    let c = stats.snapshot();
    assert_eq!((c.rotations, c.truncations, c.offset), (1, 0, 4));
}

#[test]
fn a_truncated_file_is_read_again_from_its_start() {
    let dir = scratch("tail-truncate");
    let path = dir.join("app.log");
    fs::write(&path, "one\ntwo\n").unwrap();
    let (stage, stats, mut lines) = follow(io::tail(&path));
    assert_eq!(line(&mut lines), "one");
    assert_eq!(line(&mut lines), "two");
    // copytruncate: the same file, emptied in place, then written again.
    fs::write(&path, "x\n").unwrap();
    assert_eq!(line(&mut lines), "x");
    stop(&stage);
    let c = stats.snapshot();
    assert_eq!((c.truncations, c.rotations, c.offset), (1, 0, 2));
}

#[test]
fn invalid_utf8_and_overlong_lines_are_counted_and_handled() {
    let dir = scratch("tail-bad");
    let path = dir.join("app.log");
    let mut bytes = b"ok\n\xc3\x28 bad\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'y', 5000));
    bytes.extend(b"\nend\n");
    fs::write(&path, &bytes).unwrap();
    let (stage, stats, mut lines) = follow(
        io::tail(&path)
            .max_record(100)
            .on_invalid_utf8(BadRecord::Repair)
            .on_oversize(BadRecord::Skip),
    );
    assert_eq!(line(&mut lines), "ok");
    assert_eq!(line(&mut lines), "\u{fffd}( bad");
    assert_eq!(line(&mut lines), "end");
    stop(&stage);
    let c = stats.snapshot();
    assert_eq!((c.invalid_utf8, c.oversize), (1, 1));
    assert_eq!(c.offset, bytes.len() as u64);
}

#[test]
fn a_restart_resumes_at_the_offset() {
    let dir = scratch("tail-resume");
    let path = dir.join("app.log");
    fs::write(&path, "a\nb\nc-unfin").unwrap();
    let (stage, stats, mut lines) = follow(io::tail(&path));
    assert_eq!(line(&mut lines), "a");
    assert_eq!(line(&mut lines), "b");
    stop(&stage);
    let offset = stats.offset();
    assert_eq!(offset, 4, "the unfinished line is not covered");

    append(&path, b"ished\nd\n");
    let (stage, _, mut lines) = follow(io::tail(&path).start_at(offset));
    assert_eq!(line(&mut lines), "c-unfinished");
    assert_eq!(line(&mut lines), "d");
    stop(&stage);

    // An offset beyond the file's end: it was replaced; read from its start.
    let (stage, stats, mut lines) = follow(io::tail(&path).start_at(1 << 20));
    assert_eq!(line(&mut lines), "a");
    stop(&stage);
    assert_eq!(stats.snapshot().truncations, 1);
}

#[test]
fn a_stalled_consumer_stops_the_reading() {
    let dir = scratch("tail-backpressure");
    let path = dir.join("big.log");
    // 2 MB of 100-byte lines.
    let line = format!("{}\n", "z".repeat(99));
    fs::write(&path, line.repeat(20_000)).unwrap();
    let source = io::tail(&path)
        .read_buffer(4096)
        .poll_interval(POLL)
        .build()
        .unwrap();
    let stats = source.stats();
    let source = stageflow::producer(source).spawn().unwrap();
    let (sink, batches, key) = Stalled::<String>::new();
    let sink = stageflow::consumer(sink)
        .subscribe_to(&source, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(next(&batches).len(), 5);
    quiet(&batches);
    let c = stats.snapshot();
    // Ten lines asked for, ten read: 1000 bytes of 2 MB (the 4 KiB buffer at most ahead).
    assert_eq!((c.records, c.bytes_read, c.offset), (10, 1000, 1000));
    assert_eq!(c.polls, 0);

    drop(key);
    let report = Topology::new().with(&source).with(&sink).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    let c = stats.snapshot();
    assert_eq!(c.records, sink.counters().events_in);
    assert_eq!(c.offset, c.records * 100);
}

#[test]
fn a_drain_while_the_file_grows_loses_nothing() {
    let dir = scratch("tail-drain");
    let path = dir.join("app.log");
    fs::write(&path, "").unwrap();
    let source = io::tail(&path).poll_interval(POLL).build().unwrap();
    let stats = source.stats();
    let source = stageflow::producer(source).spawn().unwrap();
    let (seen_tx, seen) = crossbeam_channel::unbounded();
    let sink = stageflow::consumer(stageflow::fns::ForEach::new(move |l: String| {
        let _ = seen_tx.send(l);
    }))
    .subscribe_to(&source, SubscribeOptions::new())
    .unwrap()
    .spawn()
    .unwrap();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while stop_rx.try_recv().is_err() {
                append(&path, format!("line {i}\n").as_bytes());
                i += 1;
            }
        })
    };
    assert_eq!(next(&seen), "line 0");
    let report = Topology::new().with(&source).with(&sink).drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    stop_tx.send(()).unwrap();
    writer.join().unwrap();
    let c = stats.snapshot();
    assert_eq!(c.records, sink.counters().events_in);
    // Every line delivered, in order, and the offset covers exactly them.
    let got: Vec<String> = seen.try_iter().collect();
    assert_eq!(got.len() as u64 + 1, c.records);
    let bytes: u64 = std::iter::once("line 0".to_owned())
        .chain(got)
        .enumerate()
        .map(|(i, l)| {
            assert_eq!(l, format!("line {i}"));
            l.len() as u64 + 1
        })
        .sum();
    assert_eq!(c.offset, bytes);
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let e = io::tail("x.log")
        .poll_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        e.to_string().starts_with("invalid io option poll_interval"),
        "{e}"
    );
    let e = io::tail("").build().unwrap_err();
    assert!(e.to_string().starts_with("invalid io option path"), "{e}");
    let e = io::tail("x.log").read_buffer(0).build().unwrap_err();
    assert!(
        e.to_string().starts_with("invalid io option read_buffer"),
        "{e}"
    );
}
