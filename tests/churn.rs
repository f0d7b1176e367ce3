//! Steady churn from several threads at once against one producer and its consumers:
//! subscribes (some with no time to wait), cancels, resubscribes, manual asks, demand-mode
//! flips and stops, all racing each other. Every stage told to stop ends within a bounded
//! time, whatever it was doing in the protocol; at the end every subscription delivered its
//! events in the order produced, and the counters balance by the equations of the `Counters`
//! docs.
//!
//! `CHURN_SECS` sets how long it runs (default 4 s); `CHURN_SEED` fixes the seed. A failure
//! names both.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{BySubscription as Sink, Log, LIMIT};
use stageflow::{
    CancelMode, ConsumerHandle, Context, Producer, ProducerDemand, ProducerHandle, Reason, Reply,
    SubscribeError, SubscribeOptions, SubscriptionId,
};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Emits what it is asked for, counting up; counts what it emitted.
struct Counting {
    next: u64,
}

impl Producer for Counting {
    type Out = u64;
    type Message = Reply<u64>;
    fn handle_demand(&mut self, n: usize, ctx: &mut Context<'_, u64, Reply<u64>>) {
        ctx.emit_all(self.next..self.next + n as u64);
        self.next += n as u64;
    }
    fn handle_message(&mut self, reply: Reply<u64>, ctx: &mut Context<'_, u64, Reply<u64>>) {
        ctx.reply(reply, self.next);
    }
}

struct Slot {
    handle: ConsumerHandle<Sink>,
    log: Log,
    held: Vec<SubscriptionId>,
}

fn spawn_sink(n: u64) -> Slot {
    let log = Log::default();
    let handle = stageflow::consumer(Sink {
        log: log.clone(),
        manual: n % 5 == 4,
    })
    .name(format!("sink{n}"))
    .inbox_capacity(1 + (n % 4) as usize)
    .spawn()
    .unwrap();
    Slot {
        handle,
        log,
        held: Vec::new(),
    }
}

fn options(rng: &mut Rng) -> SubscribeOptions {
    let max = [1, 2, 3, 5, 10, 64, 500][rng.below(7) as usize];
    let timeout = match rng.below(4) {
        0 => Duration::ZERO,
        1 => Duration::from_millis(1),
        _ => LIMIT,
    };
    SubscribeOptions::new()
        .max_demand(max)
        .min_demand(rng.below(max as u64) as usize)
        .cancel(if rng.below(2) == 0 {
            CancelMode::Temporary
        } else {
            CancelMode::Transient
        })
        .timeout(timeout)
}

/// One churning thread: random operations on the shared sinks.
fn churn(
    seed: u64,
    producer: &ProducerHandle<Counting>,
    slots: &Mutex<Vec<Slot>>,
    ended: &Mutex<Vec<Slot>>,
    next_name: &std::sync::atomic::AtomicU64,
    until: Instant,
    failed: &AtomicBool,
) -> Result<u64, String> {
    let mut rng = Rng(seed);
    let mut ops = 0;
    while Instant::now() < until && !failed.load(Ordering::Relaxed) {
        ops += 1;
        let i = rng.below(3) as usize;
        let (handle, held) = {
            let slots = slots.lock().unwrap();
            (slots[i].handle.clone(), slots[i].held.clone())
        };
        match rng.below(10) {
            0..=2 => match handle.subscribe_to(producer, options(&mut rng)) {
                Ok(id) => slots.lock().unwrap()[i].held.push(id),
                Err(SubscribeError::Timeout { .. } | SubscribeError::ConsumerGone { .. }) => {}
                Err(e) => return Err(format!("subscribe: {e}")),
            },
            3..=4 if !held.is_empty() => {
                let id = held[rng.below(held.len() as u64) as usize];
                let _ = handle.cancel(id, Reason::Normal);
                slots.lock().unwrap()[i].held.retain(|&h| h != id);
            }
            5 if !held.is_empty() => {
                let id = held[rng.below(held.len() as u64) as usize];
                slots.lock().unwrap()[i].held.retain(|&h| h != id);
                match handle.resubscribe(id, Reason::Normal, producer, options(&mut rng)) {
                    Ok(new) => slots.lock().unwrap()[i].held.push(new),
                    Err(SubscribeError::Timeout { .. } | SubscribeError::ConsumerGone { .. }) => {}
                    Err(e) => return Err(format!("resubscribe: {e}")),
                }
            }
            6 if !held.is_empty() => {
                let id = held[rng.below(held.len() as u64) as usize];
                let _ = handle.ask(id, 1 + rng.below(20) as usize);
            }
            7 => {
                let mode = if rng.below(2) == 0 {
                    ProducerDemand::Accumulate
                } else {
                    ProducerDemand::Forward
                };
                let _ = producer.set_demand(mode);
            }
            8 if rng.below(4) == 0 => {
                // Stop a sink in whatever state it is, and put a fresh one in its place.
                let fresh = spawn_sink(next_name.fetch_add(1, Ordering::Relaxed));
                let old = std::mem::replace(&mut slots.lock().unwrap()[i], fresh);
                old.handle.stop();
                if old.handle.join_timeout(LIMIT).is_none() {
                    return Err(format!(
                        "HANG: {} was told to stop and had not ended {LIMIT:?} later",
                        old.handle.name()
                    ));
                }
                ended.lock().unwrap().push(old);
            }
            _ => std::thread::yield_now(),
        }
    }
    Ok(ops)
}

