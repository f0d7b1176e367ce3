//! [`Pipeline`]: the running pipeline's handle: counters, the rate limit, test messages, and
//! the graceful shutdown that drains it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::batcher::KeyFn;
use super::builder::ReadCounters;
use super::counters::{Cells, PipelineCounters};
use super::error::PipelineError;
use super::message::{Acked, Message, Status};
use super::metrics::PipelineMetrics;
use super::processor::ProcessorMsg;
use super::rate::{Limiter, RateLimit};
use crate::supervise::Group;
use crate::{DrainReport, Reason, Topology};

/// Hands messages to one processor.
pub(crate) type Push<I> = Box<dyn Fn(ProcessorMsg<I>) -> Result<(), PipelineError> + Send + Sync>;

/// A running pipeline, from [`WithProcessors::start`](super::WithProcessors::start). Its
/// processors take `Message<I>`.
///
/// Dropping it stops every stage at once (what is in flight is counted as discarded, never
/// acknowledged): call [`shutdown`](Pipeline::shutdown) to drain it first.
pub struct Pipeline<I> {
    pub(crate) name: String,
    pub(crate) topology: Topology,
    /// The producers and processors, supervised.
    pub(crate) group: Group,
    /// The producers' counters, every incarnation summed.
    pub(crate) producers: Vec<ReadCounters>,
    pub(crate) push: Vec<Push<I>>,
    pub(crate) partition_by: Option<KeyFn<I>>,
    pub(crate) processor_cells: Arc<Cells>,
    pub(crate) batcher_cells: Vec<(String, Arc<Cells>)>,
    pub(crate) totals: Arc<Cells>,
    pub(crate) pushed: Arc<AtomicU64>,
    pub(crate) next: AtomicU64,
    pub(crate) limiter: Option<Arc<Limiter>>,
    pub(crate) shutdown: Duration,
    /// How many buffers the producers and the processors took back (see `recycle`).
    #[cfg(test)]
    pub(crate) recycled: Box<dyn Fn() -> (u64, u64) + Send + Sync>,
}

impl<I> fmt::Debug for Pipeline<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("name", &self.name)
            .field("stages", &self.topology.stages().len())
            .finish_non_exhaustive()
    }
}

/// What a [`Pipeline::shutdown`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The stages' drain: each stage's outcome, and those that had to be stopped.
    pub drain: DrainReport,
    /// The counters once every stage had ended.
    pub counters: PipelineCounters,
    /// Messages that entered the pipeline and were never acknowledged (0 when the drain
    /// completed).
    pub unacknowledged: u64,
}

impl ShutdownReport {
    /// Whether every message was acknowledged and every stage ended by itself in time.
    pub fn is_complete(&self) -> bool {
        self.drain.is_complete() && self.unacknowledged == 0
    }
}

