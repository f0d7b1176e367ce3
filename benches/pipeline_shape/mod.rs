//! Row m of `compare`: Broadway's shape through `stageflow::pipeline` (a producer → 8
//! processors → 1 batcher of 100, which with one batch processor handles and acknowledges
//! each batch on its own thread) beside the same shape written by hand on crossbeam channels
//! (a producer thread handing out chunks of `max_demand / 2` to 8 worker threads over one
//! channel, a batcher thread that handles and acknowledges each batch), alternately.
//!
//! Both carry a data word and an acknowledgement id per message and acknowledge once per
//! batch; the pipeline's messages also carry metadata, a status and the way to their
//! acknowledger (by default the pipeline's own, `STAGEFLOW_ACK` says otherwise), and its
//! processors and batch handlers contain panics, as a real pipeline needs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use stageflow::pipeline::{self, Acked, Batch, BatcherOptions, Message, ProcessorOptions};

const BATCH: usize = 100;

/// The pipeline: `n` messages, each acknowledged (counted) once per batch; `processors`
/// processors with `max_demand` `md` (and `min_demand` half of it).
fn with_pipeline(n: u64, md: usize, processors: usize) -> Duration {
    with_pipeline_adaptive(n, md, processors, None)
}

/// [`with_pipeline`] (whose processors' demand is fixed), their demand adaptive up to
/// `adaptive` if given.
fn with_pipeline_adaptive(
    n: u64,
    md: usize,
    processors: usize,
    adaptive: Option<usize>,
) -> Duration {
    run(
        n,
        md,
        processors,
        adaptive,
        true,
        |x| x.wrapping_mul(2),
        |d| *d,
    )
}

/// [`with_pipeline`] without a batcher: each processor acknowledges what it handled.
fn with_pipeline_unbatched(n: u64, md: usize, processors: usize) -> Duration {
    run(
        n,
        md,
        processors,
        None,
        false,
        |x| x.wrapping_mul(2),
        |d| *d,
    )
}

/// [`with_pipeline`] with a handler that changes the data's type (`u64` into a `Doubled`),
/// the way a pipeline that parses its input does.
fn with_pipeline_mapping(n: u64, md: usize, processors: usize) -> Duration {
    run(
        n,
        md,
        processors,
        None,
        true,
        |x| Doubled(x.wrapping_mul(2)),
        |d| d.0,
    )
}

/// A processor's output of another type than its input.
struct Doubled(u64);

/// [`with_pipeline_adaptive`], the processors' handler `map` and, if `batched`, a batcher
/// whose handler reads each output with `read`.
/// (Closures, not function pointers, so that the handlers inline as a user's would.)
fn run<O, M, R>(
    n: u64,
    md: usize,
    processors: usize,
    adaptive: Option<usize>,
    batched: bool,
    map: M,
    read: R,
) -> Duration
where
    O: Send + 'static,
    M: Fn(u64) -> O + Copy + Send + 'static,
    R: Fn(&O) -> u64 + Copy + Send + 'static,
{
    let acked = Arc::new(AtomicU64::new(0));
    let a = acked.clone();
    let count = move |ok: Vec<Acked>, _: Vec<Acked>| {
        a.fetch_add(ok.len() as u64, Ordering::Relaxed);
    };
    let ack: Arc<dyn pipeline::Acknowledger> = Arc::new(count.clone());
    let start = Instant::now();
    let mut builder = pipeline::builder("bench");
    let by = Ack::from_env();
    let leaked: Option<&'static dyn pipeline::Acknowledger> = match by {
        // Leaked once per run (a few bytes).
        Ack::Static => Some(Box::leak(Box::new(count))),
        _ => None,
    };
    if by == Ack::Pipeline {
        builder = builder.acknowledger(ack.clone());
    }
    let p = builder
        .producers(1, move |_| {
            let ack = ack.clone();
            stageflow::from_iter((0..n).map(move |i| match (by, leaked) {
                (Ack::Pipeline, _) => Message::new(i).pipeline_acknowledger(i),
                (Ack::Static, Some(leaked)) => Message::new(i).static_acknowledger(leaked, i),
                _ => Message::new(i).acknowledger(ack.clone(), i),
            }))
        })
        .processors(
            match adaptive {
                Some(limit) => ProcessorOptions::new().adaptive_demand(limit),
                None => ProcessorOptions::new().fixed_demand(),
            }
            .concurrency(processors)
            .max_demand(md),
            move |m: &mut Message<u64>| Ok::<O, String>(map(m.data)),
        );
    let p = if batched {
        p.batcher(
            "b",
            BatcherOptions::new()
                .batch_size(BATCH)
                .batch_timeout(Duration::from_secs(60)),
            move |b: &mut Batch<O>| {
                black_box(b.messages.iter().map(|m| read(&m.data)).sum::<u64>());
                Ok::<(), String>(())
            },
        )
    } else {
        p
    };
    let p = p.start().expect("start the pipeline");
    p.join();
    let t = start.elapsed();
    assert_eq!(acked.load(Ordering::Relaxed), n);
    t
}

