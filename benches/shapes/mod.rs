//! The pipeline shapes measured by the benches, each written twice: with stageflow, and by
//! hand with crossbeam bounded channels and the same credit discipline (ask max, then re-ask
//! `max - D` after each `max - min` chunk once `D <= min`). Shared by `compare.rs` (the table)
//! and the criterion benches.
#![allow(dead_code)] // each bench uses part of this module

use std::hint::black_box;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, ProducerConsumer, SubscribeOptions,
    Upstream,
};

// ----- stageflow ---------------------------------------------------------------------------

/// Emits exactly what is asked, counting up, and finishes after `limit` events.
pub(crate) struct Emit {
    pub(crate) next: u64,
    pub(crate) limit: u64,
}

impl Producer for Emit {
    type Out = u64;
    type Message = ();
    #[inline]
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        let end = (self.next + demand as u64).min(self.limit);
        ctx.emit_all(self.next..end);
        self.next = end;
        if self.next == self.limit {
            ctx.finish();
        }
    }
}

/// Doubles every event.
pub(crate) struct Double;

impl ProducerConsumer for Double {
    type In = u64;
    type Out = u64;
    type Message = ();
    #[inline]
    fn handle_events(&mut self, events: Events<'_, u64>, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(events.map(|x| x * 2));
    }
}

/// Counts and sums what it receives.
pub(crate) struct Count(pub(crate) u64);

impl Consumer for Count {
    type In = u64;
    type Message = ();
    #[inline]
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        self.0 = self.0.wrapping_add(events.sum::<u64>());
        black_box(self.0);
    }
}

fn opts(max: usize, min: usize) -> SubscribeOptions {
    SubscribeOptions::new().max_demand(max).min_demand(min)
}

/// producer -> `k` producer-consumers -> consumer; returns the time to move `n` events.
pub(crate) fn stageflow_chain(n: u64, k: usize, max: usize, min: usize) -> Duration {
    let start = Instant::now();
    let p = stageflow::producer(Emit { next: 0, limit: n })
        .spawn()
        .expect("producer");
    let mut middles = Vec::new();
    let mut last = p.source();
    for _ in 0..k {
        let pc = stageflow::producer_consumer(Double)
            .subscribe_to(&last, opts(max, min))
            .expect("options")
            .spawn()
            .expect("producer-consumer");
        last = pc.source();
        middles.push(pc);
    }
    let c = stageflow::consumer(Count(0))
        .subscribe_to(&last, opts(max, min))
        .expect("options")
        .spawn()
        .expect("consumer");
    drop(last);
    c.join();
    let elapsed = start.elapsed();
    assert_eq!(c.counters().events_in, n, "stageflow lost events");
    elapsed
}

/// producer -> consumer.
pub(crate) fn stageflow_pair(n: u64, max: usize, min: usize) -> Duration {
    stageflow_chain(n, 0, max, min)
}

/// One producer with `dispatcher` feeding `consumers` consumers (consumer `i` subscribed with
/// `options(i)`); returns the time and the events each consumer received. The producer
/// accumulates demand until every consumer has subscribed.
fn stageflow_spread(
    n: u64,
    consumers: usize,
    dispatcher: Box<dyn stageflow::dispatcher::Dispatcher<u64>>,
    options: impl Fn(usize) -> SubscribeOptions,
) -> (Duration, Vec<u64>) {
    let start = Instant::now();
    let p = stageflow::producer(Emit { next: 0, limit: n })
        .dispatcher(dispatcher)
        .demand(stageflow::ProducerDemand::Accumulate)
        .spawn()
        .expect("producer");
    let cs: Vec<_> = (0..consumers)
        .map(|i| {
            stageflow::consumer(Count(0))
                .subscribe_to(&p, options(i))
                .expect("options")
                .spawn()
                .expect("consumer")
        })
        .collect();
    p.set_demand(stageflow::ProducerDemand::Forward)
        .expect("producer running");
    for c in &cs {
        c.join();
    }
    let elapsed = start.elapsed();
    (elapsed, cs.iter().map(|c| c.counters().events_in).collect())
}

