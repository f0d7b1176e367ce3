//! The crate's order, fan-in, churn and ending scenarios under the simulation
//! (`stageflow::sim`): thousands of seeded schedules each, on one thread, on virtual time.
//! A failure names its seed; `STAGEFLOW_SIM_SEED=<seed>` replays it alone.
//!
//! `SIM_SEEDS` scales every scenario's seed count (default 1: the counts below).

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{BySubscription as Sink, Log, Tick, Trickle};
use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher};
use stageflow::fns::{ForEach, Map};
use stageflow::sim::{self, Failure, Rng, Sim};
use stageflow::{
    CancelMode, Consumer, ConsumerContext, ConsumerHandle, Context, Events, Producer,
    ProducerDemand, ProducerHandle, Reason, SubscribeOptions, SubscriptionId,
};

fn seeds(n: u64) -> std::ops::Range<u64> {
    let scale = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1);
    0..n * scale
}

fn explore(n: u64, test: impl FnMut(&mut Sim) -> Result<(), Failure>) {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Err(failure) = sim::explore(seeds(n), test) {
        panic!("{failure}");
    }
}

/// Every subscription's events strictly increase (the producers count up).
fn in_order(log: &Log) -> Result<(), String> {
    for (sub, events) in log.lock().unwrap().iter() {
        if let Some(w) = events.windows(2).find(|w| w[0] >= w[1]) {
            return Err(format!("subscription {sub}: {} then {}", w[0], w[1]));
        }
    }
    Ok(())
}

fn options(rng: &mut Rng) -> SubscribeOptions {
    let max = [1, 2, 3, 5, 10, 64][rng.below(6) as usize];
    SubscribeOptions::new()
        .max_demand(max)
        .min_demand(rng.below(max as u64) as usize)
}

// -- Order: buffered events are never stranded, never overtaken -----------------------------

/// A consumer leaves at a drawn step with demand unmet, another subscribes at another: every
/// event reaches one of them, or is counted as discarded by a producer that finished with
/// nobody left; each gets its events in order.
fn leaver_and_late(sim: &mut Sim, dispatcher: u64) -> Result<(), Failure> {
    const N: u64 = 60;
    let log: Log = Arc::default();
    let (leave_at, join_at) = (sim.rng().below(200), sim.rng().below(200));
    let (a, b) = (options(sim.rng()), options(sim.rng()));
    let (p, leaver, late) = sim.build(|| {
        let trickle = Trickle::new(N);
        let p = stageflow::producer(trickle).name("trickle");
        let p = match dispatcher {
            0 => p.dispatcher(DemandDispatcher::new()),
            _ => p.dispatcher(BroadcastDispatcher::new()),
        };
        let p = p.buffer_size(10).spawn().unwrap();
        let sink = |name: &str| {
            stageflow::consumer(Sink {
                log: log.clone(),
                manual: false,
            })
            .name(name)
        };
        let leaver = sink("leaver")
            .subscribe_to(&p, a.cancel(CancelMode::Temporary))
            .unwrap()
            .spawn()
            .unwrap();
        let late = sink("late").spawn().unwrap();
        (p, leaver, late)
    });
    let (p2, l2, late2) = (p.clone(), leaver.clone(), late.clone());
    sim.at(leave_at, move || {
        let sub = l2.counters().subscriptions.first().map(|s| s.id);
        if let Some(sub) = sub {
            let _ = l2.cancel(sub, Reason::Normal);
        }
        l2.stop();
    });
    sim.at(join_at, move || {
        let _ = sim::subscribe(&late2, &p2, b.cancel(CancelMode::Temporary));
    });
    let stopper = late.clone();
    sim.run_until_idle()?;
    // The late consumer has nothing more coming once the producer ended.
    stopper.stop();
    let report = sim.run()?;
    drop((p, leaver, late));
    let order = in_order(&log);
    sim::check(order.is_ok(), || order.unwrap_err());
    let received: u64 = log.lock().unwrap().values().map(|v| v.len() as u64).sum();
    let discarded = report.stage("trickle").unwrap().counters.discarded;
    sim::check(dispatcher == 1 || received + discarded == N, || {
        format!("{received} received + {discarded} discarded != {N}")
    });
    Ok(())
}