/// How the pipeline's messages name their acknowledger: `STAGEFLOW_ACK=pipeline` (the
/// default: the pipeline's own, `Builder::acknowledger` and `Message::pipeline_acknowledger`,
/// as the module docs show), `arc` (`Message::acknowledger`, a clone of an `Arc` per message)
/// or `static` (`Message::static_acknowledger`, one leaked per run): to compare the three.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ack {
    Pipeline,
    Arc,
    Static,
}

impl Ack {
    fn from_env() -> Ack {
        match std::env::var("STAGEFLOW_ACK").as_deref() {
            Ok("arc") => Ack::Arc,
            Ok("static") => Ack::Static,
            _ => Ack::Pipeline,
        }
    }
}

/// A message by hand: its data and its acknowledgement id.
struct Plain {
    data: u64,
    id: u64,
}

/// The hand-written producer: `n` messages in chunks of `md / 2` (what the processors'
/// demand cuts) into `work`.
fn hand_producer(n: u64, md: usize, work: Sender<Vec<Plain>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut i = 0;
        while i < n {
            let end = (i + (md / 2) as u64).min(n);
            let chunk: Vec<Plain> = (i..end).map(|x| Plain { data: x, id: x }).collect();
            work.send(chunk).unwrap();
            i = end;
        }
    })
}

/// Handles and acknowledges a batch by hand: its data summed, its ids collected and
/// counted into `acked`.
fn hand_ack(batch: &[Plain], acked: &AtomicU64) {
    black_box(batch.iter().map(|m| m.data).sum::<u64>());
    let ids: Vec<u64> = batch.iter().map(|m| m.id).collect();
    acked.fetch_add(black_box(ids).len() as u64, Ordering::Relaxed);
}

/// The same shape by hand, handing out chunks of `md / 2` (what the processors' demand cuts).
fn by_hand(n: u64, md: usize, processors: usize) -> Duration {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (work_tx, work_rx) = bounded::<Vec<Plain>>(processors * 2);
    let (out_tx, out_rx) = bounded::<Vec<Plain>>(processors * 2);
    let producer = hand_producer(n, md, work_tx);
    let workers: Vec<_> = (0..processors)
        .map(|_| {
            let (rx, tx) = (work_rx.clone(), out_tx.clone());
            std::thread::spawn(move || {
                for mut chunk in rx {
                    for m in &mut chunk {
                        m.data = m.data.wrapping_mul(2);
                    }
                    tx.send(chunk).unwrap();
                }
            })
        })
        .collect();
    drop((work_rx, out_tx));
    // The batcher handles and acknowledges each batch itself, as the pipeline's batcher does
    // with one batch processor.
    let a = acked.clone();
    let batcher = std::thread::spawn(move || {
        let handle = |batch: Vec<Plain>| hand_ack(&batch, &a);
        let mut pending = Vec::with_capacity(BATCH);
        for chunk in out_rx {
            for m in chunk {
                pending.push(m);
                if pending.len() == BATCH {
                    handle(std::mem::replace(&mut pending, Vec::with_capacity(BATCH)));
                }
            }
        }
        if !pending.is_empty() {
            handle(pending);
        }
    });
    producer.join().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    batcher.join().unwrap();
    let t = start.elapsed();
    assert_eq!(acked.load(Ordering::Relaxed), n);
    t
}

