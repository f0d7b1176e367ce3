//! The pipeline layer (`stageflow::pipeline`): batching, acknowledgements, failures, order,
//! rate limits, shutdown, restarts, the testing helpers and the example, in one test binary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use stageflow::pipeline::{self, Acked, Acknowledger, Message, Status};

#[path = "pipeline/acks.rs"]
mod acks;
#[path = "pipeline/batching.rs"]
mod batching;
#[path = "pipeline/order_rate.rs"]
mod order_rate;
#[path = "pipeline/restarts.rs"]
mod restarts;
#[path = "pipeline/shutdown.rs"]
mod shutdown;

#[cfg(feature = "http")]
#[allow(dead_code)]
#[path = "../examples/tweet_pipeline.rs"]
mod tweet_pipeline;

#[cfg(feature = "http")]
#[test]
fn tweet_pipeline_acknowledges_every_tweet_read() {
    let s = tweet_pipeline::run(tweet_pipeline::Options {
        count: 100,
        fail_every: Some(7),
        batch_timeout: Duration::from_millis(200),
        print: false,
        ..tweet_pipeline::Options::default()
    })
    .unwrap();
    assert_eq!(s.read, 100, "{s:?}");
    assert_eq!((s.successful, s.failed), (86, 14), "{s:?}");
    assert_eq!(s.batches.iter().sum::<usize>(), 86);
    assert!(
        s.batches.iter().all(|&n| (1..=20).contains(&n)),
        "{:?}",
        s.batches
    );
    let mut texts = s.texts.clone();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), 86);
    assert!(
        texts
            .iter()
            .all(|t| t.ends_with("BACK-PRESSURE REACHES THE SERVER")),
        "{texts:?}"
    );
    // Tweet 6 (the 7th) failed; tweet 5 went through.
    assert!(texts.contains(&"TWEET 5: BACK-PRESSURE REACHES THE SERVER".to_string()));
    assert!(!texts.contains(&"TWEET 6: BACK-PRESSURE REACHES THE SERVER".to_string()));
}

/// Generous bound for every wait.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (at most [`WAIT`]) for every stage of `p` to end, and asserts each ended normally.
fn assert_ends_normally<I: Send + 'static>(p: &pipeline::Pipeline<I>) {
    let outcomes = p.topology().join_timeout(WAIT);
    assert!(
        outcomes
            .iter()
            .all(|(_, r)| r.as_ref().is_some_and(|r| r.is_normal())),
        "{outcomes:?}"
    );
}

/// An acknowledger that records every call: each id with its status, and the sizes of the
/// calls.
#[derive(Clone, Default)]
struct Recorder {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Default, Debug)]
struct Recorded {
    /// id → statuses it was acknowledged with (exactly one, if all is well).
    acks: HashMap<u64, Vec<Status>>,
    calls: usize,
}

impl Recorder {
    fn acknowledger(&self) -> Arc<dyn Acknowledger> {
        let inner = self.inner.clone();
        Arc::new(move |ok: Vec<Acked>, failed: Vec<Acked>| {
            let mut r = inner.lock();
            r.calls += 1;
            for a in ok.into_iter().chain(failed) {
                r.acks.entry(a.id).or_default().push(a.status);
            }
        })
    }

    /// Messages 0..n with this recorder as acknowledger, ids = data.
    fn messages(&self, n: u64) -> Vec<Message<u64>> {
        let ack = self.acknowledger();
        (0..n)
            .map(|i| Message::new(i).acknowledger(ack.clone(), i))
            .collect()
    }

    /// Whether every `step`-th id of `ids` was acknowledged exactly once, successfully.
    fn assert_exactly_once_of(&self, ids: std::ops::Range<u64>, step: usize) -> bool {
        let r = self.inner.lock();
        ids.step_by(step)
            .all(|id| r.acks.get(&id).map(Vec::as_slice) == Some(&[Status::Ok][..]))
    }

    fn acked(&self) -> usize {
        self.inner.lock().acks.values().map(Vec::len).sum()
    }

    fn calls(&self) -> usize {
        self.inner.lock().calls
    }

    /// Asserts every id of `0..n` was acknowledged exactly once; returns the failed ids.
    fn assert_exactly_once(&self, n: u64) -> Vec<u64> {
        let r = self.inner.lock();
        let mut failed = Vec::new();
        for id in 0..n {
            match r.acks.get(&id).map(Vec::as_slice) {
                Some([Status::Ok]) => {}
                Some([Status::Failed(_)]) => failed.push(id),
                other => panic!("message {id} acknowledged {other:?}"),
            }
        }
        assert_eq!(r.acks.len() as u64, n, "acknowledgements for unknown ids");
        failed
    }
}

/// A producer of the recorder's messages 0..n (finishes with them).
fn source(
    recorder: &Recorder,
    n: u64,
) -> stageflow::StageBuilder<
    stageflow::IterProducer<std::vec::IntoIter<Message<u64>>>,
    stageflow::ProducerRole,
> {
    stageflow::from_iter(recorder.messages(n))
}

#[test]
fn adaptive_demand_acknowledges_every_message_once() {
    let rec = Recorder::default();
    let r = rec.clone();
    let p = pipeline::builder("adaptive")
        .producer(move |_| source(&r, 20_000))
        .processors(
            pipeline::ProcessorOptions::new()
                .concurrency(4)
                .adaptive_demand(200),
            |m: &mut Message<u64>| Ok::<_, String>(m.data * 2),
        )
        .batcher(
            "default",
            pipeline::BatcherOptions::new().batch_size(100),
            |_: &mut pipeline::Batch<u64>| Ok::<_, String>(()),
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    assert!(rec.assert_exactly_once(20_000).is_empty());
    assert_eq!(p.counters().successful, 20_000);
}

#[test]
fn smoke() {
    let rec = Recorder::default();
    let r = rec.clone();
    let p = pipeline::builder("smoke")
        .producer(move |_| source(&r, 100))
        .processors(
            pipeline::ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| Ok::<_, String>(m.data * 2),
        )
        .batcher(
            "default",
            pipeline::BatcherOptions::new().batch_size(10),
            |b: &mut pipeline::Batch<u64>| {
                assert!(b.messages.iter().all(|m| m.data % 2 == 0));
                Ok::<_, String>(())
            },
        )
        .start()
        .unwrap();
    assert_ends_normally(&p);
    assert!(rec.assert_exactly_once(100).is_empty());
    let c = p.counters();
    assert_eq!(c.successful, 100);
    assert_eq!(c.processors.messages_in, 100);
    assert_eq!(c.batchers[0].1.batches, 10);
    assert_eq!(c.unacknowledged(), 0);
}
