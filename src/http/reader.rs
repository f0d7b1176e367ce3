//! The reader thread of an [`HttpStream`](super::HttpStream): connects when the stage says
//! so, reads the body only while it holds credits (or always, with
//! [`ReadPolicy::KeepReading`](super::ReadPolicy::KeepReading)), decodes frames into events,
//! and reports events and the end of each connection to the stage. It never waits on its
//! own: backoff is the stage's business.
//!
//! Credits are counted in decoded events: a heartbeat or a frame that does not decode costs
//! none. At zero credits the reader blocks on the control channel, not on the socket, so the
//! socket's receive buffer fills and TCP's window stops the server.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;

use super::backoff::response_retry_hint;
use super::config::{Config, DecodeFn, ReadPolicy};
use super::counters::HttpStats;
use super::error::Cause;
use super::framing::{FrameDecoder, FrameError, Piece};
use super::link::{Ctl, Wire};

/// The most events sent to the stage in one report.
const MAX_BATCH: usize = 1024;
/// The most bytes of an error response's body quoted in its report.
const EXCERPT: u64 = 256;

/// What the reader tells the stage.
pub(crate) enum Report<T> {
    Events(Vec<T>),
    /// A connection ended (or could not be made). `up`: how long it was up since its 2xx
    /// response, if it delivered a frame or a heartbeat. `retry`: the SSE reconnection time,
    /// if the server set one.
    Ended {
        cause: Cause,
        up: Option<Duration>,
        retry: Option<Duration>,
    },
}

pub(crate) struct Reader<T> {
    pub(crate) config: Arc<Config>,
    pub(crate) decode: DecodeFn<T>,
    pub(crate) agent: ureq::Agent,
    pub(crate) credits: Arc<AtomicU64>,
    pub(crate) stats: HttpStats,
    pub(crate) name: String,
}

/// How one connection's reading ended.
enum Stop {
    /// The connection ended: report it and wait for the next order.
    Ended(Cause),
    /// The stage is gone or stopping: exit.
    Exit,
}

struct Conn<T> {
    decoder: FrameDecoder,
    /// Credits taken from the shared count and not yet spent.
    held: u64,
    batch: Vec<T>,
    /// It delivered a frame or a heartbeat.
    progress: bool,
    /// When its 2xx response arrived.
    since: Option<Instant>,
    chunk: Vec<u8>,
}

