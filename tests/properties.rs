//! Property tests of the credit protocol over random pipelines: random max/min demand, random
//! producer behaviour (emits exactly what is asked, less and the rest later from a timer, or
//! more, which is buffered), random event counts, random consumer slowness, with or without a
//! producer-consumer in the middle, and fan-in shapes: several sources merged into one consumer,
//! and one source split over two producer-consumers that merge again (a diamond). Whatever the
//! draw: no subscription is ever sent more than it asked for, nor has more than `max_demand`
//! asked and not received; every batch fits the `max_demand - min_demand` chunk; the consumer
//! gets every event exactly once (in order along each path); the counters of every stage
//! balance; and every stage ends normally within the bounded join.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::joined;
use proptest::prelude::*;
use stageflow::dispatcher::{DemandDispatcher, Dispatcher, Outbox};
use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, Reason, SubscribeError, SubscribeOptions,
    SubscriptionId,
};

/// Protocol violations seen anywhere in one pipeline.
type Violations = Arc<Mutex<Vec<String>>>;

fn violation(v: &Violations, msg: String) {
    v.lock().unwrap().push(msg);
}

/// Per subscription, as the producer sees it.
#[derive(Default)]
struct Ledger {
    max_demand: usize,
    asked: usize,
    sent: usize,
}

/// The default dispatcher, with every ask and every send checked against the subscription's
/// credit: sent <= asked (rule 1) and asked - sent <= max_demand (the consumer never asks past
/// max_demand; since sent >= received, this bounds what the consumer asked and did not get).
struct Audited {
    stage: String,
    inner: DemandDispatcher,
    ledgers: HashMap<SubscriptionId, Ledger>,
    violations: Violations,
}

impl Audited {
    fn new(violations: &Violations) -> Audited {
        Audited {
            stage: String::new(),
            inner: DemandDispatcher::new(),
            ledgers: HashMap::new(),
            violations: violations.clone(),
        }
    }

    /// Runs `f` on the inner dispatcher with an outbox that records its sends, checks them,
    /// and forwards everything to the producer's outbox.
    fn through<R>(
        &mut self,
        out: &mut Outbox<'_, u64>,
        f: impl FnOnce(&mut DemandDispatcher, &mut Outbox<'_, u64>) -> R,
    ) -> R {
        let mut sends: Vec<(SubscriptionId, Vec<u64>)> = Vec::new();
        let (r, discarded, demand) = {
            let mut record = |sub, batch| sends.push((sub, batch));
            let mut inner_out = Outbox::new(&mut record);
            let r = f(&mut self.inner, &mut inner_out);
            (r, inner_out.discarded(), inner_out.upstream_demand())
        };
        let mut seen = Vec::new();
        for (sub, batch) in sends {
            if seen.contains(&sub) {
                violation(
                    &self.violations,
                    format!("{}: two messages to {sub} in one call", self.stage),
                );
            }
            seen.push(sub);
            match self.ledgers.get_mut(&sub) {
                Some(l) => {
                    l.sent += batch.len();
                    if l.sent > l.asked {
                        violation(
                            &self.violations,
                            format!(
                                "{}: sent {} to {sub}, which asked {}",
                                self.stage, l.sent, l.asked
                            ),
                        );
                    }
                }
                None => violation(
                    &self.violations,
                    format!("{}: sent to unknown {sub}", self.stage),
                ),
            }
            out.send(sub, batch);
        }
        out.discard(discarded);
        out.ask_upstream(demand);
        r
    }
}

impl Dispatcher<u64> for Audited {
    fn attach(&mut self, stage: &str) {
        self.stage = stage.to_owned();
        Dispatcher::<u64>::attach(&mut self.inner, stage);
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        self.ledgers.insert(
            sub,
            Ledger {
                max_demand: options.get_max_demand(),
                ..Ledger::default()
            },
        );
        Dispatcher::<u64>::subscribe(&mut self.inner, sub, options)
    }

    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, u64>) -> usize {
        let r = self.through(out, |d, o| d.cancel(sub, o));
        self.ledgers.remove(&sub);
        r
    }

    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, u64>) -> usize {
        match self.ledgers.get_mut(&sub) {
            Some(l) => {
                l.asked += n;
                if l.asked - l.sent.min(l.asked) > l.max_demand {
                    violation(
                        &self.violations,
                        format!(
                            "{}: {sub} has asked {} and been sent {}, beyond max_demand {}",
                            self.stage, l.asked, l.sent, l.max_demand
                        ),
                    );
                }
            }
            None => violation(
                &self.violations,
                format!("{}: ask from unknown {sub}", self.stage),
            ),
        }
        self.through(out, |d, o| d.ask(sub, n, o))
    }

    fn dispatch(&mut self, events: &mut Vec<u64>, out: &mut Outbox<'_, u64>) {
        self.through(out, |d, o| d.dispatch(events, o))
    }
}

