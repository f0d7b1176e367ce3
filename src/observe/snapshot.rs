//! [`Snapshot`]: what every stage of a pipeline is doing, read from the counters the stages
//! publish (never waiting on a stage), with rates between two snapshots and the bottleneck.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::metrics::{MetricsSource, SourceSnapshot};
use super::process::ProcessSnapshot;
use crate::{
    role::Role, AsStageRef, Direction, Reason, Stage, StageKind, StageRef, StageTiming,
    SubscriptionId, Topology,
};

/// A picture of a pipeline at one moment: every stage, every subscription between them, and
/// (from an [`Observer`]) the rates since the previous picture.
///
/// Each stage's counters are read one stage after another, not all at once, so events moving
/// while the snapshot is taken can be counted out by one stage and not yet in by the next.
/// For an ended pipeline the figures are exact.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// When the snapshot was taken.
    pub taken: Instant,
    /// The time since the previous snapshot, which the rates cover; `None` for a first
    /// snapshot (then every rate is 0).
    pub interval: Option<Duration>,
    /// The stages, in the order they were given (a topology's order).
    pub stages: Vec<StageSnapshot>,
    /// The subscriptions, as edges from producer to consumer, ordered by subscription id.
    /// A subscription that has ended (cancelled, or one of its stages ended) is not listed.
    pub edges: Vec<EdgeSnapshot>,
    /// The index in `stages` of the stage holding the pipeline back, if any: over an
    /// interval, the one busiest in its callbacks if that is at least half the interval
    /// ([`StageSnapshot::share_busy`]); otherwise the [busy](StageSnapshot::busy) one with
    /// the fullest inbox.
    pub bottleneck: Option<usize>,
    /// What the registered [`MetricsSource`]s counted (a pipeline's acknowledgements, an
    /// HTTP producer's bytes, …), in the order they were registered.
    pub sources: Vec<SourceSnapshot>,
    /// The process's CPU time, memory and threads (`None` where they cannot be read: not
    /// Linux).
    pub process: Option<ProcessSnapshot>,
}

/// One stage in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StageSnapshot {
    /// The stage's name.
    pub name: String,
    /// The name of the stage's thread (every stage's thread is named after the stage).
    pub thread: String,
    /// Producer, producer-consumer or consumer.
    pub kind: StageKind,
    /// `None` while the stage runs; how it ended otherwise.
    pub outcome: Option<Reason>,
    /// Events received from producers.
    pub events_in: u64,
    /// Events sent to consumers (an event a broadcast sends to three consumers counts three
    /// times).
    pub events_out: u64,
    /// Events the stage emitted, each once however many consumers received it.
    pub emitted: u64,
    /// Events dropped (by the buffer's keep policy, or left behind when the stage ended).
    pub discarded: u64,
    /// Events waiting in the stage (its producer buffer, or received and not yet handled).
    pub buffered: u64,
    /// Messages waiting in the stage's inbox (a batch of events is one message).
    pub inbox_len: usize,
    /// The inbox's capacity, in messages.
    pub inbox_capacity: usize,
    /// Demand the stage's consumers are waiting for: asked of it and not yet sent, summed
    /// over its consumers.
    pub owed: u64,
    /// Events received per second since the previous snapshot.
    pub in_per_sec: f64,
    /// Events sent per second since the previous snapshot.
    pub out_per_sec: f64,
    /// The stage had work waiting that others wait on: its inbox was full, or it had input
    /// (or, for a producer, nothing but demand) while its consumers waited on it. A slow stage
    /// is busy in most snapshots; the busiest one is the snapshot's
    /// [`bottleneck`](Snapshot::bottleneck).
    pub busy: bool,
    /// Time in callbacks and waiting since the stage started (see [`StageTiming`]).
    pub timing: StageTiming,
    /// The share of the interval since the previous snapshot (0 to 1) the stage spent in its
    /// callbacks: near 1, the stage is the limit (its saturation). 0 without an interval.
    pub share_busy: f64,
    /// The share of the interval the stage waited for input (events, messages, timers).
    pub share_waiting_input: f64,
    /// The share of the interval the stage waited for its consumers' demand.
    pub share_waiting_demand: f64,
}

impl StageSnapshot {
    /// Whether the stage is still running.
    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// How full the inbox is, from 0 to 1.
    pub fn inbox_fill(&self) -> f64 {
        if self.inbox_capacity == 0 {
            0.0
        } else {
            self.inbox_len as f64 / self.inbox_capacity as f64
        }
    }

