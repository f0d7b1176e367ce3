//! The dispatcher a stage runs: the default [`DemandDispatcher`] held inline, so that the calls
//! a message makes on the hot path are direct (and its whole-batch and ask shortcuts are
//! available); any other dispatcher behind a box. The runtime's own; users see only
//! [`Dispatcher`].

use super::{DemandDispatcher, Dispatcher, Outbox};
use crate::error::SubscribeError;
use crate::subscription::{SubscribeOptions, SubscriptionId};

pub(crate) enum Dispatch<'e, T: 'e> {
    Demand(DemandDispatcher),
    Other(Box<dyn Dispatcher<T> + 'e>),
}

impl<'e, T: Send> Dispatch<'e, T> {
    /// Holds `d` inline if it is a [`DemandDispatcher`], boxed otherwise (a box given as it is).
    pub(crate) fn new<D: Dispatcher<T> + 'e>(d: D) -> Dispatch<'e, T> {
        match d.into_inline() {
            Ok(demand) => Dispatch::Demand(demand),
            Err(d) => Dispatch::Other(d.into_boxed()),
        }
    }

    /// The default: a [`DemandDispatcher`].
    pub(crate) fn demand() -> Dispatch<'e, T> {
        Dispatch::Demand(DemandDispatcher::new())
    }

    /// If a batch of `n` events goes, whole, to one consumer, records that it did and returns
    /// that consumer's subscription; `None` (nothing recorded) when the batch takes the general
    /// path through [`Dispatcher::dispatch`].
    #[inline]
    pub(crate) fn take_whole(&mut self, n: usize) -> Option<SubscriptionId> {
        match self {
            Dispatch::Demand(d) => d.take_whole(n),
            Dispatch::Other(_) => None,
        }
    }

    /// Records an ask without an outbox, for a dispatcher that never uses it there; returns
    /// the demand to satisfy, or `None` if the ask needs [`Dispatcher::ask`].
    #[inline]
    pub(crate) fn ask_direct(&mut self, sub: SubscriptionId, n: usize) -> Option<usize> {
        match self {
            Dispatch::Demand(d) => Some(d.record_ask(sub, n)),
            Dispatch::Other(_) => None,
        }
    }
}

impl<T: Send> Dispatcher<T> for Dispatch<'_, T> {
    fn attach(&mut self, stage: &str) {
        match self {
            Dispatch::Demand(d) => Dispatcher::<T>::attach(d, stage),
            Dispatch::Other(d) => d.attach(stage),
        }
    }

    fn subscribe(
        &mut self,
        sub: SubscriptionId,
        options: &SubscribeOptions,
    ) -> Result<(), SubscribeError> {
        match self {
            Dispatch::Demand(d) => Dispatcher::<T>::subscribe(d, sub, options),
            Dispatch::Other(d) => d.subscribe(sub, options),
        }
    }

    fn cancel(&mut self, sub: SubscriptionId, out: &mut Outbox<'_, T>) -> usize {
        match self {
            Dispatch::Demand(d) => d.cancel(sub, out),
            Dispatch::Other(d) => d.cancel(sub, out),
        }
    }

    #[inline]
    fn ask(&mut self, sub: SubscriptionId, n: usize, out: &mut Outbox<'_, T>) -> usize {
        match self {
            Dispatch::Demand(d) => d.ask(sub, n, out),
            Dispatch::Other(d) => d.ask(sub, n, out),
        }
    }

    #[inline]
    fn dispatch(&mut self, events: &mut Vec<T>, out: &mut Outbox<'_, T>) {
        match self {
            Dispatch::Demand(d) => d.dispatch(events, out),
            Dispatch::Other(d) => d.dispatch(events, out),
        }
    }

    #[inline]
    fn ready(&self) -> usize {
        match self {
            Dispatch::Demand(d) => Dispatcher::<T>::ready(d),
            Dispatch::Other(d) => d.ready(),
        }
    }

    fn one_subscription_per_consumer(&self) -> bool {
        match self {
            Dispatch::Demand(d) => Dispatcher::<T>::one_subscription_per_consumer(d),
            Dispatch::Other(d) => d.one_subscription_per_consumer(),
        }
    }

    #[inline]
    fn held(&self) -> usize {
        match self {
            Dispatch::Demand(d) => Dispatcher::<T>::held(d),
            Dispatch::Other(d) => d.held(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatcher::{record, BroadcastDispatcher};

    #[test]
    fn a_demand_dispatcher_is_held_inline_and_any_other_boxed_once() {
        assert!(matches!(
            Dispatch::<u32>::new(DemandDispatcher::new()),
            Dispatch::Demand(_)
        ));
        assert!(matches!(
            Dispatch::<u32>::new(BroadcastDispatcher::new()),
            Dispatch::Other(_)
        ));
        let boxed: Box<dyn Dispatcher<u32>> = Box::new(BroadcastDispatcher::new());
        let inner: *const () = (&*boxed as *const dyn Dispatcher<u32>).cast();
        match Dispatch::new(boxed) {
            Dispatch::Other(b) => {
                let held: *const () = (&*b as *const dyn Dispatcher<u32>).cast();
                assert_eq!(held, inner, "the box itself, not a box of it");
            }
            Dispatch::Demand(_) => panic!("a broadcast is not a demand dispatcher"),
        }
    }

    #[test]
    fn the_shortcuts_agree_with_the_general_path() {
        // Two dispatchers driven alike, one through the shortcuts wherever they apply, one
        // through ask and dispatch only: same sends, same demand, same readiness.
        let subs: Vec<SubscriptionId> = (0..3).map(|_| SubscriptionId::next()).collect();
        let mut fast = Dispatch::<u32>::demand();
        let mut slow = Dispatch::<u32>::demand();
        for &s in &subs {
            fast.subscribe(s, &SubscribeOptions::new()).unwrap();
            slow.subscribe(s, &SubscribeOptions::new()).unwrap();
        }
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m) as usize
        };
        for step in 0..2000 {
            let roll = next(10);
            if roll == 0 {
                // A consumer leaves and comes back.
                let s = subs[next(3)];
                let (a, _, _, _) = record(&mut fast, |d, out| d.cancel(s, out));
                let (b, _, _, _) = record(&mut slow, |d, out| d.cancel(s, out));
                assert_eq!(a, b, "step {step}");
                fast.subscribe(s, &SubscribeOptions::new()).unwrap();
                slow.subscribe(s, &SubscribeOptions::new()).unwrap();
            } else if roll < 5 {
                let (s, n) = (subs[next(3)], next(6));
                let a = fast
                    .ask_direct(s, n)
                    .expect("a demand dispatcher asks directly");
                let (b, sent, _, _) = record(&mut slow, |d, out| d.ask(s, n, out));
                assert_eq!((a, sent.len()), (b, 0), "step {step}");
            } else {
                let n = next(8);
                let events: Vec<u32> = (0..n as u32).collect();
                let (_, expect, _, _) = record(&mut slow, |d, out| {
                    let mut e = events.clone();
                    d.dispatch(&mut e, out)
                });
                let got = match fast.take_whole(n) {
                    Some(sub) => vec![(sub, events)],
                    None => {
                        let (_, sent, _, _) = record(&mut fast, |d, out| {
                            let mut e = events.clone();
                            d.dispatch(&mut e, out)
                        });
                        sent
                    }
                };
                assert_eq!(got, expect, "step {step}");
            }
            assert_eq!(
                Dispatcher::<u32>::ready(&fast),
                Dispatcher::<u32>::ready(&slow),
                "step {step}"
            );
        }
    }
}