/// How the source answers `handle_demand(n)`.
#[derive(Clone, Copy, Debug)]
enum Emission {
    /// Exactly `n`.
    Exact,
    /// About half now; the rest from a timer a little later (it buffers the demand itself).
    Less,
    /// `2n`: the surplus waits in the buffer.
    More,
}

/// Emits 0..total, answering demand by its `Emission`, once told to `Go`: demand that arrives
/// before is remembered, so the whole pipeline is subscribed before anything flows.
struct Source {
    next: u64,
    total: u64,
    emission: Emission,
    started: bool,
    /// Demand received before `Go`.
    early: usize,
    /// `Emission::Less`: demand not yet met.
    owed: usize,
    timer_armed: bool,
}

enum Msg {
    Go,
    Flush,
}

impl Source {
    fn emit(&mut self, n: usize, ctx: &mut Context<'_, u64, Msg>) -> usize {
        let end = (self.next + n as u64).min(self.total);
        let k = (end - self.next) as usize;
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.total {
            ctx.finish();
        }
        k
    }

    fn serve(&mut self, n: usize, ctx: &mut Context<'_, u64, Msg>) {
        match self.emission {
            Emission::Exact => {
                self.emit(n, ctx);
            }
            Emission::More => {
                self.emit(2 * n, ctx);
            }
            Emission::Less => {
                let now = n.div_ceil(2);
                let k = self.emit(now, ctx);
                self.owed += n - k;
                if self.owed > 0 && !self.timer_armed && self.next < self.total {
                    self.timer_armed = true;
                    ctx.send_after(Msg::Flush, Duration::from_micros(50));
                }
            }
        }
    }
}

impl Producer for Source {
    type Out = u64;
    type Message = Msg;

    fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u64, Msg>) {
        if self.started {
            self.serve(n, ctx);
        } else {
            self.early += n;
        }
    }

    fn handle_message(&mut self, msg: Msg, ctx: &mut Context<'_, u64, Msg>) {
        match msg {
            Msg::Go => {
                self.started = true;
                let early = std::mem::take(&mut self.early);
                if early > 0 {
                    self.serve(early, ctx);
                }
            }
            Msg::Flush => {
                self.timer_armed = false;
                let owed = std::mem::take(&mut self.owed);
                self.emit(owed, ctx);
            }
        }
    }
}

/// Keeps every event and checks every batch against its chunk size.
struct Collector {
    chunk: usize,
    delay: Duration,
    got: Arc<Mutex<Vec<u64>>>,
    violations: Violations,
}

