//! Waiting with a deadline, or on the inbox and on room in a peer's inbox for what waits in a
//! backlog (the common wait, on the inbox alone, is `Runner::next_envelope` in `mod.rs`).

use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, Select, TryRecvError};

use super::{Callbacks, Env, Runner};
use crate::envelope::{Coalesce, Down, Up};

/// How long a wait with backlogs may wait.
enum Until {
    Forever,
    Deadline(Instant),
    Now,
}

impl From<Option<Instant>> for Until {
    fn from(deadline: Option<Instant>) -> Until {
        deadline.map_or(Until::Forever, Until::Deadline)
    }
}

/// What a wait brought.
pub(super) enum Wait<E> {
    Msg(E),
    Timeout,
    Disconnected,
}

impl<'e, S: Callbacks> Runner<'e, S> {
    /// Waits for an envelope, or, when `backlog` says some peer's backlog is not empty, for
    /// room at that peer. (The caller publishes the `buffered` counter first.)
    #[inline]
    pub(super) fn wait(&mut self, deadline: Option<Instant>, backlog: bool) -> Wait<Env<'e, S>> {
        if backlog {
            return self.wait_with_backlog(Until::from(deadline));
        }
        match deadline {
            None => match self.inbox.recv() {
                Ok(env) => Wait::Msg(env),
                Err(_) => Wait::Disconnected,
            },
            Some(d) => match self.inbox.recv_deadline(d) {
                Ok(env) => Wait::Msg(env),
                Err(RecvTimeoutError::Timeout) => Wait::Timeout,
                Err(RecvTimeoutError::Disconnected) => Wait::Disconnected,
            },
        }
    }

    /// [`Runner::wait`] without waiting: what is there now (a simulation's step, whose
    /// virtual time no real wait may be given).
    pub(super) fn poll(&mut self, backlog: bool) -> Wait<Env<'e, S>> {
        if backlog {
            return self.wait_with_backlog(Until::Now);
        }
        match self.inbox.try_recv() {
            Ok(env) => Wait::Msg(env),
            Err(TryRecvError::Empty) => Wait::Timeout,
            Err(TryRecvError::Disconnected) => Wait::Disconnected,
        }
    }

    /// [`Runner::wait`] with backlogs: a select over the inbox and the peers' inboxes.
    #[inline(never)]
    fn wait_with_backlog(&mut self, until: Until) -> Wait<Env<'e, S>> {
        let downs_links = &mut self.emitter.downs;
        let ups_links = &mut self.inlet.ups;
        // Take each backlog's first message in hand, so the select can send it.
        let mut downs: Vec<(usize, Option<Down<'e, S::Out>>)> = Vec::new();
        let mut ups: Vec<(usize, Option<Up<'e, S::In>>)> = Vec::new();
        for (i, l) in downs_links.iter_mut().enumerate() {
            if let Some(m) = l.out.take_front() {
                downs.push((i, Some(m)));
            }
        }
        for (i, l) in ups_links.iter_mut().enumerate() {
            if let Some(m) = l.out.take_front() {
                ups.push((i, Some(m)));
            }
        }
        let mut gone_down = None;
        let mut gone_up = None;
        let result = 'select: {
            let mut sel = Select::new();
            let inbox = sel.recv(&self.inbox);
            let mut ops = Vec::with_capacity(downs.len() + ups.len());
            for (k, (i, _)) in downs.iter().enumerate() {
                ops.push((downs_links[*i].out.port.register(&mut sel), true, k));
            }
            for (k, (i, _)) in ups.iter().enumerate() {
                ops.push((ups_links[*i].out.port.register(&mut sel), false, k));
            }
            let op = match until {
                Until::Deadline(d) => match sel.select_deadline(d) {
                    Ok(op) => op,
                    Err(_) => break 'select Wait::Timeout,
                },
                Until::Now => match sel.try_select() {
                    Ok(op) => op,
                    Err(_) => break 'select Wait::Timeout,
                },
                Until::Forever => sel.select(),
            };
            let index = op.index();
            if index == inbox {
                match op.recv(&self.inbox) {
                    Ok(env) => Wait::Msg(env),
                    Err(_) => Wait::Disconnected,
                }
            } else {
                let Some(&(_, down, k)) = ops.iter().find(|o| o.0 == index) else {
                    // Not one of ours (cannot happen): nothing was taken.
                    break 'select Wait::Timeout;
                };
                if down {
                    let (i, msg) = &mut downs[k];
                    if let Some(msg) = msg.take() {
                        let events = msg.event_count();
                        match downs_links[*i].out.port.send_selected(op, msg) {
                            Ok(()) => downs_links[*i].out.sent(events),
                            Err(m) => {
                                downs[k].1 = Some(m);
                                gone_down = Some(downs[k].0);
                            }
                        }
                    }
                } else {
                    let (i, msg) = &mut ups[k];
                    if let Some(msg) = msg.take() {
                        if let Err(m) = ups_links[*i].out.port.send_selected(op, msg) {
                            ups[k].1 = Some(m);
                            gone_up = Some(ups[k].0);
                        }
                    }
                }
                Wait::Timeout
            }
        };
        // What was not sent goes back to the front of its backlog.
        for (i, m) in downs {
            if let Some(m) = m {
                downs_links[i].out.put_back(m);
            }
        }
        for (i, m) in ups {
            if let Some(m) = m {
                ups_links[i].out.put_back(m);
            }
        }
        if let Some(i) = gone_down {
            self.emitter.gone(i);
        }
        if let Some(i) = gone_up {
            // The producer ended; its cancel is already in the inbox.
            self.inlet.ups[i].out.clear_backlog();
        }
        result
    }
}
