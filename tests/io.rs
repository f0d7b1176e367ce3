//! The io layer (`stageflow::io`, feature `io`): sources for readers, followed files and
//! channels against real files (growing, rotated, truncated, invalid UTF-8) and readers, with
//! back-pressure shown (a stalled consumer stops the reading: what is read stays bounded), and
//! the drain on SIGINT/SIGTERM checked in a child process.

#![cfg(feature = "io")]

#[path = "common/mod.rs"]
mod common;

#[path = "io/channel.rs"]
mod channel;
#[cfg(unix)]
#[path = "io/example.rs"]
mod example;
#[cfg(unix)]
#[allow(dead_code)]
#[path = "../examples/log_tail.rs"]
mod log_tail;
#[path = "io/reader.rs"]
mod reader;
#[cfg(unix)]
#[path = "io/signal.rs"]
mod signal;
#[path = "io/tail.rs"]
mod tail;

use crossbeam_channel::{Receiver, Sender};
use stageflow::{Consumer, ConsumerContext, Events};

/// A consumer that reports every batch, and blocks in its first batch until `gate` gives
/// way (or is dropped): a stalled pipeline.
pub(crate) struct Stalled<T> {
    pub(crate) got: Sender<Vec<T>>,
    pub(crate) gate: Option<Receiver<()>>,
}

impl<T: Send + 'static> Stalled<T> {
    /// The consumer, the batches it reports, and the gate's key (send or drop it to let the
    /// consumer go on).
    pub(crate) fn new() -> (Stalled<T>, Receiver<Vec<T>>, Sender<()>) {
        let (got, batches) = crossbeam_channel::unbounded();
        let (key, gate) = crossbeam_channel::bounded(1);
        (
            Stalled {
                got,
                gate: Some(gate),
            },
            batches,
            key,
        )
    }
}

impl<T: Send + 'static> Consumer for Stalled<T> {
    type In = T;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, T>, _: &mut ConsumerContext<'_>) {
        let _ = self.got.send(events.collect());
        if let Some(gate) = self.gate.take() {
            // Bounded: a test that forgets the gate fails instead of hanging.
            let _ = gate.recv_timeout(common::LIMIT * 3);
        }
    }
}

/// A fresh, empty directory for one test's files, removed when the guard is dropped.
pub(crate) struct Scratch(std::path::PathBuf);

impl std::ops::Deref for Scratch {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("stageflow-io-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    Scratch(dir)
}
