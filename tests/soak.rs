//! A seeded fault-injection soak of the engine (issue 7, "Done means").
//!
//! Each iteration draws, from its seed, a random layered topology: 1–3 producers (`from_iter`
//! of a finite range, or a custom producer that emits exactly on demand, from a zero-delay
//! timer while keeping its unmet demand, or beyond its demand into the buffer), 0–2 layers of
//! identity `fns::Map` producer-consumers, 1–3 consumers; every stage of a layer subscribes to a
//! random non-empty subset of the layer above (fan-in), every stage has at least one consumer
//! (fan-out), under every dispatcher (demand, broadcast, partition by a hash of the event), with
//! random `max_demand`/`min_demand`, inbox capacities (often 1–4, to stress backlogs) and buffer
//! sizes. Producers start accumulating demand and are switched to forwarding once every
//! subscription exists, so broadcast consumers all see every event.
//!
//! Iterations alternate:
//!
//! - **clean runs** (no fault): every stage ends `Normal` on its own; every event reaches the
//!   final consumers exactly as many times as the dispatchers promise (once with demand and
//!   partition dispatchers, once per consumer with broadcast); events from one producer arrive
//!   in the order produced wherever only one path leads from that producer to that consumer;
//!   counters are exact (`events_in == events_out`, nothing discarded or left buffered).
//! - **fault runs**: while events flow, stages are stopped, subscriptions cancelled (with normal
//!   and abnormal reasons), consumers and producer-consumers panic at a random event, streams
//!   are taken from and dropped early, consumers subscribe and leave (churn), the `Topology` is
//!   dropped; buffers are tiny and partitions may drop events (a hash returning `None`, a
//!   bounded queue). Then a final `Topology::stop()`: every stage must end (a pipeline that
//!   makes no progress for 30 s is hung), no stage may end `Panicked` unless by an injected
//!   panic, and the counters must balance (see `check_balances`).
//!
//! `SOAK_SECS` bounds the run (default 45 s); `SOAK_SEED` fixes the master seed (default: from
//! the clock); a failure message starts with `SOAK_SEED=<seed> SOAK_ITER=<n>`, and setting both
//! replays that iteration (repeatedly, until `SOAK_SECS` or a failure: threads make a replay
//! likely, not certain, to fail the same way). `SOAK_KEEP_GOING=1` logs failures to stderr and
//! goes on, failing at the end, to survey several faults in one run.

mod common;

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::LIMIT;
use stageflow::dispatcher::{
    BroadcastDispatcher, DemandDispatcher, Dispatcher, PartitionDispatcher,
};
use stageflow::fns::Map;
use stageflow::{
    BufferKeep, CancelMode, Consumer, ConsumerContext, ConsumerHandle, Consumes, Context,
    Direction, Emits, Events, IterProducer, Producer, ProducerConsumerHandle, ProducerDemand,
    ProducerHandle, Reason, Role, Source, StageBuilder, StageRef, SubscribeOptions, Subscription,
    Topology,
};

/// Every injected panic's message contains this; any other panic is the engine's.
const INJECTED: &str = "soak: injected panic";

// ----- A tiny seeded PRNG (splitmix64) -------------------------------------------------------

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u64) as usize
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// splitmix64's finalizer: a good 64-bit mix, also used as the partition hash.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ----- The plan: what an iteration builds and does, drawn from its seed ----------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GenMode {
    /// Emits exactly what is asked.
    Exact,
    /// Keeps its unmet demand and emits up to `per_tick` events per zero-delay timer tick (the
    /// guide's pattern for blocking sources).
    Timer { per_tick: u64 },
    /// Emits `extra` more than asked; the surplus goes to the buffer.
    Over { extra: u64 },
}

