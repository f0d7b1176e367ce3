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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let offset: u64 = arg("--offset").map(|o| o.parse()).transpose()?.unwrap_or(0);
    let rate: u64 = arg("--rate")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(100_000);
    if rate == 0 {
        return Err("--rate: expected at least 1 line a second, got 0".into());
    }
    let demo = arg("--file").is_none();
    let path = match arg("--file") {
        Some(file) => PathBuf::from(file),
        None => {
            let path = std::env::temp_dir().join("stageflow-log-tail-demo.log");
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(path.with_extension("log.1"));
            path
        }
    };

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
        .on_signal(|signal, action| eprintln!("signal {signal}: {action:?}…"))
        .build()?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let rotations = Arc::new(AtomicU64::new(0));
    let writer = demo.then(|| {
        let (path, stop) = (path.clone(), stop.clone());
        let (written, rotations) = (written.clone(), rotations.clone());
        std::thread::spawn(move || write_demo(&path, rate, &stop, &written, &rotations))
    });
    if let Some(secs) = arg("--secs") {
        let secs: f64 = secs.parse()?;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(secs));
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGINT);
        });
    }
    println!(
        "following {} from offset {offset}; Ctrl-C drains",
        path.display()
    );

    let report = shutdown.run(&pipeline);
    stop.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        writer.join().map_err(|_| "the demo writer panicked")??;
    }
    let counts = count
        .join_state()
        .1
        .map(Fold::into_inner)
        .unwrap_or_default();
    for (level, n) in &counts {
        println!("{level:>6} {n:>10}");
    }
    let c = stats.snapshot();
    println!(
        "{:>6} {:>10} counted of {} lines read; {report}",
        "all",
        counts.values().sum::<u64>(),
        c.records
    );
    if demo {
        println!(
            "the writer wrote {} lines and rotated the file {} times; {} rotations seen",
            written.load(Ordering::Relaxed),
            rotations.load(Ordering::Relaxed),
            c.rotations
        );
    }
    println!(
        "{} bytes read, {} invalid utf-8, {} over-long, {} truncations; resume with --file {} --offset {}",
        c.bytes_read,
        c.invalid_utf8,
        c.oversize,
        c.truncations,
        path.display(),
        c.offset
    );
    Ok(())
}
