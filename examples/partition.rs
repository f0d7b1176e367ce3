//! Partition: a stream of account updates split among three workers by account. A
//! `PartitionDispatcher` hashes each update's account to one partition, and each worker
//! consumes one partition, so every update of an account is applied by the same worker, in the
//! order it was emitted, and no two workers ever touch the same account. Heartbeats carry no
//! account: the hash maps them to no partition, and the producer drops and counts them.
//!
//! `cargo run --example partition`. Logs go to stderr; `RUST_LOG` sets the level (default
//! error; `RUST_LOG=warn` shows the producer logging each heartbeat it drops).

use std::collections::BTreeMap;
use std::error::Error;
use std::sync::mpsc;
use std::time::Duration;

use stageflow::dispatcher::PartitionDispatcher;
use stageflow::{
    Consumer, ConsumerContext, Context, Events, Producer, Reason, SubscribeOptions, Topology,
};

/// How long the example waits for anything.
const PATIENCE: Duration = Duration::from_secs(10);

/// One update of an account's balance, or a heartbeat (no account).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) account: Option<String>,
    /// The update's number among its account's updates: 0, 1, 2, ...
    pub(crate) seq: u64,
    pub(crate) amount: i64,
}

/// What one worker received.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) partition: u64,
    pub(crate) updates: Vec<Update>,
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Updates the producer emitted, heartbeats included.
    pub(crate) produced: usize,
    /// Events the producer discarded: the heartbeats.
    pub(crate) dropped: u64,
    /// Per partition.
    pub(crate) workers: Vec<Worker>,
}

/// `n` updates over ten accounts, some far busier than others, with a heartbeat every 13th.
pub(crate) fn updates(n: usize) -> Vec<Update> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut seqs = [0u64; 10];
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let r = (x >> 33) % 100;
            if i % 13 == 12 {
                return Update {
                    account: None,
                    seq: 0,
                    amount: 0,
                };
            }
            let account = match r {
                0..=39 => 0,
                40..=59 => 1,
                _ => 2 + (r % 8) as usize,
            };
            let seq = seqs[account];
            seqs[account] += 1;
            Update {
                account: Some(format!("acct-{account}")),
                seq,
                amount: (r as i64) - 50,
            }
        })
        .collect()
}

/// FNV-1a: a small hash that gives the same partitions on every run.
fn fnv(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What the producer can be told.
pub(crate) enum Cmd {
    /// Every update has been handled: finish.
    Finish,
}

/// Emits its updates as they are demanded.
struct Source(std::vec::IntoIter<Update>);

impl Producer for Source {
    type Out = Update;
    type Message = Cmd;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Update, Cmd>) {
        ctx.emit_all(self.0.by_ref().take(demand));
    }

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, Update, Cmd>) {
        let Cmd::Finish = msg;
        ctx.finish();
    }
}

/// Applies updates (here: reports them to `main`).
struct Applier {
    partition: u64,
    done: mpsc::Sender<(u64, Update)>,
}

impl Consumer for Applier {
    type In = Update;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Update>, _: &mut ConsumerContext<'_>) {
        for update in events {
            let _ = self.done.send((self.partition, update));
        }
    }
}

/// Runs `updates` updates through `workers` workers.
pub(crate) fn run(updates: usize, workers: u64) -> Result<Summary, Box<dyn Error>> {
    let all = self::updates(updates);
    let keyed = all.iter().filter(|u| u.account.is_some()).count();
    let dispatcher = PartitionDispatcher::new(workers as usize, move |u: &Update| {
        u.account.as_deref().map(|a| fnv(a) % workers)
    })?;
    let producer = stageflow::producer(Source(all.into_iter()))
        .name("updates")
        .dispatcher(dispatcher)
        .spawn()?;
    let mut topology = Topology::new();
    topology.add(&producer);
    let (done, applied) = mpsc::channel();
    for partition in 0..workers {
        let worker = stageflow::consumer(Applier {
            partition,
            done: done.clone(),
        })
        .name(format!("worker-{partition}"))
        .subscribe_to(
            &producer,
            SubscribeOptions::new().partition(partition).max_demand(8),
        )?
        .spawn()?;
        topology.add(&worker);
    }

    let mut per_worker: BTreeMap<u64, Vec<Update>> = (0..workers).map(|p| (p, vec![])).collect();
    for _ in 0..keyed {
        let (partition, update) = applied
            .recv_timeout(PATIENCE)
            .map_err(|_| "the workers stopped receiving updates")?;
        per_worker.entry(partition).or_default().push(update);
    }
    // Every update has been applied; a finishing producer would also have delivered what its
    // partitions still queued.
    producer
        .cast(Cmd::Finish)
        .map_err(|_| "the producer ended early")?;
    for (stage, reason) in topology.join_timeout(PATIENCE) {
        match reason {
            Some(Reason::Normal) => {}
            Some(reason) => return Err(format!("stage {stage} ended with {reason}").into()),
            None => return Err(format!("stage {stage} did not end within {PATIENCE:?}").into()),
        }
    }
    Ok(Summary {
        produced: updates,
        dropped: producer.counters().discarded,
        workers: per_worker
            .into_iter()
            .map(|(partition, updates)| Worker { partition, updates })
            .collect(),
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error"))
        .format_target(false)
        .init();
    let summary = run(400, 3)?;
    println!(
        "{} updates emitted, {} heartbeats dropped by the hash",
        summary.produced, summary.dropped
    );
    for worker in &summary.workers {
        // Per account: how many updates, and whether they came in order.
        let mut accounts: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for u in &worker.updates {
            let account = u.account.as_deref().ok_or("a heartbeat reached a worker")?;
            accounts.entry(account).or_default().push(u.seq);
        }
        let balance: i64 = worker.updates.iter().map(|u| u.amount).sum();
        let mut detail = Vec::new();
        for (account, seqs) in &accounts {
            if !seqs.iter().copied().eq(0..seqs.len() as u64) {
                return Err(format!("{account}'s updates arrived out of order: {seqs:?}").into());
            }
            detail.push(format!("{account} x{}", seqs.len()));
        }
        println!(
            "worker-{} applied {:>3} updates (net {balance:+}), each account's in order: {}",
            worker.partition,
            worker.updates.len(),
            detail.join(", ")
        );
    }
    Ok(())
}