#[derive(Clone, Debug)]
enum Kind {
    /// `from_iter` over `events` values (counted as they are pulled).
    Iter { events: u64 },
    /// The custom producer; `events: None` never finishes.
    Gen { mode: GenMode, events: Option<u64> },
    /// An identity `fns::Map`, panicking at its `panic_at`-th event (1-based) if set.
    Pc { panic_at: Option<u64> },
    /// The final consumer, panicking in the batch that holds its `panic_at`-th event (0-based)
    /// if set, sleeping `delay_us` per batch.
    Sink {
        panic_at: Option<u64>,
        delay_us: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disp {
    Demand,
    Broadcast,
    /// One partition per downstream stage; `drop_some`: the hash maps one event in eight to
    /// `None` (dropped, counted as discarded); `max_queue` bounds the partitions' queues.
    Partition {
        drop_some: bool,
        max_queue: Option<usize>,
    },
}

#[derive(Clone, Copy, Debug)]
enum Buf {
    Default,
    Unbounded,
    Size(usize, BufferKeep),
}

#[derive(Clone, Debug)]
struct Edge {
    from: usize,
    max_demand: usize,
    min_demand: Option<usize>,
    cancel: CancelMode,
    partition: Option<u64>,
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    layer: usize,
    kind: Kind,
    disp: Disp,
    buf: Buf,
    inbox: usize,
    ups: Vec<Edge>,
    downs: Vec<usize>,
}

impl Node {
    fn emits(&self) -> bool {
        !matches!(self.kind, Kind::Sink { .. })
    }
    fn is_producer(&self) -> bool {
        matches!(self.kind, Kind::Iter { .. } | Kind::Gen { .. })
    }
}

#[derive(Clone, Debug)]
enum Fault {
    Stop {
        node: usize,
    },
    /// Cancel the `pick`-th upstream subscription (modulo how many it has) of a receiver.
    Cancel {
        node: usize,
        pick: usize,
        reason: Reason,
    },
    /// Take `take` events from a `stream` of an emitter, then drop it.
    Stream {
        node: usize,
        take: usize,
        max_demand: usize,
        partition: Option<u64>,
    },
    /// A new consumer of an emitter: subscribed at build time or at run time.
    ChurnStart {
        id: usize,
        node: usize,
        runtime: bool,
        cancel: CancelMode,
        max_demand: usize,
        partition: Option<u64>,
    },
    /// The churn consumer leaves: cancelled (each of its subscriptions) or stopped.
    ChurnEnd {
        id: usize,
        stop: bool,
    },
    DropTopology,
    /// A producer switched to accumulating demand (and back to forwarding by a later
    /// `Forward` fault): what it holds back must keep its order.
    Accumulate {
        node: usize,
    },
    Forward {
        node: usize,
    },
}

#[derive(Clone, Debug)]
struct Plan {
    clean: bool,
    nodes: Vec<Node>,
    /// (micros after the producers are released, fault), in time order.
    faults: Vec<(u64, Fault)>,
    /// Fault runs: how long to let the pipeline run on its own before the final stop.
    settle_ms: u64,
}

fn demand_options(rng: &mut Rng) -> (usize, Option<usize>) {
    let max = rng.pick(&[1, 1, 2, 3, 4, 5, 7, 8, 10, 16, 33, 64, 100, 500, 1000]);
    let min = if rng.chance(1, 3) {
        None
    } else {
        Some(rng.range(0, max - 1))
    };
    (max, min)
}

fn draw_plan(seed: u64, clean: bool) -> Plan {
    let mut rng = Rng::new(seed);
    let nprod = rng.range(1, 3);
    let nlayers = rng.range(0, 2);
    let nsinks = rng.range(1, 3);
    let mut layers: Vec<Vec<usize>> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let mut widths = vec![nprod];
    for _ in 0..nlayers {
        widths.push(rng.range(1, 3));
    }
    widths.push(nsinks);
    let last = widths.len() - 1;
    for (layer, &w) in widths.iter().enumerate() {
        let mut ids = Vec::new();
        for i in 0..w {
            let kind = if layer == 0 {
                let events = if rng.chance(1, 12) {
                    0
                } else if clean {
                    rng.below(2500)
                } else {
                    rng.below(6000)
                };
                if rng.chance(1, 2) {
                    Kind::Iter { events }
                } else {
                    let mode = match rng.below(3) {
                        0 => GenMode::Exact,
                        1 => GenMode::Timer {
                            per_tick: rng.range(1, 64) as u64,
                        },
                        _ => GenMode::Over {
                            extra: rng.range(1, 20) as u64,
                        },
                    };
                    let events = if !clean && rng.chance(1, 6) {
                        None
                    } else {
                        Some(events)
                    };
                    Kind::Gen { mode, events }
                }
            } else if layer == last {
                Kind::Sink {
                    panic_at: (!clean && rng.chance(1, 4)).then(|| rng.below(3000)),
                    delay_us: if rng.chance(1, 4) { rng.below(300) } else { 0 },
                }
            } else {
                Kind::Pc {
                    panic_at: (!clean && rng.chance(1, 6)).then(|| 1 + rng.below(3000)),
                }
            };
            let name = match layer {
                0 => format!("p{i}"),
                l if l == last => format!("c{i}"),
                l => format!("m{l}.{i}"),
            };
            let inbox = if rng.chance(1, 2) {
                rng.range(1, 4)
            } else {
                rng.pick(&[8, 64, 1024])
            };
            ids.push(nodes.len());
            nodes.push(Node {
                name,
                layer,
                kind,
                disp: Disp::Demand,
                buf: Buf::Default,
                inbox,
                ups: Vec::new(),
                downs: Vec::new(),
            });
        }
        layers.push(ids);
    }
    // Fan-in: each stage subscribes to a random non-empty subset of the layer above; fan-out:
    // each stage above has at least one consumer.
    for l in 1..layers.len() {
        for &n in &layers[l] {
            let mut ups: Vec<usize> = layers[l - 1]
                .iter()
                .copied()
                .filter(|_| rng.chance(1, 2))
                .collect();
            if ups.is_empty() {
                ups.push(rng.pick(&layers[l - 1]));
            }
            for u in ups {
                nodes[n].ups.push(Edge {
                    from: u,
                    max_demand: 1,
                    min_demand: None,
                    cancel: CancelMode::Permanent,
                    partition: None,
                });
                nodes[u].downs.push(n);
            }
        }
        for &u in &layers[l - 1] {
            if nodes[u].downs.is_empty() {
                let n = rng.pick(&layers[l]);
                nodes[n].ups.push(Edge {
                    from: u,
                    max_demand: 1,
                    min_demand: None,
                    cancel: CancelMode::Permanent,
                    partition: None,
                });
                nodes[u].downs.push(n);
            }
        }
    }
    // Dispatchers, bottom-up. In a clean run a demand or partition dispatcher is chosen only
    // where every downstream stage delivers the same number of copies of each event to the
    // final consumers, so that the count per event is exact.
    let mut copies = vec![1u64; nodes.len()];
    for n in (0..nodes.len()).rev() {
        if !nodes[n].emits() {
            continue;
        }
        let downs = nodes[n].downs.clone();
        let same = downs.iter().all(|&d| copies[d] == copies[downs[0]]);
        let disp = match rng.below(3) {
            0 if same || !clean => Disp::Demand,
            1 if same || !clean => Disp::Partition {
                drop_some: !clean && rng.chance(1, 4),
                max_queue: (!clean && rng.chance(1, 4)).then(|| rng.range(1, 16)),
            },
            _ => Disp::Broadcast,
        };
        copies[n] = match disp {
            Disp::Broadcast => downs.iter().map(|&d| copies[d]).sum(),
            _ => copies[downs[0]],
        };
        nodes[n].disp = disp;
        if matches!(disp, Disp::Partition { .. }) {
            for (i, &d) in downs.iter().enumerate() {
                for e in nodes[d].ups.iter_mut().filter(|e| e.from == n) {
                    e.partition = Some(i as u64);
                }
            }
        }
    }
    // Subscription options.
    for node in nodes.iter_mut() {
        for edge in node.ups.iter_mut() {
            let (max, min) = demand_options(&mut rng);
            let cancel = if clean {
                CancelMode::Permanent
            } else {
                match rng.below(4) {
                    0 | 1 => CancelMode::Permanent,
                    2 => CancelMode::Transient,
                    _ => CancelMode::Temporary,
                }
            };
            edge.max_demand = max;
            edge.min_demand = min;
            edge.cancel = cancel;
        }
    }
    // Buffers. A clean run never lets a buffer overflow (that would discard on purpose): a
    // producer buffer holds at most what it emits, a producer-consumer's at most one inbound
    // message (at most the largest upstream `max_demand`).
    for node in nodes.iter_mut() {
        if !node.emits() {
            continue;
        }
        node.buf = if clean {
            let need = match node.kind {
                Kind::Iter { events } => events as usize,
                Kind::Gen { events, .. } => events.unwrap_or(0) as usize,
                _ => node.ups.iter().map(|e| e.max_demand).sum::<usize>() * 2,
            };
            match rng.below(3) {
                0 => Buf::Default,
                1 => Buf::Unbounded,
                _ => Buf::Size(
                    need + 1 + rng.range(0, 100),
                    rng.pick(&[BufferKeep::First, BufferKeep::Last]),
                ),
            }
        } else {
            match rng.below(3) {
                0 => Buf::Default,
                1 => Buf::Unbounded,
                _ => Buf::Size(
                    rng.pick(&[1, 2, 3, 8, 50]),
                    rng.pick(&[BufferKeep::First, BufferKeep::Last]),
                ),
            }
        };
    }
    let mut faults = Vec::new();
    let mut settle_ms = 0;
    if !clean {
        let emitters: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].emits()).collect();
        let receivers: Vec<usize> = (0..nodes.len()).filter(|&n| nodes[n].layer > 0).collect();
        let count = rng.range(1, 5);
        let mut churn = 0;
        for _ in 0..count {
            let at = rng.below(40_000);
            let fault = match rng.below(14) {
                0 | 1 => Fault::Stop {
                    node: rng.below(nodes.len() as u64) as usize,
                },
                2..=4 => Fault::Cancel {
                    node: rng.pick(&receivers),
                    pick: rng.range(0, 2),
                    reason: match rng.below(4) {
                        0 => Reason::Shutdown,
                        1 => Reason::error("soak: injected cancel"),
                        _ => Reason::Normal,
                    },
                },
                5 | 6 => {
                    let node = rng.pick(&emitters);
                    Fault::Stream {
                        node,
                        take: rng.range(0, 300),
                        max_demand: rng.range(1, 50),
                        partition: partition_for(&nodes[node], &mut rng),
                    }
                }
                7..=10 => {
                    let node = rng.pick(&emitters);
                    let id = churn;
                    churn += 1;
                    faults.push((
                        at + rng.below(20_000),
                        Fault::ChurnEnd {
                            id,
                            stop: rng.chance(1, 2),
                        },
                    ));
                    let (max_demand, _) = demand_options(&mut rng);
                    Fault::ChurnStart {
                        id,
                        node,
                        runtime: rng.chance(1, 2),
                        cancel: rng.pick(&[
                            CancelMode::Temporary,
                            CancelMode::Transient,
                            CancelMode::Permanent,
                        ]),
                        max_demand,
                        partition: partition_for(&nodes[node], &mut rng),
                    }
                }
                11 => Fault::DropTopology,
                _ => {
                    let producers: Vec<usize> = (0..nodes.len())
                        .filter(|&n| nodes[n].is_producer())
                        .collect();
                    let node = rng.pick(&producers);
                    faults.push((at + rng.below(10_000), Fault::Forward { node }));
                    Fault::Accumulate { node }
                }
            };
            faults.push((at, fault));
        }
        // A churn consumer's end comes after its start, a switch to forward after the switch
        // to accumulate, even if drawn at the same time.
        faults.sort_by_key(|(at, f)| {
            (
                *at,
                matches!(f, Fault::ChurnEnd { .. } | Fault::Forward { .. }),
            )
        });
        settle_ms = rng.below(300);
    }
    Plan {
        clean,
        nodes,
        faults,
        settle_ms,
    }
}

