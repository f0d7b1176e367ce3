//! The flow layer (`stageflow::flow`) on running stages: sources, fused mappers, partitions,
//! every window kind and trigger under a clock the test moves, late events, the final
//! emission on completion, departition, back-pressure from a slow reducer, errors; a property
//! test against a single-threaded count; and the `top_hashtags` example.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use proptest::prelude::*;
use stageflow::flow::{
    top_n, Emitted, Fired, Flow, FlowError, ManualClock, Partitions, RunningFlow, Trigger, Window,
    WindowId,
};
use stageflow::{Context, Producer, ProducerDemand, Reason, StageRef, Upstream};

#[allow(dead_code)]
#[path = "../examples/top_hashtags.rs"]
mod top_hashtags;

/// The longest any test waits for anything.
const LIMIT: Duration = Duration::from_secs(30);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Waits until `cond` holds, failing clearly after [`LIMIT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {LIMIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Events received by the flow's stages whose name contains `role`.
fn events_in(stages: &[StageRef], role: &str) -> u64 {
    stages
        .iter()
        .filter(|s| s.name().contains(role))
        .map(|s| s.counters().events_in)
        .sum()
}

/// A producer the test feeds by hand.
enum Feed<T> {
    Push(Vec<T>),
    End,
}

impl<T: Send + 'static> Producer for FedBy<T> {
    type Out = T;
    type Message = Feed<T>;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, T, Feed<T>>) {}

    fn handle_message(&mut self, msg: Feed<T>, ctx: &mut Context<'_, T, Feed<T>>) {
        match msg {
            Feed::Push(events) => ctx.emit_all(events),
            Feed::End => ctx.finish(),
        }
    }
}

struct FedBy<T>(std::marker::PhantomData<fn(T)>);

fn feed<T: Send + 'static>() -> stageflow::ProducerHandle<FedBy<T>> {
    stageflow::producer(FedBy(std::marker::PhantomData))
        .spawn()
        .unwrap()
}

/// Runs `flow`'s stream on a helper thread; its items arrive on the receiver.
fn spawn_stream<T: Send + 'static>(
    stream: stageflow::flow::FlowStream<T>,
) -> (
    Vec<StageRef>,
    Receiver<T>,
    std::thread::JoinHandle<Result<(), FlowError>>,
) {
    let stages = stream.stages().to_vec();
    let (tx, rx) = bounded(1024);
    let thread = std::thread::spawn(move || {
        let mut stream = stream;
        for item in stream.by_ref() {
            if tx.send(item).is_err() {
                break;
            }
        }
        stream.finish()
    });
    (stages, rx, thread)
}

fn next<T>(rx: &Receiver<T>) -> T {
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|e| panic!("nothing arrived within {LIMIT:?}: {e}"))
}

fn quiet<T: std::fmt::Debug>(rx: &Receiver<T>) {
    if let Ok(x) = rx.recv_timeout(Duration::from_millis(50)) {
        panic!("expected nothing, got {x:?}");
    }
}

fn sorted<K: Ord + Clone, V: Clone>(m: &HashMap<K, V>) -> Vec<(K, V)> {
    let mut v: Vec<(K, V)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Merges per-partition counts (a departition's `merge`).
fn merge_counts(all: &mut HashMap<String, u64>, part: HashMap<String, u64>) {
    for (k, n) in part {
        *all.entry(k).or_insert(0) += n;
    }
}

/// The names of a flow's stages.
fn stage_names(stages: &[stageflow::StageRef]) -> Vec<String> {
    stages.iter().map(|s| s.name().to_owned()).collect()
}

#[test]
fn smoke() {
    let mut out = Flow::from_iter(0..1000u64)
        .stages(2)
        .map(|x| x * 2)
        .filter(|x| x % 3 == 0)
        .collect()
        .unwrap();
    out.sort_unstable();
    let expected: Vec<u64> = (0..1000).map(|x| x * 2).filter(|x| x % 3 == 0).collect();
    assert_eq!(out, expected);
}

#[test]
fn mapper_operations_fuse_into_one_stage_per_lane() {
    let seen = Arc::new(AtomicU64::new(0));
    let inspected = seen.clone();
    let stream = Flow::from_iters([vec!["a b", "c"], vec!["d e f"]])
        .stages(3)
        .flat_map(|line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .inspect(move |_| {
            inspected.fetch_add(1, Ordering::Relaxed);
        })
        .map_batch(|batch: Vec<String>| batch.into_iter().map(|w| w.to_uppercase()).collect())
        .stream()
        .unwrap();
    let names = stage_names(stream.stages());
    // The lanes pull the iterators themselves: no source stage.
    assert_eq!(names, ["flow-map-0", "flow-map-1", "flow-map-2"]);
    let mut words: Vec<String> = stream.collect();
    words.sort();
    assert_eq!(words, ["A", "B", "C", "D", "E", "F"]);
    assert_eq!(seen.load(Ordering::Relaxed), 6);
}

#[test]
fn lanes_pull_their_iterators_in_batches_each_in_order() {
    // One lane, two iterators: each iterator's items leave in their order, interleaved a
    // batch (max_demand items) at a time.
    let out = Flow::from_iters([0..1000u32, 1000..2000])
        .stages(1)
        .max_demand(10)
        .map(|x| x)
        .collect()
        .unwrap();
    assert_eq!(out.len(), 2000);
    let (low, high): (Vec<u32>, Vec<u32>) = out.iter().partition(|&&x| x < 1000);
    assert_eq!(low, (0..1000).collect::<Vec<u32>>());
    assert_eq!(high, (1000..2000).collect::<Vec<u32>>());
    assert_eq!(
        &out[..20],
        [(0..10).collect::<Vec<u32>>(), (1000..1010).collect()].concat()
    );

    // A partition with no operations: the lanes are the sources, and they still count on
    // demand: a flat_map that makes ten events of each item pulls a batch at a time.
    let stream = Flow::from_iter(0..100u64)
        .stages(2)
        .flat_map(|x| std::iter::repeat_n(x, 10))
        .partition(Partitions::by_event().stages(2))
        .reduce(|| vec![0u64], |n: &mut Vec<u64>, _| n[0] += 1)
        .emit_events()
        .stream()
        .unwrap();
    let names = stage_names(stream.stages());
    assert_eq!(
        names,
        ["flow-map-0", "flow-map-1", "flow-reduce-0", "flow-reduce-1"]
    );
    assert_eq!(stream.sum::<u64>(), 1000);
    let names = stage_names(
        Flow::from_iter(0..10u64)
            .partition(Partitions::by_event().stages(1))
            .reduce(|| 0u64, |n: &mut u64, x| *n += x)
            .emit_state()
            .stream()
            .unwrap()
            .stages(),
    );
    assert!(names.iter().all(|n| !n.contains("source")), "{names:?}");
}

#[test]
fn flat_map_keeps_every_item_however_many_each_event_makes() {
    // Batches that make many items per event, then none, then a few: each batch is sized by
    // the one before, never too small to hold it.
    let out = Flow::from_iter(0..3000u64)
        .stages(1)
        .max_demand(100)
        .flat_map(|x| std::iter::repeat_n(x, [100, 0, 3][(x / 1000) as usize]))
        .collect()
        .unwrap();
    assert_eq!(out.len(), 1000 * 100 + 1000 * 3);
    assert!(
        out.windows(2).all(|w| w[0] <= w[1]),
        "one lane keeps its order"
    );
}

#[test]
fn running_stages_merge_and_a_producer_is_a_source() {
    // Accumulating until the flow is whole: several mapper stages, short inputs.
    let accumulating = |r: std::ops::Range<u32>| {
        stageflow::from_iter(r)
            .demand(ProducerDemand::Accumulate)
            .spawn()
            .unwrap()
    };
    let (a, b) = (accumulating(0..100), accumulating(100..250));
    let mut got = Flow::from_producer_stages([a.clone(), b.clone()])
        .stages(3)
        .map(|x| x + 1)
        .collect()
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, (1..251).collect::<Vec<u32>>());
    assert_eq!((a.join(), b.join()), (Reason::Normal, Reason::Normal));

    // Already forwarding: fine with one mapper stage.
    let c = stageflow::from_iter(0..10u32).spawn().unwrap();
    let d = stageflow::from_iter(10..20u32).spawn().unwrap();
    let mut got = Flow::from_stages([c.source(), d.source()])
        .stages(1)
        .map(|x| x * 2)
        .collect()
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..20).map(|x| x * 2).collect::<Vec<u32>>());

    let mut next = 1u32;
    let generated =
        stageflow::fns::Generate::new(move |demand: usize, ctx: &mut Context<'_, u32>| {
            for _ in 0..demand {
                if next > 50 {
                    ctx.finish();
                    return;
                }
                ctx.emit(next);
                next += 1;
            }
        });
    let total: u32 = Flow::from_producer(generated)
        .collect()
        .unwrap()
        .into_iter()
        .sum();
    assert_eq!(total, 50 * 51 / 2);
}

#[test]
fn count_by_key_meets_every_key_in_one_partition() {
    let words: Vec<String> = (0..3000).map(|i| format!("w{}", i % 37)).collect();
    let emitted = Flow::from_iter(words.clone())
        .stages(2)
        .partition(Partitions::by_key(|w: &String| w.clone()).stages(3))
        .count_by_key(|w| w.clone())
        .emit_state()
        .collect()
        .unwrap();
    // One final emission per partition, each key in exactly one of them.
    assert_eq!(emitted.len(), 3);
    assert_each_key_in_one_partition(&emitted, words);
}

#[test]
fn count_by_key_on_the_flow_pre_counts_each_batch_and_counts_the_same() {
    let words: Vec<String> = (0..3000).map(|i| format!("w{}", i % 37)).collect();
    let mut stream = Flow::from_iter(words.clone())
        .stages(2)
        .count_by_key(|w: &String| w.clone(), Partitions::by_event().stages(3))
        .emit_state()
        .stream()
        .unwrap();
    let emitted: Vec<Emitted<HashMap<String, u64>>> = stream.by_ref().collect();
    // The mappers sent a (word, count) pair per distinct word of each batch (batches of
    // hundreds of events, 37 words), not one event per word.
    let pairs = events_in(stream.stages(), "reduce");
    assert!(
        pairs > 0 && pairs < 3000 / 4,
        "{pairs} pairs for 3000 words"
    );
    stream.finish().unwrap();
    // Each key in exactly one partition, with its whole count.
    assert_eq!(emitted.len(), 3);
    assert_each_key_in_one_partition(&emitted, words);
}

#[test]
fn count_by_key_on_the_flow_counts_events_where_the_window_counts_them() {
    // Count windows and `Every` triggers count events: no pre-counting, the same emissions as
    // partition + count_by_key (one lane and one partition, so the order is fixed).
    let words: Vec<u64> = (0..40).map(|i| i % 3).collect();
    let windows: [fn() -> Window<u64>; 2] =
        [|| Window::count(7), || Window::global().trigger_every(5)];
    for window in windows {
        let mut stream = Flow::from_iter(words.clone())
            .stages(1)
            .count_by_key(
                |w: &u64| *w,
                Partitions::by_event().stages(1).window(window()),
            )
            .emit_state()
            .stream()
            .unwrap();
        let one_step: Vec<_> = stream.by_ref().collect();
        assert_eq!(
            events_in(stream.stages(), "reduce"),
            40,
            "one pair per event"
        );
        stream.finish().unwrap();
        let mut stream = Flow::from_iter(words.clone())
            .stages(1)
            .partition(Partitions::by_event().stages(1).window(window()))
            .count_by_key(|w: &u64| *w)
            .emit_state()
            .stream()
            .unwrap();
        let two_steps: Vec<_> = stream.by_ref().collect();
        assert_eq!(
            events_in(stream.stages(), "reduce"),
            40,
            "one pair per event after `partition` too"
        );
        stream.finish().unwrap();
        assert_eq!(one_step, two_steps, "{:?}", window());
        assert!(one_step.len() > 2, "{one_step:?}");
    }
}

#[test]
fn reduce_group_by_emit_events_and_departition() {
    // reduce: a sum per partition, emitted as events.
    let sums = Flow::from_iter(1..=100u64)
        .stages(2)
        .partition(Partitions::by_hash(|x: &u64| x % 2).stages(2))
        .reduce(|| vec![0u64], |acc: &mut Vec<u64>, x| acc[0] += x)
        .emit_events()
        .collect()
        .unwrap();
    let mut sums = sums;
    sums.sort_unstable();
    assert_eq!(sums, vec![2500, 2550]); // odd, even

    // A reduced flow goes on: more operations (in stages of their own), another partition.
    let total = Flow::from_iter(1..=100u64)
        .stages(2)
        .partition(Partitions::by_hash(|x: &u64| x % 4).stages(4))
        .reduce(|| vec![0u64], |acc: &mut Vec<u64>, x| acc[0] += x)
        .emit_events()
        .map(|sum| sum * 2)
        .partition(Partitions::by_hash(|_: &u64| 0).stages(1))
        .reduce(|| vec![0u64], |acc: &mut Vec<u64>, x| acc[0] += x)
        .emit_events()
        .collect()
        .unwrap();
    assert_eq!(total, vec![2 * 5050]);

    // group_by, departitioned into one sorted map.
    let groups = Flow::from_iter(0..30u32)
        .partition(Partitions::by_key(|x: &u32| x % 3).stages(2))
        .group_by(|x| x % 3, |x| x)
        .departition(
            BTreeMap::new,
            |all: &mut BTreeMap<u32, Vec<u32>>, part| {
                for (k, mut v) in part {
                    v.sort_unstable();
                    all.insert(k, v);
                }
            },
            |all| all,
        )
        .collect()
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].partition, None);
    let expected: BTreeMap<u32, Vec<u32>> = (0..3)
        .map(|k| (k, (0..30).filter(|x| x % 3 == k).collect()))
        .collect();
    assert_eq!(groups[0].value, expected);
}

#[test]
fn take_top_keeps_the_greatest_events_per_window() {
    let top = Flow::from_iter(0..1000u32)
        .stages(2)
        .partition(Partitions::by_hash(|_: &u32| 0).stages(1))
        .take_top(3, |x| x % 100)
        .emit_state()
        .collect()
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].value, vec![99, 199, 299]);
}

#[test]
fn periodic_windows_close_when_the_test_moves_the_clock() {
    let clock = ManualClock::new();
    let source = feed::<String>();
    let window = Window::periodic(secs(5))
        .clock(clock.clone())
        .tick(Duration::from_millis(1));
    let stream = Flow::from_stages([source.source()])
        .stages(1)
        .partition(
            Partitions::by_key(|w: &String| w.clone())
                .stages(2)
                .window(window),
        )
        .count_by_key(|w| w.clone())
        .departition(HashMap::new, merge_counts, |all| sorted(&all))
        .stream()
        .unwrap();
    let (stages, rx, thread) = spawn_stream(stream);
    let push = |words: &[&str]| {
        let words = words.iter().map(|w| w.to_string()).collect();
        source.cast(Feed::Push(words)).unwrap();
    };

    // The mapper counts each batch by key before the partition (a pushed batch is one): a
    // pair per word and batch reaches the reducers.
    push(&["a", "b", "a"]);
    wait_until("2 pairs at the reducers", || {
        events_in(&stages, "reduce") == 2
    });
    quiet(&rx); // the clock has not moved: nothing closes
    clock.set(secs(5));
    let w0 = next(&rx);
    assert_eq!(
        w0,
        Emitted {
            window: WindowId::Periodic {
                start: secs(0),
                end: secs(5)
            },
            fired: Fired::Closed,
            partition: None,
            value: vec![("a".to_string(), 2), ("b".to_string(), 1)],
        }
    );

    push(&["c"]);
    wait_until("3 pairs at the reducers", || {
        events_in(&stages, "reduce") == 3
    });
    clock.set(secs(12)); // window 1 closes; window 2 is empty
    let w1 = next(&rx);
    assert_eq!(
        w1.window,
        WindowId::Periodic {
            start: secs(5),
            end: secs(10)
        }
    );
    assert_eq!(w1.value, vec![("c".to_string(), 1)]);

    // The last window is emitted when the input completes, before the clock passes it.
    push(&["d", "d"]);
    wait_until("4 pairs at the reducers", || {
        events_in(&stages, "reduce") == 4
    });
    source.cast(Feed::End).unwrap();
    let w2 = next(&rx);
    assert_eq!(
        (w2.window, w2.fired, w2.value),
        (
            WindowId::Periodic {
                start: secs(10),
                end: secs(15)
            },
            Fired::Done,
            vec![("d".to_string(), 2)]
        )
    );
    assert!(rx.recv_timeout(LIMIT).is_err(), "the stream should end");
    thread.join().unwrap().unwrap();
}

#[test]
fn periodic_and_count_triggers_emit_before_the_window_closes() {
    let clock = ManualClock::new();
    let source = feed::<u64>();
    let window = Window::global()
        .trigger_every(3)
        .trigger_periodically(secs(1))
        .clock(clock.clone())
        .tick(Duration::from_millis(1));
    let stream = Flow::from_stages([source.source()])
        .stages(1)
        .partition(Partitions::by_hash(|_: &u64| 0).stages(1).window(window))
        .reduce(Vec::new, |acc: &mut Vec<u64>, x| acc.push(x))
        .emit_state()
        .stream()
        .unwrap();
    let (stages, rx, thread) = spawn_stream(stream);

    source.cast(Feed::Push(vec![1, 2])).unwrap();
    wait_until("2 events at the reducer", || {
        events_in(&stages, "reduce") == 2
    });
    quiet(&rx);
    clock.set(secs(1));
    let e = next(&rx);
    assert_eq!(
        (e.fired, e.value),
        (Fired::Trigger(Trigger::Periodically(secs(1))), vec![1, 2])
    );
    source.cast(Feed::Push(vec![3, 4])).unwrap();
    let e = next(&rx);
    assert_eq!(
        (e.fired, e.value),
        (Fired::Trigger(Trigger::Every(3)), vec![1, 2, 3])
    );
    source.cast(Feed::End).unwrap();
    let e = next(&rx);
    assert_eq!(
        (e.window, e.fired, e.value),
        (WindowId::Global, Fired::Done, vec![1, 2, 3, 4])
    );
    assert!(rx.recv_timeout(LIMIT).is_err(), "the stream should end");
    thread.join().unwrap().unwrap();
}

#[test]
fn count_windows_close_per_partition_and_the_rest_at_completion() {
    let emitted = Flow::from_iter(0..10u64)
        .stages(1)
        .partition(
            Partitions::by_hash(|_: &u64| 0)
                .stages(1)
                .window(Window::count(4)),
        )
        .reduce(Vec::new, |acc: &mut Vec<u64>, x| acc.push(x))
        .emit_state()
        .collect()
        .unwrap();
    let got: Vec<(WindowId, Fired, Vec<u64>)> = emitted
        .into_iter()
        .map(|e| (e.window, e.fired, e.value))
        .collect();
    assert_eq!(
        got,
        vec![
            (WindowId::Count(0), Fired::Closed, vec![0, 1, 2, 3]),
            (WindowId::Count(1), Fired::Closed, vec![4, 5, 6, 7]),
            (WindowId::Count(2), Fired::Done, vec![8, 9]),
        ]
    );
}

#[test]
fn fixed_windows_take_late_events_within_the_allowed_lateness_and_drop_the_rest() {
    // (key, timestamp in seconds), in arrival order; one mapper lane keeps that order.
    let events: Vec<(u32, u64)> = vec![
        (0, 1),
        (1, 2),
        (0, 12), // partition 0 passes window 0's end: watermark
        (0, 3),  // late, within lateness: counted in window 0
        (1, 14), // partition 1 passes window 0's end
        (0, 16), // partition 0: window 0 closes (10 + 5 <= 16)
        (0, 4),  // beyond lateness in partition 0: dropped
        (1, 17), // partition 1: window 0 closes
    ];
    let window = Window::fixed(secs(10), |e: &(u32, u64)| secs(e.1)).allowed_lateness(secs(5));
    let late = window.late_events();
    let source = feed::<(u32, u64)>();
    let stream = Flow::from_stages([source.source()])
        .stages(1)
        .partition(
            Partitions::by_hash(|e: &(u32, u64)| u64::from(e.0))
                .stages(2)
                .window(window),
        )
        .reduce(Vec::new, |acc: &mut Vec<u64>, e| acc.push(e.1))
        .emit_state()
        .stream()
        .unwrap();
    let (_stages, rx, thread) = spawn_stream(stream);
    source.cast(Feed::Push(events)).unwrap();
    source.cast(Feed::End).unwrap();
    let mut got: Vec<(Option<usize>, WindowId, Fired, Vec<u64>)> = rx
        .iter()
        .map(|e| (e.partition, e.window, e.fired, e.value))
        .collect();
    thread.join().unwrap().unwrap();
    got.sort_by_key(|(p, w, ..)| (*p, *w));
    let w0 = WindowId::Fixed {
        start: secs(0),
        end: secs(10),
    };
    let w1 = WindowId::Fixed {
        start: secs(10),
        end: secs(20),
    };
    // Per partition, in emission order (a stable sort keeps it within a window).
    assert_eq!(
        got,
        vec![
            (Some(0), w0, Fired::Watermark, vec![1]),
            (Some(0), w0, Fired::Closed, vec![1, 3]),
            (Some(0), w1, Fired::Done, vec![12, 16]),
            (Some(1), w0, Fired::Watermark, vec![2]),
            (Some(1), w0, Fired::Closed, vec![2]),
            (Some(1), w1, Fired::Done, vec![14, 17]),
        ]
    );
    assert_eq!(late.get(), 1);
}

#[test]
fn a_slow_reducer_holds_the_sources_back() {
    const N: u64 = 200_000;
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let (gate_tx, gate) = bounded::<()>(0);
    let stream = Flow::from_iter((0..N).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }))
    .stages(2)
    .max_demand(10)
    .partition(Partitions::by_hash(|x: &u64| *x).stages(2).max_demand(10))
    .reduce(
        || vec![0u64],
        move |n: &mut Vec<u64>, _| {
            // Blocks while the test holds the gate shut (bounded).
            let _ = gate.recv_timeout(LIMIT);
            n[0] += 1;
        },
    )
    .emit_events()
    .stream()
    .unwrap();
    let (stages, rx, thread) = spawn_stream(stream);
    wait_until("the reducers to be blocked", || {
        events_in(&stages, "reduce") > 0
    });
    // Watch the source for a while: it stops at what demand allows, far below the input.
    let mut most = 0;
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until {
        most = most.max(pulled.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Demand in flight: 2 lanes x 10 from the source, 2 reducers x 2 lanes x 10 from the
    // lanes, what a lane holds for a partition that has not asked, the batch in hand.
    assert!(
        most > 0 && most <= 200,
        "the source was pulled {most} times while blocked"
    );
    let source_out = stages[0].counters().events_out;
    assert!(source_out <= 200, "the source emitted {source_out}");
    drop(gate_tx); // open the gate: every fold returns at once
    let total: u64 = rx.iter().sum();
    thread.join().unwrap().unwrap();
    assert_eq!(total, N);
    assert_eq!(pulled.load(Ordering::Relaxed), N);
}

/// Sends what it receives to a channel.
struct Collect<T>(crossbeam_channel::Sender<T>);

impl<T: Send + 'static> stageflow::Consumer for Collect<T> {
    type In = T;
    type Message = ();

    fn handle_events(
        &mut self,
        events: stageflow::Events<'_, T>,
        _: &mut stageflow::ConsumerContext<'_>,
    ) {
        for e in events {
            let _ = self.0.send(e);
        }
    }
}

#[test]
fn a_flow_runs_into_a_consumer_stage_or_on_its_own_until_stopped() {
    let (tx, rx) = crossbeam_channel::unbounded();
    let running = Flow::from_iter(0..500u64)
        .stages(2)
        .partition(Partitions::by_event().stages(2))
        .reduce(|| vec![0u64], |sum: &mut Vec<u64>, x| sum[0] += x)
        .emit_events()
        .into_consumer(Collect(tx))
        .unwrap();
    assert_eq!(running.stages().last().unwrap().name(), "flow-consumer-0");
    running.join().unwrap();
    assert_eq!(rx.try_iter().sum::<u64>(), 500 * 499 / 2);

    // Two consumers share the output.
    let (tx, rx) = crossbeam_channel::unbounded();
    let running = Flow::from_iter(0..5000u64)
        .stages(2)
        .map(|x| x + 1)
        .max_demand(10)
        .into_consumers([Collect(tx.clone()), Collect(tx)])
        .unwrap();
    running.join().unwrap();
    let mut got: Vec<u64> = rx.try_iter().collect();
    got.sort_unstable();
    assert_eq!(got, (1..=5000).collect::<Vec<u64>>());
    let none: Vec<Collect<u64>> = Vec::new();
    assert!(matches!(
        Flow::from_iter(0..1u64).into_consumers(none),
        Err(FlowError::InvalidOption {
            option: "consumers",
            ..
        })
    ));

    // An endless flow, on its own, until stopped.
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let running = Flow::from_iter(0u64..)
        .stages(2)
        .inspect(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .unwrap();
    wait_until("events to flow", || seen.load(Ordering::Relaxed) > 10_000);
    running.stop();
    running.join().unwrap();
}

/// Counts an endless flow with `count` (a count by key in the global window, whose lanes'
/// combiner keeps its counts for a whole turn), drains it once the lanes have taken 50 000
/// items, and checks that every window was emitted and that every item taken was counted: a
/// drain comes between turns, so nothing may be left in the lanes' tables. Returns the items
/// counted and the events the lanes sent.
fn drained_count(
    count: impl FnOnce(Flow<u64, u64>, Collect<Emitted<HashMap<u64, u64>>>) -> RunningFlow,
) -> (u64, u64) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let taken = Arc::new(AtomicU64::new(0));
    let counter = taken.clone();
    let flow = Flow::from_iter(0u64..).stages(2).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let running = count(flow, Collect(tx));
    let stages = running.stages().to_vec();
    wait_until("items to flow", || taken.load(Ordering::Relaxed) > 50_000);
    let report = running.drain(LIMIT);
    assert!(report.is_complete(), "{report:?}");
    let emitted: Vec<Emitted<HashMap<u64, u64>>> = rx.try_iter().collect();
    assert_eq!(emitted.len(), 2, "one global window per partition");
    assert!(emitted.iter().all(|e| e.fired == Fired::Done));
    let counted: u64 = emitted.iter().flat_map(|e| e.value.values()).sum();
    assert_eq!(counted, taken.load(Ordering::Relaxed));
    let sent = stages
        .iter()
        .filter(|s| s.name().contains("map"))
        .map(|s| s.counters().events_out)
        .sum();
    (counted, sent)
}

#[test]
fn draining_an_endless_flow_emits_its_open_windows() {
    // `partition` then `count_by_key`: its combiner counts by partition and key.
    let (counted, sent) = drained_count(|flow, sink| {
        flow.partition(Partitions::by_key(|x: &u64| x % 10).stages(2))
            .count_by_key(|x| x % 10)
            .emit_state()
            .into_consumer(sink)
            .unwrap()
    });
    // The lanes sent far fewer events than items (a pair per key and turn).
    assert!(sent * 10 < counted, "{sent} events for {counted} items");
}

#[test]
fn draining_a_combining_flow_counts_every_item_the_lanes_took() {
    // `Flow::count_by_key`: its combiner counts by key.
    let (counted, sent) = drained_count(|flow, sink| {
        flow.count_by_key(|x| x % 1000, Partitions::by_event().stages(2))
            .emit_state()
            .into_consumer(sink)
            .unwrap()
    });
    assert!(sent * 10 < counted, "{sent} events for {counted} items");
}

/// Events of the combiner-cap tests: `MANY_KEYS / 2` distinct keys, each twice.
const MANY_KEYS: u64 = 600_000;

/// `(0..MANY_KEYS).map(|x| x / 2)` on 2 lanes pulling 20 000 items a batch: tables of 80 000
/// keys and more before a turn ends, past a combiner's cap (65 536 keys).
fn many_keys() -> Flow<u64, u64> {
    Flow::from_iter(0..MANY_KEYS)
        .stages(2)
        .max_demand(20_000)
        .map(|x| x / 2)
}

/// The one window of a count of [`many_keys`]: each of its keys counted exactly twice.
fn assert_each_key_counted_twice(counts: &[Emitted<HashMap<u64, u64>>]) {
    assert_eq!(counts.len(), 1);
    let counts = &counts[0].value;
    assert_eq!(counts.len() as u64, MANY_KEYS / 2);
    assert!(
        counts.values().all(|&c| c == 2),
        "a key counted twice or lost"
    );
}

#[test]
fn a_combiner_with_more_keys_than_it_holds_counts_each_once() {
    // 300 000 distinct keys: a lane's table passes the most it holds (65 536 keys) within a
    // turn and sends its counts on early; with the rest sent at the turn's end, each key is
    // counted exactly once.
    let counts = many_keys()
        .count_by_key(|x| *x, Partitions::by_event().stages(2))
        .departition_counts()
        .collect()
        .unwrap();
    assert_each_key_counted_twice(&counts);
}

#[test]
fn a_combiner_after_partition_with_more_keys_than_it_holds_counts_each_once() {
    // 300 000 distinct keys: after `partition` a lane's table (an event and a key per entry,
    // 65 536 of them for `u64`s) sends its pairs on early within a turn; with the rest sent
    // at the turn's end, each key is counted exactly once.
    let counts = many_keys()
        .partition(Partitions::by_event().stages(2))
        .count_by_key(|x| *x)
        .departition_counts()
        .collect()
        .unwrap();
    assert_each_key_counted_twice(&counts);
}

/// A partition's counts, sorted by key.
type PartitionCounts = (Option<usize>, Vec<(u64, u64)>);

#[test]
fn a_combiner_keeps_apart_one_key_bound_for_two_partitions() {
    // Partitioned by x % 3 (a hash below the stages names the partition), counted by x % 2:
    // every count key is in every partition. The lanes' combiner counts by partition and
    // key, so each partition counts exactly its own events, in the global window (counts
    // held over a turn), in periodic windows (per batch) and in count windows (none).
    let n = 30_000u64;
    let windows = [
        ("global", Window::global()),
        ("periodic", Window::periodic(Duration::from_secs(3600))),
        ("count", Window::count(n)),
    ];
    for (name, window) in windows {
        let mut parts = Flow::from_iter(0..n)
            .stages(2)
            .partition(
                Partitions::by_hash(|x: &u64| x % 3)
                    .stages(3)
                    .window(window),
            )
            .count_by_key(|x| x % 2)
            .emit_state()
            .collect()
            .unwrap();
        parts.sort_by_key(|e| e.partition);
        let got: Vec<PartitionCounts> = parts
            .iter()
            .map(|e| (e.partition, sorted(&e.value)))
            .collect();
        let want: Vec<PartitionCounts> = (0..3u64)
            .map(|p| {
                let of = |k| (0..n).filter(|x| x % 3 == p && x % 2 == k).count() as u64;
                (Some(p as usize), vec![(0, of(0)), (1, of(1))])
            })
            .collect();
        assert_eq!(got, want, "{name} windows");
    }
}

#[cfg(feature = "http")]
#[test]
fn an_http_stream_is_a_source() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let _ = socket.read(&mut [0; 4096]);
        let mut body = String::new();
        for i in 0..300 {
            body.push_str(&format!("{{\"text\":\"tweet {i} #t{}\"}}\r\n", i % 7));
        }
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n";
        socket
            .write_all(format!("{head}{body}").as_bytes())
            .unwrap();
    });
    #[derive(serde::Deserialize)]
    struct Tweet {
        text: String,
    }
    let tweets = stageflow::http::stream(url)
        .json::<Tweet>()
        .finish_at_end(true)
        .build()
        .unwrap();
    let counts = Flow::from_producer(tweets)
        .stages(2)
        .flat_map(|t: Tweet| top_hashtags::hashtags(&t.text))
        .partition(Partitions::by_key(|t: &String| t.clone()).stages(2))
        .count_by_key(|t| t.clone())
        .departition(HashMap::new, merge_counts, |all| sorted(&all))
        .collect()
        .unwrap();
    server.join().unwrap();
    let expected: Vec<(String, u64)> = (0..7)
        .map(|k| (format!("t{k}"), if k < 300 % 7 { 43 } else { 42 }))
        .collect();
    assert_eq!(counts[0].value, expected);
}

#[test]
fn a_lane_whose_filter_drops_everything_still_stops() {
    // The lanes pull an endless iterator and emit nothing: they must still see the stop.
    let pulled = Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    let running = Flow::from_iter((0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }))
    .stages(2)
    .filter(|_| false)
    .start()
    .unwrap();
    wait_until("the lanes to pull", || {
        pulled.load(Ordering::Relaxed) > 100_000
    });
    running.stop();
    let stages = running.stages().to_vec();
    for s in &stages {
        assert!(s.join_timeout(LIMIT).is_some(), "{} still runs", s.name());
    }
}

#[test]
fn dropping_the_stream_stops_an_endless_flow() {
    let mut stream = Flow::from_iter(0u64..)
        .stages(2)
        .map(|x| x + 1)
        .stream()
        .unwrap();
    let first: Vec<u64> = stream.by_ref().take(100).collect();
    assert_eq!(first.len(), 100);
    let stages = stream.stages().to_vec();
    drop(stream);
    for s in &stages {
        assert!(s.join_timeout(LIMIT).is_some(), "{} still runs", s.name());
    }
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let check = |r: Result<Vec<u64>, FlowError>, name: &str| match r {
        Err(FlowError::InvalidOption { option, .. }) => assert_eq!(option, name),
        other => panic!("expected an invalid {name}, got {other:?}"),
    };
    check(
        Flow::from_iter(0..3u64).stages(0).map(|x| x).collect(),
        "stages",
    );
    check(
        Flow::from_iter(0..3u64).max_demand(0).collect(),
        "max_demand",
    );
    let partitioned = |p: Partitions<u64>| {
        Flow::from_iter(0..3u64)
            .partition(p)
            .reduce(|| vec![0u64], |a: &mut Vec<u64>, x| a[0] += x)
            .emit_events()
            .collect()
    };
    check(
        partitioned(Partitions::by_event().stages(0)),
        "partition stages",
    );
    check(
        partitioned(Partitions::by_event().window(Window::count(0))),
        "window",
    );
    check(
        partitioned(Partitions::by_event().max_demand(0)),
        "max_demand",
    );
    check(
        partitioned(Partitions::by_event().max_demand(5).min_demand(5)),
        "min_demand",
    );
}

#[test]
fn a_panicking_operation_fails_the_flow_naming_the_stage() {
    let r = Flow::from_iter(0..100u64)
        .stages(1)
        .map(|x| if x == 50 { panic!("boom at {x}") } else { x })
        .collect();
    match r {
        Err(FlowError::Failed { stage, reason }) => {
            assert_eq!(stage, "flow-map-0");
            assert!(reason.to_string().contains("boom at 50"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// Single-threaded: per fixed window of 10 s, the top `n` tags by count.
fn expected_tops(events: &[(u8, u8)], n: usize) -> Vec<(WindowId, Vec<(String, u64)>)> {
    let mut windows: BTreeMap<u64, HashMap<String, u64>> = BTreeMap::new();
    for &(tag, ts) in events {
        let counts = windows.entry(u64::from(ts) / 10).or_default();
        *counts.entry(format!("#{tag}")).or_insert(0) += 1;
    }
    windows
        .into_iter()
        .map(|(k, counts)| {
            let id = WindowId::Fixed {
                start: secs(k * 10),
                end: secs(k * 10 + 10),
            };
            (id, top_n(counts, n, |(_, c)| *c))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Top-N per window through lanes, partitions and a departition equals a single-threaded
    /// count of the same input, whatever the partition and lane counts.
    #[test]
    fn top_n_per_window_equals_a_single_threaded_count(
        events in prop::collection::vec((0u8..30, 0u8..60), 0..400),
        lanes in 1usize..=3,
        partitions in 1usize..=4,
        n in 1usize..=6,
        max_demand in 1usize..=50,
    ) {
        let expected = expected_tops(&events, n);
        let window = Window::fixed(secs(10), |e: &(String, u64)| secs(e.1))
            // Lanes reorder events: let no event be late, so every one is counted.
            .allowed_lateness(secs(100));
        let got = Flow::from_iter(events)
            .stages(lanes)
            .max_demand(max_demand)
            .map(|(tag, ts)| (format!("#{tag}"), u64::from(ts)))
            .partition(
                Partitions::by_key(|e: &(String, u64)| e.0.clone())
                    .stages(partitions)
                    .max_demand(max_demand)
                    .window(window),
            )
            .count_by_key(|e| e.0.clone())
            .take_top(n, |(_, c)| *c)
            .departition(Vec::new, |all: &mut Vec<(String, u64)>, part| all.extend(part), move |all| {
                top_n(all, n, |(_, c)| *c)
            })
            .collect()
            .unwrap();
        let got: Vec<(WindowId, Vec<(String, u64)>)> =
            got.into_iter().map(|e| (e.window, e.value)).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn top_hashtags_example_matches_a_single_threaded_count() {
    let options = top_hashtags::Options {
        tweets: 600,
        window: secs(3600),
        pace: None,
        print: false,
        ..top_hashtags::Options::default()
    };
    let summary = top_hashtags::run(options.clone()).unwrap();
    // One window, closed when both streams ended.
    assert_eq!(summary.windows.len(), 1, "{summary:?}");
    let (_, fired, top) = &summary.windows[0];
    assert_eq!(*fired, Fired::Done);
    assert_eq!(top, &top_hashtags::expected_top(&options));
    assert_eq!(top.len(), 25);
}

#[test]
fn top_hashtags_example_counts_every_tag_once_over_many_windows() {
    let options = top_hashtags::Options {
        tweets: 400,
        window: Duration::from_millis(20),
        pace: Some(Duration::from_millis(1)),
        top: 1000, // every tag, so the windows add up
        print: false,
        ..top_hashtags::Options::default()
    };
    let summary = top_hashtags::run(options.clone()).unwrap();
    assert!(summary.windows.len() >= 2, "{summary:?}");
    let mut total: HashMap<String, u64> = HashMap::new();
    let mut previous = None;
    for (window, _, top) in &summary.windows {
        assert!(
            previous < Some(*window),
            "windows out of order: {summary:?}"
        );
        previous = Some(*window);
        assert!(
            top.windows(2).all(|p| p[0].1 >= p[1].1),
            "not ranked: {top:?}"
        );
        for (tag, n) in top {
            *total.entry(tag.clone()).or_insert(0) += n;
        }
    }
    assert_eq!(summary.windows.last().unwrap().1, Fired::Done);
    let all = top_hashtags::expected_top(&top_hashtags::Options {
        top: 1000,
        ..options
    });
    assert_eq!(top_n(total, 1000, |(_, n)| *n), all);
}

/// The final emissions of a global window over `words` counted by key: each key in exactly
/// one partition's emission, with its whole count.
fn assert_each_key_in_one_partition(emitted: &[Emitted<HashMap<String, u64>>], words: Vec<String>) {
    let mut seen: HashMap<String, u64> = HashMap::new();
    for e in emitted {
        assert_eq!((e.window, e.fired), (WindowId::Global, Fired::Done));
        for (k, n) in &e.value {
            assert!(
                seen.insert(k.clone(), *n).is_none(),
                "{k} in two partitions"
            );
        }
    }
    let mut expected: HashMap<String, u64> = HashMap::new();
    for w in words {
        *expected.entry(w).or_insert(0) += 1;
    }
    assert_eq!(seen, expected);
}
