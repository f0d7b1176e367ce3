//! The reporter: its lines, its callback, and that it ends with the pipeline or its handle.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};
use stageflow::observe::{ObserveError, Reporter};
use stageflow::{Reason, SubscribeOptions, Topology};

use crate::common::{joined, next, LIMIT};
use crate::fixtures::{Push, Pushed, Sink};

/// Keeps what is logged at target `stageflow::observe`.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.target() == "stageflow::observe"
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push((r.level(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

fn captured() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

#[test]
fn smoke_the_callback_sees_the_pipeline_end_and_the_reporter_ends() {
    let p = stageflow::from_iter(0..300u64)
        .name("rep-numbers")
        .spawn()
        .unwrap();
    let (seen, _rx) = bounded(1024);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("rep-sink")
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let (tx, rx) = unbounded();
    let reporter = Reporter::every(Duration::from_millis(5))
        .on_snapshot(move |s| {
            let _ = tx.send(s.clone());
        })
        .start(&topology)
        .unwrap();
    topology.join();
    let deadline = std::time::Instant::now() + LIMIT;
    while !reporter.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the reporter did not end with the pipeline"
        );
        std::thread::yield_now();
    }
    reporter.join();
    let all: Vec<_> = rx.iter().collect(); // the callback (and its sender) is gone
    let last = all.last().expect("at least one report");
    assert!(last.all_ended());
    assert_eq!(last.stage("rep-sink").unwrap().events_in, 300);
    assert!(
        all.iter().all(|s| s.interval.is_some()),
        "every report has rates"
    );
}

#[test]
fn log_lines_name_every_stage_at_info_level() {
    let capture = captured();
    let p = stageflow::producer(Pushed).name("log-src").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("log-sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10))
        .unwrap()
        .spawn()
        .unwrap();
    p.cast(Push::Emit(vec![1, 2, 3])).unwrap();
    assert_eq!(next(&seen_rx), 3);
    let topology = Topology::new().with(&p).with(&c);
    let reporter = Reporter::every(Duration::from_millis(5))
        .start(&topology)
        .unwrap();
    p.cast(Push::End(Reason::Normal)).unwrap();
    joined(&c);
    reporter.join(); // ends after logging the ended pipeline
    let lines = capture.0.lock().unwrap().clone();
    let mine: Vec<&(log::Level, String)> =
        lines.iter().filter(|(_, l)| l.contains("log-s")).collect();
    assert!(mine.iter().all(|(level, _)| *level == log::Level::Info));
    let last_src = mine
        .iter()
        .rev()
        .find(|(_, l)| l.starts_with("stage log-src "))
        .unwrap();
    assert_eq!(
        last_src.1,
        "stage log-src (producer, normal): in 0 (0/s), out 3 (0/s), discarded 0, buffered 0, inbox 0/1024, busy 0%"
    );
    let last_sink = mine
        .iter()
        .rev()
        .find(|(_, l)| l.starts_with("stage log-sink "))
        .unwrap();
    assert!(
        last_sink
            .1
            .starts_with("stage log-sink (consumer, normal): in 3 (0/s), out 0"),
        "{}",
        last_sink.1
    );
    // While running, a line per stage per report: at least one report before the end, or the
    // final one (the pipeline may end within the first interval).
    assert!(mine.len() >= 2, "{mine:?}");
}

#[test]
fn dropping_the_handle_stops_the_reporter() {
    let p = stageflow::producer(Pushed)
        .name("drop-src")
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p);
    let (tx, rx) = unbounded();
    let reporter = Reporter::every(Duration::from_millis(2))
        .on_snapshot(move |_| {
            let _ = tx.send(());
        })
        .start(&topology)
        .unwrap();
    next(&rx);
    drop(reporter); // joins the reporter's thread
    while rx.try_recv().is_ok() {}
    assert!(
        rx.recv_timeout(Duration::from_millis(50)).is_err(),
        "reports after the drop"
    );
    assert!(rx.is_empty());
    drop(topology);
    joined(&p);
}

#[test]
fn a_zero_interval_is_refused_by_name() {
    let p = stageflow::producer(Pushed)
        .name("zero-src")
        .spawn()
        .unwrap();
    let err = Reporter::every(Duration::ZERO).start(&p).unwrap_err();
    assert!(
        matches!(
            err,
            ObserveError::InvalidOption {
                option: "interval",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "invalid option interval: expected an interval of at least 1ms, got 0ns"
    );
    p.stop();
    joined(&p);
}