/// [`by_hand`] without the batcher: each worker acknowledges (counts the ids of) each chunk
/// it handled.
fn by_hand_unbatched(n: u64, md: usize, processors: usize) -> Duration {
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (work_tx, work_rx) = bounded::<Vec<Plain>>(processors * 2);
    let producer = hand_producer(n, md, work_tx);
    let workers: Vec<_> = (0..processors)
        .map(|_| {
            let (rx, a) = (work_rx.clone(), acked.clone());
            std::thread::spawn(move || {
                for mut chunk in rx {
                    for m in &mut chunk {
                        m.data = m.data.wrapping_mul(2);
                    }
                    hand_ack(&chunk, &a);
                }
            })
        })
        .collect();
    drop(work_rx);
    producer.join().unwrap();
    for w in workers {
        w.join().unwrap();
    }
    let t = start.elapsed();
    assert_eq!(acked.load(Ordering::Relaxed), n);
    t
}

/// Prints row m (messages/s), through `compare`'s alternating `row`.
pub(crate) fn table(s: &super::Settings) {
    println!(
        "## m: Broadway's shape (messages/s: median (min–max) of {} rounds, run alternately)",
        s.rounds
    );
    println!();
    println!("| id | shape | stageflow::pipeline | by hand (crossbeam) | ratio |");
    println!("|---|---|---|---|---|");
    let n = if s.quick { 200_000 } else { 1_000_000 };
    super::row(
        s,
        "m",
        "producer → 8 processors (10/5 fixed, Broadway's default) → batcher of 100 → acknowledger",
        n,
        || with_pipeline(n, 10, 8),
        || by_hand(n, 10, 8),
    );
    super::row(
        s,
        "m100",
        "producer → 8 processors (100/50) → batcher of 100 → acknowledger",
        n,
        || with_pipeline(n, 100, 8),
        || by_hand(n, 100, 8),
    );
    super::row(
        s,
        "ma",
        "row m at the pipeline's defaults: processors at 10/5, adaptive up to 100/50 (issue 22)",
        n,
        || with_pipeline_adaptive(n, 10, 8, Some(100)),
        || by_hand(n, 10, 8),
    );
    super::row(
        s,
        "ma50",
        "row ma with 50 processors (issue 22: threads past the core count should cost memory, not speed)",
        n,
        || with_pipeline_adaptive(n, 10, 50, Some(100)),
        || by_hand(n, 10, 50),
    );
    super::row(
        s,
        "m100x50",
        "row m100 with 50 processors (by hand: 50 workers sharing one queue)",
        n,
        || with_pipeline(n, 100, 50),
        || by_hand(n, 100, 50),
    );
    super::row(
        s,
        "m100s",
        "row m100 without a batcher: each processor acknowledges what it handled",
        n,
        || with_pipeline_unbatched(n, 100, 8),
        || by_hand_unbatched(n, 100, 8),
    );
    super::row(
        s,
        "m100t",
        "row m100 with a handler that changes the data's type (u64 into a newtype)",
        n,
        || with_pipeline_mapping(n, 100, 8),
        || by_hand(n, 100, 8),
    );
    super::row(
        s,
        "m50",
        "producer → 50 processors (10/5 fixed) → batcher of 100 → acknowledger",
        n,
        || with_pipeline(n, 10, 50),
        || by_hand(n, 10, 50),
    );
    println!();
}