#[test]
fn churn_from_several_threads_keeps_order_ends_and_balances() {
    let secs = std::env::var("CHURN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let seed = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let producer = stageflow::producer(Counting { next: 0 })
        .buffer_size(1_000)
        .spawn()
        .unwrap();
    let names = std::sync::atomic::AtomicU64::new(3);
    let slots = Mutex::new((0..3).map(spawn_sink).collect::<Vec<_>>());
    let ended = Mutex::new(Vec::new());
    let failed = AtomicBool::new(false);
    let until = Instant::now() + Duration::from_secs(secs);
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (producer, slots, ended, names, failed) =
                    (&producer, &slots, &ended, &names, &failed);
                s.spawn(move || {
                    let r = churn(
                        seed ^ (t + 1).wrapping_mul(0x9E37),
                        producer,
                        slots,
                        ended,
                        names,
                        until,
                        failed,
                    );
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut errs: Vec<String> = results.iter().filter_map(|r| r.clone().err()).collect();
    let ops: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
    // The end: forward (so nothing stays held back), stop the sinks, then the producer.
    let _ = producer.set_demand(ProducerDemand::Forward);
    let mut all = ended.into_inner().unwrap();
    all.extend(slots.into_inner().unwrap());
    for slot in &all {
        slot.handle.stop();
    }
    for slot in &all {
        if slot.handle.join_timeout(LIMIT).is_none() {
            errs.push(format!(
                "HANG: {} did not end within {LIMIT:?} of its stop",
                slot.handle.name()
            ));
        }
    }
    producer.stop();
    if producer.join_timeout(LIMIT).is_none() {
        errs.push(format!("HANG: the producer did not end within {LIMIT:?}"));
    }
    // Order within each subscription, and the consumers' balance.
    let mut handled = 0u64;
    let mut received = 0u64;
    let mut discarded = 0u64;
    for slot in &all {
        let by_sub = slot.log.lock().unwrap();
        for (sub, events) in by_sub.iter() {
            if let Some(w) = events.windows(2).find(|w| w[1] <= w[0]) {
                errs.push(format!(
                    "ORDER: {} received {} after {} on subscription {sub}",
                    slot.handle.name(),
                    w[1],
                    w[0]
                ));
            }
            handled += events.len() as u64;
        }
        let c = slot.handle.counters();
        let mine: u64 = by_sub.values().map(|v| v.len() as u64).sum();
        if c.events_in != mine + c.discarded + c.buffered {
            errs.push(format!(
                "BALANCE: {} in {} != handled {mine} + discarded {} + buffered {}",
                slot.handle.name(),
                c.events_in,
                c.discarded,
                c.buffered
            ));
        }
        received += c.events_in;
        discarded += c.discarded;
    }
    let p = producer.counters();
    if p.emitted != p.events_out + p.discarded + p.buffered {
        errs.push(format!(
            "BALANCE: the producer emitted {} != out {} + discarded {} + buffered {}",
            p.emitted, p.events_out, p.discarded, p.buffered
        ));
    }
    if p.events_out != received {
        errs.push(format!(
            "BALANCE: the producer sent {} but the sinks received {received}",
            p.events_out
        ));
    }
    assert!(
        errs.is_empty(),
        "CHURN_SEED={seed} CHURN_SECS={secs}: {} ops, {handled} handled, {discarded} \
         discarded by sinks:\n{}",
        ops,
        errs.join("\n")
    );
    println!("churn: CHURN_SEED={seed}: {ops} ops, {handled} events handled in {secs} s");
}
