//! Windows and triggers: which events share an accumulator, and when an accumulator is
//! emitted. Pure code: the reducer stage feeds it events, clock readings and the end of its
//! input, and sends on what it returns; the tests below drive it with hand-picked times.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::clock::{Clock, SystemClock};
use super::error::FlowError;
use super::watermark::Watermark;
use crate::SubscriptionId;

mod counts;
pub use counts::WindowCounts;

/// A window of events of type `T` whose functions (a fixed window's timestamp) live for
/// `'static`: what [`Partitions::window`](super::Partitions::window) takes in a flow, in a
/// scope or not. Its methods are [`ScopedWindow`]'s.
pub type Window<T> = ScopedWindow<'static, T>;

/// How a partition's events are cut into windows, and which triggers emit a window's
/// accumulator before it closes. A window's result is always emitted when it closes and when
/// the input completes.
///
/// | window | an event belongs to | closes when |
/// |---|---|---|
/// | [`global`](Window::global) (the default) | the one window | the input completes |
/// | [`count(n)`](Window::count) | the current window of its partition | it holds `n` events |
/// | [`periodic(d)`](Window::periodic) | the period of the clock it arrives in | the clock passes the period's end |
/// | [`fixed(d, at)`](Window::fixed) | the period its timestamp `at(&event)` falls in (event time) | the partition's [watermark](#event-time-and-the-watermark) reaches its end plus [`allowed_lateness`](Window::allowed_lateness) |
///
/// Windows are per partition, as in Elixir's Flow; a
/// [`departition`](super::Reduced::departition) merges window `k` of every partition.
/// Periodic windows are aligned on multiples of the period since the [`Clock`]'s epoch (the
/// Unix epoch for [`SystemClock`]), so every partition cuts time at the same instants (Flow
/// starts a partition's periods when the partition starts).
///
/// Processing time comes from the window's [`clock`](Window::clock); a running reducer reads
/// it every [`tick`](Window::tick) (a timer on the stage), and only when the window is
/// periodic or has a periodic trigger.
///
/// # Event time and the watermark
///
/// A reducer receives its events from several *lanes*: its upstream subscriptions, one per
/// mapper stage. Each lane delivers in its own order, and the threads interleave the lanes
/// however they run, so one lane can be seconds of event time ahead of another. Event time
/// therefore advances by a *watermark* per partition (as in Flink and timely dataflow):
///
/// - **The watermark is the least, over the reducer's lanes, of the latest timestamp each
///   lane has sent.** It never goes back.
/// - A lane that has subscribed but sent nothing yet holds the watermark back (there is none
///   until every lane has sent something); a lane that has ended (or was cancelled) no longer
///   counts.
/// - Fixed window `[start, end)` is emitted with [`Fired::Watermark`] when the watermark
///   reaches `end` (if the allowed lateness is not zero), and closes ([`Fired::Closed`]) when
///   the watermark reaches `end + allowed_lateness`.
/// - **An event is late if, when it arrives, `end + allowed_lateness <= watermark`** for the
///   window `[start, end)` its timestamp falls in: that window has closed. A late event is
///   dropped and counted in [`late_events`](Window::late_events).
///
/// So an event that is at most `allowed_lateness` older than the latest timestamp before it
/// *on its own lane* is never late, however far ahead the other lanes are. (Whether an event
/// older than that is late depends on how far every lane had got when it arrived.) A mapper
/// stage takes its source's events in order, in batches, and its operations keep their order
/// (unless a [`map_batch`](super::Flow::map_batch) of yours reorders a batch), so with one
/// source every lane delivers a subsequence of the source's events, in order: if no event,
/// in that order, is more than `allowed_lateness` older than an event before it, no event is
/// late, at any number of mapper stages. With several sources, a lane interleaves its batches
/// from each, and how far the sources run apart in event time counts as disorder in the lane.
///
/// ```
/// use std::time::Duration;
/// use stageflow::flow::{Flow, Partitions, Window};
///
/// // Timestamps in milliseconds, each less than 300 ms older than any event before it.
/// let events: Vec<u64> = (0..4000u64).map(|i| i + (i * 7919) % 300).collect();
/// let window = Window::fixed(Duration::from_secs(1), |ms: &u64| Duration::from_millis(*ms))
///     .allowed_lateness(Duration::from_millis(500));
/// let late = window.late_events();
/// let counts = Flow::from_iter(events)
///     .stages(4) // four lanes into every reducer, each taking batches of up to 1000 events
///     .partition(Partitions::by_event().stages(2).window(window))
///     .reduce(|| 0u64, |n: &mut u64, _| *n += 1)
///     .departition_sum()
///     .collect()?;
/// assert_eq!(late.get(), 0);
/// assert_eq!(counts.iter().map(|e| e.value).sum::<u64>(), 4000);
/// # Ok::<(), stageflow::flow::FlowError>(())
/// ```
///
/// A lane that stops sending without ending (idle, or with no events of this partition)
/// holds the watermark at its latest timestamp: the partition's event time stands still, and
/// the windows not yet closed stay open, taking their events, until the lane sends again or
/// ends. When the input completes, every open window is emitted ([`Fired::Done`]) whatever the
/// watermark.
/// `'env` is how long its functions may borrow: `'static` for a [`Window`].
pub struct ScopedWindow<'env, T> {
    pub(crate) kind: Kind<'env, T>,
    pub(crate) triggers: Vec<Trigger>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tick: Option<Duration>,
    pub(crate) late: LateEvents,
}

