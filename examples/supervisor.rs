//! A consumer supervisor: one worker thread per job, never more than `max_demand` at once, and
//! ConsumerSupervisor's re-ask rule (ask again once `min_demand` workers have finished).
//!
//! `cargo run --example supervisor`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stageflow::{Reason, SubscribeOptions, Supervisor};

/// What a run saw.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) jobs: usize,
    pub(crate) peak_in_flight: usize,
    pub(crate) max_demand: usize,
    pub(crate) elapsed: Duration,
}

/// Runs `jobs` jobs of 1-8 ms each with at most `max_demand` workers.
pub(crate) fn run(
    jobs: u64,
    max_demand: usize,
    min_demand: usize,
) -> Result<Summary, Box<dyn std::error::Error>> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (f, p, d) = (in_flight.clone(), peak.clone(), done.clone());
    let started = Instant::now();
    let producer = stageflow::from_iter(1..=jobs).name("jobs").spawn()?;
    let supervisor = stageflow::consumer(Supervisor::new(move |job: u64| {
        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(1 + job * 7 % 8));
        f.fetch_sub(1, Ordering::SeqCst);
        d.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }))
    .name("supervisor")
    .subscribe_to(
        &producer,
        SubscribeOptions::new()
            .max_demand(max_demand)
            .min_demand(min_demand),
    )?
    .spawn()?;
    let outcome = supervisor.join();
    if outcome != Reason::Normal {
        return Err(format!("the supervisor ended abnormally: {outcome}").into());
    }
    Ok(Summary {
        jobs: done.load(Ordering::SeqCst),
        peak_in_flight: peak.load(Ordering::SeqCst),
        max_demand,
        elapsed: started.elapsed(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let summary = run(100, 5, 2)?;
    println!(
        "{} jobs in {:.2} s; at most {} workers in flight (max_demand {})",
        summary.jobs,
        summary.elapsed.as_secs_f64(),
        summary.peak_in_flight,
        summary.max_demand
    );
    if summary.peak_in_flight > summary.max_demand {
        return Err("more workers in flight than max_demand".into());
    }
    Ok(())
}