    /// `"running"`, or how the stage ended (`"normal"`, `"shutdown"`, `"error: …"`,
    /// `"panicked: …"`).
    pub fn state(&self) -> String {
        match &self.outcome {
            None => "running".to_owned(),
            Some(r) => r.to_string(),
        }
    }
}

/// One subscription in a [`Snapshot`]: events flow from `producer` to `consumer`, demand the
/// other way.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EdgeSnapshot {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// The producing stage's name.
    pub producer: String,
    /// The consuming stage's name.
    pub consumer: String,
    /// The consumer's outstanding demand: asked for and not yet received (events on their way
    /// count as outstanding). `None` if the consumer is not among the observed stages.
    pub demand: Option<u64>,
    /// The producer's side: asked of it and not yet sent. `None` if the producer is not among
    /// the observed stages.
    pub owed: Option<u64>,
    /// The subscription's `max_demand`.
    pub max_demand: u64,
    /// The subscription's `min_demand`.
    pub min_demand: u64,
    /// Events that went through the subscription: dispatched by the producer if it is
    /// observed, else handled by the consumer.
    pub events: u64,
    /// Events per second through the subscription since the previous snapshot.
    pub per_sec: f64,
}

/// Anything a [`Snapshot`] can be taken of: a [`Topology`], a stage handle, a supervised
/// [`Group`](crate::supervise::Group), a list of stages.
pub trait Observe {
    /// The stages to read, in order.
    fn observed(&self) -> Vec<StageRef>;

    /// The sources of metrics beyond the stages' counters that come with them (a
    /// [`Pipeline`](crate::pipeline::Pipeline) gives its own counters). Defaults to none.
    fn metrics_sources(&self) -> Vec<MetricsSource> {
        Vec::new()
    }

    /// A snapshot of the stages and metrics sources, without rates (see [`Observer`] for
    /// rates).
    ///
    /// Reads the counters each stage publishes: it never waits on a stage and never takes a
    /// lock a stage's event path takes.
    fn snapshot(&self) -> Snapshot {
        take(&self.observed(), &self.metrics_sources(), None)
    }
}

impl Observe for Topology {
    fn observed(&self) -> Vec<StageRef> {
        // Its members' stages too: a supervised group's current ones.
        self.current_stages()
    }
}

impl Observe for crate::supervise::Group {
    fn observed(&self) -> Vec<StageRef> {
        // The incarnations running now: a restarted child appears with its fresh counters.
        self.stages()
    }
}

impl Observe for StageRef {
    fn observed(&self) -> Vec<StageRef> {
        vec![self.clone()]
    }
}

impl<S, R: Role<S>> Observe for Stage<S, R> {
    fn observed(&self) -> Vec<StageRef> {
        vec![self.stage_ref()]
    }
}

impl Observe for [StageRef] {
    fn observed(&self) -> Vec<StageRef> {
        self.to_vec()
    }
}

impl Observe for Vec<StageRef> {
    fn observed(&self) -> Vec<StageRef> {
        self.clone()
    }
}

impl Snapshot {
    /// A snapshot of `stages`, without rates.
    pub fn of(stages: &[StageRef]) -> Snapshot {
        take(stages, &[], None)
    }

    /// The stage named `name`, if observed.
    pub fn stage(&self, name: &str) -> Option<&StageSnapshot> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The edge of subscription `id`, if either of its stages is observed.
    pub fn edge(&self, id: SubscriptionId) -> Option<&EdgeSnapshot> {
        self.edges.iter().find(|e| e.subscription == id)
    }

    /// The edges from `producer` to `consumer` (several if it subscribed more than once).
    pub fn edges_between<'a>(
        &'a self,
        producer: &'a str,
        consumer: &'a str,
    ) -> impl Iterator<Item = &'a EdgeSnapshot> + 'a {
        self.edges
            .iter()
            .filter(move |e| e.producer == producer && e.consumer == consumer)
    }

    /// The bottleneck stage, if any.
    pub fn bottleneck_stage(&self) -> Option<&StageSnapshot> {
        self.bottleneck.map(|i| &self.stages[i])
    }

    /// Whether every observed stage has ended.
    pub fn all_ended(&self) -> bool {
        self.stages.iter().all(|s| !s.is_running())
    }

    /// The metrics source named `name`, if registered.
    pub fn source(&self, name: &str) -> Option<&SourceSnapshot> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Takes snapshots of a fixed list of stages and computes each one's rates from the one