/// How many events arrived for a fixed window that had already closed (the partition's
/// watermark had reached the window's end plus its allowed lateness: see
/// [`Window`'s rule](Window#event-time-and-the-watermark)), over every partition; such events
/// are dropped. Read it from
/// [`Window::late_events`] while or after the flow runs.
#[derive(Clone, Debug, Default)]
pub struct LateEvents(pub(crate) Arc<counts::Cells>);

impl LateEvents {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.late.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.late.fetch_add(n, Ordering::Relaxed);
    }
}

pub(crate) type Timestamp<'env, T> = Arc<dyn Fn(&T) -> Duration + Send + Sync + 'env>;

pub(crate) enum Kind<'env, T> {
    Global,
    Count(u64),
    Periodic(Duration),
    Fixed {
        size: Duration,
        at: Timestamp<'env, T>,
        lateness: Duration,
    },
}

impl<T> Clone for Kind<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Kind::Global => Kind::Global,
            Kind::Count(n) => Kind::Count(*n),
            Kind::Periodic(d) => Kind::Periodic(*d),
            Kind::Fixed { size, at, lateness } => Kind::Fixed {
                size: *size,
                at: at.clone(),
                lateness: *lateness,
            },
        }
    }
}

impl<T> Clone for ScopedWindow<'_, T> {
    fn clone(&self) -> Self {
        ScopedWindow {
            kind: self.kind.clone(),
            triggers: self.triggers.clone(),
            clock: self.clock.clone(),
            tick: self.tick,
            late: self.late.clone(),
        }
    }
}

impl<T> fmt::Debug for ScopedWindow<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Global => "global".to_string(),
            Kind::Count(n) => format!("count({n})"),
            Kind::Periodic(d) => format!("periodic({d:?})"),
            Kind::Fixed { size, lateness, .. } => {
                format!("fixed({size:?}, allowed_lateness {lateness:?})")
            }
        };
        f.debug_struct("Window")
            .field("kind", &kind)
            .field("triggers", &self.triggers)
            .field("tick", &self.tick)
            .finish()
    }
}

impl<T> Default for ScopedWindow<'_, T> {
    fn default() -> Self {
        Window::global()
    }
}

/// When a window's accumulator is emitted before the window closes. The accumulator is kept:
/// each firing emits everything accumulated so far in the window (Flow's default
/// `on_trigger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Trigger {
    /// Every `n` events the window receives (Flow's `trigger_every`).
    Every(u64),
    /// Every time the clock passes a multiple of the period (Flow's `trigger_periodically`),
    /// for every window open at that moment.
    Periodically(Duration),
}