impl<T: Send + 'static> Reader<T> {
    /// The thread's body: wait for an order, run a connection, report its end, repeat.
    pub(crate) fn run(self, wire: Wire<Report<T>>) {
        let c = &self.config;
        let mut conn = Conn {
            decoder: FrameDecoder::new(c.framing, c.max_frame),
            held: 0,
            batch: Vec::new(),
            progress: false,
            since: None,
            chunk: vec![0; c.read_size],
        };
        while let Some(ctl) = wire.recv() {
            let Ctl::Go(url) = ctl else { continue };
            conn.progress = false;
            conn.since = None;
            let cause = match self.connection(&wire, &mut conn, &url) {
                Stop::Ended(cause) => cause,
                Stop::Exit => return,
            };
            conn.decoder.reset();
            if wire.stopping() {
                return;
            }
            let up = conn.since.filter(|_| conn.progress).map(|t| t.elapsed());
            let report = Report::Ended {
                cause,
                up,
                retry: conn.decoder.retry(),
            };
            if !wire.report(report) {
                return;
            }
        }
    }

    fn connection(&self, wire: &Wire<Report<T>>, conn: &mut Conn<T>, url: &str) -> Stop {
        let c = &self.config;
        let requests = self.stats.cells.requests.fetch_add(1, Ordering::Relaxed);
        if requests > 0 {
            self.stats.add(|c| &c.reconnects, 1);
        }
        let mut request = self.agent.get(url);
        for (k, v) in &c.headers {
            request = request.header(k, v);
        }
        if let Some(id) = conn.decoder.last_event_id() {
            request = request.header("Last-Event-ID", id);
        }
        let response = match wire.call(|| request.call()) {
            Ok(r) => r,
            Err(_) if wire.stopping() => return Stop::Exit,
            Err(e) => return Stop::Ended(Cause::from_ureq(e, c.stall_timeout, true)),
        };
        let code = response.status().as_u16();
        self.stats.status(code);
        if !(200..300).contains(&code) {
            let hint = response_retry_hint(response.headers());
            let mut excerpt = Vec::new();
            let _ = response
                .into_body()
                .into_reader()
                .take(EXCERPT)
                .read_to_end(&mut excerpt);
            let excerpt = String::from_utf8_lossy(&excerpt).trim().to_owned();
            return Stop::Ended(Cause::Status {
                code,
                excerpt,
                hint,
            });
        }
        conn.since = Some(Instant::now());
        let mut body = response.into_body().into_reader();
        let keep_reading = c.policy == ReadPolicy::KeepReading;
        loop {
            // Decode what is buffered, while there are credits for it.
            loop {
                if !keep_reading && conn.held == 0 {
                    conn.held = self.credits.swap(0, Ordering::AcqRel);
                    if conn.held == 0 {
                        break;
                    }
                }
                let piece = match conn.decoder.next_piece() {
                    None => break,
                    Some(p) => p,
                };
                match piece {
                    Ok(Piece::Heartbeat) => {
                        conn.progress = true;
                        self.stats.add(|c| &c.heartbeats, 1);
                    }
                    Ok(Piece::Frame(frame)) => {
                        conn.progress = true;
                        match (self.decode)(frame) {
                            Ok(event) => {
                                conn.batch.push(event);
                                conn.held = conn.held.saturating_sub(1);
                                if conn.batch.len() >= MAX_BATCH && !self.flush(wire, conn) {
                                    return Stop::Exit;
                                }
                            }
                            Err(e) => {
                                self.stats.add(|c| &c.malformed, 1);
                                warn!(
                                    "stage {}: skipped a frame that did not decode: {e}; frame: {}",
                                    self.name,
                                    excerpt(frame.data())
                                );
                            }
                        }
                    }
                    Err(e) => {
                        match e {
                            FrameError::Oversize { .. } => self.stats.add(|c| &c.oversize, 1),
                            _ => self.stats.add(|c| &c.malformed, 1),
                        }
                        if !self.flush(wire, conn) {
                            return Stop::Exit;
                        }
                        return Stop::Ended(Cause::Framing(e));
                    }
                }
            }
            if !self.flush(wire, conn) {
                return Stop::Exit;
            }
            if !keep_reading && conn.held == 0 {
                if !self.wait_for_credits(wire, conn) {
                    return Stop::Exit;
                }
                continue;
            }
            if wire.stopping() {
                return Stop::Exit;
            }
            match body.read(&mut conn.chunk) {
                Ok(0) => {
                    return Stop::Ended(Cause::End {
                        partial: conn.decoder.buffered(),
                    })
                }
                Ok(n) => {
                    self.stats.add(|c| &c.bytes_read, n as u64);
                    conn.decoder.push(&conn.chunk[..n]);
                }
                Err(_) if wire.stopping() => return Stop::Exit,
                Err(e) => {
                    let cause = Cause::from_read(e, c.stall_timeout);
                    if matches!(cause, Cause::Stalled(_)) {
                        self.stats.add(|c| &c.stalls, 1);
                    }
                    return Stop::Ended(cause);
                }
            }
        }
    }

    /// Sends the events decoded so far. `false` when the stage has gone.
    fn flush(&self, wire: &Wire<Report<T>>, conn: &mut Conn<T>) -> bool {
        if conn.batch.is_empty() {
            return true;
        }
        let n = conn.batch.len() as u64;
        self.stats.add(|c| &c.frames, n);
        // The next batch gets room for the credits held, so it does not grow step by step.
        let room = (conn.held as usize).clamp(16, MAX_BATCH);
        let batch = std::mem::replace(&mut conn.batch, Vec::with_capacity(room));
        wire.report(Report::Events(batch))
    }

    /// Out of credits: stop reading until the stage hands out more. `false` when it has gone.
    fn wait_for_credits(&self, wire: &Wire<Report<T>>, conn: &mut Conn<T>) -> bool {
        self.stats.paused(true);
        loop {
            conn.held = self.credits.swap(0, Ordering::AcqRel);
            if conn.held > 0 {
                self.stats.paused(false);
                return true;
            }
            match wire.recv() {
                Some(Ctl::Wake) => {}
                Some(Ctl::Go(_)) => {} // Not sent while connected.
                None => return false,
            }
        }
    }
}

/// The start of a frame, for a log line.
fn excerpt(data: &[u8]) -> String {
    let shown = &data[..data.len().min(120)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if data.len() > shown.len() {
        s.push_str("...");
    }
    s
}