/// A partition for a new consumer of a partitioned stage (maybe taken: then it is refused).
fn partition_for(node: &Node, rng: &mut Rng) -> Option<u64> {
    match node.disp {
        Disp::Partition { .. } => Some(rng.below(node.downs.len() as u64)),
        _ => None,
    }
}

// ----- The stages ----------------------------------------------------------------------------

/// The events of producer `p`: `(p << 32) | seq`.
fn event(p: usize, seq: u64) -> u64 {
    ((p as u64) << 32) | seq
}

/// `from_iter`'s source: a range that counts what is pulled from it.
struct CountingRange {
    next: u64,
    end: u64,
    pulled: Arc<AtomicU64>,
}

impl Iterator for CountingRange {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.next == self.end {
            return None;
        }
        let x = self.next;
        self.next += 1;
        self.pulled.fetch_add(1, Ordering::Relaxed);
        Some(x)
    }
}

struct Tick;

/// The custom producer (see [`GenMode`]).
struct Gen {
    p: usize,
    next: u64,
    limit: Option<u64>,
    mode: GenMode,
    owed: u64,
    ticking: bool,
    emitted: Arc<AtomicU64>,
}

impl Gen {
    fn left(&self) -> u64 {
        self.limit.map_or(u64::MAX, |l| l - self.next)
    }

    fn emit(&mut self, n: u64, ctx: &mut Context<'_, u64, Tick>) {
        let n = n.min(self.left());
        let p = self.p;
        ctx.emit_all((self.next..self.next + n).map(|s| event(p, s)));
        self.next += n;
        self.emitted.fetch_add(n, Ordering::Relaxed);
        if self.left() == 0 {
            ctx.finish();
        }
    }
}

impl Producer for Gen {
    type Out = u64;
    type Message = Tick;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64, Tick>) {
        match self.mode {
            GenMode::Exact => self.emit(demand as u64, ctx),
            GenMode::Over { extra } => self.emit(demand as u64 + extra, ctx),
            GenMode::Timer { .. } => {
                self.owed += demand as u64;
                if !self.ticking {
                    self.ticking = true;
                    ctx.send_after(Tick, Duration::ZERO);
                }
            }
        }
    }

    fn handle_message(&mut self, _: Tick, ctx: &mut Context<'_, u64, Tick>) {
        let GenMode::Timer { per_tick } = self.mode else {
            return;
        };
        self.ticking = false;
        let n = self.owed.min(per_tick);
        self.owed -= n;
        if self.left() == 0 {
            ctx.finish();
            return;
        }
        self.emit(n, ctx);
        if self.owed > 0 && self.left() > 0 && !ctx.is_stop_requested() {
            self.ticking = true;
            ctx.send_after(Tick, Duration::ZERO);
        }
    }
}

/// What a sink handled, in order; `panic_batch`: the size of the batch it panicked in.
#[derive(Clone, Default)]
struct SinkLog {
    got: Arc<Mutex<Vec<u64>>>,
    /// Every event handled with the subscription it came on.
    tagged: Arc<Mutex<Vec<(u64, u64)>>>,
    /// Each subscription's producer, by name.
    peers: Arc<Mutex<HashMap<u64, String>>>,
    panicked_batch: Arc<AtomicU64>,
    panicked: Arc<AtomicBool>,
}

struct Sink {
    log: SinkLog,
    handled: u64,
    panic_at: Option<u64>,
    delay_us: u64,
}

