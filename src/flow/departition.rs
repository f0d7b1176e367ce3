//! The departition stage: merges each window's final states from every partition, and emits a
//! window once every partition has closed it.

use std::collections::BTreeMap;

use super::reduce::Part;
use super::window::{Emitted, Fired, WindowId};
use crate::{Context, Direction, Events, ProducerConsumer, Reason, Subscription};

type InitFn<'env, M> = Box<dyn Fn() -> M + Send + Sync + 'env>;
type MergeFn<'env, M, B> = Box<dyn Fn(&mut M, B) + Send + Sync + 'env>;
type DoneFn<'env, M, O> = Box<dyn Fn(M) -> O + Send + Sync + 'env>;

struct Merging<M> {
    window: WindowId,
    acc: M,
    /// Whether some partition closed it before the input completed.
    closed: bool,
}

/// Merges per-partition windows: pure bookkeeping plus the stage callbacks.
pub(crate) struct Departition<'env, B, M, O> {
    init: InitFn<'env, M>,
    merge: MergeFn<'env, M, B>,
    done: DoneFn<'env, M, O>,
    /// Per partition: every window numbered below is closed there.
    marks: Vec<u64>,
    windows: BTreeMap<u64, Merging<M>>,
    live: usize,
}

impl<'env, B, M, O> Departition<'env, B, M, O> {
    pub(crate) fn new(
        partitions: usize,
        init: impl Fn() -> M + Send + Sync + 'env,
        merge: impl Fn(&mut M, B) + Send + Sync + 'env,
        done: impl Fn(M) -> O + Send + Sync + 'env,
    ) -> Departition<'env, B, M, O> {
        Departition {
            init: Box::new(init),
            merge: Box::new(merge),
            done: Box::new(done),
            marks: vec![0; partitions],
            windows: BTreeMap::new(),
            live: 0,
        }
    }

    fn take(&mut self, part: Part<B>) {
        match part {
            Part::Fire {
                index,
                window,
                fired,
                value,
                ..
            } => {
                if !fired.is_final() {
                    return;
                }
                let init = &self.init;
                let w = self.windows.entry(index).or_insert_with(|| Merging {
                    window,
                    acc: init(),
                    closed: false,
                });
                w.closed |= fired == Fired::Closed;
                (self.merge)(&mut w.acc, value);
            }
            Part::ClosedBelow { partition, below } => {
                if let Some(m) = self.marks.get_mut(partition) {
                    *m = (*m).max(below);
                }
            }
            Part::Done { partition } => {
                if let Some(m) = self.marks.get_mut(partition) {
                    *m = u64::MAX;
                }
            }
        }
    }

    /// Emits every window closed in all partitions, in order.
    fn flush(&mut self, out: &mut Vec<Emitted<O>>) {
        let below = self.marks.iter().copied().min().unwrap_or(u64::MAX);
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() >= below && below != u64::MAX {
                break;
            }
            let w = entry.remove();
            out.push(Emitted {
                window: w.window,
                fired: if w.closed { Fired::Closed } else { Fired::Done },
                partition: None,
                value: (self.done)(w.acc),
            });
        }
    }
}

impl<B, M, O> ProducerConsumer for Departition<'_, B, M, O>
where
    B: Send,
    M: Send,
    O: Send,
{
    type In = Part<B>;
    type Out = Emitted<O>;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, Part<B>>, ctx: &mut Context<'_, Emitted<O>>) {
        for part in events {
            self.take(part);
        }
        let mut out = Vec::new();
        self.flush(&mut out);
        ctx.emit_all(out);
    }

    fn handle_subscribe(
        &mut self,
        sub: &Subscription,
        _: &mut Context<'_, Emitted<O>>,
    ) -> crate::DemandMode {
        if sub.direction() == Direction::Upstream {
            self.live += 1;
        }
        crate::DemandMode::Automatic
    }

    fn handle_cancel(&mut self, sub: &Subscription, _: &Reason, ctx: &mut Context<'_, Emitted<O>>) {
        if sub.direction() != Direction::Upstream {
            return;
        }
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            self.marks.iter_mut().for_each(|m| *m = u64::MAX);
            let mut out = Vec::new();
            self.flush(&mut out);
            ctx.emit_all(out);
        }
    }
}
