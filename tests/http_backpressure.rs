//! Back-pressure that reaches the server: a consumer that stops asking stops the reader, the
//! socket buffers fill, and the server's writes block. When the consumer asks again, every
//! frame arrives, in order, none lost or duplicated.

#![cfg(feature = "http")]

mod http_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_common::{manual_sink, stop, take, wait_for, Server, LIMIT};
use stageflow::http::{self, Framing};

/// Frames of 1 KiB: an 8-digit sequence number, padding, a newline.
const FRAME: usize = 1024;
/// 64 MiB in all: more than ureq's buffer and the kernel's socket buffers can hold (Linux
/// autotunes a receive buffer up to `tcp_rmem`'s maximum, 32 MiB here; about 4 MiB was
/// measured in flight).
const FRAMES: u64 = 64 * 1024;
/// The bound asserted on what the server wrote while the consumer asked for nothing.
const BOUND: u64 = 64 << 20;

fn frame(i: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(format!("{i:08}").as_bytes());
    out.resize(start + FRAME - 1, b'.');
    out.push(b'\n');
}

#[test]
fn a_slow_consumer_stops_the_server_and_loses_nothing() {
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let server = {
        let (written, finished) = (written.clone(), finished.clone());
        Server::start(move |c| {
            if c.head(200, &[]).is_err() {
                return;
            }
            // As fast as the socket takes them, 64 frames per write.
            let mut buf = Vec::with_capacity(64 * FRAME);
            for start in (0..FRAMES).step_by(64) {
                buf.clear();
                for i in start..(start + 64).min(FRAMES) {
                    frame(i, &mut buf);
                }
                if c.write(&buf).is_err() {
                    return;
                }
                written.fetch_add(buf.len() as u64, Ordering::Relaxed);
            }
            finished.store(true, Ordering::Relaxed);
        })
    };
    let stream = http::stream(server.url("/firehose"))
        .framing(Framing::Lines)
        .bytes()
        .build()
        .unwrap();
    let stats = stream.stats();
    let producer = stageflow::producer(stream).spawn().unwrap();
    let (consumer, sub, rx) = manual_sink(&producer, 100);
    consumer.ask(sub, 100).unwrap();
    let first = take(&rx, 100);

    // The consumer asks for nothing more. The server's count must stop growing.
    let mut last = (written.load(Ordering::Relaxed), Instant::now());
    wait_for("the server to block", LIMIT, || {
        let now = written.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
        last.1.elapsed() > Duration::from_millis(500)
    });
    let in_flight = written.load(Ordering::Relaxed);
    eprintln!(
        "bytes written by the server while the consumer asked for nothing: {in_flight} ({:.1} MiB); \
         read by the producer: {} ({:.1} MiB)",
        in_flight as f64 / 1048576.0,
        stats.snapshot().bytes_read,
        stats.snapshot().bytes_read as f64 / 1048576.0
    );
    assert!(
        !finished.load(Ordering::Relaxed),
        "the server never blocked"
    );
    assert!(in_flight < BOUND, "{in_flight} bytes in flight");
    let s = stats.snapshot();
    assert!(s.paused && s.pauses >= 1, "{s:?}");
    assert!(
        s.bytes_read < 1 << 20,
        "the reader itself read {} bytes",
        s.bytes_read
    );

    // Resume: everything arrives, in order, once.
    consumer.ask(sub, FRAMES as usize - 100).unwrap();
    let rest = take(&rx, FRAMES as usize - 100);
    for (i, f) in first.iter().chain(rest.iter()).enumerate() {
        assert_eq!(f.len(), FRAME - 1);
        let n: u64 = std::str::from_utf8(&f[..8]).unwrap().parse().unwrap();
        assert_eq!(n, i as u64, "frame {i}");
    }
    assert!(finished.load(Ordering::Relaxed));
    assert_eq!(stats.snapshot().frames, FRAMES);
    stop(&producer);
}
