//! Ending a pipeline gracefully on Ctrl-C: an endless stream of log lines is parsed and
//! counted per level in four partitions; Ctrl-C or SIGTERM (or `--secs N`) drains it: the
//! source stops, every line already in flight is counted, and the counts add up to what the
//! source emitted. A second signal during the drain stops every stage at once.
//!
//! `cargo run --release --features io --example drain` (then Ctrl-C), or `-- --secs 2`. The
//! signals are wired by `stageflow::io::shutdown_on_signals` (feature `io`, unix).

use std::collections::BTreeMap;
use std::time::Duration;

use stageflow::fns::{Fold, Map};
use stageflow::io::SignalAction;
use stageflow::{DrainReport, SubscribeOptions, Topology};

/// What a run saw.
#[derive(Debug)]
#[allow(dead_code)] // Read by the tests.
pub(crate) struct Summary {
    /// Lines the source emitted.
    pub(crate) emitted: u64,
    /// Lines counted, per level, summed over the partitions.
    pub(crate) counted: BTreeMap<String, u64>,
    /// Whether the drain finished within its timeout.
    pub(crate) complete: bool,
}

/// An endless source of log lines.
fn lines() -> impl Iterator<Item = String> {
    const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];
    (0u64..).map(|i| {
        let level = LEVELS[(i * 7 % 11 % 4) as usize];
        format!("2026-12-01T12:00:00Z {level} request {i} served")
    })
}

/// Starts the pipeline and hands it to `end`, which drains it when it is time (on a signal,
/// in `main`; when a test says so) and returns the drain's report; then sums the counts.
pub(crate) fn run(
    end: impl FnOnce(&Topology) -> DrainReport,
    print: bool,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let (pipeline, counters) = stageflow::from_iter(lines())
        .name("log")
        .via(Map::new(|line: String| {
            line.split_whitespace().nth(1).unwrap_or("?").to_owned()
        }))
        .options(SubscribeOptions::new().max_demand(500))
        .partition(4, |level: &String| level.clone())
        .to(|_| {
            stageflow::consumer(Fold::new(
                BTreeMap::<String, u64>::new(),
                |mut counts, level: String| {
                    *counts.entry(level).or_default() += 1;
                    counts
                },
            ))
            .keep_state()
        })
        .run_sinks()?;
    let report = end(&pipeline);
    let mut counted = BTreeMap::new();
    for sink in &counters {
        // The value, not `join_result`: after a second signal (or a drain that timed out) the
        // stopped sinks still hold what they counted, and the report says it is partial.
        if let Some(counts) = sink.join_state().1.and_then(Fold::into_inner) {
            for (level, n) in counts {
                *counted.entry(level).or_default() += n;
            }
        }
    }
    let emitted = pipeline.stages()[0].counters().events_out;
    if print {
        for (level, n) in &counted {
            println!("{level:>6} {n:>10}");
        }
        println!(
            "{:>6} {:>10} counted of {emitted} emitted; drained {}",
            "all",
            counted.values().sum::<u64>(),
            if report.is_complete() {
                "completely".to_string()
            } else {
                format!("after stopping {:?}", report.stopped)
            }
        );
    }
    Ok(Summary {
        emitted,
        counted,
        complete: report.is_complete(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Handlers first: from here on, Ctrl-C drains instead of killing the process.
    let shutdown = stageflow::io::shutdown_on_signals()
        .drain_timeout(Duration::from_secs(5))
        .on_signal(|_, action| match action {
            SignalAction::Drain => println!("draining… (again to stop at once)"),
            _ => println!("stopping every stage"),
        })
        .build()?;
    let args: Vec<String> = std::env::args().collect();
    if let Some(secs) = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
    {
        let secs: f64 = secs.parse().map_err(|e| format!("--secs {secs}: {e}"))?;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
        });
    } else {
        println!("counting log lines; Ctrl-C drains and ends");
    }
    run(move |pipeline| shutdown.run(pipeline).drain, true)?;
    Ok(())
}
