//! Per-key order end to end with `partition_by`; the rate limit held over several intervals,
//! and changed while the pipeline runs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use parking_lot::Mutex;
use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions, RateLimit};

use super::{assert_ends_normally, Recorder, WAIT};

#[test]
fn partition_by_keeps_per_key_order_end_to_end() {
    const KEYS: u64 = 11;
    const N: u64 = 2000;
    let rec = Recorder::default();
    let r = rec.clone();
    let seen: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let s = seen.clone();
    // Two producers: producer i has the keys k with k % 2 == i, each key's sequence in order.
    let p = pipeline::builder("order")
        .producers(2, move |i| {
            let ack = r.acknowledger();
            let msgs: Vec<Message<(u64, u64)>> = (0..N)
                .filter(|id| (id % KEYS) % 2 == i as u64)
                .map(|id| Message::new((id % KEYS, id / KEYS)).acknowledger(ack.clone(), id))
                .collect();
            stageflow::from_iter(msgs)
        })
        .processors(
            ProcessorOptions::new()
                .concurrency(4)
                .partition_by(|m: &Message<(u64, u64)>| m.data.0),
            |m: &mut Message<(u64, u64)>| {
                if m.data.1.is_multiple_of(3) {
                    std::thread::yield_now(); // uneven processing times
                }
                Ok::<_, String>(m.data)
            },
        )
        .batcher(
            "ordered",
            BatcherOptions::new()
                .concurrency(3)
                .batch_size(7)
                .batch_timeout(Duration::from_millis(10))
                .partition_by(|m: &Message<(u64, u64)>| m.data.0),
            move |b: &mut Batch<(u64, u64)>| {
                let mut seen = s.lock();
                for m in &b.messages {
                    assert_eq!(
                        m.data.0 % 3,
                        b.info.partition as u64,
                        "key in the wrong partition"
                    );
                    seen.push(m.data);
                }
                Ok::<_, String>(())
            },
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    assert!(rec.assert_exactly_once(N).is_empty());
    let mut next: HashMap<u64, u64> = HashMap::new();
    for (key, seq) in seen.lock().iter() {
        let expected = next.entry(*key).or_insert(0);
        assert_eq!(seq, expected, "key {key} out of order");
        *expected += 1;
    }
    assert_eq!(next.values().sum::<u64>(), N);
}

/// Counts of `times` per `interval` from `origin`.
fn per_interval(times: &[Instant], origin: Instant, interval: Duration) -> Vec<usize> {
    let mut counts = Vec::new();
    for t in times {
        let k = (t.saturating_duration_since(origin).as_nanos() / interval.as_nanos()) as usize;
        if counts.len() <= k {
            counts.resize(k + 1, 0);
        }
        counts[k] += 1;
    }
    counts
}

#[test]
fn the_rate_limit_holds_over_several_intervals_and_changes_while_running() {
    let interval = Duration::from_millis(100);
    let (tx, rx) = unbounded::<Instant>();
    let origin = Instant::now();
    let p = pipeline::builder("rate")
        // Two endless producers: only the limit holds them back.
        .producers(2, |_| stageflow::from_iter((0u64..).map(Message::new)))
        .rate_limiting(RateLimit::new(30, interval))
        .processors(
            ProcessorOptions::new().concurrency(3),
            move |m: &mut Message<u64>| {
                tx.send(Instant::now())
                    .map(|_| m.data)
                    .map_err(|e| e.to_string())
            },
        )
        .start()
        .unwrap();
    // Five intervals at 30.
    let mut times = Vec::new();
    while times.len() < 150 {
        times.push(rx.recv_timeout(WAIT).expect("the pipeline stalled"));
    }
    let first = per_interval(&times, origin, interval);
    p.update_rate_limiting(RateLimit::new(10, interval))
        .unwrap();
    assert_eq!(p.rate_limiting(), Some(RateLimit::new(10, interval)));
    let changed = Instant::now();
    // Skip the interval in which it changed, then five intervals at 10.
    let mut later = Vec::new();
    let until = changed + interval * 6;
    while Instant::now() < until {
        if let Ok(t) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if t >= changed + interval {
                later.push(t);
            }
        }
    }
    let report = p.shutdown_timeout(WAIT);
    assert!(report.drain.is_complete(), "{report:?}");
    let second = per_interval(&later, changed + interval, interval);
    // Generous bounds: the test's intervals are not aligned with the limiter's, so one of
    // ours can hold parts of two of its windows.
    assert!(
        first.len() >= 5,
        "150 messages at 30 per interval came in {} intervals: {first:?}",
        first.len()
    );
    assert!(first.iter().all(|&n| n <= 60), "{first:?}");
    assert!(second.iter().all(|&n| n <= 20), "{second:?}");
    let total: usize = second.iter().sum();
    assert!(
        (20..=70).contains(&total),
        "{total} messages in five intervals at 10: {second:?}"
    );
}