#[test]
fn order_demand_dispatcher() {
    explore(1500, |sim| leaver_and_late(sim, 0));
}

#[test]
fn order_broadcast_dispatcher() {
    explore(1000, |sim| leaver_and_late(sim, 1));
}

// -- Fan-in: two paths into one sink lose nothing ---------------------------------------------

#[test]
fn fan_in_loses_nothing_and_ends_once_both_paths_have() {
    explore(1500, |sim| {
        const N: u64 = 80;
        let opts: Vec<SubscribeOptions> = (0..4).map(|_| options(sim.rng())).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        sim.build(|| {
            let source = stageflow::from_iter(0..N).name("source").spawn().unwrap();
            let map = |name: &str, o: &SubscribeOptions| {
                stageflow::producer_consumer(Map::new(|x: u64| x))
                    .name(name)
                    .subscribe_to(&source, o.clone())
                    .unwrap()
                    .spawn()
                    .unwrap()
            };
            let (a, b) = (map("map-a", &opts[0]), map("map-b", &opts[1]));
            stageflow::consumer(ForEach::new(move |x: u64| into.lock().unwrap().push(x)))
                .name("sink")
                .subscribe_to(&a, opts[2].clone())
                .unwrap()
                .subscribe_to(&b, opts[3].clone())
                .unwrap()
                .spawn()
                .unwrap();
        });
        let report = sim.run()?;
        for s in &report.stages {
            sim::check(s.outcome == Some(Reason::Normal), || format!("{s}"));
        }
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        sim::check(seen == (0..N).collect::<Vec<_>>(), || {
            format!(
                "the sink saw {} events, not each of 0..{N} once",
                seen.len()
            )
        });
        Ok(())
    });
}

// -- Churn: subscribes, cancels, resubscribes, asks, demand flips and stops -------------------

/// Emits what it is asked for, counting up.
struct Counting {
    next: u64,
}

impl Producer for Counting {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(self.next..self.next + n as u64);
        self.next += n as u64;
    }
}

struct Slot {
    handle: ConsumerHandle<Sink>,
    held: Vec<SubscriptionId>,
}

fn sink_slot(n: u64, log: &Log) -> Slot {
    let handle = stageflow::consumer(Sink {
        log: log.clone(),
        manual: n % 5 == 4,
    })
    .name(format!("sink{n}"))
    .inbox_capacity(1 + (n % 4) as usize)
    .spawn()
    .unwrap();
    Slot {
        handle,
        held: Vec::new(),
    }
}

/// One churn operation, drawn.
fn churn_op(
    rng: &mut Rng,
    producer: &ProducerHandle<Counting>,
    slots: &Rc<RefCell<Vec<Slot>>>,
    log: &Log,
    fresh: u64,
) {
    let mut slots = slots.borrow_mut();
    let i = rng.below(slots.len() as u64) as usize;
    let held = slots[i].held.clone();
    let pick = |rng: &mut Rng| held[rng.below(held.len() as u64) as usize];
    let cancel = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            CancelMode::Temporary
        } else {
            CancelMode::Transient
        }
    };
    match rng.below(10) {
        0..=2 => {
            let o = options(rng).cancel(cancel(rng));
            if let Ok(id) = sim::subscribe(&slots[i].handle, producer, o) {
                slots[i].held.push(id);
            }
        }
        3..=4 if !held.is_empty() => {
            let id = pick(rng);
            let _ = slots[i].handle.cancel(id, Reason::Normal);
            slots[i].held.retain(|&h| h != id);
        }
        5 if !held.is_empty() => {
            // A resubscribe: the cancel, then the subscribe, in that order.
            let id = pick(rng);
            let _ = slots[i].handle.cancel(id, Reason::Normal);
            slots[i].held.retain(|&h| h != id);
            let o = options(rng).cancel(cancel(rng));
            if let Ok(id) = sim::subscribe(&slots[i].handle, producer, o) {
                slots[i].held.push(id);
            }
        }
        6 if !held.is_empty() => {
            let _ = slots[i].handle.ask(pick(rng), 1 + rng.below(20) as usize);
        }
        7 => {
            let mode = if rng.below(2) == 0 {
                ProducerDemand::Accumulate
            } else {
                ProducerDemand::Forward
            };
            let _ = producer.set_demand(mode);
        }
        8 => {
            // Stop a sink in whatever state it is, and put a fresh one in its place.
            let old = std::mem::replace(&mut slots[i], sink_slot(fresh, log));
            old.handle.stop();
        }
        _ => {}
    }
}

