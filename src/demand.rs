//! The credit protocol, and the consumer side's pure demand accounting.
//!
//! The rules are written out in the public [`protocol`](crate::protocol) page.

/// The consumer side's view of one automatic subscription: the demand `D` it still expects.
///
/// Pure bookkeeping, with no threads: [`Demand::receive`] plans how a message of `len` events is
/// cut into batches and what is asked after each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Demand {
    max: usize,
    min: usize,
    current: usize,
    /// Refill in whole chunks of `max - min` (adaptive demand): see [`Demand::in_chunks`].
    in_chunks: bool,
}

/// One batch of an incoming message: handle `len` events, then ask `ask` (0 means no ask).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) len: usize,
    pub(crate) ask: usize,
    /// Events of this batch beyond what was asked for (a misbehaving producer).
    pub(crate) excess: usize,
}

/// The batches of one incoming message, in order (see [`Demand::receive`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Batches {
    remaining: usize,
    chunk: usize,
    in_chunks: bool,
    expected: usize,
    current: usize,
    min: usize,
    max: usize,
}

impl Demand {
    /// A new subscription; the first ask is [`Demand::max`] and `D` starts there.
    pub(crate) fn new(max: usize, min: usize) -> Demand {
        debug_assert!(max >= 1 && min < max);
        Demand {
            max,
            min,
            current: max,
            in_chunks: false,
        }
    }

    /// Refills in whole chunks: where GenStage tops the demand up to `max` (asking
    /// `max - after`), ask the most whole chunks of `max - min` that keep it at or below `max`
    /// (at least one, so the demand stays above `min`). Once a subscription's asks are
    /// chunks, as one that keeps its bounds settles into, the two rules ask alike; once the
    /// bounds have moved (adaptive demand) GenStage's rule can keep asks out of step with the
    /// chunks a message is cut into for good (a pipeline's processors grown to 100/50 asked
    /// 65 and 85, cut into 50 + 15 and 50 + 35: a third more batches), where whole
    /// chunks bring every ask back to `max - min`, and the demand back to `max`, once the odd
    /// ones in flight have come. Only while `max` is two chunks or more, whole (10/5 grown to
    /// 100/50, say): otherwise the demand could settle below `max` with less in flight, and
    /// GenStage's rule applies.
    pub(crate) fn in_chunks(mut self) -> Demand {
        self.in_chunks = true;
        self
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Moves the bounds to `max`/`min` (adaptive demand), right after a refill: a larger
    /// `max` is asked for at once (returned: what to add to the refill's ask); a smaller one
    /// takes effect as the outstanding demand drains below it.
    pub(crate) fn resize(&mut self, max: usize, min: usize) -> usize {
        debug_assert!(max >= 1 && min < max);
        let grow = max.saturating_sub(self.max);
        self.current += grow;
        self.max = max;
        self.min = min;
        grow
    }

    /// The demand still outstanding: asked for and not yet received.
    pub(crate) fn outstanding(&self) -> usize {
        self.current
    }

    /// [`Demand::receive`] for a message that is one batch (the common case: it fits in one
    /// `max - min` chunk and was asked for): that batch, or `None` when `receive` must cut it.
    #[inline]
    pub(crate) fn receive_one(&mut self, len: usize) -> Option<Batch> {
        if len == 0 || len > self.max - self.min || len > self.current {
            return None;
        }
        let after = self.current - len;
        let ask = refill(&mut self.current, after, self.min, self.max, self.in_chunks);
        Some(Batch {
            len,
            ask,
            excess: 0,
        })
    }

    /// Plans the batches of a message of `len` events and stores the new outstanding demand
    /// at once (GenStage stores it before any callback runs).
    pub(crate) fn receive(&mut self, len: usize) -> Batches {
        let batches = Batches {
            remaining: len,
            chunk: self.max - self.min,
            in_chunks: self.in_chunks,
            expected: self.current,
            current: self.current,
            min: self.min,
            max: self.max,
        };
        let mut end = batches;
        if len <= end.chunk {
            // One batch (the common case): one step.
            end.next();
        } else {
            for _ in end.by_ref() {}
        }
        self.current = end.current;
        batches
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining == 0 {
            return None;
        }
        // Cut the next chunk; its boundaries depend only on max - min.
        let len = self.remaining.min(self.chunk);
        self.remaining -= len;
        // Count only what was asked for; the rest is excess.
        let counted = len.min(self.expected);
        self.expected -= counted;
        let after = self.current - counted;
        let ask = refill(&mut self.current, after, self.min, self.max, self.in_chunks);
        Some(Batch {
            len,
            ask,
            excess: len - counted,
        })
    }
}

/// How full a consumer's inbox was when it asked (adaptive demand's signal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// Nothing waiting: the consumer will wait for what it asks.
    Empty,
    /// At capacity: the consumer is behind.
    Full,
    /// Neither.
    Some,
}

/// The bounds an adaptive subscription moves between (see
/// [`SubscribeOptions::adaptive_demand`](crate::SubscribeOptions::adaptive_demand)): from the
/// `max_demand`/`min_demand` it was given up to `limit`, doubling and halving, keeping their
/// ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Adaptive {
    base_max: usize,
    base_min: usize,
    limit: usize,
}

