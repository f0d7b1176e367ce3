//! Event-time windows at any parallelism: a reducer's watermark is the least event time over
//! its lanes, so interleaving lanes never makes an event late. Hundreds of seeded runs through
//! several mapper lanes and partitions against a single-threaded count: disorder within the
//! allowed lateness loses nothing, and disorder beyond it is counted in `late_events`, exactly;
//! a lane that has sent nothing holds the windows open until the input ends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use stageflow::flow::{Emitted, Fired, Flow, FlowError, Partitions, Window, WindowId};
use stageflow::{Context, Producer, StageRef, Upstream};

/// The longest any test waits for anything.
const LIMIT: Duration = Duration::from_secs(30);

/// The windows of every test: 1 s of event time, 500 ms of allowed lateness.
const SIZE_MS: u64 = 1000;
const LATENESS_MS: u64 = 500;
/// How far back an event may be from the latest before it, in the inputs "within lateness".
const DISORDER_MS: u64 = 300;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A small seeded generator (xorshift64*), so that every run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event: (key, timestamp in milliseconds).
type Ev = (u64, u64);

/// `n` events from `from_ms`, the `i`th at `i * step_ms` plus a jitter of up to
/// [`DISORDER_MS`]: no event is more than `DISORDER_MS` older than any event before it.
fn disordered(rng: &mut Rng, first_key: u64, from_ms: u64, n: u64, step_ms: u64) -> Vec<Ev> {
    (0..n)
        .map(|i| {
            let at = from_ms + i * step_ms + rng.below(DISORDER_MS + 1);
            (first_key + i, at)
        })
        .collect()
}

/// Window index -> (events, sum of timestamps): what a single thread counts.
type Totals = BTreeMap<u64, (u64, u64)>;

fn expected(events: &[Ev]) -> Totals {
    let mut totals = Totals::new();
    for &(_, at) in events {
        let t = totals.entry(at / SIZE_MS).or_default();
        t.0 += 1;
        t.1 += at;
    }
    totals
}

fn index_of(window: WindowId) -> u64 {
    match window {
        WindowId::Fixed { start, .. } => start.as_millis() as u64 / SIZE_MS,
        other => panic!("expected a fixed window, got {other:?}"),
    }
}

fn window() -> Window<Ev> {
    Window::fixed(ms(SIZE_MS), |e: &Ev| ms(e.1)).allowed_lateness(ms(LATENESS_MS))
}

/// A producer the test feeds by hand.
enum Feed<T> {
    Push(Vec<T>),
    End,
}

struct FedBy<T>(std::marker::PhantomData<fn(T)>);

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

fn feed<T: Send + 'static>() -> stageflow::ProducerHandle<FedBy<T>> {
    stageflow::producer(FedBy(std::marker::PhantomData))
        .spawn()
        .unwrap()
}

/// Runs a flow's stream on a helper thread; its items arrive on the receiver.
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

/// Waits until `cond` holds, failing clearly after [`LIMIT`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {LIMIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Events received by the flow's reducers.
fn at_reducers(stages: &[StageRef]) -> u64 {
    stages
        .iter()
        .filter(|s| s.name().contains("reduce"))
        .map(|s| s.counters().events_in)
        .sum()
}

/// One seeded run through several lanes and partitions, merged by a departition: the totals
/// of every window, and how many events were late.
fn run_merged(seed: u64) -> (Totals, Totals, u64) {
    let mut rng = Rng::new(seed);
    let lanes = 2 + rng.below(3) as usize; // 2..=4
    let partitions = 1 + rng.below(3) as usize; // 1..=3
    let max_demand = [4, 50, 300, 1000][rng.below(4) as usize];
    let n = 1500 + rng.below(1000);
    let events = disordered(&mut rng, 0, 0, n, 4);
    let expected = expected(&events);
    let window = window();
    let late = window.late_events();
    let emitted = Flow::from_iter(events)
        .stages(lanes)
        .max_demand(max_demand)
        .partition(
            Partitions::by_hash(|e: &Ev| e.0)
                .stages(partitions)
                .max_demand(max_demand)
                .window(window),
        )
        .reduce(
            || (0u64, 0u64),
            |t: &mut (u64, u64), e| *t = (t.0 + 1, t.1 + e.1),
        )
        .departition(
            || (0u64, 0u64),
            |all: &mut (u64, u64), t| *all = (all.0 + t.0, all.1 + t.1),
            |all| all,
        )
        .collect()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut got = Totals::new();
    let mut previous = None;
    for e in emitted {
        assert!(e.fired.is_final(), "seed {seed}: {e:?}");
        let k = index_of(e.window);
        assert!(previous < Some(k), "seed {seed}: windows out of order");
        previous = Some(k);
        got.insert(k, e.value);
    }
    (got, expected, late.get())
}

