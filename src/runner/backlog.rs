//! Waiting: on the inbox, and on room in a peer's inbox for what waits in a backlog; and the
//! consumers found gone while sending to them.

use std::time::Instant;

use crossbeam_channel::{RecvTimeoutError, Select};

use super::{Callbacks, Env, Runner, Wait};
use crate::envelope::{Coalesce, Down, Up};
use crate::reason::Reason;

impl<S: Callbacks> Runner<S> {
    pub(super) fn any_backlog(&self) -> bool {
        self.ups.iter().any(|l| !l.out.backlog.is_empty())
            || self.downs.iter().any(|l| !l.out.backlog.is_empty())
    }

    /// Waits for an envelope, or, when `backlog` says some peer's backlog is not empty, for
    /// room at that peer.
    #[inline]
    pub(super) fn wait(&mut self, deadline: Option<Instant>, backlog: bool) -> Wait<Env<S>> {
        self.publish_buffered();
        if backlog {
            return self.wait_with_backlog(deadline);
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

    /// [`Runner::wait`] with backlogs: a select over the inbox and the peers' inboxes.
    #[inline(never)]
    fn wait_with_backlog(&mut self, deadline: Option<Instant>) -> Wait<Env<S>> {
        // Take each backlog's first message in hand, so the select can send it.
        let mut downs: Vec<(usize, Option<Down<S::Out>>)> = Vec::new();
        let mut ups: Vec<(usize, Option<Up<S::In>>)> = Vec::new();
        for (i, l) in self.downs.iter_mut().enumerate() {
            if let Some(m) = l.out.backlog.pop_front() {
                downs.push((i, Some(m)));
            }
        }
        for (i, l) in self.ups.iter_mut().enumerate() {
            if let Some(m) = l.out.backlog.pop_front() {
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
                ops.push((self.downs[*i].out.port.register(&mut sel), true, k));
            }
            for (k, (i, _)) in ups.iter().enumerate() {
                ops.push((self.ups[*i].out.port.register(&mut sel), false, k));
            }
            let op = match deadline {
                Some(d) => match sel.select_deadline(d) {
                    Ok(op) => op,
                    Err(_) => break 'select Wait::Timeout,
                },
                None => sel.select(),
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
                        match self.downs[*i].out.port.send_selected(op, msg) {
                            Ok(()) => self.downs[*i].out.sent(events),
                            Err(m) => {
                                downs[k].1 = Some(m);
                                gone_down = Some(downs[k].0);
                            }
                        }
                    }
                } else {
                    let (i, msg) = &mut ups[k];
                    if let Some(msg) = msg.take() {
                        if let Err(m) = self.ups[*i].out.port.send_selected(op, msg) {
                            ups[k].1 = Some(m);
                            gone_up = Some(ups[k].0);
                        }
                    }
                }
                Wait::Timeout
            }
        };
        let result = self.restore(downs, ups, result);
        if let Some(i) = gone_down {
            self.gone.push(self.downs[i].info.id);
        }
        if let Some(i) = gone_up {
            // The producer ended; its cancel is already in the inbox.
            self.ups[i].out.backlog.clear();
        }
        result
    }

    pub(super) fn restore(
        &mut self,
        downs: Vec<(usize, Option<Down<S::Out>>)>,
        ups: Vec<(usize, Option<Up<S::In>>)>,
        result: Wait<Env<S>>,
    ) -> Wait<Env<S>> {
        for (i, m) in downs {
            if let Some(m) = m {
                self.downs[i].out.backlog.push_front(m);
            }
        }
        for (i, m) in ups {
            if let Some(m) = m {
                self.ups[i].out.backlog.push_front(m);
            }
        }
        result
    }

    /// Sends what fits of every backlog; drops closed links whose backlog is delivered.
    pub(super) fn flush_backlogs(&mut self) {
        for l in &mut self.downs {
            if !l.out.backlog.is_empty() && l.out.flush().is_err() {
                self.gone.push(l.info.id);
            }
        }
        for l in &mut self.ups {
            if !l.out.backlog.is_empty() && l.out.flush().is_err() {
                // The producer ended; its cancel is already in the inbox.
                l.out.backlog.clear();
            }
        }
        self.drop_closed_links();
    }

    /// Removes closed consumer links whose backlog (ending with the cancel) is delivered.
    pub(super) fn drop_closed_links(&mut self) {
        if self.closed_links > 0 {
            self.downs
                .retain(|l| !(l.closed && l.out.backlog.is_empty()));
            self.closed_links = self.downs.iter().filter(|l| l.closed).count();
        }
    }

    /// Consumers whose inbox is gone: what waited for them is lost (counted); they leave.
    #[inline(never)]
    pub(super) fn reap_gone(&mut self) {
        while let Some(sub) = self.gone.pop() {
            let Some(link) = self.downs.iter_mut().find(|l| l.info.id == sub) else {
                continue;
            };
            let lost = link.out.backlog_events();
            link.out.backlog.clear();
            let closed = link.closed;
            self.discard(lost, "its consumer ended");
            if closed {
                self.drop_closed_links();
            } else {
                self.remove_consumer(sub, Reason::Shutdown, false);
            }
        }
    }
}
