//! A property test over random topologies: 1–3 producers, 0–2 producer-consumers, 1–4
//! consumers, each dispatcher. Every dispatcher is audited: no subscription is ever sent more
//! than it asked for, and no consumer gets two messages from one dispatch. With the demand and
//! partition dispatchers every event arrives exactly once; with broadcast every consumer sees
//! the same sequence; every stage ends within the deadline. And `Topology::drain` waits for a
//! stage it had to stop no longer than its `stop_wait`.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{block, Blocking, LIMIT};
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use proptest::prelude::*;
use stageflow::dispatcher::{
    BroadcastDispatcher, DemandDispatcher, Dispatcher, Outbox, PartitionDispatcher,
};
use stageflow::{
    CancelMode, Consumer, ConsumerContext, Context, Events, Producer, ProducerDemand, Reason,
    StageRef, SubscribeError, SubscribeOptions, SubscriptionId, Topology, Upstream,
};

type Violations = Arc<Mutex<Vec<String>>>;

/// Wraps a dispatcher and checks every message it sends against what was asked.
struct Audited<D> {
    inner: D,
    stage: String,
    ledger: HashMap<SubscriptionId, (u64, u64)>,
    violations: Violations,
}

impl<D: Dispatcher<u64>> Audited<D> {
    fn new(inner: D, violations: &Violations) -> Audited<D> {
        Audited {
            inner,
            stage: String::new(),
            ledger: HashMap::new(),
            violations: violations.clone(),
        }
    }

    fn through<R>(
        &mut self,
        out: &mut Outbox<'_, u64>,
        f: impl FnOnce(&mut D, &mut Outbox<'_, u64>) -> R,
    ) -> R {
        let ledger = &mut self.ledger;
        let violations = &self.violations;
        let stage = &self.stage;
        let mut this_call = HashSet::new();
        let (r, discarded, demand) = {
            let mut check = |sub: SubscriptionId, batch: Vec<u64>| {
                let (asked, sent) = ledger.entry(sub).or_insert((0, 0));
                *sent += batch.len() as u64;
                if *sent > *asked {
                    violations.lock().push(format!(
                        "{stage}: sent {sent} events to {sub}, which asked for {asked}"
                    ));
                }
                if !this_call.insert(sub) {
                    violations
                        .lock()
                        .push(format!("{stage}: two messages to {sub} in one call"));
                }
                out.send(sub, batch);
            };
            let mut inner_out = Outbox::new(&mut check);
            let r = f(&mut self.inner, &mut inner_out);
            (r, inner_out.discarded(), inner_out.upstream_demand())
        };
        out.discard(discarded);
        out.ask_upstream(demand);
        r
    }
}

impl<D: Dispatcher<u64>> Dispatcher<u64> for Audited<D> {
    fn attach(&mut self, stage: &str) {
        self.stage = stage.to_owned();
        self.inner.attach(stage);
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        self.inner.subscribe(sub, options)?;
        self.ledger.insert(sub, (0, 0));
        Ok(())
    }

    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, u64>) -> usize {
        let r = self.through(out, |d, o| d.cancel(sub, o));
        self.ledger.remove(&sub);
        r
    }

    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, u64>) -> usize {
        self.ledger.entry(sub).or_insert((0, 0)).0 += n as u64;
        self.through(out, |d, o| d.ask(sub, n, o))
    }

    fn dispatch(&mut self, events: &mut Vec<u64>, out: &mut Outbox<'_, u64>) {
        self.through(out, |d, o| d.dispatch(events, o))
    }

    fn held(&self) -> usize {
        self.inner.held()
    }
}

/// Emits `base + 0 .. base + limit`, exactly what is asked, then finishes.
struct Source {
    next: u64,
    end: u64,
}

impl Producer for Source {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        let end = (self.next + demand as u64).min(self.end);
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.end {
            ctx.finish();
        }
    }
}

/// Reports every event with the consumer's index; may be slow.
struct Sink {
    index: usize,
    delay: Duration,
    tx: Sender<(usize, u64)>,
}

impl Consumer for Sink {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        for x in events {
            let _ = self.tx.send((self.index, x));
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Demand,
    Broadcast,
    Partition,
}

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    producers: Vec<u64>,
    pcs: usize,
    consumers: Vec<u64>,
    max: usize,
    min: usize,
}