impl Consumer for Sink {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        let len = events.len() as u64;
        if let Some(k) = self.panic_at {
            if self.handled + len > k {
                self.log.panicked_batch.store(len, Ordering::Relaxed);
                self.log.panicked.store(true, Ordering::Relaxed);
                panic!("{INJECTED} in a consumer at event {k}");
            }
        }
        self.handled += len;
        let sub = events.subscription().as_u64();
        let events: Vec<u64> = events.collect();
        self.log
            .tagged
            .lock()
            .unwrap()
            .extend(events.iter().map(|&x| (sub, x)));
        self.log.got.lock().unwrap().extend(events);
        if self.delay_us > 0 {
            std::thread::sleep(Duration::from_micros(self.delay_us));
        }
    }

    fn handle_subscribe(
        &mut self,
        s: &Subscription,
        _: &mut ConsumerContext<'_>,
    ) -> stageflow::DemandMode {
        self.log
            .peers
            .lock()
            .unwrap()
            .insert(s.id().as_u64(), s.peer().to_string());
        stageflow::DemandMode::Automatic
    }
}

type MapFn = Box<dyn FnMut(u64) -> u64 + Send>;
type Pc = Map<MapFn, u64, u64>;

fn identity(panic_at: Option<u64>) -> Pc {
    let mut seen = 0u64;
    Map::new(Box::new(move |x| {
        seen += 1;
        if Some(seen) == panic_at {
            panic!("{INJECTED} in a producer-consumer at event {seen}");
        }
        x
    }) as MapFn)
}

// ----- Building ------------------------------------------------------------------------------

/// A running stage of the iteration, with what the checks need.
struct Live {
    name: String,
    sref: StageRef,
    source: Option<Source<u64>>,
    /// Producers: events emitted (pulled from the iterator, or emitted by `Gen`).
    emitted: Option<Arc<AtomicU64>>,
    pc: Option<ProducerConsumerHandle<Pc>>,
    sink: Option<ConsumerHandle<Sink>>,
    log: Option<SinkLog>,
    /// Its dispatcher counts each broadcast copy in `events_out`.
    broadcast: bool,
    /// Producers: switches the demand mode.
    set_demand: Option<Box<dyn Fn(ProducerDemand)>>,
}

impl Live {
    fn cancel_upstream(&self, pick: usize, reason: Reason) {
        let ups: Vec<_> = self
            .sref
            .counters()
            .subscriptions
            .into_iter()
            .filter(|s| s.direction == Direction::Upstream)
            .collect();
        if ups.is_empty() {
            return;
        }
        let sub = ups[pick % ups.len()].id;
        if let Some(h) = &self.pc {
            let _ = h.cancel(sub, reason);
        } else if let Some(h) = &self.sink {
            let _ = h.cancel(sub, reason);
        }
    }

    fn cancel_all_upstream(&self) {
        let n = self
            .sref
            .counters()
            .subscriptions
            .iter()
            .filter(|s| s.direction == Direction::Upstream)
            .count();
        for i in 0..n {
            self.cancel_upstream(i, Reason::Normal);
        }
    }
}

fn dispatcher_for(node: &Node) -> Box<dyn Dispatcher<u64>> {
    match node.disp {
        Disp::Demand => Box::new(DemandDispatcher::new()),
        Disp::Broadcast => Box::new(BroadcastDispatcher::new()),
        Disp::Partition {
            drop_some,
            max_queue,
        } => {
            let parts = node.downs.len() as u64;
            let d = PartitionDispatcher::new(node.downs.len(), move |x: &u64| {
                let h = mix(*x);
                if drop_some && h.is_multiple_of(8) {
                    None
                } else {
                    Some((h >> 3) % parts)
                }
            })
            .expect("at least one partition");
            match max_queue {
                Some(m) => Box::new(d.max_queue(m)),
                None => Box::new(d),
            }
        }
    }
}

fn common_options<S, R: Role<S>>(b: StageBuilder<S, R>, node: &Node) -> StageBuilder<S, R> {
    b.name(node.name.clone()).inbox_capacity(node.inbox)
}

fn emitter_options<S, R: Emits<S, Out = u64>>(
    b: StageBuilder<S, R>,
    node: &Node,
) -> StageBuilder<S, R> {
    let b = b.dispatcher(dispatcher_for(node));
    match node.buf {
        Buf::Default => b,
        Buf::Unbounded => b.buffer_unbounded(),
        Buf::Size(n, keep) => b.buffer_size(n).buffer_keep(keep),
    }
}

fn options(e: &Edge) -> SubscribeOptions {
    let mut o = SubscribeOptions::new()
        .max_demand(e.max_demand)
        .cancel(e.cancel);
    if let Some(min) = e.min_demand {
        o = o.min_demand(min);
    }
    if let Some(p) = e.partition {
        o = o.partition(p);
    }
    o
}

fn subscribed<S, R: Consumes<S, In = u64>>(
    mut b: StageBuilder<S, R>,
    node: &Node,
    live: &[Live],
) -> StageBuilder<S, R> {
    for e in &node.ups {
        let source = live[e.from].source.as_ref().expect("an emitter");
        b = b.subscribe_to(source, options(e)).expect("valid options");
    }
    b
}

/// Switches a producer's demand mode.
fn set_demand<S: Producer>(h: &ProducerHandle<S>, mode: ProducerDemand) {
    let _ = h.set_demand(mode);
}

