//! The simulation (`stageflow::sim`): the crate's own stages stepped on one thread under a
//! seeded scheduler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stageflow::fns::{ForEach, Map};
use stageflow::sim::{self, FailureKind, Sim};
use stageflow::{Reason, SubscribeOptions};

type Seen = Arc<Mutex<Vec<u64>>>;

/// from_iter → map → sink, small demands: the numbers arrive doubled, in order, all of them.
fn chain(sim: &mut Sim, n: u64) -> Seen {
    let seen: Seen = Arc::default();
    let into = seen.clone();
    sim.build(|| {
        let numbers = stageflow::from_iter(0..n).name("numbers").spawn().unwrap();
        let doubler = stageflow::producer_consumer(Map::new(|x: u64| x * 2))
            .name("doubler")
            .subscribe_to(
                &numbers,
                SubscribeOptions::new().max_demand(4).min_demand(1),
            )
            .unwrap()
            .spawn()
            .unwrap();
        stageflow::consumer(ForEach::new(move |x: u64| into.lock().unwrap().push(x)))
            .name("sink")
            .subscribe_to(&doubler, SubscribeOptions::new().max_demand(3))
            .unwrap()
            .spawn()
            .unwrap();
    });
    seen
}

/// A test stage: a consumer of `u64` events that ignores them and runs its closure on each
/// message it is cast or called with.
struct OnMessage<M>(Box<Handler<M>>);