const SPAN: u64 = 1_000_000;

fn dispatcher(kind: Kind, consumers: usize, v: &Violations) -> Box<dyn Dispatcher<u64>> {
    match kind {
        Kind::Demand => Box::new(Audited::new(DemandDispatcher::new(), v)),
        Kind::Broadcast => Box::new(Audited::new(BroadcastDispatcher::new(), v)),
        Kind::Partition => {
            let n = consumers as u64;
            Box::new(Audited::new(
                PartitionDispatcher::new(consumers, move |x: &u64| Some(x % n)).unwrap(),
                v,
            ))
        }
    }
}

/// Builds and runs the topology; returns each consumer's events, or the failures seen.
fn run(case: &Case) -> Result<Vec<Vec<u64>>, String> {
    let v: Violations = Arc::default();
    let opts = SubscribeOptions::new()
        .max_demand(case.max)
        .min_demand(case.min)
        .cancel(CancelMode::Transient);
    let n_consumers = case.consumers.len();
    let mut stages: Vec<StageRef> = Vec::new();
    let mut producers = Vec::new();
    for (i, &count) in case.producers.iter().enumerate() {
        let base = i as u64 * SPAN;
        let kind = if case.pcs == 0 {
            case.kind
        } else {
            Kind::Demand
        };
        let p = stageflow::producer(Source {
            next: base,
            end: base + count,
        })
        .dispatcher(dispatcher(kind, n_consumers, &v))
        .demand(ProducerDemand::Accumulate)
        .spawn()
        .map_err(|e| e.to_string())?;
        stages.push(p.stage_ref());
        producers.push(p);
    }
    let mut last: Vec<stageflow::Source<u64>> = producers.iter().map(|p| p.source()).collect();
    if case.pcs > 0 {
        let mut pcs = Vec::new();
        for _ in 0..case.pcs {
            let mut b = stageflow::producer_consumer(common::Pass).dispatcher(dispatcher(
                case.kind,
                n_consumers,
                &v,
            ));
            for src in &last {
                b = b
                    .subscribe_to(src, opts.clone())
                    .map_err(|e| e.to_string())?;
            }
            let pc = b.spawn().map_err(|e| e.to_string())?;
            stages.push(pc.stage_ref());
            pcs.push(pc.source());
        }
        last = pcs;
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    for (index, &delay) in case.consumers.iter().enumerate() {
        let mut b = stageflow::consumer(Sink {
            index,
            delay: Duration::from_micros(delay),
            tx: tx.clone(),
        });
        for src in &last {
            let o = match case.kind {
                Kind::Partition => opts.clone().partition(index as u64),
                _ => opts.clone(),
            };
            b = b.subscribe_to(src, o).map_err(|e| e.to_string())?;
        }
        stages.push(b.spawn().map_err(|e| e.to_string())?.stage_ref());
    }
    drop(tx);
    drop(last);
    for p in &producers {
        p.set_demand(ProducerDemand::Forward)
            .map_err(|e| e.to_string())?;
    }
    let total: u64 = case.producers.iter().sum();
    let expected = match case.kind {
        Kind::Broadcast => total * n_consumers as u64,
        _ => total,
    };
    let mut got = vec![Vec::new(); n_consumers];
    let deadline = Instant::now() + LIMIT;
    for _ in 0..expected {
        let (i, x) = rx.recv_deadline(deadline).map_err(|_| {
            format!(
                "only {} of {expected} events arrived",
                got.iter().map(Vec::len).sum::<usize>()
            )
        })?;
        got[i].push(x);
    }
    for s in &stages {
        s.stop();
    }
    for s in &stages {
        if s.join_timeout(LIMIT).is_none() {
            return Err(format!("stage {} did not end", s.name()));
        }
    }
    if let Ok((i, x)) = rx.try_recv() {
        return Err(format!("consumer {i} got an extra event {x}"));
    }
    let violations = v.lock().clone();
    if !violations.is_empty() {
        return Err(violations.join("; "));
    }
    Ok(got)
}

fn all_events(case: &Case) -> Vec<u64> {
    let mut all: Vec<u64> = case
        .producers
        .iter()
        .enumerate()
        .flat_map(|(i, &count)| (0..count).map(move |k| i as u64 * SPAN + k))
        .collect();
    all.sort_unstable();
    all
}

/// Events of each producer, in the order one consumer got them.
fn per_source(events: &[u64]) -> HashMap<u64, Vec<u64>> {
    let mut by: HashMap<u64, Vec<u64>> = HashMap::new();
    for &x in events {
        by.entry(x / SPAN).or_default().push(x);
    }
    by
}

fn check(case: &Case, got: &[Vec<u64>]) -> Result<(), String> {
    let all = all_events(case);
    match case.kind {
        Kind::Demand | Kind::Partition => {
            let mut union: Vec<u64> = got.iter().flatten().copied().collect();
            union.sort_unstable();
            if union != all {
                return Err("events lost or duplicated".into());
            }
            if case.pcs <= 1 {
                for events in got {
                    for (src, seq) in per_source(events) {
                        if seq.windows(2).any(|w| w[0] > w[1]) {
                            return Err(format!("events of producer {src} out of order"));
                        }
                    }
                }
            }
            if case.kind == Kind::Partition {
                for (i, events) in got.iter().enumerate() {
                    if let Some(x) = events.iter().find(|&&x| x % got.len() as u64 != i as u64) {
                        return Err(format!("event {x} reached partition {i}"));
                    }
                }
            }
        }
        Kind::Broadcast => {
            for events in got {
                let mut sorted = events.clone();
                sorted.sort_unstable();
                if sorted != all {
                    return Err("a consumer missed or duplicated broadcast events".into());
                }
            }
            if case.pcs == 1 || (case.pcs == 0 && case.producers.len() == 1) {
                if got.windows(2).any(|w| w[0] != w[1]) {
                    return Err("consumers saw different sequences".into());
                }
            } else if case.pcs == 0 {
                let first = per_source(&got[0]);
                if got.iter().any(|g| per_source(g) != first) {
                    return Err("consumers saw different per-producer sequences".into());
                }
            }
        }
    }
    Ok(())
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Kind::Demand),
            Just(Kind::Broadcast),
            Just(Kind::Partition)
        ],
        prop::collection::vec(0u64..400, 1..=3),
        0usize..=2,
        prop::collection::vec(prop_oneof![Just(0u64), 1u64..30], 1..=4),
        1usize..=24,
    )
        .prop_flat_map(|(kind, producers, pcs, consumers, max)| {
            // Broadcast through two producer-consumers has no single order to compare.
            let pcs = if kind == Kind::Broadcast {
                pcs.min(1)
            } else {
                pcs
            };
            (0..max).prop_map(move |min| Case {
                kind,
                producers: producers.clone(),
                pcs,
                consumers: consumers.clone(),
                max,
                min,
            })
        })
}

