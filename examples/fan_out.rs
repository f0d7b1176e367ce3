//! 1:n:n fan-out: a Publisher counts 1 to 5 one at a time, a PubSub producer-consumer turns
//! each number into ten messages ("1 :: 1" … "1 :: 10"), and a Subscriber taking one event at
//! a time prints each: 50 lines, in order, and nothing lost when the publisher finishes.
//!
//! `cargo run --example fan_out`

use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, ProducerConsumer, Reason,
    SubscribeOptions, Topology,
};

/// Counts from 1 to `last`, one number per unit of demand.
struct Publisher {
    next: u64,
    last: u64,
}

impl Producer for Publisher {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        for _ in 0..demand {
            if self.next > self.last {
                break;
            }
            ctx.emit(self.next);
            self.next += 1;
        }
        if self.next > self.last {
            ctx.finish();
        }
    }
}

/// Turns each number into `fan` messages.
struct PubSub {
    fan: u64,
}

impl ProducerConsumer for PubSub {
    type In = u64;
    type Out = String;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, String>) {
        for n in events {
            for i in 1..=self.fan {
                ctx.emit(format!("{n} :: {i}"));
            }
        }
    }
}

/// Prints each message and keeps it.
struct Subscriber {
    seen: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    print: bool,
}

impl Consumer for Subscriber {
    type In = String;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, String>, _: &mut ConsumerContext<'_>) {
        for line in events {
            if self.print {
                println!("{line}");
            }
            self.seen.lock().push(line);
        }
    }
}

/// Runs the fan-out; returns the lines the subscriber received, in order.
pub(crate) fn run(print: bool) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let one_at_a_time = SubscribeOptions::new().max_demand(1).min_demand(0);
    let publisher = stageflow::producer(Publisher { next: 1, last: 5 })
        .name("Publisher")
        .spawn()?;
    let pubsub = stageflow::producer_consumer(PubSub { fan: 10 })
        .name("PubSub")
        .subscribe_to(&publisher, one_at_a_time.clone())?
        .spawn()?;
    let subscriber = stageflow::consumer(Subscriber {
        seen: seen.clone(),
        print,
    })
    .name("Subscriber")
    .subscribe_to(&pubsub, one_at_a_time)?
    .spawn()?;
    let topology = Topology::new()
        .with(&publisher)
        .with(&pubsub)
        .with(&subscriber);
    for (stage, outcome) in topology.join() {
        if outcome != Reason::Normal {
            return Err(format!("{stage} ended abnormally: {outcome}").into());
        }
    }
    let lines = std::mem::take(&mut *seen.lock());
    Ok(lines)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run(true)?;
    println!("{} lines", lines.len());
    if lines.len() != 50 {
        return Err(format!("expected 50 lines, got {}", lines.len()).into());
    }
    Ok(())
}
