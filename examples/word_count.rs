//! A word count over lines the program owns, in a scope: the pipeline borrows the lines
//! (`&str` events) and counts the words by `&str` keys, with no `String` per word, no copy of
//! the text and nothing made `'static`. Two lanes each fold the lines they are given into a
//! map, the way rayon's `fold` does; the program adds the two maps, and checks the total
//! against a plain loop.
//!
//! `cargo run --release --example word_count` (a generated text), or
//! `cargo run --release --example word_count -- --file PATH` (any UTF-8 text file);
//! `--lanes N`, `--top N`.

use std::collections::HashMap;
use std::error::Error;
use std::time::{Duration, Instant};

use stageflow::fns::Fold;

/// Counts by word.
pub(crate) type Counts<'a> = HashMap<&'a str, u64>;

/// What a run found.
#[derive(Debug)]
pub(crate) struct Report<'a> {
    /// Every word's count.
    pub(crate) counts: Counts<'a>,
    /// Words counted.
    pub(crate) words: u64,
    /// How long the pipeline took.
    pub(crate) took: Duration,
}

/// Counts the words of `lines` through `lanes` stages in a scope.
pub(crate) fn run(lines: &[String], lanes: usize) -> Result<Report<'_>, Box<dyn Error>> {
    let start = Instant::now();
    let parts = std::thread::scope(|scope| -> Result<Vec<Counts<'_>>, Box<dyn Error>> {
        let sinks = stageflow::from_iter(lines.iter().map(String::as_str))
            .name("lines")
            .chain_in(scope)
            .parallel(lanes)
            .to(|lane| {
                stageflow::consumer(Fold::new(Counts::new(), |mut counts, line: &str| {
                    for word in line.split_whitespace() {
                        *counts.entry(word).or_insert(0) += 1;
                    }
                    counts
                }))
                .name(format!("count-{lane}"))
                .keep_state()
            })
            .run_sinks()?;
        let mut parts = Vec::with_capacity(sinks.len());
        for sink in sinks {
            parts.push(sink.join_result()?);
        }
        Ok(parts)
    })?;
    let mut counts = Counts::new();
    for part in parts {
        for (word, n) in part {
            *counts.entry(word).or_insert(0) += n;
        }
    }
    Ok(Report {
        words: counts.values().sum(),
        counts,
        took: start.elapsed(),
    })
}

/// `n` lines of ten words from a vocabulary of 2000, skewed as text is.
pub(crate) fn generated(n: usize) -> Vec<String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as f64 / 1_000_000.0
    };
    (0..n)
        .map(|_| {
            (0..10)
                .map(|_| format!("w{}", (random().powi(3) * 2000.0) as usize))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let lanes = value("--lanes").map_or(Ok(2), |v| v.parse())?;
    let top = value("--top").map_or(Ok(10), |v| v.parse())?;
    let lines = match value("--file") {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(str::to_owned)
            .collect(),
        None => generated(200_000),
    };
    let report = run(&lines, lanes)?;
    let by_hand: u64 = lines
        .iter()
        .map(|l| l.split_whitespace().count() as u64)
        .sum();
    assert_eq!(report.words, by_hand, "every word counted once");
    println!(
        "{} words ({} distinct) from {} lines in {:.1?} through {lanes} lanes",
        report.words,
        report.counts.len(),
        lines.len(),
        report.took
    );
    let mut ranked: Vec<(&str, u64)> = report.counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    for (word, n) in ranked.into_iter().take(top) {
        println!("{n:>9}  {word}");
    }
    Ok(())
}
