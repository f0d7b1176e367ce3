//! Row o of `compare`: what observing costs. o1 runs row a's shape (producer → consumer,
//! 1000/500; 100 M events a run, 20 M quick, so that several reports fall in each) alone and
//! with a reporter taking and rendering a snapshot every 100 ms, alternately; o2 times one
//! snapshot of 10, 100 and 1 000 idle stages.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shapes::Emit;
use crate::{median, rates};
use stageflow::observe::{Observer, Reporter, Snapshot};
use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, StageRef, SubscribeOptions, Topology,
};

/// Sums what it receives.
struct Count(u64);

impl Consumer for Count {
    type In = u64;
    type Message = ();
    #[inline]
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        self.0 = self.0.wrapping_add(events.sum::<u64>());
        black_box(self.0);
    }
}

/// Row a's shape; with `report`, a reporter renders a snapshot every 100 ms while it runs
/// (counting its reports in `reports`).
fn pair(n: u64, report: bool, reports: &Arc<AtomicUsize>) -> Duration {
    let start = Instant::now();
    let p = stageflow::producer(Emit { next: 0, limit: n })
        .spawn()
        .expect("producer");
    let c = stageflow::consumer(Count(0))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1000).min_demand(500))
        .expect("options")
        .spawn()
        .expect("consumer");
    let topology = Topology::new().with(&p).with(&c);
    let reporter = report.then(|| {
        let reports = reports.clone();
        Reporter::every(Duration::from_millis(100))
            .on_snapshot(move |s| {
                black_box(s.report_lines());
                reports.fetch_add(1, Ordering::Relaxed);
            })
            .start(&topology)
            .expect("reporter")
    });
    c.join();
    let elapsed = start.elapsed();
    drop(reporter);
    assert_eq!(c.counters().events_in, n, "stageflow lost events");
    elapsed
}

/// Idle stages: producers that emit nothing, each with a consumer.
struct Idle;

impl Producer for Idle {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64>) {}
}

/// Median and range of one snapshot of `stages` stages (half producers, half consumers), in
/// microseconds, plain and through an observer (which also computes rates).
fn snapshot_times(stages: usize, reps: usize) -> ([f64; 3], [f64; 3]) {
    let mut refs: Vec<StageRef> = Vec::new();
    for i in 0..stages / 2 {
        let p = stageflow::producer(Idle)
            .name(format!("p{i}"))
            .inbox_capacity(16)
            .spawn()
            .expect("producer");
        let c = stageflow::consumer(Count(0))
            .name(format!("c{i}"))
            .inbox_capacity(16)
            .subscribe_to(&p, SubscribeOptions::new())
            .expect("options")
            .spawn()
            .expect("consumer");
        refs.push(p.stage_ref());
        refs.push(c.stage_ref());
    }
    let time = |f: &mut dyn FnMut() -> Snapshot| {
        let mut t: Vec<f64> = (0..reps)
            .map(|_| {
                let start = Instant::now();
                let s = f();
                let took = start.elapsed();
                assert_eq!(s.stages.len(), stages);
                black_box(s);
                took.as_secs_f64() * 1e6
            })
            .collect();
        t.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
        [median(&t), t[0], t[t.len() - 1]]
    };
    let plain = time(&mut || Snapshot::of(&refs));
    let mut observer = Observer::new(refs.as_slice());
    let observed = time(&mut || observer.snapshot());
    drop(observer);
    for r in &refs {
        r.stop();
    }
    for r in &refs {
        r.join();
    }
    (plain, observed)
}

/// Prints rows o1 and o2.
pub(crate) fn table(quick: bool, rounds: usize) {
    // Runs long enough for several reports each (row a's 10 M events take about 50 ms).
    let scale = if quick { 5 } else { 1 };
    let n = 100_000_000 / scale;
    let reports = Arc::new(AtomicUsize::new(0));
    println!("## Observing (row o)");
    println!();
    println!(
        "o1: row a's shape, events/s, median (min–max) of {rounds} rounds, alone and with a \
         reporter rendering a snapshot every 100 ms, run alternately."
    );
    println!();
    println!("| id | shape | alone | with a reporter | ratio |");
    println!("|---|---|---|---|---|");
    pair(n, false, &reports);
    pair(n, true, &reports);
    reports.store(0, Ordering::Relaxed);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(pair(n, false, &reports));
        b.push(pair(n, true, &reports));
    }
    let (ra, rb) = (rates(n, &a), rates(n, &b));
    let (ma, mb) = (median(&ra), median(&rb));
    let m = |r: f64| format!("{:.1} M", r / 1e6);
    println!(
        "| o1 | producer → consumer, 1000/500, {} M events, {:.1} reports per run | {} ({}–{}) | {} ({}–{}) | {:.3}× |",
        n / 1_000_000,
        reports.load(Ordering::Relaxed) as f64 / rounds as f64,
        m(ma),
        m(ra[0]),
        m(ra[ra.len() - 1]),
        m(mb),
        m(rb[0]),
        m(rb[rb.len() - 1]),
        mb / ma
    );
    println!();
    let reps = if quick { 20 } else { 100 };
    println!("o2: one snapshot of idle stages (half producers, half consumers, one subscription each), µs, median (min–max) of {reps}.");
    println!();
    println!("| id | stages | Snapshot::of | Observer::snapshot |");
    println!("|---|---|---|---|");
    for stages in [10, 100, 1000] {
        let (p, o) = snapshot_times(stages, reps);
        println!(
            "| o2 | {stages} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) |",
            p[0], p[1], p[2], o[0], o[1], o[2]
        );
    }
    println!();
}
