//! The consumer supervisor: one worker per event, at most max_demand at once, ConsumerSupervisor's
//! re-ask rule, failures that free their slot, restarts with a limit.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{joined, next, quiet, Numbers, Report};
use stageflow::{Reason, Restart, SubscribeOptions, Supervisor, SupervisorMsg};

/// Counts workers running now and the most ever seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn smoke() {
    let gauge = Arc::new(Gauge::default());
    let g = gauge.clone();
    let jobs = stageflow::from_iter(0..40u64).spawn().unwrap();
    let sup = stageflow::consumer(Supervisor::new(move |job: u64| {
        g.enter();
        std::thread::sleep(Duration::from_micros(200 * (job % 5)));
        g.leave();
        Ok(())
    }))
    .subscribe_to(&jobs, SubscribeOptions::new().max_demand(4).min_demand(2))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&sup), Reason::Normal);
    assert_eq!(
        gauge.done.load(Ordering::SeqCst),
        40,
        "every job ran before the supervisor ended"
    );
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!(
        (1..=4).contains(&peak),
        "at most max_demand workers at once, saw {peak}"
    );
}

#[test]
fn re_asks_after_min_demand_workers_finish() {
    // max 10, min 2: ten workers start; one finishing asks nothing; the second asks 2.
    let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
    let (numbers, demands) = Numbers::new(None);
    let p = stageflow::producer(numbers).spawn().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let sup = stageflow::consumer(Supervisor::new(move |_: u64| {
        s.fetch_add(1, Ordering::SeqCst);
        gate_rx.recv().map_err(|e| e.to_string())
    }))
    .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(2))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(next(&demands), Report::Demand(10));
    gate_tx.send(()).unwrap();
    quiet(&demands);
    gate_tx.send(()).unwrap();
    assert_eq!(next(&demands), Report::Demand(2));
    let stats = sup
        .call(SupervisorMsg::stats, Duration::from_secs(5))
        .unwrap();
    assert!(stats.peak <= 10, "{stats:?}");
    assert_eq!(stats.succeeded, 2);
    for _ in 0..100 {
        let _ = gate_tx.send(());
    }
    sup.stop();
    p.stop();
    joined(&sup);
    joined(&p);
}

#[test]
fn a_failed_worker_frees_its_slot() {
    let jobs = stageflow::from_iter(0..10u64).spawn().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let d = done.clone();
    let sup = stageflow::consumer(Supervisor::new(move |job: u64| {
        d.fetch_add(1, Ordering::SeqCst);
        match job % 3 {
            0 => Err(format!("job {job} failed")),
            1 => panic!("job {job} panicked"),
            _ => Ok(()),
        }
    }))
    .subscribe_to(
        &jobs,
        SubscribeOptions::new()
            .max_demand(1)
            .min_demand(0)
            .cancel(stageflow::CancelMode::Temporary),
    )
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&jobs), Reason::Normal);
    // One at a time, failures included: every job ran.
    let stats = loop {
        let stats = sup
            .call(SupervisorMsg::stats, Duration::from_secs(5))
            .unwrap();
        if stats.succeeded + stats.failed == 10 {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((stats.succeeded, stats.failed, stats.peak), (3, 7, 1));
    assert_eq!(done.load(Ordering::SeqCst), 10);
    sup.stop();
    joined(&sup);
}

#[test]
fn transient_restarts_keep_the_slot_and_have_a_limit() {
    // Job 3 fails the first time only: it is run again.
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    let jobs = stageflow::from_iter(0..6u64).spawn().unwrap();
    let sup = stageflow::consumer(
        Supervisor::new(move |job: u64| {
            if job == 3 && a.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err("flaky".into());
            }
            Ok(())
        })
        .restart(Restart::Transient {
            max_restarts: 3,
            within: Duration::from_secs(5),
        }),
    )
    .subscribe_to(
        &jobs,
        SubscribeOptions::new()
            .max_demand(2)
            .cancel(stageflow::CancelMode::Temporary),
    )
    .unwrap()
    .spawn()
    .unwrap();
    joined(&jobs);
    let stats = loop {
        let stats = sup
            .call(SupervisorMsg::stats, Duration::from_secs(5))
            .unwrap();
        if stats.succeeded == 6 {
            break stats;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!((stats.failed, stats.restarted), (1, 1));
    sup.stop();
    joined(&sup);

    // A job that always fails exhausts the restarts: the supervisor stops with an error.
    let jobs = stageflow::from_iter(0..1u64).spawn().unwrap();
    let sup = stageflow::consumer(Supervisor::new(|_: u64| Err("always".to_string())).restart(
        Restart::Transient {
            max_restarts: 2,
            within: Duration::from_secs(5),
        },
    ))
    .subscribe_to(
        &jobs,
        SubscribeOptions::new().cancel(stageflow::CancelMode::Temporary),
    )
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(
        joined(&sup),
        Reason::error("more than 2 worker restarts within 5s")
    );
}

#[test]
fn worker_threads_are_reused() {
    // 200 jobs, at most 4 at once: at most 4 threads ever run them.
    let threads = Arc::new(parking_lot::Mutex::new(std::collections::HashSet::new()));
    let t = threads.clone();
    let jobs = stageflow::from_iter(0..200u64).spawn().unwrap();
    let sup = stageflow::consumer(Supervisor::new(move |_: u64| {
        t.lock().insert(std::thread::current().id());
        Ok(())
    }))
    .subscribe_to(&jobs, SubscribeOptions::new().max_demand(4).min_demand(2))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&sup), Reason::Normal);
    let n = threads.lock().len();
    assert!((1..=4).contains(&n), "{n} worker threads for 200 jobs");
}