impl Adaptive {
    pub(crate) fn new(max: usize, min: usize, limit: usize) -> Adaptive {
        Adaptive {
            base_max: max,
            base_min: min,
            limit: limit.max(max),
        }
    }

    /// The bounds after an ask made with the inbox `fill`, if they change.
    pub(crate) fn next(&self, max: usize, fill: Fill) -> Option<(usize, usize)> {
        let to = match fill {
            Fill::Empty if max < self.limit => max.saturating_mul(2).min(self.limit),
            Fill::Full if max > self.base_max => (max / 2).max(self.base_max),
            _ => return None,
        };
        // min keeps its ratio to max (and stays below it).
        let min = if to == self.base_max {
            self.base_min
        } else {
            ((self.base_min as u128 * to as u128) / self.base_max as u128) as usize
        };
        Some((to, min.min(to - 1)))
    }
}

/// The refill rule: outstanding demand falls to `after`; at or below `min` it is topped up to
/// `max` (`in_chunks`: by the most whole chunks of `max - min` that fit), and the ask is what
/// that adds.
#[inline]
fn refill(current: &mut usize, after: usize, min: usize, max: usize, in_chunks: bool) -> usize {
    if after <= min {
        let chunk = max - min;
        let ask = if in_chunks && max.is_multiple_of(chunk) && max >= 2 * chunk {
            (max - after) / chunk * chunk
        } else {
            max - after
        };
        *current = after + ask;
        ask
    } else {
        *current = after;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds messages of the given sizes and returns (batch len, ask) pairs.
    fn trace(max: usize, min: usize, messages: &[usize]) -> Vec<(usize, usize)> {
        let mut d = Demand::new(max, min);
        messages
            .iter()
            .flat_map(|&m| d.receive(m).map(|b| (b.len, b.ask)).collect::<Vec<_>>())
            .collect()
    }

    #[test]
    fn chunk_sequences_match_the_reference() {
        // 1000/500: first chunk leaves D = 500 <= 500 -> ask 500, D = 1000; second chunk
        // leaves D = 500 again -> ask 500.
        let mut d = Demand::new(1000, 500);
        let b: Vec<_> = d.receive(1000).map(|b| (b.len, b.ask)).collect();
        assert_eq!(b, vec![(500, 500), (500, 500)]);
        assert_eq!(d.outstanding(), 1000);

        assert_eq!(trace(10, 5, &[10]), vec![(5, 5), (5, 5)]);
        assert_eq!(trace(100, 80, &[100]), vec![(20, 20); 5]);
        assert_eq!(
            trace(100, 20, &[100, 80, 100]),
            vec![(80, 80), (20, 0), (80, 100), (80, 80), (20, 0)]
        );
        assert_eq!(trace(3, 1, &[3, 2]), vec![(2, 2), (1, 0), (2, 3)]);
        assert_eq!(trace(1, 0, &[1, 1]), vec![(1, 1), (1, 1)]);
        assert_eq!(trace(10, 9, &[3]), vec![(1, 1), (1, 1), (1, 1)]);
        assert_eq!(trace(10, 0, &[10]), vec![(10, 10)]);
    }

    #[test]
    fn receive_one_agrees_with_receive() {
        for (max, min, in_chunks) in (1..12)
            .flat_map(|max| (0..max).map(move |min| (max, min)))
            .flat_map(|(max, min)| [(max, min, false), (max, min, true)])
        {
            {
                // Walk through many states with a mix of message sizes.
                let new = || {
                    let d = Demand::new(max, min);
                    if in_chunks {
                        d.in_chunks()
                    } else {
                        d
                    }
                };
                let (mut a, mut b) = (new(), new());
                for step in 0..200usize {
                    let len = (step * 7 + max + min) % (max + 3);
                    let cut: Vec<Batch> = b.receive(len).collect();
                    match a.receive_one(len) {
                        Some(batch) => assert_eq!(vec![batch], cut, "{max}/{min} len {len}"),
                        None => {
                            a = b;
                            continue;
                        }
                    }
                    assert_eq!(a, b, "{max}/{min} len {len}");
                }
            }
        }
    }

    /// Messages of the sizes asked, as a producer with events to spare sends them: `first`
    /// are on their way already, and each ask comes back as one message after them. Returns
    /// the batches' lengths, the asks, and the demand after each message.
    fn settle(
        mut d: Demand,
        first: &[usize],
        rounds: usize,
    ) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let mut in_flight: std::collections::VecDeque<usize> = first.iter().copied().collect();
        let (mut batches, mut asks, mut demand) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let Some(len) = in_flight.pop_front() else {
                break;
            };
            for b in d.receive(len) {
                batches.push(b.len);
                if b.ask > 0 {
                    asks.push(b.ask);
                    in_flight.push_back(b.ask);
                }
            }
            demand.push(d.outstanding());
        }
        (batches, asks, demand)
    }

    #[test]
    fn in_chunks_brings_asks_out_of_step_back_to_max_minus_min() {
        // What growth can leave at 100/50: 15 and then 85 on their way (a pipeline's
        // processors asked 65, 85 and the like for good).
        let odd = [15, 85];
        let (batches, asks, _) = settle(Demand::new(100, 50), &odd, 40);
        // GenStage's rule: out of step for good, batches of 50 and 15 or 35.
        let mut tail = asks[asks.len() - 4..].to_vec();
        tail.sort_unstable();
        assert_eq!(tail, [65, 65, 85, 85]);
        let mut tail = batches[batches.len() - 4..].to_vec();
        tail.sort_unstable();
        assert_eq!(tail, [15, 35, 50, 50]);
        let (batches, asks, demand) = settle(Demand::new(100, 50).in_chunks(), &odd, 40);
        assert_eq!(asks[asks.len() - 20..], [50; 20], "{asks:?}");
        assert_eq!(batches[batches.len() - 20..], [50; 20], "{batches:?}");
        assert!(
            demand[demand.len() - 10..].iter().all(|&d| d >= 50),
            "{demand:?}"
        );
        assert!(demand.iter().all(|&d| d <= 100), "{demand:?}");
        // In step already, the two rules cut and ask alike; where `max` is not two whole
        // chunks or more (95/47, 7/3) whole chunks do not apply at all.
        for (max, min) in [(100, 50), (10, 5), (1000, 750), (95, 47), (7, 3)] {
            let first = [max];
            assert_eq!(
                settle(Demand::new(max, min), &first, 50),
                settle(Demand::new(max, min).in_chunks(), &first, 50),
                "{max}/{min}"
            );
        }
        for (max, min) in [(95, 47), (7, 3)] {
            assert_eq!(
                settle(Demand::new(max, min), &odd, 50),
                settle(Demand::new(max, min).in_chunks(), &odd, 50),
                "{max}/{min}"
            );
        }
    }

    #[test]
    fn moduledoc_example_asks_300() {
        // max 1000, min 750, 100 events per message: no ask for two messages, then 300.
        assert_eq!(
            trace(1000, 750, &[100, 100, 100]),
            vec![(100, 0), (100, 0), (100, 300)]
        );
    }

    #[test]
    fn partial_deliveries() {
        let mut d = Demand::new(10, 5);
        assert_eq!(d.receive(3).map(|b| b.ask).collect::<Vec<_>>(), vec![0]);
        assert_eq!(d.outstanding(), 7);
        assert_eq!(d.receive(2).map(|b| b.ask).collect::<Vec<_>>(), vec![5]);
        assert_eq!(d.outstanding(), 10);
    }

    #[test]
    fn resizing_asks_for_growth_at_once_and_lets_shrinking_drain() {
        let mut d = Demand::new(10, 5);
        // Five events: D falls to 5, the refill asks 5 and D is 10 again; growing to 40/20
        // adds 30 to that ask.
        assert_eq!(d.receive(5).map(|b| b.ask).collect::<Vec<_>>(), vec![5]);
        assert_eq!(d.resize(40, 20), 30);
        assert_eq!(d.outstanding(), 40);
        // Now it asks at 20, up to 40.
        assert_eq!(d.receive(20).map(|b| b.ask).collect::<Vec<_>>(), vec![20]);
        // Shrinking asks nothing and lets D drain: 40 outstanding, bounds 10/5.
        assert_eq!(d.resize(10, 5), 0);
        assert_eq!(d.receive(30).map(|b| b.ask).collect::<Vec<_>>(), vec![0; 6]);
        assert_eq!(d.outstanding(), 10);
    }

    #[test]
    fn adaptive_bounds_double_when_starved_and_halve_when_behind() {
        let a = Adaptive::new(10, 5, 100);
        assert_eq!(a.next(10, Fill::Empty), Some((20, 10)));
        assert_eq!(a.next(80, Fill::Empty), Some((100, 50)));
        assert_eq!(a.next(100, Fill::Empty), None, "at the limit");
        assert_eq!(a.next(100, Fill::Full), Some((50, 25)));
        assert_eq!(a.next(20, Fill::Full), Some((10, 5)));
        assert_eq!(a.next(10, Fill::Full), None, "where it started");
        assert_eq!(a.next(40, Fill::Some), None);
        // 1/0 grows with min 0; 3/1 keeps min below max.
        assert_eq!(Adaptive::new(1, 0, 4).next(1, Fill::Empty), Some((2, 0)));
        assert_eq!(Adaptive::new(3, 2, 5).next(3, Fill::Empty), Some((5, 3)));
    }

    #[test]
    fn excess_is_reported_and_not_asked_for() {
        // Asked 5 (max 5, min 0), sent 8: handle [5] and ask 5, then [3] as excess, no ask.
        let mut d = Demand::new(5, 0);
        let b: Vec<_> = d.receive(8).collect();
        assert_eq!(
            b,
            vec![
                Batch {
                    len: 5,
                    ask: 5,
                    excess: 0
                },
                Batch {
                    len: 3,
                    ask: 0,
                    excess: 3
                }
            ]
        );
    }
}
