//! HTTP producers on `ureq` (feature `http`, on by default): [`stream`] reads a streaming
//! response body **only while its consumers have demand**, so that a slow pipeline slows the
//! server down through TCP's flow control; [`poll`] fetches JSON pages from a URL built from a
//! cursor.
//!
//! Both are ordinary [`Producer`](crate::Producer)s, built like any other with
//! [`stageflow::producer`](crate::producer): every dispatcher, buffer option, counter,
//! [`stream`](crate::stream), [`Topology`](crate::Topology) and cancel mode works with them.
//! This module uses nothing but the crate's public API.
//!
//! # How a stream reads
//!
//! The network I/O happens on a reader thread the producer owns (started at the first
//! demand). The stage hands the reader credits, its consumers' demand; the reader calls
//! `read()` on the body only while it holds credits, decodes frames into events (a heartbeat
//! or a malformed frame costs no credit) and sends them back to the stage through its
//! [`Mailbox`](crate::Mailbox). At zero credits the reader waits on its control channel, not
//! on the socket: ureq holds at most its input buffer ([`StreamBuilder::input_buffer`],
//! 128 KiB) beyond what was decoded, the kernel's receive buffer fills, the TCP window
//! closes, and the server's writes block. The stage thread never waits on the network, so it
//! answers calls (such as [`HttpMsg::counters`]), casts and stops at once.
//!
//! Stopping the stage, dropping its [`Topology`](crate::Topology), or its last consumer
//! leaving (with `stop_on_cancel`) shuts down the connection at once, even inside a blocked
//! read (`ureq::Agent::shutdown`), and joins the reader thread (waiting at most
//! [`StreamBuilder::join_timeout`], 2 s by default). Only a DNS lookup or TCP connect in
//! progress cannot be interrupted: the stage does not wait for it, and the thread ends by
//! itself within [`StreamBuilder::connect_timeout`]. While the reader runs it holds a
//! mailbox to the stage, so dropping every handle does not end an HTTP producer: stop it.
//!
//! # Framings
//!
//! [`Framing`] picks how the body is cut: newline-delimited JSON (Twitter/X v2), length-prefixed
//! frames (Twitter v1.1 `delimited=length`), Server-Sent Events (with `Last-Event-ID` sent on
//! reconnect, so the stream resumes where it stopped), or plain lines. The decoders are pure
//! ([`FrameDecoder`]), usable on their own.
//!
//! Events are [`serde_json::Value`] by default, any `serde::de::DeserializeOwned` type with
//! [`StreamBuilder::json`], raw frames with [`StreamBuilder::bytes`] or
//! [`StreamBuilder::text`], or anything with [`StreamBuilder::decode_with`].
//!
//! # Bad input
//!
//! Nothing a server sends crashes the producer, and nothing disappears silently:
//!
//! * a frame that is not valid JSON (or not your type) is logged at warn level, counted
//!   (`malformed`) and skipped;
//! * a frame longer than [`StreamBuilder::max_frame`] (4 MiB by default) is counted
//!   (`oversize`), never buffered whole, and the connection is dropped and reopened;
//! * a connection cut inside a frame never emits the partial frame;
//! * a status other than 2xx is logged and kept in the counters with its code and the start of
//!   its body, and backed off;
//! * invalid URLs and options are [`HttpError::InvalidOption`]s at build time, naming the
//!   option.
//!
//! # Reconnects
//!
//! [`Backoff`] holds the rules stream providers ask for: network errors reconnect at once,
//! then +250 ms a try up to 16 s; HTTP errors wait from 5 s, doubling to 320 s; 429 honours
//! `Retry-After` or `x-rate-limit-reset`, else waits from a minute, doubling; jitter is added.
//! The counts start again only after a connection stayed up for [`Backoff::healthy_after`]
//! (30 s by default), so a server that cuts every connection after a frame is backed off too.
//! A stall (no byte, not even a heartbeat, for [`StreamBuilder::stall_timeout`], 60 s by
//! default; ureq's `timeout_per_read`, which does not count time paused for demand) is a
//! network error. Waits are timers on the stage, so a stop is never held up by a backoff. With
//! [`Backoff::max_attempts`] the producer ends with a [`Reason::Error`](crate::Reason) naming
//! the last failure instead of trying forever.
//!
//! # Two back-pressure policies
//!
//! [`ReadPolicy::PauseWhenNoDemand`] (the default) stops reading when there is no demand:
//! nothing is lost and the server is held back. Some sources (sampled firehoses) disconnect
//! readers that fall behind; for them, [`ReadPolicy::KeepReading`] reads on whatever the
//! demand and lets the producer's buffer drop events by its
//! [`buffer_keep`](crate::StageBuilder::buffer_keep) policy, every discard counted and logged.
//!
//! # Counters
//!
//! [`HttpStream::stats`] (or [`HttpPoll::stats`]) gives an [`HttpStats`] to read while the
//! producer runs: bytes read, frames, heartbeats, malformed, oversize, stalls, requests,
//! reconnects, the last status and error, discarded events, and whether the reader is paused.
//! The stage answers `handle.call(HttpMsg::counters, timeout)` with the same snapshot.
//!
//! # Polling
//!
//! [`poll`] builds a producer for APIs that answer pages ("search recent"): it makes the URL
//! from its cursor (`since_id`), turns each JSON page into events and the next cursor with
//! your function, serves demand from what it holds, fetches again only when demand exceeds
//! it, and waits [`PollBuilder::interval`] after an empty page. Status and backoff rules are
//! the stream's.

mod audience;
mod backoff;
mod config;
mod counters;
mod error;
mod framing;
mod length;
mod lines;
mod link;
mod poll;
mod reader;
mod sse;
mod stream;

pub use backoff::Backoff;
pub use config::ReadPolicy;
pub use counters::{HttpCounters, HttpStats};
pub use error::HttpError;
pub use framing::{Frame, FrameDecoder, FrameError, Framing, Piece};
pub use link::HttpMsg;
pub use poll::{poll, HttpPoll, Page, PollBuilder, DEFAULT_MAX_BODY};
pub use stream::{stream, HttpStream, StreamBuilder, DEFAULT_MAX_FRAME};
