//! A rate limiter with manual demand (GenStage's RateLimiter example): the consumer takes its
//! subscription's demand into its own hands and asks for `N` events every `interval`, so no
//! more than `N` events arrive per interval however fast the producer is.
//!
//! `cargo run --example rate_limiter [N] [INTERVAL_MS] [EVENTS]` (default 5, 100, 30)

use std::time::{Duration, Instant};

use stageflow::{
    Consumer, ConsumerContext, DemandMode, Events, Reason, SubscribeOptions, Subscription,
    SubscriptionId,
};

/// Asks `per_interval` events every `interval`.
struct RateLimiter {
    per_interval: usize,
    interval: Duration,
    subscription: Option<SubscriptionId>,
    epoch: Instant,
    log: std::sync::Arc<parking_lot::Mutex<Vec<(Duration, usize)>>>,
    print: bool,
}

/// The limiter's own message: time to ask again.
struct Tick;

impl Consumer for RateLimiter {
    type In = u64;
    type Message = Tick;

    fn handle_subscribe(
        &mut self,
        producer: &Subscription,
        ctx: &mut ConsumerContext<'_, Tick>,
    ) -> DemandMode {
        self.subscription = Some(producer.id());
        ctx.ask(producer.id(), self.per_interval);
        ctx.send_after(Tick, self.interval);
        DemandMode::Manual
    }

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_, Tick>) {
        let at = self.epoch.elapsed();
        let batch: Vec<u64> = events.collect();
        if self.print {
            println!("{:>6.0} ms: {batch:?}", at.as_secs_f64() * 1000.0);
        }
        self.log.lock().push((at, batch.len()));
    }

    fn handle_message(&mut self, _: Tick, ctx: &mut ConsumerContext<'_, Tick>) {
        if let Some(sub) = self.subscription {
            ctx.ask(sub, self.per_interval);
            ctx.send_after(Tick, self.interval);
        }
    }
}

/// Runs the limiter over `events` numbers; returns (time received, batch size) per batch.
pub(crate) fn run(
    per_interval: usize,
    interval: Duration,
    events: u64,
    print: bool,
) -> Result<Vec<(Duration, usize)>, Box<dyn std::error::Error>> {
    let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let producer = stageflow::from_iter(0..events).name("numbers").spawn()?;
    let limiter = stageflow::consumer(RateLimiter {
        per_interval,
        interval,
        subscription: None,
        epoch: Instant::now(),
        log: log.clone(),
        print,
    })
    .name("rate_limiter")
    .subscribe_to(&producer, SubscribeOptions::new())?
    .spawn()?;
    let outcome = limiter.join();
    if outcome != Reason::Normal {
        return Err(format!("the rate limiter ended abnormally: {outcome}").into());
    }
    let batches = std::mem::take(&mut *log.lock());
    Ok(batches)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |i: usize, default: u64| -> Result<u64, String> {
        std::env::args().nth(i).map_or(Ok(default), |a| {
            a.parse()
                .map_err(|_| format!("expected a number, got {a:?}"))
        })
    };
    let n = arg(1, 5)? as usize;
    let interval = Duration::from_millis(arg(2, 100)?);
    let events = arg(3, 30)?;
    let started = Instant::now();
    let batches = run(n, interval, events, true)?;
    let total: usize = batches.iter().map(|b| b.1).sum();
    println!(
        "{total} events in {} batches of at most {n}, in {:.2} s",
        batches.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
