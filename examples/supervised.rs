//! Let it crash: a flaky parser in a supervised group panics on corrupt readings and comes
//! back, fresh, after a short backoff; the source and the store never stop, and the restart
//! counts and what the crashes cost are printed at the end.
//!
//! `cargo run --example supervised` (`-- --readings N` for more).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stageflow::fns::{ForEach, Map};
use stageflow::supervise::{self, Backoff, ChildSpec, Intensity, RestartPolicy};
use stageflow::{Reason, SubscribeOptions};

/// One reading in this many is corrupt (1250, 3750, ...), and the parser panics on it.
const CORRUPT_EVERY: u64 = 2500;

/// What a run saw.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) emitted: u64,
    pub(crate) stored: u64,
    /// Each child's name and restarts.
    pub(crate) restarts: Vec<(String, u64)>,
    pub(crate) outcome: Reason,
}

/// Runs `readings` readings through source → parser → store, in one group.
pub(crate) fn run(readings: u64) -> Result<Summary, Box<dyn std::error::Error>> {
    let mut group = supervise::group("sensors")
        .backoff(Backoff::Exponential {
            first: Duration::from_millis(10),
            max: Duration::from_millis(200),
        })
        // A crash per corrupt reading is expected; a storm is not.
        .intensity(Intensity::new(10, Duration::from_secs(1)));
    // A finite source: transient, so finishing is not a reason to start it again.
    let source = group.add(
        ChildSpec::new("source", move || stageflow::from_iter(0..readings))
            .restart(RestartPolicy::Transient),
    );
    // The parser gets a fresh state on each restart; here it has none, and its factory just
    // makes a new stage.
    let parser = group.add(
        ChildSpec::new("parser", || {
            stageflow::producer_consumer(Map::new(|reading: u64| {
                if reading % CORRUPT_EVERY == CORRUPT_EVERY / 2 {
                    panic!("corrupt reading {reading}");
                }
                reading as f64 / 10.0
            }))
        })
        .subscribe_to(&source, SubscribeOptions::new().max_demand(100))?,
    );
    let stored = Arc::new(AtomicU64::new(0));
    let s = stored.clone();
    group.add(
        ChildSpec::new("store", move || {
            let s = s.clone();
            stageflow::consumer(ForEach::new(move |_celsius: f64| {
                s.fetch_add(1, Ordering::Relaxed);
            }))
        })
        .subscribe_to(&parser, SubscribeOptions::new())?,
    );
    let group = group.start()?;
    // The source finishes; the group then finishes the parser and the store, and ends.
    let outcome = group.join();
    Ok(Summary {
        emitted: source.counters().emitted,
        stored: stored.load(Ordering::Relaxed),
        restarts: group.restart_counts(),
        outcome,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut readings = 10_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--readings" => {
                readings = args.next().ok_or("--readings needs a number")?.parse()?;
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let summary = run(readings)?;
    println!(
        "{} readings emitted, {} stored, {} lost in the parser's crashes",
        summary.emitted,
        summary.stored,
        summary.emitted - summary.stored
    );
    for (child, restarts) in &summary.restarts {
        println!("{child}: restarted {restarts} times");
    }
    println!("the group ended: {}", summary.outcome);
    if summary.outcome != Reason::Normal {
        return Err(format!("the group failed: {}", summary.outcome).into());
    }
    Ok(())
}
