//! Ending a pipeline gracefully on Ctrl-C: an endless stream of log lines is parsed and
//! counted per level in four partitions; Ctrl-C (or `--secs N`) drains it: the source stops,
//! every line already in flight is counted, and the counts add up to what the source emitted.
//!
//! `cargo run --release --example drain` (then Ctrl-C), or `-- --secs 2`.

use std::collections::BTreeMap;
use std::time::Duration;

use stageflow::fns::{Fold, Map};
use stageflow::SubscribeOptions;

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

/// Runs until `stop` says so (a Ctrl-C, a timer), then drains.
pub(crate) fn run(
    stop: crossbeam_channel::Receiver<()>,
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
    let _ = stop.recv();
    if print {
        println!("draining…");
    }
    let report = pipeline.drain(Duration::from_secs(5));
    let mut counted = BTreeMap::new();
    for sink in &counters {
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
    let (tx, rx) = crossbeam_channel::bounded(1);
    let args: Vec<String> = std::env::args().collect();
    if let Some(secs) = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
    {
        let secs: f64 = secs.parse()?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            let _ = tx.try_send(());
        });
    } else {
        println!("counting log lines; Ctrl-C drains and ends");
    }
    ctrlc::set_handler(move || {
        let _ = tx.try_send(());
    })?;
    run(rx, true)?;
    Ok(())
}