#[test]
fn smoke() {
    for kind in [Kind::Demand, Kind::Broadcast, Kind::Partition] {
        let case = Case {
            kind,
            producers: vec![100, 50],
            pcs: 1,
            consumers: vec![0, 5],
            max: 8,
            min: 3,
        };
        let got = run(&case).unwrap();
        check(&case, &got).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_topologies_keep_the_protocol(case in cases()) {
        let got = run(&case).map_err(TestCaseError::fail)?;
        check(&case, &got).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn a_drain_waits_for_a_stage_it_stopped_no_longer_than_its_stop_wait() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    const WAIT: Duration = Duration::from_millis(200);
    let p = stageflow::producer(Blocking { next: 0 })
        .name("busy")
        .spawn()
        .unwrap();
    let gate = block(&p);
    let t = Instant::now();
    let report = Topology::new().with(&p).stop_wait(WAIT).drain(TIMEOUT);
    let took = t.elapsed();
    assert_eq!(report.stopped, ["busy"], "{report:?}");
    assert_eq!(
        report.outcomes,
        [("busy".to_string(), None)],
        "still in its callback after the stop wait"
    );
    assert!(took >= TIMEOUT + WAIT, "returned after {took:?}");
    // It waited 5 s after the timeout before, whatever the caller wanted.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    // Freed, the stage ends with the stop the drain sent.
    gate.send(()).unwrap();
    assert_eq!(p.join_timeout(LIMIT), Some(Reason::Shutdown));
}
