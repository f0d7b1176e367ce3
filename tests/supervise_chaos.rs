//! A seeded chaos test of supervision (issue 23, "Done means"): while events flow through a
//! supervised pipeline (a source, two relays fed by it, a sink fed by both), a random stage is
//! made to panic (or, one time in four, stopped) every few milliseconds. Then the
//! pipeline must still deliver, every event the source emitted must be either handled by the
//! sink or counted as discarded by some incarnation of some stage, the events of each chain of
//! subscriptions (one incarnation of each stage on the path) must arrive in the order emitted,
//! and once the group is drained no thread may be left behind.
//!
//! `SUPERVISE_CHAOS_SECS` sets how long the crashes go on (default 10 s, to keep CI short; the
//! issue asks for 30 s: `SUPERVISE_CHAOS_SECS=30`); `SUPERVISE_CHAOS_SEED` fixes the seed
//! (default: from the clock), which picks the strategy, the stages and the pauses. A failure
//! message starts with the seed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stageflow::supervise::{self, ChildSpec, Intensity, Strategy};
use stageflow::{
    CastError, Consumer, ConsumerContext, Context, Events, Producer, ProducerConsumer,
    SubscribeOptions,
};

/// The longest any wait of the test lasts: only a failing test waits this long.
const LIMIT: Duration = Duration::from_secs(60);

/// Every injected panic's message contains this.
const INJECTED: &str = "chaos: injected panic";

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An event: its id (unique, ascending as the source emits) and the incarnations it passed.
#[derive(Clone, Copy, Debug)]
struct Ev {
    id: u64,
    source: u64,
    relay: (u64, u64),
}

/// Panic on purpose.
struct Crash;

/// Emits ids from a cursor that every incarnation shares, one per unit of demand.
struct Source {
    incarnation: u64,
    cursor: Arc<AtomicU64>,
}

impl Producer for Source {
    type Out = Ev;
    type Message = Crash;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Ev, Crash>) {
        for _ in 0..demand {
            let id = self.cursor.fetch_add(1, Ordering::Relaxed);
            ctx.emit(Ev {
                id,
                source: self.incarnation,
                relay: (0, 0),
            });
        }
    }

    fn handle_message(&mut self, _: Crash, _: &mut Context<'_, Ev, Crash>) {
        panic!("{INJECTED} in the source");
    }
}

/// Passes events on, stamped with its index and incarnation.
struct Relay {
    index: u64,
    incarnation: u64,
}

impl ProducerConsumer for Relay {
    type In = Ev;
    type Out = Ev;
    type Message = Crash;

    fn handle_events(&mut self, events: Events<'_, Ev>, ctx: &mut Context<'_, Ev, Crash>) {
        let stamp = (self.index, self.incarnation);
        ctx.emit_all(events.map(|e| Ev { relay: stamp, ..e }));
    }

    fn handle_message(&mut self, _: Crash, _: &mut Context<'_, Ev, Crash>) {
        panic!("{INJECTED} in relay {}", self.index);
    }
}

/// What the sink's incarnations saw, kept outside them.
#[derive(Default)]
struct Seen {
    handled: Vec<u64>,
    /// The last id per chain of incarnations (source, relay, sink).
    last: HashMap<(u64, (u64, u64), u64), u64>,
    disorders: Vec<String>,
}

struct Sink {
    incarnation: u64,
    seen: Arc<Mutex<Seen>>,
    count: Arc<AtomicU64>,
}

impl Consumer for Sink {
    type In = Ev;
    type Message = Crash;