/// before: events per second in and out of every stage and through every subscription.
///
/// The observer holds [`StageRef`]s, as a [`Topology`] does: while it lives, the stages stay
/// reachable (a stage that would end because no handle can reach it keeps running). Give it
/// the stages of a topology that you hold anyway, and drop it with the topology.
///
/// # Examples
///
/// ```
/// use stageflow::observe::{Observe, Observer};
/// use stageflow::{SubscribeOptions, Topology};
///
/// let numbers = stageflow::from_iter(0..1000u64).name("numbers").spawn()?;
/// let sink = stageflow::consumer(stageflow::fns::ForEach::new(|_: u64| {}))
///     .name("sink")
///     .subscribe_to(&numbers, SubscribeOptions::new())?
///     .spawn()?;
/// let topology = Topology::new().with(&numbers).with(&sink);
/// let mut observer = Observer::new(&topology);
/// topology.join();
/// let snapshot = observer.snapshot();
/// assert_eq!(snapshot.stage("sink").unwrap().events_in, 1000);
/// assert!(snapshot.all_ended());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Observer {
    stages: Vec<StageRef>,
    sources: Vec<MetricsSource>,
    last: Option<Previous>,
}

#[derive(Debug)]
struct Previous {
    taken: Instant,
    stages: Vec<Before>,
    edges: HashMap<SubscriptionId, u64>,
    cpu: Option<Duration>,
}

/// A stage's figures in the previous snapshot, for rates and shares.
#[derive(Clone, Copy, Debug)]
struct Before {
    events_in: u64,
    events_out: u64,
    busy: Duration,
    input: Duration,
    demand: Duration,
}

impl Observer {
    /// An observer of `stages` (a [`Topology`], a handle, a list of [`StageRef`]s).
    pub fn new(stages: &(impl Observe + ?Sized)) -> Observer {
        Observer {
            stages: stages.observed(),
            sources: stages.metrics_sources(),
            last: None,
        }
    }

    /// Adds a source of metrics, read with every snapshot.
    pub fn add_source(&mut self, source: MetricsSource) -> &mut Observer {
        self.sources.push(source);
        self
    }

    /// The registered metrics sources.
    pub fn sources(&self) -> &[MetricsSource] {
        &self.sources
    }

    /// Adds a stage to observe.
    pub fn add(&mut self, stage: &impl AsStageRef) -> &mut Observer {
        self.stages.push(stage.stage_ref());
        self.last = None;
        self
    }

    /// The observed stages.
    pub fn stages(&self) -> &[StageRef] {
        &self.stages
    }

    /// A snapshot, with rates since the previous one (none for the first).
    pub fn snapshot(&mut self) -> Snapshot {
        let snapshot = take(&self.stages, &self.sources, self.last.as_ref());
        self.last = Some(Previous {
            taken: snapshot.taken,
            cpu: snapshot.process.as_ref().map(ProcessSnapshot::cpu),
            stages: snapshot
                .stages
                .iter()
                .map(|s| Before {
                    events_in: s.events_in,
                    events_out: s.events_out,
                    busy: s.timing.busy,
                    input: s.timing.waiting_for_input,
                    demand: s.timing.waiting_for_demand,
                })
                .collect(),
            edges: snapshot
                .edges
                .iter()
                .map(|e| (e.subscription, e.events))
                .collect(),
        });
        snapshot
    }
}

/// The share of `interval` that `now - before` is, between 0 and 1.
fn share(now: Duration, before: Duration, interval: Option<Duration>) -> f64 {
    match interval {
        Some(d) if !d.is_zero() => {
            (now.saturating_sub(before).as_secs_f64() / d.as_secs_f64()).clamp(0.0, 1.0)
        }
        _ => 0.0,
    }
}

fn per_sec(now: u64, before: u64, interval: Option<Duration>) -> f64 {
    match interval {
        Some(d) if !d.is_zero() => now.saturating_sub(before) as f64 / d.as_secs_f64(),
        _ => 0.0,
    }
}

#[derive(Default)]
struct EdgeParts {
    producer: Option<String>,
    consumer: Option<String>,
    demand: Option<u64>,
    owed: Option<u64>,
    limits: (u64, u64),
    dispatched: Option<u64>,
    handled: Option<u64>,
}