#[test]
fn churn_keeps_order_ends_and_balances() {
    explore(1500, |sim| {
        let log: Log = Arc::default();
        let (producer, slots) = sim.build(|| {
            let producer = stageflow::producer(Counting { next: 0 })
                .name("counting")
                .buffer_size(20)
                .spawn()
                .unwrap();
            let slots: Vec<Slot> = (0..3).map(|n| sink_slot(n, &log)).collect();
            (producer, Rc::new(RefCell::new(slots)))
        });
        let ops = 5 + sim.rng().below(25);
        for k in 0..ops {
            let step = sim.rng().below(400);
            let mut rng = Rng::new(sim.rng().next_u64());
            let (p, s, l) = (producer.clone(), slots.clone(), log.clone());
            sim.at(step, move || churn_op(&mut rng, &p, &s, &l, 3 + k));
        }
        // The end: every stage stopped; each must end, and the counters balance.
        let end = slots.clone();
        sim.at(400, move || {
            producer.stop();
            for slot in end.borrow().iter() {
                slot.handle.stop();
            }
        });
        sim.run()?;
        let order = in_order(&log);
        sim::check(order.is_ok(), || order.unwrap_err());
        Ok(())
    });
}

// -- Endings: panics and stops anywhere; every stage ends and nothing is lost silently --------

#[test]
fn panics_and_stops_anywhere_end_every_stage_and_balance() {
    explore(1500, |sim| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let modes = [
            CancelMode::Permanent,
            CancelMode::Transient,
            CancelMode::Temporary,
        ];
        let opts: Vec<SubscribeOptions> = (0..3)
            .map(|_| {
                let mode = modes[sim.rng().below(3) as usize];
                options(sim.rng()).cancel(mode)
            })
            .collect();
        let stages = sim.build(|| {
            let source = stageflow::from_iter(0..200u64)
                .name("source")
                .spawn()
                .unwrap();
            let a = stageflow::producer_consumer(Map::new(|x: u64| x))
                .name("map-a")
                .subscribe_to(&source, opts[0].clone())
                .unwrap()
                .spawn()
                .unwrap();
            let b = stageflow::producer_consumer(Map::new(|x: u64| x))
                .name("map-b")
                .subscribe_to(&a, opts[1].clone())
                .unwrap()
                .spawn()
                .unwrap();
            let sink =
                stageflow::consumer(ForEach::new(move |x: u64| into.lock().unwrap().push(x)))
                    .name("sink")
                    .subscribe_to(&b, opts[2].clone())
                    .unwrap()
                    .spawn()
                    .unwrap();
            (source, a, b, sink)
        });
        let refs = [
            stageflow::AsStageRef::stage_ref(&stages.0),
            stageflow::AsStageRef::stage_ref(&stages.1),
            stageflow::AsStageRef::stage_ref(&stages.2),
            stageflow::AsStageRef::stage_ref(&stages.3),
        ];
        let victim = sim.rng().below(4) as usize;
        let turn = 1 + sim.rng().below(60);
        sim.panic_at(&refs[victim], turn);
        let stopped = sim.rng().below(4) as usize;
        let at = sim.rng().below(300);
        let r = refs[stopped].clone();
        sim.at(at, move || r.stop());
        // Stages whose subscriptions outlive their producer wait for more: stop them too once
        // nothing moves.
        sim.run_until_idle()?;
        for r in &refs {
            r.stop();
        }
        sim.run()?;
        let seen = seen.lock().unwrap();
        sim::check(seen.windows(2).all(|w| w[0] < w[1]), || {
            "the sink's events are not in order".into()
        });
        Ok(())
    });
}