/// producer (demand dispatcher) -> `consumers` consumers; events counted in total.
pub(crate) fn stageflow_fan(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let dispatcher = Box::new(stageflow::dispatcher::DemandDispatcher::new());
    let (elapsed, got) = stageflow_spread(n, consumers, dispatcher, |_| opts(max, min));
    assert_eq!(got.iter().sum::<u64>(), n, "stageflow lost events");
    elapsed
}

// ----- by hand -----------------------------------------------------------------------------

/// The consumer side of the credit discipline, by hand.
struct Credit {
    max: usize,
    min: usize,
    demand: usize,
}

impl Credit {
    fn new(max: usize, min: usize) -> Credit {
        Credit {
            max,
            min,
            demand: max,
        }
    }

    /// Handles a batch chunk by chunk; `f` consumes each chunk, `ask` sends each re-ask.
    #[inline]
    fn receive<T>(
        &mut self,
        batch: Vec<T>,
        mut f: impl FnMut(&mut dyn Iterator<Item = T>),
        mut ask: impl FnMut(usize),
    ) {
        let chunk = self.max - self.min;
        let mut it = batch.into_iter();
        loop {
            let len = it.len().min(chunk);
            if len == 0 {
                break;
            }
            f(&mut it.by_ref().take(len));
            self.demand -= len;
            if self.demand <= self.min {
                ask(self.max - self.demand);
                self.demand = self.max;
            }
        }
    }
}

/// What a hand-written stage receives: like stageflow, one inbox per thread.
pub(crate) enum Msg {
    Events(Vec<u64>),
    Ask(usize),
}

fn hand_producer(n: u64, inbox: Receiver<Msg>, downstream: Sender<Msg>) {
    let mut next = 0;
    while next < n {
        let Ok(Msg::Ask(k)) = inbox.recv() else {
            return;
        };
        let end = (next + k as u64).min(n);
        let batch: Vec<u64> = (next..end).collect();
        next = end;
        if downstream.send(Msg::Events(batch)).is_err() {
            return;
        }
    }
}

fn hand_consumer(
    n: u64,
    max: usize,
    min: usize,
    inbox: Receiver<Msg>,
    mut ask: impl FnMut(usize),
) -> u64 {
    let mut credit = Credit::new(max, min);
    ask(max);
    let mut count = 0u64;
    let mut sum = 0u64;
    while count < n {
        let batch = match inbox.recv() {
            Ok(Msg::Events(batch)) => batch,
            Ok(Msg::Ask(_)) => continue,
            Err(_) => break,
        };
        credit.receive(
            batch,
            |chunk| {
                for x in chunk {
                    count += 1;
                    sum = sum.wrapping_add(x);
                }
            },
            &mut ask,
        );
    }
    black_box(sum);
    count
}

/// A producer-consumer by hand: asks upstream by the credit rule, handles inbound batches only
/// while downstream demand is positive (chunk by chunk: handle, send downstream, then ask),
/// buffers what exceeds it.
fn hand_middle(
    max: usize,
    min: usize,
    inbox: Receiver<Msg>,
    upstream: Sender<Msg>,
    downstream: Sender<Msg>,
    n: u64,
) {
    let mut credit = Credit::new(max, min);
    let _ = upstream.send(Msg::Ask(max));
    let mut counter = 0usize;
    let mut queue: std::collections::VecDeque<Vec<u64>> = Default::default();
    let mut buffer: std::collections::VecDeque<u64> = Default::default();
    let mut seen = 0u64;
    let mut sent = 0u64;
    while sent < n {
        match inbox.recv() {
            Ok(Msg::Ask(k)) => counter += k,
            Ok(Msg::Events(batch)) => {
                seen += batch.len() as u64;
                queue.push_back(batch);
            }
            Err(_) => return,
        }
        // Deliver the buffer, then handle queued input while there is demand.
        loop {
            if !buffer.is_empty() && counter > 0 {
                let k = counter.min(buffer.len());
                let out: Vec<u64> = buffer.drain(..k).collect();
                counter -= k;
                sent += k as u64;
                if downstream.send(Msg::Events(out)).is_err() {
                    return;
                }
            }
            if counter == 0 || !buffer.is_empty() {
                break;
            }
            let Some(batch) = queue.pop_front() else {
                break;
            };
            let chunk = credit.max - credit.min;
            let mut it = batch.into_iter();
            loop {
                let len = it.len().min(chunk);
                if len == 0 {
                    break;
                }
                let mut produced: Vec<u64> = it.by_ref().take(len).map(|x| x * 2).collect();
                let k = counter.min(produced.len());
                buffer.extend(produced.drain(k..));
                counter -= k;
                sent += k as u64;
                if k > 0 && downstream.send(Msg::Events(produced)).is_err() {
                    return;
                }
                credit.demand -= len;
                if credit.demand <= credit.min && seen < n {
                    let _ = upstream.send(Msg::Ask(credit.max - credit.demand));
                    credit.demand = credit.max;
                }
            }
        }
    }
}