/// Why a window's accumulator was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fired {
    /// A [`Trigger`] fired; the window stays open.
    Trigger(Trigger),
    /// The partition's watermark reached the end of a fixed window that still accepts late
    /// events (Flow's `:watermark`); the window stays open for its allowed lateness.
    Watermark,
    /// The window closed; this is its last emission.
    Closed,
    /// The input completed; this is the window's last emission.
    Done,
}

impl Fired {
    /// Whether this is the window's last emission ([`Closed`](Fired::Closed) or
    /// [`Done`](Fired::Done)).
    pub fn is_final(self) -> bool {
        matches!(self, Fired::Closed | Fired::Done)
    }
}

/// Which window an emission belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum WindowId {
    /// The global window.
    Global,
    /// The `n`th window (from 0) of a count window, in its partition.
    Count(u64),
    /// A period of processing time, `[start, end)` on the clock.
    Periodic {
        /// When the period starts.
        start: Duration,
        /// When it ends (excluded).
        end: Duration,
    },
    /// A period of event time, `[start, end)` of the timestamps.
    Fixed {
        /// The first timestamp in the window.
        start: Duration,
        /// The end of the window (excluded).
        end: Duration,
    },
}

/// One emission of a reduced flow: a window's accumulator (or what was made of it), which
/// window, why, and from which partition.
#[derive(Clone, Debug, PartialEq)]
pub struct Emitted<T> {
    /// The window.
    pub window: WindowId,
    /// Why it was emitted.
    pub fired: Fired,
    /// The partition that emitted it; `None` after a departition, which merges them all.
    pub partition: Option<usize>,
    /// The accumulator, or what was made of it.
    pub value: T,
}

impl<'env, T: 'env> ScopedWindow<'env, T> {
    /// The same window over `(event, count)` pairs, reading timestamps from the event: what
    /// [`Flow::count_by_key`](super::Flow::count_by_key)'s reducers get, given a window of
    /// keys.
    pub(crate) fn of_pairs<B: 'env>(self) -> ScopedWindow<'env, (T, B)> {
        let kind = match self.kind {
            Kind::Global => Kind::Global,
            Kind::Count(n) => Kind::Count(n),
            Kind::Periodic(d) => Kind::Periodic(d),
            Kind::Fixed { size, at, lateness } => Kind::Fixed {
                size,
                at: Arc::new(move |(e, _): &(T, B)| at(e)),
                lateness,
            },
        };
        ScopedWindow {
            kind,
            triggers: self.triggers,
            clock: self.clock,
            tick: self.tick,
            late: self.late,
        }
    }

    /// Whether what it emits depends only on which events arrive when, not on how many there
    /// are nor on what they say: global and periodic windows without `Every` triggers. A
    /// reduction that can merge may then pre-reduce each batch before the partition.
    pub(crate) fn takes_pre_reduced(&self) -> bool {
        matches!(self.kind, Kind::Global | Kind::Periodic(_))
            && !self.triggers.iter().any(|t| matches!(t, Trigger::Every(_)))
    }

    /// Whether it emits only once, when the input completes (global, no trigger).
    pub(crate) fn holds_pre_reduced(&self) -> bool {
        matches!(self.kind, Kind::Global) && self.triggers.is_empty()
    }
}

impl<'env, T> ScopedWindow<'env, T> {
    fn of(kind: Kind<'env, T>) -> ScopedWindow<'env, T> {
        ScopedWindow {
            kind,
            triggers: Vec::new(),
            clock: Arc::new(SystemClock),
            tick: None,
            late: LateEvents::default(),
        }
    }

    /// One window for the whole input, emitted when the input completes (and by triggers).
    /// The default.
    pub fn global() -> ScopedWindow<'env, T> {
        ScopedWindow::of(Kind::Global)
    }

