//! [`ChannelSource`]: a producer of what a `crossbeam_channel::Receiver` yields, taken only
//! while its consumers have demand, ending when the channel is disconnected and empty; and
//! [`ChannelBuilder`], its options.

use std::fmt;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::{Context, Producer};

use super::counters::IoStats;
use super::error::IoError;
use super::msg::{IoMsg, Msg};
use super::options::DEFAULT_BATCH;

/// Starts building a producer of what `rx` yields; see [`ChannelBuilder`].
///
/// # Examples
///
/// ```
/// use stageflow::SubscribeOptions;
///
/// let (tx, rx) = crossbeam_channel::bounded(16);
/// let source = stageflow::producer(stageflow::io::from_channel(rx).build()?).spawn()?;
/// let writer = std::thread::spawn(move || {
///     for i in 0..100u32 {
///         tx.send(i).unwrap(); // waits while the pipeline is behind: the channel is bounded
///     }
///     // Dropping `tx` disconnects the channel: the source finishes.
/// });
/// let sum: u32 = stageflow::stream(&source, SubscribeOptions::new().max_demand(10))?.sum();
/// assert_eq!(sum, 4950);
/// writer.join().unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn from_channel<T: Send + 'static>(rx: Receiver<T>) -> ChannelBuilder<T> {
    ChannelBuilder {
        rx,
        batch: DEFAULT_BATCH,
        wait: Duration::from_millis(20),
    }
}

/// The options of a [`ChannelSource`]. Made by [`from_channel`].
pub struct ChannelBuilder<T> {
    rx: Receiver<T>,
    batch: usize,
    wait: Duration,
}

impl<T> fmt::Debug for ChannelBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelBuilder")
            .field("batch", &self.batch)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> ChannelBuilder<T> {
    /// The most items taken in one turn of the stage's loop. At least 1. Defaults to `500`.
    pub fn batch(mut self, items: usize) -> Self {
        self.batch = items;
        self
    }

    /// The longest one turn waits on an empty channel while there is demand. An item that
    /// arrives during the wait is emitted at once; between waits the stage answers calls,
    /// stops and drains, so this bounds how long those wait. More than zero. Defaults to
    /// `20 ms`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Checks the options and makes the producer; hand it to
    /// [`stageflow::producer`](crate::producer).
    ///
    /// # Errors
    ///
    /// [`IoError::InvalidOption`] naming the option: a zero `batch` or `wait`.
    pub fn build(self) -> Result<ChannelSource<T>, IoError> {
        if self.batch == 0 {
            return Err(IoError::invalid(
                "batch",
                "expected batch to be at least 1, got 0".to_owned(),
            ));
        }
        if self.wait.is_zero() {
            return Err(IoError::invalid(
                "wait",
                "expected wait to be more than zero, got 0ns".to_owned(),
            ));
        }
        Ok(ChannelSource {
            rx: self.rx,
            batch: self.batch,
            wait: self.wait,
            demand: 0,
            scheduled: false,
            stats: IoStats::default(),
        })
    }
}

/// A producer of what a channel yields (made by [`from_channel`]).
///
/// It takes items from the channel only while its consumers have demand, at most
/// `min(demand, batch)` a turn; without demand it leaves them in the channel, so a bounded
/// channel's senders wait: back-pressure reaches them. With demand and an empty channel, a
/// turn waits on it at most [`wait`](ChannelBuilder::wait) (the stage's thread blocks on the
/// channel, woken at once by an item), then comes back. When the channel is disconnected and
/// empty, the stage finishes. A drain stops the taking: items still in the channel stay there.
/// [`IoStats`] counts the items emitted in `records`.
pub struct ChannelSource<T> {
    rx: Receiver<T>,
    batch: usize,
    wait: Duration,
    demand: usize,
    scheduled: bool,
    stats: IoStats,
}

impl<T> fmt::Debug for ChannelSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelSource")
            .field("demand", &self.demand)
            .field("queued", &self.rx.len())
            .finish_non_exhaustive()
    }
}

impl<T> ChannelSource<T> {
    /// The source's live counters (take them before spawning it).
    pub fn stats(&self) -> IoStats {
        self.stats.clone()
    }
}

impl<T: Send + 'static> ChannelSource<T> {
    fn schedule(&mut self, ctx: &mut Context<'_, T, IoMsg>) {
        if !self.scheduled && self.demand > 0 {
            self.scheduled = true;
            ctx.send_after(IoMsg(Msg::Read), Duration::ZERO);
        }
    }
}

impl<T: Send + 'static> Producer for ChannelSource<T> {
    type Out = T;
    type Message = IoMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, IoMsg>) {
        self.demand += demand;
        self.schedule(ctx);
    }

    fn handle_message(&mut self, msg: IoMsg, ctx: &mut Context<'_, T, IoMsg>) {
        let IoMsg(Msg::Read) = msg;
        self.scheduled = false;
        if ctx.is_finishing() || ctx.is_stop_requested() {
            return;
        }
        let budget = self.demand.min(self.batch);
        let mut taken = 0;
        let mut disconnected = false;
        // Nothing there yet: wait a little for the first item.
        if self.rx.is_empty() {
            match self.rx.recv_timeout(self.wait) {
                Ok(item) => {
                    ctx.emit(item);
                    taken += 1;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => disconnected = true,
            }
        }
        while taken < budget && !disconnected {
            match self.rx.try_recv() {
                Ok(item) => {
                    ctx.emit(item);
                    taken += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => disconnected = true,
            }
        }
        self.demand -= taken;
        self.stats.add(|c| &c.records, taken as u64);
        if disconnected {
            return ctx.finish();
        }
        self.schedule(ctx);
    }
}
