//! [`History`]: a bounded record of recent snapshots' per-stage throughput and busy share,
//! kept by whoever takes the snapshots (the dashboard's sampler), never by the stages.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::snapshot::Snapshot;

/// The last `span` of snapshots, per stage: events sent per second and the share of time in
/// callbacks. Feed it every snapshot an [`Observer`](super::Observer) takes; points older
/// than `span` (counted from the newest) are dropped, so its size is bounded by
/// `span / interval` points per stage. The dashboard keeps one and draws it as sparklines.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::observe::{History, Observer};
///
/// let numbers = stageflow::from_iter(0..10u64).name("numbers").spawn()?;
/// let mut observer = Observer::new(&numbers);
/// let mut history = History::new(Duration::from_secs(600));
/// history.record(&observer.snapshot()); // a first snapshot has no rates: not recorded
/// history.record(&observer.snapshot());
/// assert_eq!(history.len(), 1);
/// assert_eq!(history.stages()[0].name(), "numbers");
/// # numbers.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct History {
    span: Duration,
    times: VecDeque<Instant>,
    stages: Vec<StageHistory>,
    index: HashMap<String, usize>,
}

/// One stage's series in a [`History`], oldest first, one value per recorded snapshot
/// (`None` where the stage was not in it).
#[derive(Clone, Debug, PartialEq)]
pub struct StageHistory {
    name: String,
    out_per_sec: VecDeque<Option<f64>>,
    share_busy: VecDeque<Option<f64>>,
}

impl StageHistory {
    /// The stage's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Events sent per second, per point.
    pub fn out_per_sec(&self) -> impl ExactSizeIterator<Item = Option<f64>> + '_ {
        self.out_per_sec.iter().copied()
    }

    /// The share of time in callbacks (0 to 1), per point.
    pub fn share_busy(&self) -> impl ExactSizeIterator<Item = Option<f64>> + '_ {
        self.share_busy.iter().copied()
    }
}

impl History {
    /// A history of the last `span`.
    pub fn new(span: Duration) -> History {
        History {
            span,
            times: VecDeque::new(),
            stages: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// How long a time it keeps.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// Whether it holds no point.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The stages' series, in the order they first appeared.
    pub fn stages(&self) -> &[StageHistory] {
        &self.stages
    }

    /// Per point, oldest first, how long before the newest point it was taken.
    pub fn ages(&self) -> impl ExactSizeIterator<Item = Duration> + '_ {
        let newest = self.times.back().copied();
        self.times
            .iter()
            .map(move |t| newest.map_or(Duration::ZERO, |n| n.saturating_duration_since(*t)))
    }

    /// Adds a snapshot's rates and shares as the newest point, and drops the points older
    /// than the span. A snapshot without an interval (an observer's first: its rates are 0)
    /// is not recorded, nor is anything with a span of zero.
    pub fn record(&mut self, snapshot: &Snapshot) {
        if snapshot.interval.is_none() || self.span.is_zero() {
            return;
        }
        self.times.push_back(snapshot.taken);
        let mut seen = vec![false; self.stages.len()];
        for s in &snapshot.stages {
            let i = match self.index.get(&s.name) {
                Some(&i) => i,
                None => {
                    let padding = self.times.len() - 1;
                    self.stages.push(StageHistory {
                        name: s.name.clone(),
                        out_per_sec: std::iter::repeat_n(None, padding).collect(),
                        share_busy: std::iter::repeat_n(None, padding).collect(),
                    });
                    seen.push(false);
                    self.index.insert(s.name.clone(), self.stages.len() - 1);
                    self.stages.len() - 1
                }
            };
            if seen[i] {
                continue; // two stages of one name: the first one's series
            }
            seen[i] = true;
            self.stages[i].out_per_sec.push_back(Some(s.out_per_sec));
            self.stages[i].share_busy.push_back(Some(s.share_busy));
        }
        for (i, stage) in self.stages.iter_mut().enumerate() {
            if !seen[i] {
                stage.out_per_sec.push_back(None);
                stage.share_busy.push_back(None);
            }
        }
        self.trim();
    }

    fn trim(&mut self) {
        let Some(&newest) = self.times.back() else {
            return;
        };
        let mut dropped = false;
        while let Some(&oldest) = self.times.front() {
            if newest.saturating_duration_since(oldest) <= self.span {
                break;
            }
            self.times.pop_front();
            for s in &mut self.stages {
                s.out_per_sec.pop_front();
                s.share_busy.pop_front();
            }
            dropped = true;
        }
        if dropped {
            // A stage gone for the whole span leaves.
            let before = self.stages.len();
            self.stages
                .retain(|s| s.out_per_sec.iter().any(Option::is_some));
            if self.stages.len() != before {
                self.index = self
                    .stages
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.name.clone(), i))
                    .collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::StageSnapshot;

    fn snap(base: Instant, secs: u64, stages: &[(&str, f64)]) -> Snapshot {
        let mut s = crate::observe::Snapshot::of(&[]);
        s.taken = base + Duration::from_secs(secs);
        s.interval = Some(Duration::from_secs(1));
        s.stages = stages
            .iter()
            .map(|(name, rate)| {
                let mut st = one();
                st.name = (*name).to_owned();
                st.out_per_sec = *rate;
                st.share_busy = rate / 100.0;
                st
            })
            .collect();
        s
    }

    fn one() -> StageSnapshot {
        StageSnapshot {
            name: String::new(),
            thread: String::new(),
            kind: crate::StageKind::Consumer,
            outcome: None,
            events_in: 0,
            events_out: 0,
            emitted: 0,
            discarded: 0,
            buffered: 0,
            inbox_len: 0,
            inbox_capacity: 0,
            owed: 0,
            in_per_sec: 0.0,
            out_per_sec: 0.0,
            busy: false,
            timing: crate::StageTiming::default(),
            share_busy: 0.0,
            share_waiting_input: 0.0,
            share_waiting_demand: 0.0,
        }
    }

    #[test]
    fn keeps_the_span_and_pads_missing_stages() {
        let base = Instant::now();
        let mut h = History::new(Duration::from_secs(3));
        let mut first = snap(base, 0, &[("a", 1.0)]);
        first.interval = None;
        h.record(&first);
        assert!(h.is_empty(), "no interval: not recorded");
        for t in 0..6 {
            let stages: &[(&str, f64)] = if t < 4 {
                &[("a", t as f64)]
            } else {
                &[("a", t as f64), ("b", 50.0)]
            };
            h.record(&snap(base, t, stages));
        }
        // Points at 2, 3, 4, 5 s: within 3 s of the newest.
        assert_eq!(h.len(), 4);
        let ages: Vec<u64> = h.ages().map(|d| d.as_secs()).collect();
        assert_eq!(ages, [3, 2, 1, 0]);
        let a: Vec<_> = h.stages()[0].out_per_sec().collect();
        assert_eq!(a, [Some(2.0), Some(3.0), Some(4.0), Some(5.0)]);
        let b: Vec<_> = h.stages()[1].share_busy().collect();
        assert_eq!(b, [None, None, Some(0.5), Some(0.5)]);
        // "a" leaves; after the span it is gone.
        for t in 6..10 {
            h.record(&snap(base, t, &[("b", 1.0)]));
        }
        assert_eq!(h.stages().len(), 1);
        assert_eq!(h.stages()[0].name(), "b");
        assert_eq!(h.stages()[0].out_per_sec().len(), h.len());
    }
}