    /// Windows of `n` events each, counted per partition (Flow's `count/1`). Must be at least
    /// 1.
    pub fn count(n: u64) -> ScopedWindow<'env, T> {
        ScopedWindow::of(Kind::Count(n))
    }

    /// Windows of processing time, `period` long, closed when the clock passes their end
    /// (Flow's `periodic/2`). Must be longer than zero.
    pub fn periodic(period: Duration) -> ScopedWindow<'env, T> {
        ScopedWindow::of(Kind::Periodic(period))
    }

    /// Windows of event time, `size` long, by the timestamp `at` reads from each event (Flow's
    /// `fixed/3`). A window closes once the partition's
    /// [watermark](Window#event-time-and-the-watermark) (the least, over its lanes, of the
    /// latest timestamp each has sent) reaches its end plus the
    /// [allowed lateness](Window::allowed_lateness); events for a closed window are late,
    /// dropped and counted. `size` must be longer than zero.
    pub fn fixed(
        size: Duration,
        at: impl Fn(&T) -> Duration + Send + Sync + 'env,
    ) -> ScopedWindow<'env, T> {
        ScopedWindow::of(Kind::Fixed {
            size,
            at: Arc::new(at),
            lateness: Duration::ZERO,
        })
    }

    /// How long past its end a fixed window still takes events (Flow's `allowed_lateness`):
    /// when the partition's [watermark](Window#event-time-and-the-watermark) reaches the end
    /// it is emitted with [`Fired::Watermark`], and it closes once the watermark reaches the
    /// end plus `lateness`. An event at most `lateness` older than the latest before it on its
    /// lane is never late. Only fixed windows have it. Defaults to zero.
    pub fn allowed_lateness(mut self, lateness: Duration) -> ScopedWindow<'env, T> {
        if let Kind::Fixed { lateness: l, .. } = &mut self.kind {
            *l = lateness;
        }
        self
    }

    /// Adds a trigger: emit every `n` events of a window (Flow's `trigger_every`). `n` must be
    /// at least 1.
    pub fn trigger_every(self, n: u64) -> ScopedWindow<'env, T> {
        self.trigger(Trigger::Every(n))
    }

    /// Adds a trigger: emit every open window each time the clock passes a multiple of
    /// `period` (Flow's `trigger_periodically`). `period` must be longer than zero.
    pub fn trigger_periodically(self, period: Duration) -> ScopedWindow<'env, T> {
        self.trigger(Trigger::Periodically(period))
    }

    /// Adds a trigger. A window may have several; each fires on its own.
    pub fn trigger(mut self, trigger: Trigger) -> ScopedWindow<'env, T> {
        self.triggers.push(trigger);
        self
    }

    /// The clock that periodic windows and periodic triggers read. Defaults to
    /// [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> ScopedWindow<'env, T> {
        self.clock = Arc::new(clock);
        self
    }

    /// How often a running reducer reads the clock, when it has a periodic window or trigger:
    /// a window's end is seen at most this late. Must be longer than zero. Defaults to a
    /// twentieth of the shortest period, between 1 ms and 100 ms.
    pub fn tick(mut self, every: Duration) -> ScopedWindow<'env, T> {
        self.tick = Some(every);
        self
    }

    /// The count of late events dropped by this window (in every partition), shared by the
    /// window's clones.
    pub fn late_events(&self) -> LateEvents {
        self.late.clone()
    }

    /// The window's counts, every partition together, shared by its clones: windows emitted
    /// and late events, also as metrics for `stageflow::observe`.
    pub fn counts(&self) -> WindowCounts {
        WindowCounts(self.late.0.clone())
    }

    /// Checks the options.
    pub(crate) fn validate(&self) -> Result<(), FlowError> {
        let bad = |option: &'static str, message: String| {
            Err(FlowError::InvalidOption { option, message })
        };
        match &self.kind {
            Kind::Count(0) => {
                return bad(
                    "window",
                    "expected a count window of at least 1 event, got 0".into(),
                )
            }
            Kind::Periodic(d) if d.is_zero() => {
                return bad(
                    "window",
                    "expected a periodic window longer than zero".into(),
                )
            }
            Kind::Fixed { size, .. } if size.is_zero() => {
                return bad("window", "expected a fixed window longer than zero".into())
            }
            _ => {}
        }
        for t in &self.triggers {
            match t {
                Trigger::Every(0) => {
                    return bad(
                        "trigger",
                        "expected trigger_every of at least 1 event, got 0".into(),
                    )
                }
                Trigger::Periodically(d) if d.is_zero() => {
                    return bad(
                        "trigger",
                        "expected trigger_periodically longer than zero".into(),
                    )
                }
                _ => {}
            }
        }
        if self.tick.is_some_and(|t| t.is_zero()) {
            return bad("tick", "expected tick longer than zero".into());
        }
        Ok(())
    }

    /// How often a reducer must read the clock; `None` if time plays no part.
    pub(crate) fn tick_period(&self) -> Option<Duration> {
        let mut shortest = match &self.kind {
            Kind::Periodic(d) => Some(*d),
            _ => None,
        };
        for t in &self.triggers {
            if let Trigger::Periodically(d) = t {
                shortest = Some(shortest.map_or(*d, |s| s.min(*d)));
            }
        }
        let shortest = shortest?;
        Some(self.tick.unwrap_or_else(|| {
            (shortest / 20).clamp(Duration::from_millis(1), Duration::from_millis(100))
        }))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a partition's windows ask the reducer to send on.
#[derive(Debug, PartialEq)]
pub(crate) enum Action<A> {
    /// A window's accumulator.
    Fire {
        /// The window's number, in its kind (0 for the global window).
        index: u64,
        window: WindowId,
        fired: Fired,
        value: A,
    },
    /// Every window numbered below this is closed in this partition, for good.
    ClosedBelow(u64),
}

struct Open<A> {
    acc: A,
    events: u64,
    past_end: bool,
}

pub(crate) type Init<'env, A> = Arc<dyn Fn() -> A + Send + Sync + 'env>;
pub(crate) type Fold<'env, T, A> = Arc<dyn Fn(&mut A, T) + Send + Sync + 'env>;

/// One partition's windows, each with its accumulator.
pub(crate) struct Windows<'env, T, A> {
    kind: Kind<'env, T>,
    every: Vec<u64>,
    periodically: Vec<(u64, u64)>, // (period, next firing), in nanoseconds
    init: Init<'env, A>,
    fold: Fold<'env, T, A>,
    open: BTreeMap<u64, Open<A>>,
    closed_below: u64,
    /// Event time over the lanes (fixed windows).
    watermark: Watermark<SubscriptionId>,
    late: LateEvents,
}

