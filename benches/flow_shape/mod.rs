//! Row n of `compare`: word count over a generated corpus through a flow (lines → mapper
//! stages splitting words → partition(4) by word → count per partition → departition merging
//! the counts), beside a single-threaded `HashMap` loop and a rayon `fold`/`reduce`, in one
//! run, alternately; words/s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stageflow::flow::{Flow, Partitions};

/// `lines` lines of 10 words from a vocabulary of 5000, skewed towards the first words (as
/// natural text is), the same in every run.
fn corpus(lines: usize) -> Vec<&'static str> {
    let vocabulary: Vec<String> = (0..5000).map(|i| format!("w{i}")).collect();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..lines)
        .map(|_| {
            let words: Vec<&str> = (0..10)
                .map(|_| {
                    let r = (random() % 1_000_000) as f64 / 1_000_000.0;
                    vocabulary[(r * r * r * 5000.0) as usize].as_str()
                })
                .collect();
            &*Box::leak(words.join(" ").into_boxed_str())
        })
        .collect()
}

type Counts = HashMap<&'static str, u64>;

fn merge(all: &mut Counts, part: Counts) {
    for (w, n) in part {
        *all.entry(w).or_insert(0) += n;
    }
}

/// The flow: map → partition(4) → reduce → departition.
fn through_flow(corpus: &'static [&'static str]) -> (Duration, Counts) {
    let start = Instant::now();
    let out = Flow::from_iter(corpus.iter().copied())
        .stages(2)
        .flat_map(|line: &'static str| line.split(' ').collect::<Vec<_>>())
        .partition(Partitions::by_key(|w: &&'static str| *w).stages(4))
        .count_by_key(|w| *w)
        .departition(HashMap::new, merge, |all| all)
        .collect()
        .expect("the flow runs");
    let elapsed = start.elapsed();
    let counts = out.into_iter().next().expect("one window").value;
    (elapsed, counts)
}

/// One thread, one `HashMap`.
fn single_loop(corpus: &'static [&'static str]) -> (Duration, Counts) {
    let start = Instant::now();
    let mut counts = Counts::new();
    for line in corpus {
        for w in line.split(' ') {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    (start.elapsed(), counts)
}

/// Rayon: a `HashMap` per split, merged pairwise.
fn rayon_fold(corpus: &'static [&'static str]) -> (Duration, Counts) {
    let start = Instant::now();
    let counts = corpus
        .par_iter()
        .fold(Counts::new, |mut counts, line| {
            for w in line.split(' ') {
                *counts.entry(w).or_insert(0) += 1;
            }
            counts
        })
        .reduce(Counts::new, |mut a, b| {
            merge(&mut a, b);
            a
        });
    (start.elapsed(), counts)
}

/// CPU time of the whole process so far (user + system, every thread), from
/// `/proc/self/stat`, in clock ticks of 10 ms; zero where there is no such file.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

fn rate(words: u64, t: &mut [Duration]) -> (f64, f64, f64) {
    let mut r: Vec<f64> = t.iter().map(|d| words as f64 / d.as_secs_f64()).collect();
    r.sort_by(|a, b| a.partial_cmp(b).expect("rates are finite"));
    (r[r.len() / 2], r[0], r[r.len() - 1])
}

/// Median CPU nanoseconds per word.
fn cpu_per_word(words: u64, cpu: &mut [Duration]) -> f64 {
    cpu.sort();
    cpu[cpu.len() / 2].as_nanos() as f64 / words as f64
}

fn m(r: f64) -> String {
    format!("{:.1} M", r / 1e6)
}

/// Prints the table of row n.
pub(crate) fn table(quick: bool, rounds: usize) {
    let lines = if quick { 50_000 } else { 200_000 };
    let corpus: &'static [&'static str] = Box::leak(corpus(lines).into_boxed_slice());
    let words = lines as u64 * 10;
    let (_, expected) = single_loop(corpus);
    println!(
        "## n: word count, {lines} lines, {words} words, {} distinct (words/s: median (min–max) of {rounds} rounds, run alternately; CPU ns/word: median, all threads)",
        expected.len()
    );
    println!();
    println!(
        "| id | flow: 2 mappers → partition(4) → count → departition | single-threaded HashMap loop | rayon fold/reduce ({} threads) | flow / loop | flow / rayon | CPU ns/word: flow, loop, rayon |",
        rayon::current_num_threads()
    );
    println!("|---|---|---|---|---|---|---|");
    type Run = fn(&'static [&'static str]) -> (Duration, Counts);
    let runs: [Run; 3] = [through_flow, single_loop, rayon_fold];
    // STAGEFLOW_ONLY=stageflow runs the flow only (for profiling; the other columns then
    // read nothing meaningful), as `compare`'s other rows do.
    let flow_only = std::env::var("STAGEFLOW_ONLY").as_deref() == Ok("stageflow");
    let ways = if flow_only { 1 } else { runs.len() };
    for run in &runs[..ways] {
        let (_, counts) = run(corpus); // Warm up, and check.
        assert_eq!(counts, expected, "every way counts the same");
    }
    let mut times: [Vec<Duration>; 3] = Default::default();
    let mut cpu: [Vec<Duration>; 3] = Default::default();
    if flow_only {
        for (t, c) in times.iter_mut().zip(&mut cpu).skip(1) {
            t.push(Duration::from_secs(1));
            c.push(Duration::ZERO);
        }
    }
    for _ in 0..rounds {
        for ((run, t), c) in runs[..ways].iter().zip(&mut times).zip(&mut cpu) {
            let before = cpu_time();
            t.push(run(corpus).0);
            c.push(cpu_time().saturating_sub(before));
        }
    }
    let [(fa, fl, fh), (la, ll, lh), (ra, rl, rh)] = times.map(|mut t| rate(words, &mut t));
    let [cf, cl, cr] = cpu.map(|mut c| cpu_per_word(words, &mut c));
    println!(
        "| n | {} ({}–{}) | {} ({}–{}) | {} ({}–{}) | {:.2}× | {:.2}× | {cf:.0}, {cl:.0}, {cr:.0} |",
        m(fa),
        m(fl),
        m(fh),
        m(la),
        m(ll),
        m(lh),
        m(ra),
        m(rl),
        m(rh),
        fa / la,
        fa / ra
    );
    println!();
}