fn build(plan: &Plan) -> Result<Vec<Live>, String> {
    let mut live: Vec<Live> = Vec::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        let broadcast = node.disp == Disp::Broadcast && node.emits();
        let l = match &node.kind {
            Kind::Iter { events } => {
                let pulled = Arc::new(AtomicU64::new(0));
                let range = CountingRange {
                    next: event(i, 0),
                    end: event(i, *events),
                    pulled: pulled.clone(),
                };
                let b = stageflow::producer(IterProducer::new(range));
                let b = emitter_options(common_options(b, node), node);
                let h: ProducerHandle<IterProducer<CountingRange>> = b
                    .demand(ProducerDemand::Accumulate)
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", node.name))?;
                let h2 = h.clone();
                Live {
                    name: node.name.clone(),
                    sref: h.stage_ref(),
                    source: Some(stageflow::Upstream::source(&h)),
                    emitted: Some(pulled),
                    pc: None,
                    sink: None,
                    log: None,
                    broadcast,
                    set_demand: Some(Box::new(move |mode| set_demand(&h2, mode))),
                }
            }
            Kind::Gen { mode, events } => {
                let emitted = Arc::new(AtomicU64::new(0));
                let gen = Gen {
                    p: i,
                    next: 0,
                    limit: *events,
                    mode: *mode,
                    owed: 0,
                    ticking: false,
                    emitted: emitted.clone(),
                };
                let b = emitter_options(common_options(stageflow::producer(gen), node), node);
                let h: ProducerHandle<Gen> = b
                    .demand(ProducerDemand::Accumulate)
                    .spawn()
                    .map_err(|e| format!("spawn {}: {e}", node.name))?;
                let h2 = h.clone();
                Live {
                    name: node.name.clone(),
                    sref: h.stage_ref(),
                    source: Some(stageflow::Upstream::source(&h)),
                    emitted: Some(emitted),
                    pc: None,
                    sink: None,
                    log: None,
                    broadcast,
                    set_demand: Some(Box::new(move |mode| set_demand(&h2, mode))),
                }
            }
            Kind::Pc { panic_at } => {
                let b = stageflow::producer_consumer(identity(*panic_at));
                let b = subscribed(emitter_options(common_options(b, node), node), node, &live);
                let h = b.spawn().map_err(|e| format!("spawn {}: {e}", node.name))?;
                Live {
                    name: node.name.clone(),
                    sref: h.stage_ref(),
                    source: Some(stageflow::Upstream::source(&h)),
                    emitted: None,
                    pc: Some(h),
                    sink: None,
                    log: None,
                    broadcast,
                    set_demand: None,
                }
            }
            Kind::Sink { panic_at, delay_us } => {
                let log = SinkLog::default();
                let sink = Sink {
                    log: log.clone(),
                    handled: 0,
                    panic_at: *panic_at,
                    delay_us: *delay_us,
                };
                let b = subscribed(common_options(stageflow::consumer(sink), node), node, &live);
                let h = b.spawn().map_err(|e| format!("spawn {}: {e}", node.name))?;
                Live {
                    name: node.name.clone(),
                    sref: h.stage_ref(),
                    source: None,
                    emitted: None,
                    pc: None,
                    sink: Some(h),
                    log: Some(log),
                    broadcast: false,
                    set_demand: None,
                }
            }
        };
        live.push(l);
    }
    Ok(live)
}

// ----- Running -------------------------------------------------------------------------------

/// How many distinct paths lead from node `from` to node `to`.
fn paths(plan: &Plan, from: usize, to: usize) -> u64 {
    if from == to {
        return 1;
    }
    plan.nodes[from]
        .downs
        .iter()
        .map(|&d| paths(plan, d, to))
        .sum()
}

/// The most copies of one event of `n` that can reach the final consumers.
fn max_copies(plan: &Plan, n: usize) -> u64 {
    let node = &plan.nodes[n];
    if !node.emits() {
        return 1;
    }
    let each = node.downs.iter().map(|&d| max_copies(plan, d));
    match node.disp {
        Disp::Broadcast => each.sum(),
        _ => each.max().unwrap_or(0),
    }
}