fn take(stages: &[StageRef], sources: &[MetricsSource], last: Option<&Previous>) -> Snapshot {
    let taken = Instant::now();
    let interval = last.map(|l| taken.saturating_duration_since(l.taken));
    let mut edges: HashMap<SubscriptionId, EdgeParts> = HashMap::new();
    let mut out = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        // The outcome first: a stage seen ended has published its final counters.
        let outcome = stage.outcome();
        let c = stage.counters();
        let mut owed = 0;
        for sub in &c.subscriptions {
            let e = edges.entry(sub.id).or_default();
            e.limits = (sub.max_demand, sub.min_demand);
            match sub.direction {
                Direction::Downstream => {
                    owed += sub.demand;
                    e.producer = Some(stage.name().to_owned());
                    e.consumer.get_or_insert_with(|| sub.peer.clone());
                    e.owed = Some(sub.demand);
                    e.dispatched = Some(sub.events);
                }
                _ => {
                    e.consumer = Some(stage.name().to_owned());
                    e.producer.get_or_insert_with(|| sub.peer.clone());
                    e.demand = Some(sub.demand);
                    e.handled = Some(sub.events);
                }
            }
        }
        let timing = stage.timing();
        let before = last
            .and_then(|l| l.stages.get(i).copied())
            .unwrap_or(Before {
                events_in: c.events_in,
                events_out: c.events_out,
                busy: timing.busy,
                input: timing.waiting_for_input,
                demand: timing.waiting_for_demand,
            });
        let kind = stage.kind();
        let inbox_len = stage.inbox_len();
        let inbox_capacity = stage.inbox_capacity();
        let mut s = StageSnapshot {
            name: stage.name().to_owned(),
            thread: stage.name().to_owned(),
            kind,
            outcome,
            events_in: c.events_in,
            events_out: c.events_out,
            emitted: c.emitted,
            discarded: c.discarded,
            buffered: c.buffered,
            inbox_len,
            inbox_capacity,
            owed,
            in_per_sec: per_sec(c.events_in, before.events_in, interval),
            out_per_sec: per_sec(c.events_out, before.events_out, interval),
            busy: false,
            share_busy: share(timing.busy, before.busy, interval),
            share_waiting_input: share(timing.waiting_for_input, before.input, interval),
            share_waiting_demand: share(timing.waiting_for_demand, before.demand, interval),
            timing,
        };
        s.busy = busy(&s);
        out.push(s);
    }
    let mut edge_list: Vec<EdgeSnapshot> = edges
        .into_iter()
        .map(|(id, e)| {
            let events = e.dispatched.or(e.handled).unwrap_or(0);
            let before = last
                .and_then(|l| l.edges.get(&id).copied())
                .unwrap_or(events);
            EdgeSnapshot {
                subscription: id,
                producer: e.producer.unwrap_or_default(),
                consumer: e.consumer.unwrap_or_default(),
                demand: e.demand,
                owed: e.owed,
                max_demand: e.limits.0,
                min_demand: e.limits.1,
                events,
                per_sec: per_sec(events, before, interval),
            }
        })
        .collect();
    edge_list.sort_by_key(|e| e.subscription);
    let bottleneck = bottleneck(&out);
    let process = ProcessSnapshot::read().map(|mut p| {
        if let (Some(before), Some(d)) = (last.and_then(|l| l.cpu), interval) {
            if !d.is_zero() {
                p.cpu_cores = p.cpu().saturating_sub(before).as_secs_f64() / d.as_secs_f64();
            }
        }
        p
    });
    Snapshot {
        taken,
        interval,
        stages: out,
        edges: edge_list,
        bottleneck,
        sources: sources.iter().map(MetricsSource::collect).collect(),
        process,
    }
}

/// A stage others wait on: a full inbox, or work in hand while its consumers wait.
fn busy(s: &StageSnapshot) -> bool {
    if !s.is_running() {
        return false;
    }
    let full = s.inbox_capacity > 0 && s.inbox_len >= s.inbox_capacity;
    let has_input = s.inbox_len > 0 || (s.kind != StageKind::Producer && s.buffered > 0);
    full || match s.kind {
        StageKind::Producer => s.owed > 0,
        StageKind::Consumer => has_input,
        _ => has_input && s.owed > 0,
    }
}

/// A stage busy in its callbacks for at least this share of the interval is saturated.
const SATURATED: f64 = 0.5;