impl<'env, T, A: Clone> Windows<'env, T, A> {
    /// The windows of `window`, with their periodic triggers counted from `now`.
    pub(crate) fn new(
        window: &ScopedWindow<'env, T>,
        init: Init<'env, A>,
        fold: Fold<'env, T, A>,
        now: Duration,
    ) -> Self {
        let now = nanos(now);
        let mut every = Vec::new();
        let mut periodically = Vec::new();
        for t in &window.triggers {
            match *t {
                Trigger::Every(n) => every.push(n.max(1)),
                Trigger::Periodically(p) => {
                    let p = nanos(p).max(1);
                    periodically.push((p, (now / p + 1).saturating_mul(p)));
                }
            }
        }
        Windows {
            kind: window.kind.clone(),
            every,
            periodically,
            init,
            fold,
            open: BTreeMap::new(),
            closed_below: 0,
            watermark: Watermark::default(),
            late: window.late.clone(),
        }
    }

    fn id(&self, index: u64) -> WindowId {
        let span = |size: Duration| {
            let start = Duration::from_nanos(index.saturating_mul(nanos(size)));
            (start, start + size)
        };
        match &self.kind {
            Kind::Global => WindowId::Global,
            Kind::Count(_) => WindowId::Count(index),
            Kind::Periodic(d) => {
                let (start, end) = span(*d);
                WindowId::Periodic { start, end }
            }
            Kind::Fixed { size, .. } => {
                let (start, end) = span(*size);
                WindowId::Fixed { start, end }
            }
        }
    }