#[test]
fn results_say_which_job_failed_and_how() {
    let jobs = stageflow::from_iter(0..30u64).spawn().unwrap();
    let (supervisor, results) = Supervisor::with_results(
        |job: &u64| match job % 10 {
            3 => Err(format!("job {job} refused")),
            7 => panic!("job {job} exploded"),
            _ => Ok(job * 2),
        },
        4,
    );
    let sup = stageflow::consumer(supervisor)
        .subscribe_to(&jobs, SubscribeOptions::new().max_demand(3).min_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    let mut seen: Vec<u64> = Vec::new();
    for r in results.iter() {
        seen.push(r.job);
        match (r.job % 10, r.outcome) {
            (3, Err(stageflow::JobFailure::Error(e))) => {
                assert_eq!(e, format!("job {} refused", r.job))
            }
            (7, Err(stageflow::JobFailure::Panicked(m))) => {
                assert_eq!(m, format!("job {} exploded", r.job))
            }
            (_, Ok(v)) => assert_eq!(v, r.job * 2),
            (_, other) => panic!("job {}: unexpected {other:?}", r.job),
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..30).collect::<Vec<_>>(), "every job once");
    assert_eq!(joined(&sup), Reason::Normal);
}

#[test]
fn unread_results_hold_the_producer_back() {
    let jobs = stageflow::from_iter(0..50u64).spawn().unwrap();
    let (started_tx, started) = crossbeam_channel::unbounded();
    let (supervisor, results) = Supervisor::with_results(
        move |job: &u64| -> Result<u64, String> {
            started_tx.send(*job).unwrap();
            Ok(*job)
        },
        1,
    );
    let sup = stageflow::consumer(supervisor)
        .subscribe_to(&jobs, SubscribeOptions::new().max_demand(2).min_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    // Two slots and one result's room: at most three jobs start while nobody reads.
    for _ in 0..2 {
        common::next(&started);
    }
    let mut more = 0;
    while started.recv_timeout(Duration::from_millis(200)).is_ok() {
        more += 1;
        assert!(
            more <= 1,
            "a job started with every slot waiting on unread results"
        );
    }
    assert!(jobs.counters().events_out <= 4, "{:?}", jobs.counters());
    // Reading lets the rest through.
    assert_eq!(results.iter().count(), 50);
    assert_eq!(joined(&sup), Reason::Normal);
}
