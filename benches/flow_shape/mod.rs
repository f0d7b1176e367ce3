//! Rows n, nc, nb and ns of `compare`: word count over a generated corpus through a flow
//! (lines → mapper stages splitting words → partition(4) by word → count per partition →
//! departition merging the counts; nc with the words borrowed and each batch pre-counted
//! before the partition; nb the same flow as nc in a scope, over lines the caller owns:
//! `&[String]`, words kept as `&str`, nothing copied or leaked), and through a chain in a
//! scope over the same owned lines (ns), beside a single-threaded `HashMap` loop and a rayon
//! `fold`/`reduce`, in one run, alternately; words/s.
//!
//! `STAGEFLOW_FLOW=mappers,partitions,max_demand,partition_max_demand` sizes both flows
//! (defaults `2,4,1000,1000`): for the sizing figures of the flow guide.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use stageflow::flow::{Flow, Partitions, ScopedFlow};
use stageflow::fns::Fold;

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

type Counts<'a> = HashMap<&'a str, u64>;

/// The flows' sizes: mapper stages, partitions, the mappers' and the reducers' `max_demand`.
#[derive(Clone, Copy)]
struct Sizes {
    mappers: usize,
    partitions: usize,
    max_demand: usize,
    partition_max_demand: usize,
}

fn sizes() -> Sizes {
    let given: Vec<usize> = std::env::var("STAGEFLOW_FLOW")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let at = |i: usize, default: usize| given.get(i).copied().unwrap_or(default);
    Sizes {
        mappers: at(0, 2),
        partitions: at(1, 4),
        max_demand: at(2, 1000),
        partition_max_demand: at(3, 1000),
    }
}

fn merge<'a>(all: &mut Counts<'a>, part: Counts<'a>) {
    for (w, n) in part {
        *all.entry(w).or_insert(0) += n;
    }
}