/// Over an interval, the saturated stage that was busiest in its callbacks (saturation is the
/// true bottleneck signal: steadier than an inbox, which fills and empties between two
/// snapshots); among equals the one furthest down the list. Failing that (a first snapshot,
/// or no stage saturated), the busy stage with the fullest inbox; among equals, one whose
/// consumers wait on it, then the one furthest down the list (a topology lists stages from
/// source to sink, and the furthest busy stage is the one the others queue behind).
fn bottleneck(stages: &[StageSnapshot]) -> Option<usize> {
    let mut saturated: Option<(usize, f64)> = None;
    for (i, s) in stages.iter().enumerate() {
        if s.is_running()
            && s.share_busy >= SATURATED
            && saturated.is_none_or(|(_, b)| s.share_busy >= b)
        {
            saturated = Some((i, s.share_busy));
        }
    }
    if let Some((i, _)) = saturated {
        return Some(i);
    }
    let score = |s: &StageSnapshot| s.inbox_fill() + if s.owed > 0 { 0.5 } else { 0.0 };
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in stages.iter().enumerate().filter(|(_, s)| s.busy) {
        let sc = score(s);
        if best.is_none_or(|(_, b)| sc >= b) {
            best = Some((i, sc));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, kind: StageKind, inbox: usize, buffered: u64, owed: u64) -> StageSnapshot {
        let mut s = StageSnapshot {
            name: name.into(),
            thread: name.into(),
            kind,
            outcome: None,
            events_in: 0,
            events_out: 0,
            emitted: 0,
            discarded: 0,
            buffered,
            inbox_len: inbox,
            inbox_capacity: 8,
            owed,
            in_per_sec: 0.0,
            out_per_sec: 0.0,
            busy: false,
            timing: StageTiming::default(),
            share_busy: 0.0,
            share_waiting_input: 0.0,
            share_waiting_demand: 0.0,
        };
        s.busy = busy(&s);
        s
    }

    use StageKind::{Consumer as C, Producer as P, ProducerConsumer as PC};

    #[test]
    fn who_is_busy() {
        assert!(
            stage("p", P, 0, 0, 5).busy,
            "a producer its consumers wait on"
        );
        assert!(!stage("p", P, 0, 100, 0).busy, "a producer nobody asks");
        assert!(
            stage("pc", PC, 2, 0, 5).busy,
            "input waiting, consumers waiting"
        );
        assert!(
            stage("pc", PC, 0, 7, 5).busy,
            "input queued, consumers waiting"
        );
        assert!(
            !stage("pc", PC, 2, 0, 0).busy,
            "input waiting but nobody asks: held back"
        );
        assert!(stage("pc", PC, 8, 0, 0).busy, "a full inbox");
        assert!(stage("c", C, 1, 0, 0).busy, "a consumer with input waiting");
        assert!(!stage("c", C, 0, 0, 0).busy, "a starved consumer");
        let mut ended = stage("c", C, 3, 0, 0);
        ended.outcome = Some(Reason::Normal);
        assert!(!busy(&ended), "an ended stage");
    }

    #[test]
    fn the_bottleneck_is_the_fullest_busy_stage() {
        // source -> slow -> sink: the slow stage has input and its consumer waits.
        let chain = [
            stage("source", P, 0, 0, 0),
            stage("slow", PC, 1, 0, 50),
            stage("sink", C, 0, 0, 0),
        ];
        assert_eq!(bottleneck(&chain), Some(1));
        // A slow sink: input waiting, the middle stage holds back (nobody asks it).
        let chain = [
            stage("source", P, 0, 0, 0),
            stage("mid", PC, 0, 500, 0),
            stage("sink", C, 3, 0, 0),
        ];
        assert_eq!(bottleneck(&chain), Some(2));
        // A full inbox beats a stage whose consumers wait with an emptier one.
        let chain = [stage("a", PC, 2, 0, 10), stage("b", C, 8, 0, 0)];
        assert_eq!(bottleneck(&chain), Some(1));
        // Nothing busy: no bottleneck.
        assert_eq!(bottleneck(&[stage("idle", C, 0, 0, 0)]), None);
    }

    #[test]
    fn over_an_interval_the_saturated_stage_is_the_bottleneck_whatever_its_inbox() {
        // The sink's inbox is full now, but the middle stage spent 90 % of the interval in its
        // callbacks: it is the limit.
        let mut chain = [
            stage("source", P, 0, 0, 0),
            stage("enrich", PC, 0, 0, 50),
            stage("sink", C, 8, 0, 0),
        ];
        chain[1].share_busy = 0.9;
        chain[2].share_busy = 0.3;
        assert_eq!(bottleneck(&chain), Some(1));
        // Nobody at half: back to the inbox rule.
        chain[1].share_busy = 0.4;
        assert_eq!(bottleneck(&chain), Some(2));
        // An ended stage is nobody's bottleneck, however busy it was.
        chain[1].share_busy = 0.9;
        chain[1].outcome = Some(Reason::Normal);
        assert_eq!(bottleneck(&chain), Some(2));
    }

    #[test]
    fn rates_need_an_interval() {
        assert_eq!(per_sec(100, 0, None), 0.0);
        assert_eq!(per_sec(100, 0, Some(Duration::ZERO)), 0.0);
        assert_eq!(per_sec(300, 100, Some(Duration::from_millis(500))), 400.0);
        assert_eq!(
            per_sec(5, 10, Some(Duration::from_secs(1))),
            0.0,
            "never negative"
        );
    }
}