impl<I: Send + 'static> Pipeline<I> {
    /// The pipeline's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every stage of the pipeline: the producers and processors (one member, their
    /// supervised [`group`](Pipeline::group), whose current stages
    /// [`Topology::current_stages`] lists), each batcher and its batch processors.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The supervised group that runs the producers and processors: each producer's
    /// restarts ([`Group::restart_counts`]), the stages running now ([`Group::stages`]). See
    /// [Restarts](super#restarts).
    pub fn group(&self) -> &Group {
        &self.group
    }

    /// A snapshot of the counters of each layer.
    pub fn counters(&self) -> PipelineCounters {
        self.metrics().counters()
    }

    /// The pipeline's counters as a source of metrics for `stageflow::observe` (the pipeline
    /// registers it itself when observed: see its `Observe` implementation).
    pub fn metrics(&self) -> PipelineMetrics {
        PipelineMetrics {
            producers: self.producers.clone(),
            group: self.group.clone(),
            processors: self.processor_cells.clone(),
            batchers: self.batcher_cells.clone(),
            totals: self.totals.clone(),
            pushed: self.pushed.clone(),
        }
    }

    /// The rate limit, if the pipeline has one.
    pub fn rate_limiting(&self) -> Option<RateLimit> {
        self.limiter.as_ref().map(|l| l.get())
    }

    /// Changes the rate limit while the pipeline runs; it applies to the current interval at
    /// once (Broadway's `update_rate_limiting`).
    ///
    /// # Errors
    ///
    /// [`PipelineError::InvalidOption`] if the pipeline was built without a rate limit, or
    /// for a limit of 0 messages or an interval under 1 ms.
    pub fn update_rate_limiting(&self, limit: RateLimit) -> Result<(), PipelineError> {
        let Some(l) = &self.limiter else {
            return Err(PipelineError::invalid(
                "rate_limiting",
                "the pipeline was started without rate_limiting",
            ));
        };
        limit.validate()?;
        l.set(limit);
        Ok(())
    }

    /// Pushes messages straight into the processors, as if a producer had emitted them
    /// (Broadway's `push_messages`): by the processors' `partition_by` if there is one, else
    /// to one processor in turn. For tests; see [`test_messages`](Pipeline::test_messages).
    /// Pushed messages do not pass the producers, so the rate limit does not count them.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Ended`] if the processor has ended (the pipeline was shut down, or
    /// its producers all finished).
    pub fn push_messages(&self, messages: Vec<Message<I>>) -> Result<(), PipelineError> {
        if messages.is_empty() {
            return Ok(());
        }
        let n = self.push.len() as u64;
        let count = messages.len() as u64;
        match &self.partition_by {
            None => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                (self.push[i as usize])(ProcessorMsg::Push(messages))?;
            }
            Some(key) => {
                let mut parts: Vec<Vec<Message<I>>> = (0..n).map(|_| Vec::new()).collect();
                for m in messages {
                    parts[(key(&m) % n) as usize].push(m);
                }
                for (i, part) in parts.into_iter().enumerate() {
                    if !part.is_empty() {
                        (self.push[i])(ProcessorMsg::Push(part))?;
                    }
                }
            }
        }
        self.pushed.fetch_add(count, Ordering::Relaxed);
        Ok(())
    }

    /// Pushes one message per item of `data`, acknowledged to a test acknowledger whose ids
    /// are the items' indexes; the returned [`TestAcks`] receives their acknowledgements
    /// (Broadway's `test_message`/`test_batch` and `assert_receive {:ack, ...}`).
    ///
    /// # Errors
    ///
    /// As [`push_messages`](Pipeline::push_messages).
    pub fn test_messages(
        &self,
        data: impl IntoIterator<Item = I>,
    ) -> Result<TestAcks, PipelineError> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let ack = Arc::new(move |ok: Vec<Acked>, failed: Vec<Acked>| {
            let _ = tx.send((ok, failed));
        });
        let messages: Vec<Message<I>> = data
            .into_iter()
            .enumerate()
            .map(|(i, d)| Message::new(d).acknowledger(ack.clone(), i as u64))
            .collect();
        let expected = messages.len();
        self.push_messages(messages)?;
        Ok(TestAcks { rx, expected })
    }

    /// Waits for every stage to end by itself (its producers all finished and everything was
    /// acknowledged); returns each stage's name and outcome.
    pub fn join(&self) -> Vec<(String, Reason)> {
        self.topology.join()
    }

    /// Shuts down gracefully within the pipeline's shutdown timeout (30 s unless set with
    /// [`Builder::shutdown_timeout`](super::Builder::shutdown_timeout)); see
    /// [`shutdown_timeout`](Pipeline::shutdown_timeout).
    pub fn shutdown(self) -> ShutdownReport {
        let timeout = self.shutdown;
        self.shutdown_timeout(timeout)
    }

    /// Shuts down gracefully: the producers stop taking new work (their `handle_demand` is
    /// no longer called; they deliver what they buffered), every message in flight is
    /// processed, batched (the batchers flush their remainders) and acknowledged, then every
    /// stage ends. Stages still running at `timeout` are stopped, and what they held is
    /// counted: the report's `unacknowledged` says how many messages were never
    /// acknowledged. Nothing is dropped silently.
    pub fn shutdown_timeout(self, timeout: Duration) -> ShutdownReport {
        let drain = self.topology.drain(timeout);
        let counters = self.counters();
        let unacknowledged = counters.unacknowledged();
        if unacknowledged > 0 {
            log::warn!(
                "pipeline {}: shut down with {unacknowledged} messages never acknowledged",
                self.name
            );
        }
        ShutdownReport {
            drain,
            counters,
            unacknowledged,
        }
    }

    /// Stops every stage now, without draining (what is in flight is never acknowledged,
    /// and counted as such by [`PipelineCounters::unacknowledged`]).
    pub fn stop(&self) {
        self.topology.stop();
    }
}

/// The acknowledgements of messages pushed with [`Pipeline::test_messages`].
#[derive(Debug)]
pub struct TestAcks {
    rx: Receiver<(Vec<Acked>, Vec<Acked>)>,
    expected: usize,
}

/// Every acknowledgement of a [`TestAcks`], collected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AckReport {
    /// Ids (indexes of the pushed items) acknowledged successful, in the order acknowledged.
    pub successful: Vec<u64>,
    /// Ids acknowledged failed, with their reasons, in the order acknowledged.
    pub failed: Vec<(u64, String)>,
    /// How many `ack` calls they came in.
    pub calls: usize,
}

impl TestAcks {
    /// The next acknowledgement call: its successful and failed messages. `None` if none came
    /// within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<(Vec<Acked>, Vec<Acked>)> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits until every pushed message has been acknowledged, or `timeout` has passed;
    /// returns what was acknowledged.
    ///
    /// # Errors
    ///
    /// The partial report, if some messages were not acknowledged within `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<AckReport, AckReport> {
        let deadline = Instant::now() + timeout;
        let mut r = AckReport::default();
        while r.successful.len() + r.failed.len() < self.expected {
            match self.rx.recv_deadline(deadline) {
                Ok((ok, failed)) => {
                    r.calls += 1;
                    r.successful.extend(ok.iter().map(|a| a.id));
                    r.failed.extend(failed.into_iter().map(|a| {
                        let reason = match a.status {
                            Status::Failed(s) => s,
                            Status::Ok => String::new(),
                        };
                        (a.id, reason)
                    }));
                }
                Err(_) => return Err(r),
            }
        }
        Ok(r)
    }
}