/// The same chain as [`stageflow_chain`], by hand.
pub(crate) fn baseline_chain(n: u64, k: usize, max: usize, min: usize) -> Duration {
    let cap = 1024;
    let start = Instant::now();
    let inboxes: Vec<(Sender<Msg>, Receiver<Msg>)> = (0..k + 2).map(|_| bounded(cap)).collect();
    let mut threads = Vec::new();
    {
        let (rx, down) = (inboxes[0].1.clone(), inboxes[1].0.clone());
        threads.push(std::thread::spawn(move || hand_producer(n, rx, down)));
    }
    for i in 1..=k {
        let (rx, up, down) = (
            inboxes[i].1.clone(),
            inboxes[i - 1].0.clone(),
            inboxes[i + 1].0.clone(),
        );
        threads.push(std::thread::spawn(move || {
            hand_middle(max, min, rx, up, down, n)
        }));
    }
    let rx = inboxes[k + 1].1.clone();
    let up = inboxes[k].0.clone();
    drop(inboxes);
    let count = hand_consumer(n, max, min, rx, |a| {
        let _ = up.send(Msg::Ask(a));
    });
    drop(up);
    for t in threads {
        t.join().expect("baseline thread");
    }
    let elapsed = start.elapsed();
    assert_eq!(count, n, "baseline lost events");
    elapsed
}

/// producer -> consumer, by hand.
pub(crate) fn baseline_pair(n: u64, max: usize, min: usize) -> Duration {
    baseline_chain(n, 0, max, min)
}

/// producer -> `consumers` consumers, each ask answered to the consumer that asked (what the
/// demand dispatcher does when every ask is met at once), by hand.
pub(crate) fn baseline_fan(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let cap = 1024;
    let start = Instant::now();
    let (ask_tx, ask_rx) = bounded::<(usize, usize)>(cap);
    let mut outs = Vec::new();
    let mut threads = Vec::new();
    for i in 0..consumers {
        let (ev_tx, ev_rx) = bounded::<Msg>(cap);
        outs.push(ev_tx);
        let asks = ask_tx.clone();
        threads.push(std::thread::spawn(move || {
            hand_consumer(u64::MAX, max, min, ev_rx, |k| {
                let _ = asks.send((i, k));
            })
        }));
    }
    drop(ask_tx);
    let mut next = 0;
    while next < n {
        let Ok((i, k)) = ask_rx.recv() else { break };
        let end = (next + k as u64).min(n);
        let _ = outs[i].send(Msg::Events((next..end).collect()));
        next = end;
    }
    drop(outs);
    let total: u64 = threads
        .into_iter()
        .map(|t| t.join().expect("consumer"))
        .sum();
    let elapsed = start.elapsed();
    assert_eq!(total, n, "baseline lost events");
    elapsed
}

// ----- d, e: broadcast and partition -----------------------------------------------------------

/// producer (broadcast) -> `consumers` consumers; each consumer must see all `n` events.
pub(crate) fn stageflow_broadcast(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let dispatcher = Box::new(stageflow::dispatcher::BroadcastDispatcher::new());
    let (elapsed, got) = stageflow_spread(n, consumers, dispatcher, |_| opts(max, min));
    assert!(got.iter().all(|&c| c == n), "stageflow lost events");
    elapsed
}

