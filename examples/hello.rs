//! The smallest pipeline: a counting producer and a summing consumer (the crate-level example),
//! timed.
//!
//! `cargo run --release --example hello [EVENTS]` (default 10 000 000).

use std::time::Instant;

use stageflow::{Consumer, ConsumerContext, Context, Events, Producer, SubscribeOptions};

/// Emits 0, 1, 2, ... up to `limit`, then finishes.
struct Counter {
    next: u64,
    limit: u64,
}

impl Producer for Counter {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        let end = (self.next + demand as u64).min(self.limit);
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.limit {
            ctx.finish(); // deliver what is buffered, then end
        }
    }
}

/// Adds up what it receives.
struct Sum(u64);

impl Consumer for Sum {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        self.0 += events.sum::<u64>();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 10_000_000,
    };
    let start = Instant::now();
    let producer = stageflow::producer(Counter { next: 0, limit })
        .name("counter")
        .spawn()?;
    let consumer = stageflow::consumer(Sum(0))
        .name("sum")
        .subscribe_to(&producer, SubscribeOptions::new())?
        .spawn()?;
    let outcome = consumer.join();
    let elapsed = start.elapsed();
    let received = consumer.counters().events_in;
    println!(
        "{received} events in {:.3} s: {:.1} M events/s (consumer ended: {outcome})",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64() / 1e6
    );
    if received != limit {
        return Err(format!("expected {limit} events, got {received}").into());
    }
    Ok(())
}