    fn handle_events(&mut self, events: Events<'_, Ev>, _: &mut ConsumerContext<'_, Crash>) {
        let mut seen = self.seen.lock().unwrap();
        let mut n = 0;
        for e in events {
            let key = (e.source, e.relay, self.incarnation);
            if let Some(&last) = seen.last.get(&key) {
                if e.id <= last {
                    let d = format!("chain {key:?}: {} after {last}", e.id);
                    seen.disorders.push(d);
                }
            }
            seen.last.insert(key, e.id);
            seen.handled.push(e.id);
            n += 1;
        }
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    fn handle_message(&mut self, _: Crash, _: &mut ConsumerContext<'_, Crash>) {
        panic!("{INJECTED} in the sink");
    }
}

/// The threads of this process now (Linux); `None` elsewhere.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn random_stages_crash_while_events_flow() {
    let secs = env_u64("SUPERVISE_CHAOS_SECS").unwrap_or(10);
    let seed = env_u64("SUPERVISE_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let tag = format!("SUPERVISE_CHAOS_SEED={seed}");
    eprintln!("{tag} SUPERVISE_CHAOS_SECS={secs}");
    let mut rng = Rng(seed);
    // Injected panics are expected: keep them out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = stageflow::panic_message(info.payload()).unwrap_or("");
        if !text.contains(INJECTED) {
            default_hook(info);
        }
    }));
    let threads_before = threads();

    let strategy = [
        Strategy::OneForOne,
        Strategy::RestForOne,
        Strategy::OneForAll,
    ][rng.below(3) as usize];
    let mut g = supervise::group("chaos")
        .strategy(strategy)
        .intensity(Intensity::new(1_000_000, Duration::from_secs(1)));
    let cursor = Arc::new(AtomicU64::new(0));
    let c = cursor.clone();
    let mut incarnation = 0;
    let source = g.add(ChildSpec::new("source", move || {
        incarnation += 1;
        stageflow::producer(Source {
            incarnation,
            cursor: c.clone(),
        })
        .buffer_size(50)
    }));
    let demand = |rng: &mut Rng| {
        let max = 1 + rng.below(40) as usize;
        SubscribeOptions::new().max_demand(max).min_demand(max / 2)
    };
    let relays: Vec<_> = (0..2u64)
        .map(|index| {
            let mut incarnation = 0;
            g.add(
                ChildSpec::new(format!("relay-{index}"), move || {
                    incarnation += 1;
                    stageflow::producer_consumer(Relay { index, incarnation })
                })
                .subscribe_to(&source, demand(&mut rng))
                .unwrap(),
            )
        })
        .collect();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let count = Arc::new(AtomicU64::new(0));
    let (s, n) = (seen.clone(), count.clone());
    let mut incarnation = 0;
    let mut spec = ChildSpec::new("sink", move || {
        incarnation += 1;
        stageflow::consumer(Sink {
            incarnation,
            seen: s.clone(),
            count: n.clone(),
        })
    });
    for relay in &relays {
        spec = spec.subscribe_to(relay, demand(&mut rng)).unwrap();
    }
    let sink = g.add(spec);
    let group = g.start().unwrap();
    eprintln!("{tag}: strategy {strategy:?}");

    // Crash a random stage every few milliseconds.
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + LIMIT;
        while !done() {
            assert!(Instant::now() < deadline, "{tag}: {what} within {LIMIT:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    wait_for("no events at first", &|| count.load(Ordering::Relaxed) > 0);
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut panics, mut stops) = (0u64, 0u64);
    while Instant::now() < until {
        let (stage, running) = match rng.below(4) {
            0 => (
                source.stage_ref(),
                source.current().map(|c| c.try_cast(Crash)),
            ),
            1 | 2 => {
                let r = &relays[rng.below(2) as usize];
                (r.stage_ref(), r.current().map(|c| c.try_cast(Crash)))
            }
            _ => (sink.stage_ref(), sink.current().map(|c| c.try_cast(Crash))),
        };
        // One time in four, or when its inbox is full, stop it instead: a permanent child
        // is restarted after a stop too.
        match (stage, running) {
            (Some(_), Some(Ok(()))) if rng.below(4) > 0 => panics += 1,
            (Some(stage), Some(Ok(()) | Err(CastError::Full(_)))) => {
                stage.stop();
                stops += 1;
            }
            _ => {} // between an end and its restart
        }
        std::thread::sleep(Duration::from_millis(1 + rng.below(5)));
    }
    assert!(
        group.outcome().is_none(),
        "{tag}: the group ended: {:?}",
        group.outcome()
    );

    // The pipeline still delivers after the last crash.
    let after = count.load(Ordering::Relaxed);
    wait_for("no events after the crashes", &|| {
        count.load(Ordering::Relaxed) >= after + 1000
    });
    let report = group.drain(LIMIT);
    assert!(report.is_complete(), "{tag}: {report:?}");
    let restarts = group.restart_counts();
    eprintln!(
        "{tag}: {panics} panics, {stops} stops, restarts {restarts:?}, {} events handled",
        count.load(Ordering::Relaxed)
    );
    assert!(group.restarts() > 0, "{tag}: nothing was restarted");

    // Every event the source emitted was handled once, or counted as discarded.
    let seen = seen.lock().unwrap();
    assert!(
        seen.disorders.is_empty(),
        "{tag}: out of order: {:?}",
        &seen.disorders[..seen.disorders.len().min(10)]
    );
    let handled: HashSet<u64> = seen.handled.iter().copied().collect();
    assert_eq!(
        handled.len(),
        seen.handled.len(),
        "{tag}: events handled twice"
    );
    let emitted = cursor.load(Ordering::Relaxed);
    assert!(handled.iter().all(|&id| id < emitted), "{tag}: unknown ids");
    let mut all = vec![source.counters()];
    all.extend(relays.iter().map(|r| r.counters()));
    all.push(sink.counters());
    assert_eq!(all[0].emitted, emitted, "{tag}: the source's counters");
    let discarded: u64 = all.iter().map(|c| c.discarded).sum();
    let sent: u64 = all.iter().map(|c| c.events_out).sum();
    let received: u64 = all.iter().map(|c| c.events_in).sum();
    assert_eq!(sent, received, "{tag}: sent != received across the links");
    assert_eq!(
        handled.len() as u64 + discarded,
        emitted,
        "{tag}: handled {} + discarded {discarded} != emitted {emitted} ({all:?})",
        handled.len()
    );

    // No thread left behind: every stage, watcher and the supervisor have ended.
    drop(group);
    if let Some(before) = threads_before {
        wait_for("threads left behind", &|| {
            threads().is_some_and(|now| now <= before)
        });
    }
}