    fn fire(&self, index: u64, fired: Fired, value: A, out: &mut Vec<Action<A>>) {
        self.late.0.fired.fetch_add(1, Ordering::Relaxed);
        out.push(Action::Fire {
            index,
            window: self.id(index),
            fired,
            value,
        });
    }

    /// Closes window `index` (its last emission).
    fn close(&mut self, index: u64, fired: Fired, out: &mut Vec<Action<A>>) {
        if let Some(w) = self.open.remove(&index) {
            self.fire(index, fired, w.acc, out);
        }
    }

    fn close_below(&mut self, below: u64, out: &mut Vec<Action<A>>) {
        if below <= self.closed_below {
            return;
        }
        let closing: Vec<u64> = self.open.range(..below).map(|(k, _)| *k).collect();
        for k in closing {
            self.close(k, Fired::Closed, out);
        }
        self.closed_below = below;
        out.push(Action::ClosedBelow(below));
    }

    /// A lane (an upstream subscription) subscribed: until it sends an event or
    /// [ends](Windows::end_lane), it holds event time back.
    pub(crate) fn subscribe(&mut self, lane: SubscriptionId) {
        self.watermark.subscribe(lane);
    }

    /// A lane ended: it no longer holds event time back, which may close fixed windows.
    pub(crate) fn end_lane(&mut self, lane: SubscriptionId, out: &mut Vec<Action<A>>) {
        if self.watermark.end(&lane) {
            self.advance_event_time(out);
        }
    }

    /// Takes a batch of events that arrived at `now` from `lane`: the same as
    /// [`push`](Windows::push) of each in turn. Where every event of the batch goes to one
    /// window (global and periodic windows without `Every` triggers), the window is looked up
    /// once for the batch, not once per event.
    pub(crate) fn push_all(
        &mut self,
        lane: SubscriptionId,
        events: impl ExactSizeIterator<Item = T>,
        now: Duration,
        out: &mut Vec<Action<A>>,
    ) {
        let fold = self.fold.clone();
        match self.batch_window(events.len() as u64, now, out) {
            Some(acc) => {
                for e in events {
                    fold(acc, e);
                }
            }
            None => {
                for e in events {
                    self.push(lane, e, now, out);
                }
            }
        }
    }

    /// Where a batch of `n` events that arrived at `now` all go to one window (global and
    /// periodic windows without `Every` triggers, and `n > 0`): that window's accumulator,
    /// opened if need be, with the `n` events counted, for the caller to fold them into.
    /// Otherwise `None`, and nothing changed: push the events one by one.
    pub(crate) fn batch_window(
        &mut self,
        n: u64,
        now: Duration,
        out: &mut Vec<Action<A>>,
    ) -> Option<&mut A> {
        let index = match &self.kind {
            _ if n == 0 => return None,
            Kind::Global if self.every.is_empty() => 0,
            Kind::Periodic(d) if self.every.is_empty() => {
                let index = nanos(now) / nanos(*d).max(1);
                self.close_below(index, out);
                index
            }
            _ => return None,
        };
        let init = &self.init;
        let w = self.open.entry(index).or_insert_with(|| Open {
            acc: init(),
            events: 0,
            past_end: false,
        });
        w.events += n;
        Some(&mut w.acc)
    }