fn describe(live: &[Live]) -> String {
    live.iter()
        .map(|l| {
            let c = l.sref.counters();
            format!(
                "  {}: outcome {:?}, in {} out {} discarded {} buffered {}{}{}\n",
                l.name,
                l.sref.outcome(),
                c.events_in,
                c.events_out,
                c.discarded,
                c.buffered,
                l.emitted
                    .as_ref()
                    .map(|e| format!(", emitted {}", e.load(Ordering::Relaxed)))
                    .unwrap_or_default(),
                l.log
                    .as_ref()
                    .map(|g| format!(", handled {}", g.got.lock().unwrap().len()))
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Joins every stage within one deadline; names those still running.
/// Joins every stage. A hang is a pipeline that makes no progress (no stage sends, receives
/// or ends) for `within`; a loaded machine may take much longer than that in all, as long as
/// events keep moving (at most [`PROGRESS_CAP`]).
fn join_all(live: &[Live], within: Duration, what: &str, errs: &mut Vec<String>) -> bool {
    let start = Instant::now();
    let mut deadline = start + within;
    let mut seen = progress(live);
    let mut hung = Vec::new();
    for l in live {
        loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(250));
            if l.sref.join_timeout(step).is_some() {
                break;
            }
            let now = progress(live);
            if now != seen && start.elapsed() < PROGRESS_CAP {
                // Still moving: the time without progress starts again.
                seen = now;
                deadline = Instant::now() + within;
            } else if Instant::now() >= deadline {
                hung.push(l.name.clone());
                break;
            }
        }
    }
    if hung.is_empty() {
        return true;
    }
    errs.push(format!(
        "HANG: stages {hung:?} made no progress for {within:?} {what} (after {:?}); state:\n{}",
        start.elapsed(),
        describe(live)
    ));
    false
}

/// How long [`join_all`] waits in all while events keep moving.
const PROGRESS_CAP: Duration = Duration::from_secs(120);

/// What moves while a pipeline works: events in and out, and stages ended.
fn progress(live: &[Live]) -> (u64, u64, usize) {
    let mut moved = (0, 0, 0);
    for l in live {
        let c = l.sref.counters();
        moved.0 += c.events_in;
        moved.1 += c.events_out;
        moved.2 += usize::from(l.sref.outcome().is_some());
    }
    moved
}

fn run_clean(plan: &Plan) -> Vec<String> {
    let mut errs = Vec::new();
    let live = match build(plan) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let mut topo = Topology::new();
    for l in &live {
        topo.add(&l.sref);
    }
    for l in &live {
        if let Some(set) = &l.set_demand {
            set(ProducerDemand::Forward);
        }
    }
    if !join_all(&live, LIMIT, "in a clean run (no stop)", &mut errs) {
        return errs;
    }
    for l in &live {
        let outcome = l.sref.outcome();
        if outcome != Some(Reason::Normal) {
            errs.push(format!("{} ended {outcome:?}, expected Normal", l.name));
        }
    }
    // Counters: exact.
    for (n, l) in live.iter().enumerate() {
        let node = &plan.nodes[n];
        let c = l.sref.counters();
        let fanout = node.downs.len() as u64;
        if c.discarded != 0 || c.buffered != 0 {
            errs.push(format!(
                "{}: discarded {} buffered {} in a clean run",
                l.name, c.discarded, c.buffered
            ));
        }
        let taken = match &l.emitted {
            Some(e) => e.load(Ordering::Relaxed),
            None => c.events_in,
        };
        if node.emits() {
            let expected = if l.broadcast { taken * fanout } else { taken };
            if c.events_out != expected {
                errs.push(format!(
                    "{}: events_out {} but {} {} events{}",
                    l.name,
                    c.events_out,
                    if node.is_producer() {
                        "emitted"
                    } else {
                        "received"
                    },
                    taken,
                    if l.broadcast {
                        format!(" to broadcast to {fanout} consumers")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        let planned = match node.kind {
            Kind::Iter { events } => Some(events),
            Kind::Gen { events, .. } => events,
            _ => None,
        };
        if planned.is_some_and(|events| taken != events) {
            errs.push(format!("{}: emitted {taken} of {planned:?} events", l.name));
        }
        if let Some(log) = &l.log {
            let handled = log.got.lock().unwrap().len() as u64;
            if c.events_in != handled {
                errs.push(format!(
                    "{}: events_in {} but handled {handled}",
                    l.name, c.events_in
                ));
            }
        }
    }
    // Exact copies per event, and per-path order.
    let sinks: Vec<usize> = (0..plan.nodes.len())
        .filter(|&n| !plan.nodes[n].emits())
        .collect();
    let producers: Vec<usize> = (0..plan.nodes.len())
        .filter(|&n| plan.nodes[n].is_producer())
        .collect();
    let mut copies: HashMap<u64, u64> = HashMap::new();
    for &s in &sinks {
        let log = live[s].log.as_ref().unwrap();
        check_subscription_order(plan, &live, log, &live[s].name, &mut errs);
        let got = log.got.lock().unwrap().clone();
        check_order(plan, s, &live[s].name, &got, &mut errs);
        for x in got {
            *copies.entry(x).or_default() += 1;
        }
    }
    for &p in &producers {
        let events = match plan.nodes[p].kind {
            Kind::Iter { events } => events,
            Kind::Gen { events, .. } => events.unwrap_or(0),
            _ => unreachable!(),
        };
        let want = expected_copies(plan, p);
        let mut wrong = Vec::new();
        for seq in 0..events {
            let got = copies.remove(&event(p, seq)).unwrap_or(0);
            if got != want {
                wrong.push((seq, got));
            }
        }
        if !wrong.is_empty() {
            errs.push(format!(
                "{}: {} of its {events} events reached the consumers a wrong number of times \
                 (expected {want} each); first (seq, times): {:?}",
                live[p].name,
                wrong.len(),
                &wrong[..wrong.len().min(8)]
            ));
        }
    }
    if !copies.is_empty() {
        let mut extra: Vec<_> = copies.into_iter().collect();
        extra.sort_unstable();
        errs.push(format!(
            "consumers received {} events that no producer emitted, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(8)]
        ));
    }
    if !errs.is_empty() {
        errs.push(format!("state:\n{}", describe(&live)));
    }
    drop(topo);
    errs
}

/// Copies of each event of `n` that reach the final consumers (clean runs: exact).
fn expected_copies(plan: &Plan, n: usize) -> u64 {
    let node = &plan.nodes[n];
    if !node.emits() {
        return 1;
    }
    match node.disp {
        Disp::Broadcast => node.downs.iter().map(|&d| expected_copies(plan, d)).sum(),
        _ => expected_copies(plan, node.downs[0]),
    }
}

/// Events from one producer reach a consumer in the order produced wherever only one path
/// leads from that producer to that consumer (every hop keeps order; only a merge of two
/// paths may interleave). With one path, an event also arrives at most once.
fn check_order(plan: &Plan, sink: usize, name: &str, got: &[u64], errs: &mut Vec<String>) {
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut seen: HashMap<u64, u64> = HashMap::new();
    for (i, &x) in got.iter().enumerate() {
        let p = (x >> 32) as usize;
        if p >= plan.nodes.len() || !plan.nodes[p].is_producer() {
            errs.push(format!("{name}: received {x:#x}, which no producer emits"));
            return;
        }
        let n = paths(plan, p, sink);
        let times = seen.entry(x).or_default();
        *times += 1;
        if *times > n {
            errs.push(format!(
                "{name}: received event {x:#x} {} times, over {n} paths (position {i})",
                *times
            ));
            return;
        }
        if n == 1 {
            if let Some(&prev) = last.get(&p) {
                if x <= prev {
                    errs.push(format!(
                        "{name}: ORDER: event {x:#x} from {} arrived after {prev:#x} (position \
                         {i}) although one path leads there",
                        plan.nodes[p].name
                    ));
                    return;
                }
            }
            last.insert(p, x);
        }
    }
}

/// Order within each subscription, whatever the churn: the events one subscription delivers
/// from one producer are in the order produced wherever one path leads from that producer to
/// the subscription's producer (the subscription itself adds none), faults and demand-mode
/// flips included. Stricter than [`check_order`]: two paths to the consumer through two
/// subscriptions are each checked.
fn check_subscription_order(
    plan: &Plan,
    live: &[Live],
    log: &SinkLog,
    name: &str,
    errs: &mut Vec<String>,
) {
    let peers = log.peers.lock().unwrap().clone();
    let tagged = log.tagged.lock().unwrap().clone();
    let mut last: HashMap<(u64, usize), u64> = HashMap::new();
    for (i, &(sub, x)) in tagged.iter().enumerate() {
        let p = (x >> 32) as usize;
        let Some(peer) = peers.get(&sub) else {
            errs.push(format!(
                "{name}: event {x:#x} on subscription {sub}, never subscribed"
            ));
            return;
        };
        let Some(u) = live
            .iter()
            .take(plan.nodes.len())
            .position(|l| &l.name == peer)
        else {
            continue;
        };
        if p >= plan.nodes.len() || paths(plan, p, u) != 1 {
            continue;
        }
        if let Some(&prev) = last.get(&(sub, p)) {
            if x <= prev {
                errs.push(format!(
                    "{name}: SUBSCRIPTION ORDER: event {x:#x} from {} after {prev:#x} on \
                     subscription {sub} to {peer} (position {i})",
                    plan.nodes[p].name
                ));
                return;
            }
        }
        last.insert((sub, p), x);
    }
}

fn run_faults(plan: &Plan) -> Vec<String> {
    let mut errs = Vec::new();
    let mut live = match build(plan) {
        Ok(l) => l,
        Err(e) => return vec![e],
    };
    let base = live.len();
    let mut topo = Some({
        let mut t = Topology::new();
        for l in &live {
            t.add(&l.sref);
        }
        t
    });
    for l in &live {
        if let Some(set) = &l.set_demand {
            set(ProducerDemand::Forward);
        }
    }
    let start = Instant::now();
    let mut churn: HashMap<usize, usize> = HashMap::new(); // churn id -> index in `live`
    let mut streams = Vec::new(); // (node, receiver of the thread's end)
    for (at, fault) in &plan.faults {
        let when = start + Duration::from_micros(*at);
        if let Some(d) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        match fault {
            Fault::Stop { node } => live[*node].sref.stop(),
            Fault::Cancel { node, pick, reason } => {
                live[*node].cancel_upstream(*pick, reason.clone())
            }
            Fault::Stream {
                node,
                take,
                max_demand,
                partition,
            } => {
                let source = live[*node].source.clone().unwrap();
                let mut o = SubscribeOptions::new().max_demand(*max_demand);
                if let Some(p) = partition {
                    o = o.partition(*p);
                }
                let take = *take;
                let (tx, rx) = crossbeam_channel::bounded(1);
                std::thread::spawn(move || {
                    if let Ok(s) = stageflow::stream(&source, o) {
                        let _ = s.take(take).count();
                    }
                    let _ = tx.send(());
                });
                streams.push((*node, rx));
            }
            Fault::ChurnStart {
                id,
                node,
                runtime,
                cancel,
                max_demand,
                partition,
            } => {
                let source = live[*node].source.clone().unwrap();
                let mut o = SubscribeOptions::new()
                    .max_demand(*max_demand)
                    .cancel(*cancel);
                if let Some(p) = partition {
                    o = o.partition(*p);
                }
                let log = SinkLog::default();
                let sink = Sink {
                    log: log.clone(),
                    handled: 0,
                    panic_at: None,
                    delay_us: 0,
                };
                let name = format!("churn{id}");
                let b = stageflow::consumer(sink)
                    .name(name.clone())
                    .inbox_capacity(1 + id % 4);
                let h = if *runtime {
                    let h = b.spawn().expect("a consumer with no subscription starts");
                    // Refused (a taken partition, a producer that ended): it stays idle.
                    let _ = h.subscribe_to(&source, o);
                    Some(h)
                } else {
                    b.subscribe_to(&source, o).unwrap().spawn().ok()
                };
                if let Some(h) = h {
                    if let Some(t) = &mut topo {
                        t.add(&h);
                    }
                    churn.insert(*id, live.len());
                    live.push(Live {
                        name,
                        sref: h.stage_ref(),
                        source: None,
                        emitted: None,
                        pc: None,
                        sink: Some(h),
                        log: Some(log),
                        broadcast: false,
                        set_demand: None,
                    });
                }
            }
            Fault::ChurnEnd { id, stop } => {
                if let Some(&i) = churn.get(id) {
                    if *stop {
                        live[i].sref.stop();
                    } else {
                        live[i].cancel_all_upstream();
                    }
                }
            }
            Fault::DropTopology => drop(topo.take()),
            Fault::Accumulate { node } | Fault::Forward { node } => {
                let mode = if matches!(fault, Fault::Accumulate { .. }) {
                    ProducerDemand::Accumulate
                } else {
                    ProducerDemand::Forward
                };
                if let Some(set) = &live[*node].set_demand {
                    set(mode);
                }
            }
        }
    }
    // Let it run on its own for a while, then stop everything.
    let settle = Instant::now() + Duration::from_millis(plan.settle_ms);
    while Instant::now() < settle && live.iter().any(|l| l.sref.outcome().is_none()) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut last = Topology::new();
    for l in &live {
        last.add(&l.sref);
    }
    last.stop();
    if !join_all(&live, LIMIT, "after the final Topology::stop()", &mut errs) {
        return errs;
    }
    for (node, rx) in &streams {
        if rx.recv_timeout(LIMIT).is_err() {
            errs.push(format!(
                "HANG: a stream of {} did not end (or its drop did not return) within {LIMIT:?} \
                 after the final stop",
                live[*node].name
            ));
        }
    }
    check_outcomes(plan, &live, &mut errs);
    check_balances(plan, &live, base, !streams.is_empty(), &mut errs);
    // Order within every subscription, churn consumers' included.
    for l in &live {
        if let Some(log) = &l.log {
            check_subscription_order(plan, &live, log, &l.name, &mut errs);
        }
    }
    // Order and duplicates on the planned consumers (churn consumers add paths of their own).
    let mut copies: HashMap<u64, u64> = HashMap::new();
    for (s, l) in live.iter().enumerate().take(base) {
        if let Some(log) = &l.log {
            let got = log.got.lock().unwrap().clone();
            check_order(plan, s, &l.name, &got, &mut errs);
            for x in got {
                *copies.entry(x).or_default() += 1;
            }
        }
    }
    for (x, n) in copies {
        let p = (x >> 32) as usize;
        if p < base && plan.nodes[p].is_producer() {
            let most = max_copies(plan, p);
            if n > most {
                errs.push(format!(
                    "DUPLICATE: event {x:#x} reached the consumers {n} times, at most {most} \
                     possible"
                ));
                break;
            }
        }
    }
    if !errs.is_empty() {
        errs.push(format!("state:\n{}", describe(&live)));
    }
    errs
}

/// No stage ends `Panicked` but by an injected panic (its own, or one that reached it through
/// a subscription, which keeps the message).
fn check_outcomes(plan: &Plan, live: &[Live], errs: &mut Vec<String>) {
    let injected = plan.nodes.iter().any(|n| {
        matches!(
            n.kind,
            Kind::Pc { panic_at: Some(_) }
                | Kind::Sink {
                    panic_at: Some(_),
                    ..
                }
        )
    });
    for l in live {
        if let Some(Reason::Panicked(msg)) = l.sref.outcome() {
            if !injected || !msg.contains(INJECTED) {
                errs.push(format!(
                    "RUNTIME PANIC: {} ended Panicked({msg:?}), not an injected panic",
                    l.name
                ));
            }
        }
    }
}

/// Counters once every stage has ended: the equations of the `Counters` docs.
///
/// - every stage: `buffered == 0`;
/// - a producer: its `emitted` counter is what it emitted; without a broadcast dispatcher
///   `emitted == events_out + discarded`; with one (`events_out` counts one per copy, and
///   consumers come and go) `emitted <= events_out + discarded`;
/// - a producer-consumer without a broadcast dispatcher (identity map, 1:1):
///   `events_in == events_out + discarded`, unless it panicked (then the events of the
///   message it panicked in are not accounted: only `>=` is checked);
/// - a consumer: `events_in == handled + discarded`, plus, if it panicked, the batch it
///   panicked in (handed to the callback, so consumed);
/// - the pipeline, unless a `stream` took part (a stream counts nothing; what it held when
///   dropped is not visible): what all stages sent equals what all stages received,
///   `Σ events_out == Σ events_in` (each copy of a broadcast is sent and received once), and,
///   without a broadcast dispatcher, `Σ emitted == Σ handled + Σ discarded + what panicking
///   callbacks held`.
fn check_balances(plan: &Plan, live: &[Live], base: usize, streams: bool, errs: &mut Vec<String>) {
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut emitted = 0u64;
    let mut accounted = 0u64;
    let mut any_broadcast = false;
    for (n, l) in live.iter().enumerate() {
        let c = l.sref.counters();
        let pc = n < base && matches!(plan.nodes[n].kind, Kind::Pc { .. });
        let outcome = l.sref.outcome();
        let panicked = matches!(outcome, Some(Reason::Panicked(_)));
        if c.buffered != 0 {
            errs.push(format!(
                "{}: buffered {} after it ended ({outcome:?})",
                l.name, c.buffered
            ));
        }
        sent += c.events_out;
        received += c.events_in;
        accounted += c.discarded;
        any_broadcast |= l.broadcast;
        if let Some(e) = &l.emitted {
            let e = e.load(Ordering::Relaxed);
            emitted += e;
            if !l.broadcast && e != c.events_out + c.discarded + c.buffered {
                errs.push(format!(
                    "BALANCE: producer {} emitted {e} != out {} + discarded {} + buffered {} \
                     ({outcome:?})",
                    l.name, c.events_out, c.discarded, c.buffered
                ));
            }
            // A broadcast sends each event that leaves to every consumer there, at least one.
            if l.broadcast && e > c.events_out + c.discarded + c.buffered {
                errs.push(format!(
                    "BALANCE: broadcasting producer {} emitted {e} > out {} + discarded {} + \
                     buffered {} ({outcome:?})",
                    l.name, c.events_out, c.discarded, c.buffered
                ));
            }
            if e != c.emitted {
                errs.push(format!(
                    "BALANCE: producer {} emitted {e} but counted {} ({outcome:?})",
                    l.name, c.emitted
                ));
            }
        }
        if pc && !l.broadcast {
            let out = c.events_out + c.discarded + c.buffered;
            if c.events_in != out && !(panicked && c.events_in > out) {
                errs.push(format!(
                    "BALANCE: producer-consumer {} in {} != out {} + discarded {} + buffered {} \
                     ({outcome:?})",
                    l.name, c.events_in, c.events_out, c.discarded, c.buffered
                ));
            }
            if panicked {
                accounted += c.events_in.saturating_sub(out);
            }
        }
        if let Some(log) = &l.log {
            let handled = log.got.lock().unwrap().len() as u64;
            let lost = if log.panicked.load(Ordering::Relaxed) {
                log.panicked_batch.load(Ordering::Relaxed)
            } else {
                0
            };
            accounted += handled + lost;
            // The batch it panicked in was handed to it; the later batches of that message
            // are counted as discarded.
            let whole = handled + c.discarded + lost;
            if c.events_in != whole {
                errs.push(format!(
                    "BALANCE: consumer {} in {} != handled {handled} + discarded {}{} \
                     ({outcome:?})",
                    l.name,
                    c.events_in,
                    c.discarded,
                    if lost > 0 {
                        format!(" + {lost} in the batch it panicked in")
                    } else {
                        String::new()
                    }
                ));
            }
        }
    }
    if streams {
        return;
    }
    if sent != received {
        errs.push(format!(
            "BALANCE: the stages sent {sent} events in all but received {received}"
        ));
    }
    if !any_broadcast && emitted != accounted {
        errs.push(format!(
            "BALANCE: producers emitted {emitted} events; consumers handled or stages \
             discarded {accounted}"
        ));
    }
}

// ----- The soak ------------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[test]
fn soak() {
    let secs = env_u64("SOAK_SECS").unwrap_or(45);
    let master = env_u64("SOAK_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        mix(t.as_nanos() as u64)
    });
    let only = env_u64("SOAK_ITER");
    let keep_going = std::env::var("SOAK_KEEP_GOING").is_ok_and(|v| v == "1");
    // Injected panics are expected: keep them off stderr; every other panic is reported.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !panic_text(info.payload()).contains(INJECTED) {
            default_hook(info);
        }
    }));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut iter = 0u64;
    let mut runs = [0u64; 2];
    let mut failures = Vec::new();
    while Instant::now() < end {
        let i = only.unwrap_or(iter);
        iter += 1;
        let seed = mix(master ^ mix(i.wrapping_add(1)));
        let clean = i.is_multiple_of(2);
        let plan = draw_plan(seed, clean);
        let result = catch_unwind(AssertUnwindSafe(|| {
            if plan.clean {
                run_clean(&plan)
            } else {
                run_faults(&plan)
            }
        }));
        let errs = match result {
            Ok(errs) => errs,
            Err(p) => vec![format!(
                "the iteration panicked: {}",
                panic_text(p.as_ref())
            )],
        };
        runs[usize::from(!clean)] += 1;
        if !errs.is_empty() {
            let msg = format!(
                "SOAK_SEED={master} SOAK_ITER={i} ({} run) failed:\n{}\nplan: {plan:#?}",
                if clean { "clean" } else { "fault" },
                errs.join("\n"),
            );
            if keep_going {
                eprintln!("{msg}\n");
                failures.push(format!("SOAK_SEED={master} SOAK_ITER={i}"));
            } else {
                panic!("{msg}");
            }
        }
    }
    println!(
        "soak: SOAK_SEED={master}: {} iterations ({} clean, {} with faults) in {secs} s",
        runs[0] + runs[1],
        runs[0],
        runs[1]
    );
    assert!(failures.is_empty(), "failed iterations: {failures:?}");
}

/// The soak's clean runs (random topologies under every dispatcher, exact counts, order)
/// under the deterministic simulation: every stage on this thread, turns drawn from the
/// seed. `SOAK_SIM_RUNS` plans (default 60); a failure names the plan's iteration, and the
/// same `SOAK_SEED`/`SOAK_ITER` replays it, step for step.
#[test]
fn soak_clean_runs_under_simulation() {
    let runs = env_u64("SOAK_SIM_RUNS").unwrap_or(60);
    let master = env_u64("SOAK_SEED").unwrap_or(1);
    let only = env_u64("SOAK_ITER");
    for i in 0..runs {
        let i = only.unwrap_or(i);
        let seed = mix(master ^ mix(i.wrapping_add(1)));
        let plan = draw_plan(seed, true);
        let mut sim = stageflow::sim::Sim::new(seed);
        let errs = sim.build(|| run_clean(&plan));
        assert!(
            errs.is_empty(),
            "SOAK_SEED={master} SOAK_ITER={i} (clean, simulated) failed:\n{}\nplan: {plan:#?}",
            errs.join("\n")
        );
        if only.is_some() {
            break;
        }
    }
}