#[test]
fn smoke() {
    let (got, expected, late) = run_merged(1);
    assert_eq!(late, 0);
    assert_eq!(got, expected);
}

#[test]
fn disorder_within_the_lateness_is_exact_at_any_parallelism_in_every_seeded_run() {
    const RUNS: u64 = 300;
    let started = Instant::now();
    for seed in 0..RUNS {
        let (got, expected, late) = run_merged(seed);
        assert_eq!(late, 0, "seed {seed}: events counted late");
        assert_eq!(got, expected, "seed {seed}: wrong totals");
    }
    eprintln!("{RUNS} seeded runs in {:?}", started.elapsed());
}

#[test]
fn the_default_lanes_with_default_demand_are_exact() {
    // The flow: one mapper stage per core, default demand, a single source disordered
    // within the lateness.
    for seed in 0..20 {
        let mut rng = Rng::new(1000 + seed);
        let events = disordered(&mut rng, 0, 0, 5000, 2);
        let expected = expected(&events);
        let window = window();
        let late = window.late_events();
        let emitted = Flow::from_iter(events)
            .partition(Partitions::by_hash(|e: &Ev| e.0).window(window))
            .reduce(
                || (0u64, 0u64),
                |t: &mut (u64, u64), e| *t = (t.0 + 1, t.1 + e.1),
            )
            .departition(
                || (0u64, 0u64),
                |all: &mut (u64, u64), t| *all = (all.0 + t.0, all.1 + t.1),
                |all| all,
            )
            .collect()
            .unwrap();
        let got: Totals = emitted
            .into_iter()
            .map(|e| (index_of(e.window), e.value))
            .collect();
        assert_eq!(late.get(), 0, "seed {seed}");
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn a_lane_that_has_sent_nothing_holds_the_windows_until_the_input_ends() {
    let source = feed::<Ev>();
    let window = Window::fixed(ms(SIZE_MS), |e: &Ev| ms(e.1));
    let late = window.late_events();
    let stream = Flow::from_stages([source.source()])
        .stages(2)
        .max_demand(100)
        .partition(Partitions::by_hash(|_: &Ev| 0).stages(1).window(window))
        .reduce(
            || (0u64, 0u64),
            |t: &mut (u64, u64), e| *t = (t.0 + 1, t.1 + e.1),
        )
        .emit_state()
        .stream()
        .unwrap();
    let (stages, rx, thread) = spawn_stream(stream);
    // 50 events over 5 s: one lane has the demand for all of them, the other gets none.
    let events: Vec<Ev> = (0..50).map(|i| (i, i * 100)).collect();
    source.cast(Feed::Push(events.clone())).unwrap();
    wait_until("the reducer to receive every event", || {
        at_reducers(&stages) == 50
    });
    // The lane that has sent nothing may still send anything: no window closes.
    if let Ok(e) = rx.recv_timeout(Duration::from_millis(50)) {
        panic!("expected nothing while a lane holds event time, got {e:?}");
    }
    source.cast(Feed::End).unwrap();
    // At the end the lanes end one by one: the one that sent nothing may end first, and then
    // the watermark is the other's, so a window may close before the input's end is seen.
    let got: Totals = rx
        .iter()
        .map(|e| {
            assert!(matches!(e.fired, Fired::Done | Fired::Closed), "{e:?}");
            (index_of(e.window), e.value)
        })
        .collect();
    thread.join().unwrap().unwrap();
    assert_eq!(got, expected(&events));
    assert_eq!(late.get(), 0);
}

/// Reads what has arrived so far: the final emissions into `finals` (per partition and
/// window), and per partition the highest window closed.
fn take_arrived(
    rx: &Receiver<Emitted<(u64, u64)>>,
    finals: &mut BTreeMap<(usize, u64), (u64, u64)>,
    closed: &mut BTreeMap<usize, u64>,
) {
    for e in rx.try_iter() {
        record(e, finals, closed);
    }
}

fn record(
    e: Emitted<(u64, u64)>,
    finals: &mut BTreeMap<(usize, u64), (u64, u64)>,
    closed: &mut BTreeMap<usize, u64>,
) {
    let p = e.partition.expect("a partition's emission");
    let k = index_of(e.window);
    if e.fired == Fired::Closed {
        let c = closed.entry(p).or_insert(k);
        *c = (*c).max(k);
    }
    if e.fired.is_final() {
        assert!(
            finals.insert((p, k), e.value).is_none(),
            "window {k} of partition {p} emitted twice"
        );
    }
}

/// One seeded run with disorder beyond the lateness: returns (late events expected, counted)
/// after checking every window's totals.
fn run_with_late_events(seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let lanes = 2 + rng.below(3) as usize; // 2..=4
    let partitions = 1 + rng.below(3); // 1..=3
    let window = window();
    let late = window.late_events();
    let source = feed::<Ev>();
    let stream = Flow::from_stages([source.source()])
        .stages(lanes)
        .max_demand(8)
        .partition(
            Partitions::by_hash(move |e: &Ev| e.0 % partitions)
                .stages(partitions as usize)
                .max_demand(8)
                .window(window),
        )
        .reduce(
            || (0u64, 0u64),
            |t: &mut (u64, u64), e| *t = (t.0 + 1, t.1 + e.1),
        )
        .emit_state()
        .stream()
        .unwrap();
    let (stages, rx, thread) = spawn_stream(stream);
    let mut finals = BTreeMap::new();
    let mut closed = BTreeMap::new();
    let mut counted: Vec<Ev> = Vec::new();
    let mut pushed = 0u64;
    let mut push = |events: Vec<Ev>| {
        pushed += events.len() as u64;
        source.cast(Feed::Push(events)).unwrap();
        pushed
    };

    // Within the lateness: 0 to about 4.3 s, consecutive keys, so every window has events of
    // every partition.
    let body = disordered(&mut rng, 0, 0, 1000, 4);
    counted.extend(&body);
    push(body);
    // Then event time at 5 s, one event per partition at a time, until every partition has
    // closed window 3 (that is, every lane has brought each partition past 4.5 s): the lanes
    // share the events by demand, so each chunk goes to one lane and the lanes take turns.
    let closed_everywhere = |closed: &BTreeMap<usize, u64>| {
        (0..partitions as usize).all(|p| closed.get(&p).is_some_and(|&k| k >= 3))
    };
    let deadline = Instant::now() + LIMIT;
    let mut key = 1000;
    while !closed_everywhere(&closed) {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: window 3 not closed in every partition within {LIMIT:?}: {closed:?}"
        );
        let chunk: Vec<Ev> = (key..key + partitions).map(|k| (k, 5000)).collect();
        key += partitions;
        counted.extend(&chunk);
        let total = push(chunk);
        wait_until("the reducers to receive every event", || {
            at_reducers(&stages) == total
        });
        take_arrived(&rx, &mut finals, &mut closed);
    }

    // Beyond the lateness: events of windows 0 to 3, closed in every partition, mixed into
    // events within the lateness from 5 s on. Exactly those are late, whichever lane and
    // partition they take.
    let mut tail = disordered(&mut rng, key, 5000, 1000, 4);
    counted.extend(&tail);
    let too_late = 1 + rng.below(100);
    for i in 0..too_late {
        let at = rng.below(4 * SIZE_MS);
        let pos = rng.below(tail.len() as u64 + 1) as usize;
        tail.insert(pos, (key + 1000 + i, at));
    }
    push(tail);
    source.cast(Feed::End).unwrap();
    for e in rx.iter() {
        record(e, &mut finals, &mut closed);
    }
    thread
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));

    let mut got = Totals::new();
    for ((_, k), (n, sum)) in finals {
        let t = got.entry(k).or_default();
        *t = (t.0 + n, t.1 + sum);
    }
    assert_eq!(got, expected(&counted), "seed {seed}: wrong totals");
    (too_late, late.get())
}

#[test]
fn disorder_beyond_the_lateness_is_counted_exactly_in_every_seeded_run() {
    const RUNS: u64 = 100;
    let started = Instant::now();
    for seed in 0..RUNS {
        let (expected, counted) = run_with_late_events(seed);
        assert_eq!(counted, expected, "seed {seed}: late events");
    }
    eprintln!("{RUNS} seeded runs in {:?}", started.elapsed());
}