    /// Takes one event that arrived at `now` from `lane`.
    pub(crate) fn push(
        &mut self,
        lane: SubscriptionId,
        event: T,
        now: Duration,
        out: &mut Vec<Action<A>>,
    ) {
        let index = match &self.kind {
            Kind::Global => 0,
            Kind::Count(_) => self.closed_below,
            Kind::Periodic(d) => {
                let index = nanos(now) / nanos(*d).max(1);
                self.close_below(index, out);
                index
            }
            Kind::Fixed { size, at, .. } => {
                let at = nanos(at(&event));
                let index = at / nanos(*size).max(1);
                if index < self.closed_below {
                    self.late.add(1);
                    return;
                }
                // Fold first, then let event time move (and close windows) past it. A window
                // opened behind the watermark is at once past its end.
                let moved = self.watermark.observe(lane, at);
                let opened = !self.open.contains_key(&index);
                self.fold_into(index, event, out);
                if moved || opened {
                    self.advance_event_time(out);
                }
                return;
            }
        };
        self.fold_into(index, event, out);
    }

    /// Folds `event` into window `index` (opening it), closes a count window that is full,
    /// fires the `Every` triggers due.
    fn fold_into(&mut self, index: u64, event: T, out: &mut Vec<Action<A>>) {
        let init = &self.init;
        let w = self.open.entry(index).or_insert_with(|| Open {
            acc: init(),
            events: 0,
            past_end: false,
        });
        (self.fold)(&mut w.acc, event);
        w.events += 1;
        let events = w.events;
        if let Kind::Count(n) = self.kind {
            if events >= n {
                self.close_below(index + 1, out);
                return;
            }
        }
        self.trigger_every(index, events, out);
    }

    fn trigger_every(&mut self, index: u64, events: u64, out: &mut Vec<Action<A>>) {
        let Some(&n) = self.every.iter().find(|&&n| events.is_multiple_of(n)) else {
            return;
        };
        if let Some(w) = self.open.get(&index) {
            let value = w.acc.clone();
            self.fire(index, Fired::Trigger(Trigger::Every(n)), value, out);
        }
    }

    /// Fixed windows: emit the windows the watermark has passed, close those it has passed
    /// by their lateness.
    fn advance_event_time(&mut self, out: &mut Vec<Action<A>>) {
        let (Some(latest), Kind::Fixed { size, lateness, .. }) = (self.watermark.get(), &self.kind)
        else {
            return;
        };
        let (size, lateness) = (nanos(*size).max(1), nanos(*lateness));
        if lateness > 0 {
            let passed: Vec<u64> = self
                .open
                .iter()
                .filter(|(k, w)| !w.past_end && (*k + 1).saturating_mul(size) <= latest)
                .map(|(k, _)| *k)
                .collect();
            for k in passed {
                let w = self.open.get_mut(&k).expect("an open window");
                w.past_end = true;
                let value = w.acc.clone();
                self.fire(k, Fired::Watermark, value, out);
            }
        }
        if latest >= lateness {
            self.close_below((latest - lateness) / size, out);
        }
    }

    /// Reads the clock: closes periodic windows whose period has passed, fires periodic
    /// triggers that are due.
    pub(crate) fn tick(&mut self, now: Duration, out: &mut Vec<Action<A>>) {
        let now_n = nanos(now);
        if let Kind::Periodic(d) = self.kind {
            self.close_below(now_n / nanos(d).max(1), out);
        }
        let mut due = Vec::new();
        for (period, next) in &mut self.periodically {
            if now_n >= *next {
                due.push(*period);
                *next = (now_n / *period + 1).saturating_mul(*period);
            }
        }
        for p in due {
            let open: Vec<(u64, A)> = self.open.iter().map(|(k, w)| (*k, w.acc.clone())).collect();
            for (k, value) in open {
                let trigger = Trigger::Periodically(Duration::from_nanos(p));
                self.fire(k, Fired::Trigger(trigger), value, out);
            }
        }
    }

    /// The input completed: every open window emits its last result (the global window even
    /// if it saw no event).
    pub(crate) fn finish(&mut self, out: &mut Vec<Action<A>>) {
        if matches!(self.kind, Kind::Global) && self.open.is_empty() {
            let value = (self.init)();
            self.fire(0, Fired::Done, value, out);
        }
        let open: Vec<u64> = self.open.keys().copied().collect();
        for k in open {
            self.close(k, Fired::Done, out);
        }
    }
}

#[cfg(test)]
mod tests;