// -- Accumulate mode: demand held, events buffered, consumers leaving, flips ------------------

/// Emits a few events on every tick whatever the demand (they wait in the buffer, or are
/// held while it accumulates), and what it is asked for, counting up to `limit` either way;
/// then finishes.
struct Spontaneous {
    next: u64,
    limit: u64,
}

impl Spontaneous {
    fn emit(&mut self, n: u64, ctx: &mut Context<'_, u64, Tick>) {
        let end = (self.next + n).min(self.limit);
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.limit {
            ctx.finish();
        }
    }
}

impl Producer for Spontaneous {
    type Out = u64;
    type Message = Tick;
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Tick>) {
        self.emit(demand.min(2) as u64, ctx);
    }
    fn handle_message(&mut self, Tick::Tick: Tick, ctx: &mut Context<'_, u64, Tick>) {
        self.emit(3, ctx);
        if self.next < self.limit {
            ctx.send_after(Tick::Tick, Duration::from_millis(1));
        }
    }
}

#[test]
fn accumulate_flips_with_consumers_leaving_keep_order() {
    explore(1500, |sim| {
        let log: Log = Arc::default();
        let opts: Vec<SubscribeOptions> = (0..3)
            .map(|_| options(sim.rng()).cancel(CancelMode::Temporary))
            .collect();
        let (producer, sinks) = sim.build(|| {
            // Forwarding at first: events wait in the buffer until consumers come.
            let producer = stageflow::producer(Spontaneous {
                next: 0,
                limit: 120,
            })
            .name("spontaneous")
            .buffer_size(1000)
            .spawn()
            .unwrap();
            producer.info(Tick::Tick).unwrap();
            let sinks: Vec<ConsumerHandle<Sink>> = (0..3)
                .map(|i| {
                    stageflow::consumer(Sink {
                        log: log.clone(),
                        manual: false,
                    })
                    .name(format!("sink{i}"))
                    .spawn()
                    .unwrap()
                })
                .collect();
            (producer, sinks)
        });
        // Each sink subscribes at a drawn step, with events buffered or not, accumulating
        // or not.
        for (sink, o) in sinks.iter().zip(opts) {
            let step = sim.rng().below(150);
            let (s, p) = (sink.clone(), producer.clone());
            sim.at(step, move || {
                let _ = sim::subscribe(&s, &p, o);
            });
        }
        for _ in 0..(2 + sim.rng().below(8)) {
            let step = sim.rng().below(300);
            let p = producer.clone();
            let mode = if sim.rng().below(2) == 0 {
                ProducerDemand::Forward
            } else {
                ProducerDemand::Accumulate
            };
            sim.at(step, move || {
                let _ = p.set_demand(mode);
            });
        }
        for sink in &sinks {
            if sim.rng().below(2) == 0 {
                let step = sim.rng().range(50..300);
                let s = sink.clone();
                sim.at(step, move || {
                    if let Some(sub) = s.counters().subscriptions.first() {
                        let _ = s.cancel(sub.id, Reason::Normal);
                    }
                });
            }
        }
        // At the end demand is forwarded, so that the producer can deliver and finish.
        let p = producer.clone();
        sim.at(300, move || {
            let _ = p.set_demand(ProducerDemand::Forward);
        });
        sim.run_until_idle()?;
        for sink in &sinks {
            sink.stop();
        }
        producer.stop();
        sim.run()?;
        let order = in_order(&log);
        sim::check(order.is_ok(), || order.unwrap_err());
        Ok(())
    });
}

// -- Adaptive demand: grows when the consumer starves, within its limit ----------------------

/// Counts `handle_events` calls and checks order.
struct Batches {
    calls: Arc<Mutex<(u64, Vec<u64>)>>,
}