impl Consumer for Collector {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let n = events.len();
        if n == 0 || n > self.chunk {
            violation(
                &self.violations,
                format!("a batch of {n} events; the chunk is {}", self.chunk),
            );
        }
        self.got.lock().unwrap().extend(events);
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    max: usize,
    min: usize,
    total: u64,
    emission: Emission,
    delay: Duration,
    /// The producer-consumer's own (max, min) upstream, if there is one.
    middle: Option<(usize, usize)>,
    /// Fan-in: how many sources feed the sink (each through its own producer-consumer when
    /// `middle` is set), or, with `diamond`, how the one source splits.
    fan_in: FanIn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FanIn {
    /// One path.
    None,
    /// This many sources, each emitting its own range, merged in the sink.
    Merge(usize),
    /// One source, two producer-consumers (the default dispatcher splits), one sink.
    Diamond,
}

/// Where source `i` starts counting.
fn base(i: usize) -> u64 {
    i as u64 * 1_000_000
}

fn source(case: &Case, i: usize, violations: &Violations) -> stageflow::ProducerHandle<Source> {
    stageflow::producer(Source {
        next: base(i),
        total: base(i) + case.total,
        emission: case.emission,
        started: false,
        early: 0,
        owed: 0,
        timer_armed: false,
    })
    .name(format!("source-{i}"))
    .dispatcher(Audited::new(violations))
    .spawn()
    .expect("spawn source")
}

fn pass(
    name: String,
    upstream: &stageflow::ProducerHandle<Source>,
    (max, min): (usize, usize),
    violations: &Violations,
) -> stageflow::ProducerConsumerHandle<common::Pass> {
    stageflow::producer_consumer(common::Pass)
        .name(name)
        .dispatcher(Audited::new(violations))
        .subscribe_to(
            upstream,
            SubscribeOptions::new().max_demand(max).min_demand(min),
        )
        .unwrap()
        .spawn()
        .unwrap()
}

/// Runs one pipeline; returns the problems found, empty if none.
fn run(case: &Case) -> Vec<String> {
    let violations: Violations = Arc::default();
    let got = Arc::new(Mutex::new(Vec::new()));
    let n_sources = match case.fan_in {
        FanIn::Merge(k) => k,
        FanIn::None | FanIn::Diamond => 1,
    };
    let sources: Vec<_> = (0..n_sources)
        .map(|i| source(case, i, &violations))
        .collect();
    let collector = Collector {
        chunk: case.max - case.min,
        delay: case.delay,
        got: got.clone(),
        violations: violations.clone(),
    };
    let options = SubscribeOptions::new()
        .max_demand(case.max)
        .min_demand(case.min);
    let mut middles = Vec::new();
    if case.fan_in == FanIn::Diamond {
        let m = case.middle.unwrap_or((case.max, case.min));
        for k in 0..2 {
            middles.push(pass(format!("pass-{k}"), &sources[0], m, &violations));
        }
    } else if let Some(m) = case.middle {
        for (i, s) in sources.iter().enumerate() {
            middles.push(pass(format!("pass-{i}"), s, m, &violations));
        }
    }
    let mut sink = stageflow::consumer(collector).name("sink");
    if middles.is_empty() {
        for s in &sources {
            sink = sink.subscribe_to(s, options.clone()).unwrap();
        }
    } else {
        for m in &middles {
            sink = sink.subscribe_to(m, options.clone()).unwrap();
        }
    }
    let sink = sink.spawn().unwrap();
    for s in &sources {
        s.cast(Msg::Go).unwrap();
    }
    let mut outcomes = vec![("sink".to_string(), joined(&sink))];
    for m in &middles {
        outcomes.push((m.name().to_string(), joined(m)));
    }
    for s in &sources {
        outcomes.push((s.name().to_string(), joined(s)));
    }

    let mut problems = violations.lock().unwrap().clone();
    for (stage, outcome) in outcomes {
        if outcome != Reason::Normal {
            problems.push(format!("{stage} ended with {outcome}"));
        }
    }
    let got = got.lock().unwrap();
    for i in 0..n_sources {
        // Along each path, in order; with a diamond, each pass keeps its own order, so the
        // whole is only checked as a set.
        let mut mine: Vec<u64> = got
            .iter()
            .copied()
            .filter(|&e| e >= base(i) && e < base(i + 1))
            .collect();
        if case.fan_in == FanIn::Diamond {
            mine.sort_unstable();
        }
        let want: Vec<u64> = (base(i)..base(i) + case.total).collect();
        if mine != want {
            problems.push(format!(
                "source {i}: expected {}..{} once each, in order; got {} events, first out of \
                 place at {:?}",
                base(i),
                base(i) + case.total,
                mine.len(),
                mine.iter().zip(&want).position(|(a, b)| a != b)
            ));
        }
    }
    if got.len() as u64 != n_sources as u64 * case.total {
        problems.push(format!("{} events in all", got.len()));
    }
    for s in &sources {
        let c = s.counters();
        if c.events_out != case.total || c.discarded != 0 {
            problems.push(format!("{} counters {c:?}", s.name()));
        }
    }
    for m in &middles {
        let c = m.counters();
        if c.events_in != c.events_out + c.discarded + c.buffered || c.discarded != 0 {
            problems.push(format!("{} counters do not balance: {c:?}", m.name()));
        }
    }
    problems
}

fn demand_options() -> impl Strategy<Value = (usize, usize)> {
    (1usize..=64).prop_flat_map(|max| (Just(max), 0..max))
}

fn cases() -> impl Strategy<Value = Case> {
    (
        demand_options(),
        0u64..2000,
        prop_oneof![
            Just(Emission::Exact),
            Just(Emission::Less),
            Just(Emission::More)
        ],
        prop_oneof![Just(0u64), 1u64..5],
        proptest::option::of(demand_options()),
        prop_oneof![
            Just(FanIn::None),
            (2usize..=3).prop_map(FanIn::Merge),
            Just(FanIn::Diamond)
        ],
    )
        .prop_map(
            |((max, min), total, emission, delay_us, middle, fan_in)| Case {
                max,
                min,
                total,
                emission,
                delay: Duration::from_micros(delay_us),
                middle,
                fan_in,
            },
        )
}

#[test]
fn smoke() {
    for emission in [Emission::Exact, Emission::Less, Emission::More] {
        for middle in [None, Some((7, 3))] {
            let case = Case {
                max: 10,
                min: 5,
                total: 100,
                emission,
                delay: Duration::ZERO,
                middle,
                fan_in: FanIn::None,
            };
            assert_eq!(run(&case), Vec::<String>::new(), "{case:?}");
        }
    }
}

#[test]
fn lock_step_through_a_producer_consumer() {
    let case = Case {
        max: 1,
        min: 0,
        total: 300,
        emission: Emission::Less,
        delay: Duration::from_micros(2),
        middle: Some((1, 0)),
        fan_in: FanIn::None,
    };
    assert_eq!(run(&case), Vec::<String>::new(), "{case:?}");
}

#[test]
fn fan_in_shapes() {
    for fan_in in [FanIn::Merge(3), FanIn::Diamond] {
        for middle in [None, Some((7, 3))] {
            let case = Case {
                max: 10,
                min: 5,
                total: 500,
                emission: Emission::Less,
                delay: Duration::ZERO,
                middle,
                fan_in,
            };
            assert_eq!(run(&case), Vec::<String>::new(), "{case:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn credit_bound_exactly_once_in_order_and_termination(case in cases()) {
        let problems = run(&case);
        prop_assert!(problems.is_empty(), "{:?}: {:?}", case, problems);
    }
}