/// producer (partition by x mod `consumers`) -> one consumer per partition; events in total.
pub(crate) fn stageflow_partition(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let parts = consumers as u64;
    let dispatcher =
        stageflow::dispatcher::PartitionDispatcher::new(consumers, move |x: &u64| Some(*x % parts))
            .expect("partitions");
    let (elapsed, got) = stageflow_spread(n, consumers, Box::new(dispatcher), |i| {
        opts(max, min).partition(i as u64)
    });
    assert_eq!(got.iter().sum::<u64>(), n, "stageflow lost events");
    elapsed
}

/// A producer by hand that serves several consumers from one inbox of tagged asks: `route`
/// splits each batch it emits into per-consumer batches.
fn hand_multi(
    n: u64,
    consumers: usize,
    max: usize,
    min: usize,
    route: impl Fn(Vec<u64>, &mut [usize], &mut [Vec<u64>]) -> usize + Send + 'static,
    upstream_demand: impl Fn(&[usize]) -> usize + Send + 'static,
) -> Vec<u64> {
    let cap = 1024;
    let (ask_tx, ask_rx) = bounded::<(usize, usize)>(cap);
    let mut outs = Vec::new();
    let mut threads = Vec::new();
    for i in 0..consumers {
        let (ev_tx, ev_rx) = bounded::<Msg>(cap);
        outs.push(ev_tx);
        let asks = ask_tx.clone();
        threads.push(std::thread::spawn(move || {
            hand_consumer(u64::MAX, max, min, ev_rx, |k| {
                let _ = asks.send((i, k));
            })
        }));
    }
    drop(ask_tx);
    let mut demand = vec![0usize; consumers];
    let mut queues: Vec<Vec<u64>> = vec![Vec::new(); consumers];
    let mut next = 0;
    while next < n {
        let Ok((i, k)) = ask_rx.recv() else { break };
        demand[i] += k;
        let want = upstream_demand(&demand);
        if want == 0 {
            continue;
        }
        let end = (next + want as u64).min(n);
        let used = route((next..end).collect(), &mut demand, &mut queues);
        next += used as u64;
        for (q, out) in queues.iter_mut().zip(&outs) {
            if !q.is_empty() {
                let _ = out.send(Msg::Events(std::mem::take(q)));
            }
        }
    }
    drop(outs);
    threads
        .into_iter()
        .map(|t| t.join().expect("consumer"))
        .collect()
}

/// The broadcast shape, by hand: the slowest consumer sets the pace; each batch is cloned to
/// all but the last consumer.
pub(crate) fn baseline_broadcast(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let start = Instant::now();
    let counts = hand_multi(
        n,
        consumers,
        max,
        min,
        |batch, demand, queues| {
            let len = batch.len();
            for d in demand.iter_mut() {
                *d -= len;
            }
            let last = queues.len() - 1;
            for q in &mut queues[..last] {
                q.extend_from_slice(&batch);
            }
            queues[last] = batch;
            len
        },
        |demand| demand.iter().copied().min().unwrap_or(0),
    );
    let elapsed = start.elapsed();
    assert!(counts.iter().all(|&c| c == n), "baseline lost events");
    elapsed
}

/// The partition shape, by hand: each event to partition x mod consumers, within that
/// consumer's demand (events beyond wait for the next ask).
pub(crate) fn baseline_partition(n: u64, consumers: usize, max: usize, min: usize) -> Duration {
    let start = Instant::now();
    let parts = consumers as u64;
    let counts = hand_multi(
        n,
        consumers,
        max,
        min,
        move |batch, demand, queues| {
            // Emit only what every partition can take: events are spread evenly.
            let mut used = 0;
            for x in batch {
                let p = (x % parts) as usize;
                if demand[p] == 0 {
                    break;
                }
                demand[p] -= 1;
                queues[p].push(x);
                used += 1;
            }
            used
        },
        |demand| demand.iter().sum(),
    );
    let elapsed = start.elapsed();
    assert_eq!(counts.iter().sum::<u64>(), n, "baseline lost events");
    elapsed
}
