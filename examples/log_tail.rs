//! Following a log file as `tail -F` does: its lines are counted per level while a writer
//! appends to it and rotates it; Ctrl-C (or SIGTERM) drains the pipeline, a second one stops
//! it, and the run ends with the drain report and the offset to resume from.
//!
//! `cargo run --release --features io --example log_tail` follows a demo file in the temp
//! directory that a writer thread appends to (`--rate`, 100 000 lines a second by default),
//! renaming it to `.1` every 50 000 lines; `-- --file PATH` follows a file of yours instead,
//! `--offset N` resumes at an offset a run printed, `--secs N` sends the process SIGINT after
//! N seconds. A reader that falls more than one rotation behind skips the files in between,
//! as `tail -F` does: it sees only the file the path names.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stageflow::fns::{Fold, Map};
use stageflow::io::{self, BadRecord};
use stageflow::{SubscribeOptions, Topology};

/// Lines the demo writer puts in one file before rotating it.
const ROTATE_EVERY: u64 = 50_000;

/// Appends log lines to `path` at `rate` lines a second until `stop`, rotating the file
/// every [`ROTATE_EVERY`] lines; counts the lines written and the rotations.
fn write_demo(
    path: &Path,
    rate: u64,
    stop: &AtomicBool,
    written: &AtomicU64,
    rotations: &AtomicU64,
) -> std::io::Result<()> {
    const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];
    let open = || OpenOptions::new().create(true).append(true).open(path);
    let mut out = BufWriter::new(open()?);
    let start = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if i.is_multiple_of(1000) {
            // Keep to the rate: a log written as it happens, not all at once.
            let due = Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                out.flush()?;
                std::thread::sleep(ahead);
            }
        }
        let level = LEVELS[(i * 7 % 11 % 4) as usize];
        writeln!(out, "2026-12-07T05:00:00Z {level} request {i} served")?;
        i += 1;
        if i.is_multiple_of(100) {
            out.flush()?;
            written.store(i, Ordering::Relaxed);
        }
        if i.is_multiple_of(ROTATE_EVERY) {
            out.flush()?;
            fs::rename(path, path.with_extension("log.1"))?;
            out = BufWriter::new(open()?);
            rotations.fetch_add(1, Ordering::Relaxed);
        }
    }
    out.flush()?;
    written.store(i, Ordering::Relaxed);
    Ok(())
}

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// The file to follow; `None`: a demo file a writer thread appends to.
    pub(crate) file: Option<PathBuf>,
    /// Where to start reading.
    pub(crate) offset: u64,
    /// The demo writer's lines a second.
    pub(crate) rate: u64,
    /// Send the process SIGINT after this many seconds.
    pub(crate) secs: Option<f64>,
    /// Print what happens.
    pub(crate) print: bool,
}

/// What a run saw.
#[derive(Debug)]
#[allow(dead_code)] // Read by the tests.
pub(crate) struct Summary {
    /// Lines counted, per level.
    pub(crate) counted: BTreeMap<String, u64>,
    /// The source's counters at the end.
    pub(crate) source: io::IoCounters,
    /// Lines the demo writer wrote.
    pub(crate) written: u64,
    /// Times the demo writer rotated the file.
    pub(crate) rotations: u64,
    /// How the run ended.
    pub(crate) report: io::ShutdownReport,
}

/// Follows the file until a signal drains the pipeline.
pub(crate) fn run(opts: Options) -> Result<Summary, Box<dyn std::error::Error>> {
    if opts.rate == 0 {
        return Err("--rate: expected at least 1 line a second, got 0".into());
    }
    let demo = opts.file.is_none();
    let path = match opts.file {
        Some(file) => file,
        None => {
            let name = format!("stageflow-log-tail-demo-{}.log", std::process::id());
            let path = std::env::temp_dir().join(name);
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(path.with_extension("log.1"));
            path
        }
    };
    let offset = opts.offset;
    let print = opts.print;

    let source = io::tail(&path)
        .start_at(offset)
        .poll_interval(Duration::from_millis(100))
        .on_invalid_utf8(BadRecord::Repair)
        .build()?;
    let stats = source.stats();
    let tail = stageflow::producer(source).name("tail").spawn()?;
    let level = stageflow::producer_consumer(Map::new(|line: String| {
        line.split_whitespace().nth(1).unwrap_or("?").to_owned()
    }))
    .name("level")
    .subscribe_to(&tail, SubscribeOptions::new().max_demand(500))?
    .spawn()?;
    let count = stageflow::consumer(Fold::new(
        BTreeMap::<String, u64>::new(),
        |mut counts, level: String| {
            *counts.entry(level).or_default() += 1;
            counts
        },
    ))
    .name("count")
    .keep_state()
    .subscribe_to(&level, SubscribeOptions::new().max_demand(500))?
    .spawn()?;
    let pipeline = Topology::new().with(&tail).with(&level).with(&count);

    // Handlers first: from here on, Ctrl-C drains instead of killing the process.
    let shutdown = io::shutdown_on_signals()
        .drain_timeout(Duration::from_secs(10))
        .on_signal(move |signal, action| {
            if print {
                eprintln!("signal {signal}: {action:?}…");
            }
        })
        .build()?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let rotations = Arc::new(AtomicU64::new(0));
    let writer = demo.then(|| {
        let (path, stop) = (path.clone(), stop.clone());
        let (written, rotations) = (written.clone(), rotations.clone());
        let rate = opts.rate;
        std::thread::spawn(move || write_demo(&path, rate, &stop, &written, &rotations))
    });
    if let Some(secs) = opts.secs {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
        });
    }
    if print {
        println!(
            "following {} from offset {offset}; Ctrl-C drains",
            path.display()
        );
    }

    let report = shutdown.run(&pipeline);
    stop.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.join().map_err(|_| "the demo writer panicked")??;
    }
    let counted = count
        .join_state()
        .1
        .and_then(Fold::into_inner)
        .unwrap_or_default();
    let c = stats.snapshot();
    let written = written.load(Ordering::Relaxed);
    let rotations = rotations.load(Ordering::Relaxed);
    if demo {
        let _ = fs::remove_file(&path);
        let _ = fs::remove_file(path.with_extension("log.1"));
    }
    if print {
        for (level, n) in &counted {
            println!("{level:>6} {n:>10}");
        }
        println!(
            "{:>6} {:>10} counted of {} lines read; {report}",
            "all",
            counted.values().sum::<u64>(),
            c.records
        );
        if demo {
            println!(
                "the writer wrote {written} lines and rotated the file {rotations} times; {} rotations seen",
                c.rotations
            );
        }
        println!(
            "{} bytes read, {} invalid utf-8, {} over-long, {} truncations; resume with --offset {}",
            c.bytes_read, c.invalid_utf8, c.oversize, c.truncations, c.offset
        );
    }
    Ok(Summary {
        counted,
        source: c,
        written,
        rotations,
        report,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let opts = Options {
        file: arg("--file").map(PathBuf::from),
        offset: arg("--offset").map(|o| o.parse()).transpose()?.unwrap_or(0),
        rate: arg("--rate")
            .map(|r| r.parse())
            .transpose()?
            .unwrap_or(100_000),
        secs: arg("--secs").map(|s| s.parse()).transpose()?,
        print: true,
    };
    run(opts)?;
    Ok(())
}