/// The flow: map → partition(4) → reduce → departition.
fn through_flow(corpus: &'static [&'static str]) -> (Duration, Counts<'static>) {
    let z = sizes();
    let start = Instant::now();
    let out = Flow::from_iter(corpus.iter().copied())
        .stages(z.mappers)
        .max_demand(z.max_demand)
        .flat_map(|line: &'static str| line.split(' ').collect::<Vec<_>>())
        .partition(
            Partitions::by_key(|w: &&'static str| *w)
                .stages(z.partitions)
                .max_demand(z.partition_max_demand),
        )
        .count_by_key(|w| *w)
        .departition(HashMap::new, merge, |all| all)
        .collect()
        .expect("the flow runs");
    let elapsed = start.elapsed();
    let counts = out.into_iter().next().expect("one window").value;
    (elapsed, counts)
}

/// The same count as the user the docs now show would write it: words borrowed from the
/// lines with no `Vec` per line, and `Flow::count_by_key` (the key written once), whose
/// mappers count each batch before the partition.
fn pre_counted(corpus: &'static [&'static str]) -> (Duration, Counts<'static>) {
    let z = sizes();
    let start = Instant::now();
    let out = Flow::from_iter(corpus.iter().copied())
        .stages(z.mappers)
        .max_demand(z.max_demand)
        .flat_map(|line: &'static str| line.split(' '))
        .count_by_key(
            |w: &&'static str| *w,
            Partitions::by_event()
                .stages(z.partitions)
                .max_demand(z.partition_max_demand),
        )
        .departition(HashMap::new, merge, |all| all)
        .collect()
        .expect("the flow runs");
    let elapsed = start.elapsed();
    let counts = out.into_iter().next().expect("one window").value;
    (elapsed, counts)
}

/// nc's flow in a scope, over lines the caller owns: `ScopedFlow::from_borrowed`, the words
/// `&str` slices of the caller's `String`s.
fn borrowed_flow(lines: &[String]) -> (Duration, Counts<'_>) {
    let z = sizes();
    let start = Instant::now();
    let out = std::thread::scope(|s| {
        ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
            .stages(z.mappers)
            .max_demand(z.max_demand)
            .flat_map(|line: &str| line.split(' '))
            .count_by_key(
                |w| *w,
                Partitions::by_event()
                    .stages(z.partitions)
                    .max_demand(z.partition_max_demand),
            )
            .departition(HashMap::new, merge, |all| all)
            .collect_in(s)
            .expect("the flow runs")
    });
    let elapsed = start.elapsed();
    let counts = out.into_iter().next().expect("one window").value;
    (elapsed, counts)
}

/// In a scope, over lines the caller owns: the source lends each line as a `&str`, each of
/// two lanes folds the lines it is given into a map keyed by the borrowed words (rayon's
/// `fold`), and the caller adds the lanes' maps (its `reduce`). No `String`, no copy of the
/// corpus, no `'static`.
fn scoped_chain(lines: &[String]) -> (Duration, Counts<'_>) {
    let start = Instant::now();
    let lanes = std::thread::scope(|s| {
        let lanes = stageflow::from_iter(lines.iter().map(String::as_str))
            .chain_in(s)
            .parallel(2)
            .to(|_lane| {
                stageflow::consumer(Fold::new(Counts::new(), |mut counts, line: &str| {
                    for w in line.split(' ') {
                        *counts.entry(w).or_insert(0) += 1;
                    }
                    counts
                }))
                .keep_state()
            })
            .run_sinks()
            .expect("the chain starts");
        lanes
            .iter()
            .map(|lane| lane.join_result().expect("the lane counts"))
            .collect::<Vec<_>>()
    });
    let mut lanes = lanes.into_iter();
    let mut counts = lanes.next().unwrap_or_default();
    for lane in lanes {
        merge(&mut counts, lane);
    }
    (start.elapsed(), counts)
}

/// One thread, one `HashMap`.
fn single_loop<'a>(corpus: &[&'a str]) -> (Duration, Counts<'a>) {
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
fn rayon_fold<'a>(corpus: &[&'a str]) -> (Duration, Counts<'a>) {
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

/// Prints the table of rows n and nc (those `only` names, or both).
pub(crate) fn table(quick: bool, rounds: usize, only: Option<&[String]>) {
    let lines = if quick { 50_000 } else { 200_000 };
    let corpus: &'static [&'static str] = Box::leak(corpus(lines).into_boxed_slice());
    // Row ns reads lines this function owns, as a user's program would.
    let owned: Vec<String> = corpus.iter().map(|l| l.to_string()).collect();
    let words = lines as u64 * 10;
    let (_, expected) = single_loop(corpus);
    println!(
        "## n: word count, {lines} lines, {words} words, {} distinct (words/s: median (min–max) of {rounds} rounds, run alternately; CPU ns/word: median, all threads)",
        expected.len()
    );
    if std::env::var("STAGEFLOW_FLOW").is_ok() {
        let z = sizes();
        println!(
            "STAGEFLOW_FLOW: {} mappers (max_demand {}), {} partitions (max_demand {})",
            z.mappers, z.max_demand, z.partitions, z.partition_max_demand
        );
    }
    println!();
    println!(
        "| id | flow | single-threaded HashMap loop | rayon fold/reduce ({} threads) | flow / loop | flow / rayon | CPU ns/word: flow, loop, rayon |",
        rayon::current_num_threads()
    );
    println!("|---|---|---|---|---|---|---|");
    type Run<'a> = Box<dyn Fn() -> (Duration, Counts<'a>) + 'a>;
    let want = |id: &str| only.is_none_or(|o| o.iter().any(|x| x == id));
    // STAGEFLOW_ONLY=stageflow runs the flows only (for profiling; the other columns then
    // read nothing meaningful), as `compare`'s other rows do.
    let flows_only = std::env::var("STAGEFLOW_ONLY").as_deref() == Ok("stageflow");
    let ways: Vec<(&str, Run<'_>)> = [
        ("n", Box::new(|| through_flow(corpus)) as Run<'_>),
        ("nc", Box::new(|| pre_counted(corpus))),
        ("nb", Box::new(|| borrowed_flow(&owned))),
        ("ns", Box::new(|| scoped_chain(&owned))),
        ("loop", Box::new(|| single_loop(corpus))),
        ("rayon", Box::new(|| rayon_fold(corpus))),
    ]
    .into_iter()
    .filter(|(id, _)| match *id {
        "loop" | "rayon" => !flows_only,
        id => want(id),
    })
    .collect();
    for (_, run) in &ways {
        let (_, counts) = run(); // Warm up, and check.
        assert_eq!(counts, expected, "every way counts the same");
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    let mut cpu: Vec<Vec<Duration>> = vec![Vec::new(); ways.len()];
    for _ in 0..rounds {
        for (((_, run), t), c) in ways.iter().zip(&mut times).zip(&mut cpu) {
            let before = cpu_time();
            t.push(run().0);
            c.push(cpu_time().saturating_sub(before));
        }
    }
    let figures = |id: &str| {
        let i = ways.iter().position(|(w, _)| *w == id)?;
        let (mid, lo, hi) = rate(words, &mut times[i].clone());
        Some((mid, lo, hi, cpu_per_word(words, &mut cpu[i].clone())))
    };
    let none = (1.0, 1.0, 1.0, 0.0);
    let (la, ll, lh, cl) = figures("loop").unwrap_or(none);
    let (ra, rl, rh, cr) = figures("rayon").unwrap_or(none);
    let rows = [
        ("n", "2 mappers → partition(4) → count_by_key → departition"),
        ("nc", "2 mappers (no Vec per line) → count_by_key, pre-counted per turn, 4 partitions → departition"),
        ("nb", "nc in a scope, over owned `String` lines (`ScopedFlow`, `&str` keys)"),
        ("ns", "in a scope, over owned `String` lines: chain of 2 lanes folding `&str`-keyed maps, merged"),
    ];
    for (id, shape) in rows {
        let Some((fa, fl, fh, cf)) = figures(id) else {
            continue;
        };
        println!(
            "| {id}: {shape} | {} ({}–{}) | {} ({}–{}) | {} ({}–{}) | {:.2}× | {:.2}× | {cf:.0}, {cl:.0}, {cr:.0} |",
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
    }
    println!();
}