impl Consumer for Batches {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let mut c = self.calls.lock().unwrap();
        c.0 += 1;
        c.1.extend(events);
    }
}

fn batches(sim: &mut Sim, options: SubscribeOptions) -> Result<u64, Failure> {
    const N: u64 = 3000;
    let calls = Arc::new(Mutex::new((0, Vec::new())));
    let sink = sim.build(|| {
        let numbers = stageflow::from_iter(0..N).spawn().unwrap();
        stageflow::consumer(Batches {
            calls: calls.clone(),
        })
        .subscribe_to(&numbers, options.clone())
        .unwrap()
        .spawn()
        .unwrap()
    });
    // Whatever the schedule, the demand outstanding stays within the limit.
    let limit = options
        .get_adaptive_demand()
        .unwrap_or(options.get_max_demand()) as u64;
    for k in 0..20 {
        let s = sink.clone();
        sim.at(k * 25, move || {
            for sub in s.counters().subscriptions {
                sim::check(sub.demand <= limit, || {
                    format!("{} outstanding, limit {limit}", sub.demand)
                });
            }
        });
    }
    sim.run()?;
    let c = calls.lock().unwrap();
    sim::check(c.1 == (0..N).collect::<Vec<_>>(), || {
        "lost or reordered".into()
    });
    Ok(c.0)
}

/// Records each batch's size and checks order.
struct Sizes {
    sizes: Arc<Mutex<(Vec<usize>, Vec<u64>)>>,
}

impl Consumer for Sizes {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let mut s = self.sizes.lock().unwrap();
        s.0.push(events.len());
        s.1.extend(events);
    }
}

/// Adaptive demand asks what growth adds at once, an odd amount (10 / 5 grown to 20 / 10
/// asks 5 + 10). Refilling in whole chunks, the asks come back in step with the batches: once
/// the demand stops growing, every batch but the stream's last few is `max - min` of the
/// bounds it reached, whatever the schedule. (GenStage's refill kept 65 and 85 going round at
/// 100 / 50, in batches of 50 and 15, then 50 and 35.)
#[test]
fn adaptive_demand_settles_into_batches_of_max_minus_min() {
    const N: u64 = 20_000;
    let mut grown = 0;
    explore(200, |sim| {
        let sizes = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let into = sizes.clone();
        sim.build(move || {
            let numbers = stageflow::from_iter(0..N).spawn().unwrap();
            stageflow::consumer(Sizes { sizes: into })
                .subscribe_to(
                    &numbers,
                    SubscribeOptions::new()
                        .max_demand(10)
                        .min_demand(5)
                        .adaptive_demand(100),
                )
                .unwrap()
                .spawn()
                .unwrap()
        });
        sim.run()?;
        let s = sizes.lock().unwrap();
        sim::check(s.1 == (0..N).collect::<Vec<_>>(), || {
            "lost or reordered".into()
        });
        // The last 40 batches but the stream's last 3 (its end may cut them short).
        let tail = &s.0[s.0.len().saturating_sub(43)..s.0.len().saturating_sub(3)];
        let settled = tail.iter().all(|&b| b == tail[0]) && [5, 10, 20, 40, 50].contains(&tail[0]);
        sim::check(settled, || format!("batches out of step: {tail:?}"));
        if tail[0] == 50 {
            grown += 1;
        }
        Ok(())
    });
    assert!(grown > 0, "no schedule grew the demand to 100 / 50");
}

#[test]
fn adaptive_demand_grows_batches_within_its_limit_and_loses_nothing() {
    let (mut fixed, mut adaptive) = (0, 0);
    explore(300, |sim| {
        let base = SubscribeOptions::new().max_demand(10).min_demand(5);
        if sim.seed() % 2 == 0 {
            fixed += batches(sim, base)?;
        } else {
            adaptive += batches(sim, base.adaptive_demand(200))?;
        }
        Ok(())
    });
    // 3000 events in batches of at most 5 (fixed) against batches up to 100.
    assert!(
        adaptive * 4 < fixed,
        "adaptive demand made {adaptive} batches, fixed {fixed}"
    );
}