type Handler<M> = dyn FnMut(M, &mut stageflow::ConsumerContext<'_, M>) + Send;

fn on_message<M>(
    f: impl FnMut(M, &mut stageflow::ConsumerContext<'_, M>) + Send + 'static,
) -> OnMessage<M> {
    OnMessage(Box::new(f))
}

impl<M: Send + 'static> stageflow::Consumer for OnMessage<M> {
    type In = u64;
    type Message = M;
    fn handle_events(
        &mut self,
        _: stageflow::Events<'_, u64>,
        _: &mut stageflow::ConsumerContext<'_, M>,
    ) {
    }
    fn handle_message(&mut self, m: M, ctx: &mut stageflow::ConsumerContext<'_, M>) {
        (self.0)(m, ctx);
    }
}

/// A closure cast to an [`on_message`] stage to run inside its turn.
type Act = Box<dyn FnOnce() + Send>;

#[test]
fn a_chain_runs_to_its_end_under_every_seed() {
    let ran = sim::explore(0..300, |sim| {
        let seen = chain(sim, 50);
        let report = sim.run()?;
        let seen = seen.lock().unwrap();
        let expected: Vec<u64> = (0..50).map(|x| x * 2).collect();
        assert_eq!(*seen, expected, "seed {}", sim.seed());
        assert_eq!(report.stage("sink").unwrap().counters.events_in, 50);
        for s in &report.stages {
            assert_eq!(s.outcome, Some(Reason::Normal), "{s}");
        }
        Ok(())
    });
    assert_eq!(ran.unwrap_or_else(|f| panic!("{f}")), 300);
}

#[test]
fn the_same_seed_replays_the_same_schedule_and_others_differ() {
    let hash = |seed| {
        let mut sim = Sim::new(seed);
        chain(&mut sim, 30);
        let r = sim.run().unwrap();
        (r.schedule_hash, r.steps)
    };
    assert_eq!(hash(7), hash(7));
    let distinct: std::collections::HashSet<_> = (0..20).map(|s| hash(s).0).collect();
    assert!(
        distinct.len() > 10,
        "only {} schedules in 20 seeds",
        distinct.len()
    );
}

#[test]
fn a_stage_stopped_at_a_drawn_step_ends_everything_and_the_counters_balance() {
    let ran = sim::explore(0..300, |sim| {
        let seen: Seen = Arc::default();
        let into = seen.clone();
        let at = sim.rng().below(300);
        let doubler = sim.build(|| {
            let numbers = stageflow::from_iter(0..100u64).spawn().unwrap();
            let doubler = stageflow::producer_consumer(Map::new(|x: u64| x * 2))
                .subscribe_to(&numbers, SubscribeOptions::new().max_demand(4))
                .unwrap()
                .spawn()
                .unwrap();
            stageflow::consumer(ForEach::new(move |x: u64| into.lock().unwrap().push(x)))
                .subscribe_to(&doubler, SubscribeOptions::new().max_demand(3))
                .unwrap()
                .spawn()
                .unwrap();
            doubler
        });
        let stopper = doubler.clone();
        sim.at(at, move || stopper.stop());
        drop(doubler);
        sim.run()?;
        let seen = seen.lock().unwrap();
        let expected: Vec<u64> = (0..seen.len() as u64).map(|x| x * 2).collect();
        assert_eq!(*seen, expected);
        Ok(())
    });
    ran.unwrap_or_else(|f| panic!("{f}"));
}

#[test]
fn an_injected_panic_reaches_the_consumer_by_its_cancel_mode() {
    let mut sim = Sim::new(3);
    let (numbers, sink) = sim.build(|| {
        let numbers = stageflow::from_iter(0..1000u64).spawn().unwrap();
        let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
            .subscribe_to(&numbers, SubscribeOptions::new().max_demand(2))
            .unwrap()
            .spawn()
            .unwrap();
        (numbers, sink)
    });
    assert!(sim.panic_at(&numbers, 5));
    sim.run().unwrap_or_else(|f| panic!("{f}"));
    assert!(matches!(numbers.join(), Reason::Panicked(_)));
    assert!(
        matches!(sink.join(), Reason::Panicked(_)),
        "permanent: the consumer follows"
    );
}

#[test]
fn a_pipeline_that_cannot_end_is_reported_stuck_with_each_stage() {
    let mut sim = Sim::new(1);
    let _sink = sim.build(|| {
        // A producer that never emits and never ends, held by its handle.
        let quiet = stageflow::producer(Quiet).name("quiet").spawn().unwrap();
        let sink = stageflow::consumer(ForEach::new(|_: u64| {}))
            .name("sink")
            .subscribe_to(&quiet, SubscribeOptions::new())
            .unwrap()
            .spawn()
            .unwrap();
        (quiet, sink)
    });
    let failure = sim.run().unwrap_err();
    assert_eq!(failure.kind, FailureKind::Stuck);
    let text = failure.to_string();
    assert!(text.contains("quiet (producer): running"), "{text}");
    assert!(text.contains("sink (consumer): running"), "{text}");
    assert!(text.contains("demand 1000 of 1000"), "{text}");
    assert!(text.contains("replay: Sim::new(1)"), "{text}");
}

#[test]
fn timers_run_on_virtual_time() {
    use stageflow::{Consumer, ConsumerContext};
    struct Ticker {
        ticks: u32,
    }
    impl Consumer for Ticker {
        type In = u64;
        type Message = ();
        fn handle_events(
            &mut self,
            _: stageflow::Events<'_, u64>,
            _: &mut ConsumerContext<'_, ()>,
        ) {
        }
        fn handle_message(&mut self, _: (), ctx: &mut ConsumerContext<'_, ()>) {
            self.ticks += 1;
            if self.ticks == 61 {
                ctx.stop(Reason::Normal);
            } else {
                ctx.send_after((), Duration::from_secs(60));
            }
        }
    }
    let mut sim = Sim::new(9);
    let ticker = sim.build(|| {
        let ticker = stageflow::consumer(Ticker { ticks: 0 }).spawn().unwrap();
        ticker.cast(()).unwrap();
        ticker
    });
    let started = std::time::Instant::now();
    let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
    assert!(
        report.elapsed >= Duration::from_secs(3600),
        "{:?}",
        report.elapsed
    );
    assert!(
        report.elapsed < Duration::from_secs(3601),
        "{:?}",
        report.elapsed
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(ticker.join(), Reason::Normal);
}

struct Quiet;

impl stageflow::Producer for Quiet {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, _demand: usize, _ctx: &mut stageflow::Context<'_, u64>) {}
}

/// Emits one event a second of (virtual) time, whatever the demand, up to `limit`.
struct EverySecond {
    next: u64,
    limit: u64,
}

impl stageflow::Producer for EverySecond {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, _demand: usize, _ctx: &mut stageflow::Context<'_, u64>) {}
    fn handle_message(&mut self, (): (), ctx: &mut stageflow::Context<'_, u64>) {
        ctx.emit(self.next);
        self.next += 1;
        if self.next == self.limit {
            ctx.finish();
        } else {
            ctx.send_after((), Duration::from_secs(1));
        }
    }
}

#[test]
fn an_hour_of_minute_windows_runs_on_virtual_time() {
    use stageflow::flow::{Emitted, Flow, Partitions, Window};
    let mut sim = Sim::new(11);
    let clock = sim.clock();
    let windows: Arc<Mutex<Vec<Emitted<u64>>>> = Arc::default();
    let into = windows.clone();
    let _running = sim.build(|| {
        let seconds = stageflow::producer(EverySecond {
            next: 0,
            limit: 3600,
        })
        .buffer_size(10_000)
        .spawn()
        .unwrap();
        seconds.info(()).unwrap();
        let window = Window::periodic(Duration::from_secs(60))
            .clock(clock)
            .tick(Duration::from_secs(1));
        Flow::from_stages([stageflow::Upstream::source(&seconds)])
            .partition(Partitions::by_event().stages(2).window(window))
            .reduce(|| 0u64, |count: &mut u64, _| *count += 1)
            .departition_sum()
            .into_consumer(ForEach::new(move |e: Emitted<u64>| {
                into.lock().unwrap().push(e)
            }))
            .unwrap()
    });
    let started = std::time::Instant::now();
    let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
    let windows = windows.lock().unwrap();
    let total: u64 = windows.iter().map(|e| e.value).sum();
    assert_eq!(total, 3600, "every event in some window");
    assert!(
        (60..=61).contains(&windows.len()),
        "an hour in minute windows: {} windows",
        windows.len()
    );
    assert!(
        windows.iter().filter(|e| e.value == 60).count() >= 58,
        "full minutes"
    );
    assert!(
        report.elapsed >= Duration::from_secs(3599),
        "{:?}",
        report.elapsed
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "virtual, not real, time"
    );
}

/// Counts what it receives; answers a call with the count.
struct Counter(u64);

impl stageflow::Consumer for Counter {
    type In = u64;
    type Message = stageflow::Reply<u64>;
    fn handle_events(
        &mut self,
        events: stageflow::Events<'_, u64>,
        _: &mut stageflow::ConsumerContext<'_, stageflow::Reply<u64>>,
    ) {
        self.0 += events.count() as u64;
    }
    fn handle_message(
        &mut self,
        reply: stageflow::Reply<u64>,
        _: &mut stageflow::ConsumerContext<'_, stageflow::Reply<u64>>,
    ) {
        reply.send(self.0);
    }
}

#[test]
fn calls_and_joins_run_the_schedule_instead_of_blocking() {
    let ran = sim::explore(0..100, |sim| {
        let (numbers, counter) = sim.build(|| {
            let numbers = stageflow::producer(Quiet).spawn().unwrap();
            let counter = stageflow::consumer(Counter(0))
                .subscribe_to(&numbers, SubscribeOptions::new())
                .unwrap()
                .spawn()
                .unwrap();
            (numbers, counter)
        });
        // Inside explore's closure the simulation is this thread's: a call runs the
        // schedule until the reply comes.
        let seen = counter.call(|r| r, Duration::from_secs(5)).unwrap();
        assert_eq!(seen, 0);
        numbers.stop();
        // So does a join, until the stage has ended.
        assert_eq!(
            counter.join(),
            Reason::Shutdown,
            "permanent: the consumer follows"
        );
        assert_eq!(numbers.join(), Reason::Shutdown);
        sim.run()?;
        Ok(())
    });
    assert_eq!(ran.unwrap_or_else(|f| panic!("{f}")), 100);
}

#[test]
fn a_cast_into_a_full_inbox_runs_the_schedule_until_there_is_room() {
    let mut sim = Sim::new(4);
    let sum: Arc<Mutex<u64>> = Arc::default();
    let tally = sim.build(|| {
        let tally = stageflow::consumer(on_message({
            let sum = sum.clone();
            move |n: u64, _| *sum.lock().unwrap() += n
        }))
        .inbox_capacity(1)
        .spawn()
        .unwrap();
        // Twenty casts into an inbox of one: from the second on, each waits for room, which
        // only the stage's turns can make.
        for n in 1..=20 {
            tally.cast(n).unwrap();
        }
        tally
    });
    // Each cast found room once the one before it had been taken: 1..=19 are handled.
    assert!(*sum.lock().unwrap() >= 190, "{}", sum.lock().unwrap());
    tally.stop();
    sim.run().unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(tally.join(), Reason::Shutdown);
}

#[test]
fn run_for_stops_at_a_virtual_time_and_a_pipeline_that_never_ends_hits_the_step_limit() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let ticks = Arc::new(AtomicU64::new(0));
    let mut sim = Sim::new(2);
    let forever = sim.build(|| {
        let f = stageflow::consumer(on_message({
            // Sends itself a tick every virtual second, for ever, counting them.
            let ticks = ticks.clone();
            move |(): (), ctx| {
                ticks.fetch_add(1, Ordering::Relaxed);
                ctx.send_after((), Duration::from_secs(1));
            }
        }))
        .spawn()
        .unwrap();
        f.cast(()).unwrap();
        f
    });
    let report = sim.run_for(Duration::from_secs(10)).unwrap();
    let n = ticks.load(Ordering::Relaxed);
    assert!((10..=11).contains(&n), "{n} ticks in 10 virtual seconds");
    assert_eq!(report.elapsed, Duration::from_secs(10));
    assert!(forever.outcome().is_none(), "still running");
    // Run to its end: it never ends, so the step limit says so.
    sim.max_steps(sim.steps() + 50);
    let failure = sim.run().unwrap_err();
    assert_eq!(failure.kind, FailureKind::StepLimit(sim.steps()));
    // Dropping the simulation stops what still runs: a join returns.
    drop(sim);
    assert_eq!(forever.join(), Reason::Shutdown);
}

#[test]
fn a_blocking_mailbox_cast_inside_a_turn_panics_naming_the_stage_instead_of_hanging() {
    let slot: Arc<Mutex<Option<stageflow::Mailbox<u64>>>> = Arc::default();
    let mut sim = Sim::new(5);
    let (keeper, caster) = sim.build(|| {
        let keeper = stageflow::consumer(on_message({
            // Stores its own mailbox where the test can take it, on message 0.
            let slot = slot.clone();
            move |n: u64, ctx| {
                if n == 0 {
                    *slot.lock().unwrap() = Some(ctx.mailbox());
                }
            }
        }))
        .name("keeper")
        .inbox_capacity(1)
        .spawn()
        .unwrap();
        keeper.cast(0).unwrap();
        let caster = stageflow::consumer(on_message({
            // Casts twice into the keeper's mailbox, inside its own turn.
            let slot = slot.clone();
            move |(): (), _| {
                let mailbox = slot.lock().unwrap().clone().unwrap();
                mailbox.cast(1).unwrap();
                mailbox.cast(2).unwrap();
            }
        }))
        .spawn()
        .unwrap();
        (keeper, caster)
    });
    sim.run_until_idle().unwrap();
    assert!(slot.lock().unwrap().is_some());
    // The caster's second cast finds the keeper's inbox of one full, inside its own turn.
    caster.cast(()).unwrap();
    sim.run_until_idle().unwrap();
    match caster.outcome() {
        Some(Reason::Panicked(m)) => {
            assert!(
                m.contains("keeper") && m.contains("Mailbox::try_cast"),
                "{m}"
            )
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    slot.lock().unwrap().take();
    keeper.stop();
    sim.run().unwrap_or_else(|f| panic!("{f}"));
}

/// What `replay_child` prints before each seed's line and before the count.
const REPLAY_MARK: &str = "replay-child:";

/// Run by `stageflow_sim_seed_makes_explore_run_that_seed_alone`, in a child process with
/// `STAGEFLOW_SIM_SEED` set: explores 1000 seeds of a small chain and prints, for each seed
/// that ran, its seed, schedule hash and steps, then how many seeds ran. (Ignored: run on its
/// own, without the variable, it just explores the 1000 seeds.)
#[test]
#[ignore = "run as a child process by stageflow_sim_seed_makes_explore_run_that_seed_alone"]
fn replay_child() {
    let ran = sim::explore(0..1000, |sim| {
        let seen = chain(sim, 10);
        let report = sim.run()?;
        assert_eq!(seen.lock().unwrap().len(), 10, "seed {}", sim.seed());
        println!(
            "{REPLAY_MARK} seed={} hash={:x} steps={}",
            sim.seed(),
            report.schedule_hash,
            report.steps
        );
        Ok(())
    });
    let ran = ran.unwrap_or_else(|f| panic!("{f}"));
    println!("{REPLAY_MARK} explored={ran}");
}

#[test]
fn stageflow_sim_seed_makes_explore_run_that_seed_alone() {
    // One seed inside the explored range, one beyond it (the variable replaces the range),
    // and the largest seed (whose range must not overflow).
    for seed in [737u64, 4242, u64::MAX] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "replay_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("STAGEFLOW_SIM_SEED", seed.to_string())
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "seed {seed}: the child failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        // What the child printed after each mark, up to the end of the line (libtest may
        // start the first of them on its own "test replay_child ..." line).
        let printed: Vec<&str> = stdout
            .match_indices(REPLAY_MARK)
            .map(|(at, _)| {
                let rest = &stdout[at + REPLAY_MARK.len()..];
                rest[..rest.find('\n').unwrap_or(rest.len())].trim()
            })
            .collect();
        // The replay is the schedule this process gets from Sim::new(seed).
        let mut sim = Sim::new(seed);
        let seen = chain(&mut sim, 10);
        let report = sim.run().unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(seen.lock().unwrap().len(), 10);
        let expected = format!(
            "seed={seed} hash={:x} steps={}",
            report.schedule_hash, report.steps
        );
        assert_eq!(
            printed,
            [expected.as_str(), "explored=1"],
            "seed {seed}: only that seed runs, on its schedule; the child printed:\n{stdout}"
        );
    }
    // A value that is not a seed is refused, naming the variable, instead of running every
    // seed as if nothing were set.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "replay_child", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env("STAGEFLOW_SIM_SEED", "0x10")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a bad seed must fail the run:\n{stdout}"
    );
    assert!(
        stdout.contains("STAGEFLOW_SIM_SEED=\"0x10\" is not a seed")
            || stderr.contains("STAGEFLOW_SIM_SEED=\"0x10\" is not a seed"),
        "the failure names the variable and the value:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("seed=0 "), "no seed ran:\n{stdout}");
}

/// What the calls and the subscribe made inside a turn came to.
struct FromATurn {
    into_room: Result<u64, stageflow::CallError>,
    into_full: Result<u64, stageflow::CallError>,
    subscribe: Result<stageflow::SubscriptionId, stageflow::SubscribeError>,
    waited: Duration,
}

#[test]
fn a_call_or_subscribe_inside_a_turn_fails_as_at_its_timeout_and_the_run_ends_cleanly() {
    use stageflow::{CallError, SubscribeError};
    // Long enough that a wait for it, in real or virtual time, would show.
    const TIMEOUT: Duration = Duration::from_secs(30);
    let ran = sim::explore(0..100, |sim| {
        let seen: Seen = Arc::default();
        let into = seen.clone();
        let (numbers, answerer, sink, in_turn) = sim.build(|| {
            let numbers = stageflow::from_iter(0..10u64)
                .name("numbers")
                .spawn()
                .unwrap();
            let answerer = stageflow::consumer(on_message({
                // Answers a call with how many calls it has handled, this one included.
                let mut calls = 0u64;
                move |reply: stageflow::Reply<u64>, _| {
                    calls += 1;
                    reply.send(calls);
                }
            }))
            .name("answerer")
            .inbox_capacity(1)
            .spawn()
            .unwrap();
            let sink =
                stageflow::consumer(ForEach::new(move |x: u64| into.lock().unwrap().push(x)))
                    .name("sink")
                    .spawn()
                    .unwrap();
            let in_turn = stageflow::consumer(on_message(|act: Act, _| act()))
                .name("in_turn")
                .spawn()
                .unwrap();
            (numbers, answerer, sink, in_turn)
        });
        sim.run_until_idle()?;
        let got: Arc<Mutex<Option<FromATurn>>> = Arc::default();
        let (answerer2, sink2, numbers2, into) =
            (answerer.clone(), sink.clone(), numbers.clone(), got.clone());
        let act: Act = Box::new(move || {
            let started = std::time::Instant::now();
            // The answerer's inbox of one has room: the call goes in, and the reply cannot
            // come while this turn lasts.
            let into_room = answerer2.call(|r| r, TIMEOUT);
            // Now that inbox is full, and only the answerer's turn could make room.
            let into_full = answerer2.call(|r| r, TIMEOUT);
            let subscribe = sink2.subscribe_to(&numbers2, SubscribeOptions::new().timeout(TIMEOUT));
            *into.lock().unwrap() = Some(FromATurn {
                into_room,
                into_full,
                subscribe,
                waited: started.elapsed(),
            });
        });
        in_turn.cast(act).unwrap();
        sim.run_until_idle()?;
        let FromATurn {
            into_room,
            into_full,
            subscribe,
            waited,
        } = got.lock().unwrap().take().expect("the closure ran");
        assert_eq!(into_room, Err(CallError::Timeout));
        assert_eq!(into_full, Err(CallError::Timeout));
        assert_eq!(
            subscribe,
            Err(SubscribeError::Timeout {
                producer: "numbers".into()
            })
        );
        // At once, as at the timeout: neither real nor virtual time waited for it.
        assert!(waited < TIMEOUT, "waited {waited:?} in real time");
        assert!(
            sim.elapsed() < TIMEOUT,
            "{:?} of virtual time",
            sim.elapsed()
        );
        // The withdrawn subscribe left nothing behind, pending or held, on either side.
        assert_eq!(*seen.lock().unwrap(), Vec::<u64>::new());
        assert!(
            sink.counters().subscriptions.is_empty(),
            "{:?}",
            sink.counters()
        );
        assert!(
            numbers.counters().subscriptions.is_empty(),
            "{:?}",
            numbers.counters()
        );
        // The first call's message was delivered (and answered into the void), the second's
        // was not: from the test's code, a call is the answerer's second.
        assert_eq!(answerer.call(|r| r, TIMEOUT), Ok(2));
        // From the test's code, the same subscribe succeeds and the run ends cleanly.
        sink.subscribe_to(&numbers, SubscribeOptions::new().max_demand(3))
            .expect("subscribes outside a turn");
        // (So the counters do list a subscription the sink holds.)
        assert_eq!(
            sink.counters().subscriptions.len(),
            1,
            "{:?}",
            sink.counters()
        );
        answerer.stop();
        in_turn.stop();
        let report = sim.run()?;
        assert_eq!(*seen.lock().unwrap(), (0..10).collect::<Vec<u64>>());
        for (name, reason) in [
            ("numbers", Reason::Normal),
            ("sink", Reason::Normal),
            ("answerer", Reason::Shutdown),
            ("in_turn", Reason::Shutdown),
        ] {
            let stage = report.stage(name).unwrap();
            assert_eq!(stage.outcome, Some(reason), "{stage}");
        }
        Ok(())
    });
    assert_eq!(ran.unwrap_or_else(|f| panic!("{f}")), 100);
}
