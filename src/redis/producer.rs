//! [`StreamProducer`]: the stage that reads a consumer group, only while it has demand. Each
//! turn of its loop sends one command: its own pending entries first (on start and after a
//! reconnect), then a claim of idle entries (periodically), else `XREADGROUP >` with `COUNT`
//! the unmet demand and a short `BLOCK`: 1 ms after a read that found entries, doubling
//! while reads come back empty, up to the source's `block`. A stop or a drain is seen between
//! reads, so after a backlog has been read it is seen once the short read times out, not
//! after a whole `block`. (Redis times blocked reads out on its timer tick, `hz`: 10 a second
//! by default, so a 1 ms `BLOCK` on an empty stream lasts up to 100 ms; an idle stream is
//! read about once per `block` or per tick, whichever is longer.)

use std::fmt;
use std::time::{Duration, Instant};

use log::warn;
use redis::streams::StreamAutoClaimReply;
use redis::{Connection, ConnectionLike, RedisError};

use super::conn::{self, Backoff};
use super::counters::Cells;
use super::entry::Entry;
use super::reply;
use super::shared::{EntryKey, Options, StreamSource, ID_KEY};
use crate::pipeline::Message;
use crate::{Context, Producer};

/// The producer's own message: its timer to read again. Users never make one.
#[derive(Debug)]
pub struct ReadTurn(());

/// What the next read is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// This consumer's pending entries, after the cursor (`XREADGROUP ... <cursor>`).
    OwnPending(String),
    /// Idle entries of the group, from the cursor (`XAUTOCLAIM`).
    Claim(String),
    /// New entries (`XREADGROUP ... >`).
    New,
}

/// A [`Producer`] of [`Message<T>`](Message)s read from a Redis stream through a consumer
/// group; made by [`StreamSource::producer`]. See the [module docs](super).
///
/// It reads only while it has demand: each read asks for at most the unmet demand, so with
/// no demand nothing is read and the entries stay in the stream for the group's other
/// consumers. Each message carries the source's acknowledger and its entry id (metadata
/// [`ID_KEY`]).
pub struct StreamProducer<T> {
    source: StreamSource<T>,
    con: Option<Connection>,
    connected_before: bool,
    demand: usize,
    phase: Phase,
    last_claim: Instant,
    backoff: Backoff,
    scheduled: bool,
    seq: u64,
    /// The `BLOCK` of the next `XREADGROUP >`: [`FIRST_BLOCK`] after a read that found
    /// entries, doubled after each that found none, up to the source's `block`.
    wait: Duration,
}

/// The `BLOCK` of the first read after one that found entries (`BLOCK 0` would wait forever).
const FIRST_BLOCK: Duration = Duration::from_millis(1);

/// `XREADGROUP GROUP <group> <consumer> COUNT <count> [BLOCK <ms>] STREAMS <stream> <id>`.
///
/// Sent with `ConnectionLike::req_command` and its reply walked once by value (`reply`):
/// `Cmd::query` would rebuild the reply to look for errors in it, and the client's
/// `StreamReadReply` copy it whole.
fn xreadgroup(opts: &Options, count: usize, block: Option<Duration>, id: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&opts.group)
        .arg(&opts.consumer)
        .arg("COUNT")
        .arg(count);
    if let Some(block) = block {
        // At least 1 ms: `BLOCK 0` waits forever.
        cmd.arg("BLOCK").arg((block.as_millis() as u64).max(1));
    }
    cmd.arg("STREAMS").arg(&opts.stream).arg(id);
    cmd
}

impl<T> fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamProducer")
            .field("source", &self.source)
            .field("connected", &self.con.is_some())
            .field("demand", &self.demand)
            .field("phase", &self.phase)
            .finish()
    }
}

impl<T: Send + 'static> StreamProducer<T> {
    pub(crate) fn new(source: StreamSource<T>) -> StreamProducer<T> {
        let (first, max) = source.shared.settings.opts.backoff;
        StreamProducer {
            source,
            con: None,
            connected_before: false,
            demand: 0,
            phase: Phase::OwnPending("0".into()),
            last_claim: Instant::now(),
            backoff: Backoff::new(first, max),
            scheduled: false,
            seq: 0,
            wait: FIRST_BLOCK,
        }
    }

    fn schedule(&mut self, ctx: &mut Context<'_, Message<T>, ReadTurn>, delay: Duration) {
        if !self.scheduled {
            self.scheduled = true;
            ctx.send_after(ReadTurn(()), delay);
        }
    }

    /// Connects (again) and makes sure the group exists; reads resume with this consumer's
    /// own pending entries.
    fn connect(&mut self) -> Result<(), RedisError> {
        let s = &self.source.shared.settings;
        let mut con = conn::open(&s.client, s.opts.timeout + s.opts.block)?;
        conn::ensure_group(&mut con, &s.opts.stream, &s.opts.group, &s.opts.start_id)?;
        if self.connected_before {
            Cells::add(&self.source.shared.cells.reconnects, 1);
        }
        self.connected_before = true;
        self.con = Some(con);
        self.phase = Phase::OwnPending("0".into());
        Ok(())
    }

    /// One read command, by the phase; emits what it got.
    fn read_once(&mut self, ctx: &mut Context<'_, Message<T>, ReadTurn>) -> Result<(), RedisError> {
        let shared = self.source.shared.clone();
        let s = &shared.settings;
        let cells = &shared.cells;
        let count = self.demand.min(s.opts.max_count);
        if self.phase == Phase::New && self.last_claim.elapsed() >= s.opts.claim_interval {
            self.phase = Phase::Claim("0-0".into());
        }
        let con = self.con.as_mut().expect("connected before reading");
        Cells::add(&cells.reads, 1);
        match &self.phase {
            Phase::OwnPending(cursor) => {
                let reply = con.req_command(&xreadgroup(&s.opts, count, None, cursor))?;
                let ids = reply::entries(reply)?;
                match ids.last() {
                    None => self.phase = Phase::Claim("0-0".into()),
                    Some(last) => self.phase = Phase::OwnPending(last.id.clone()),
                }
                self.emit(ids, &cells.resumed, ctx);
            }
            Phase::Claim(cursor) => {
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&s.opts.stream)
                    .arg(&s.opts.group)
                    .arg(&s.opts.consumer)
                    .arg(s.opts.claim_idle.as_millis() as u64)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(count)
                    .query(con)?;
                if reply.next_stream_id == "0-0" {
                    self.phase = Phase::New;
                    self.last_claim = Instant::now();
                } else {
                    self.phase = Phase::Claim(reply.next_stream_id);
                }
                let claimed = reply.claimed.into_iter().map(Entry::from).collect();
                self.emit(claimed, &cells.claimed, ctx);
            }
            Phase::New => {
                let block = self.wait.min(s.opts.block);
                let read = xreadgroup(&s.opts, count, Some(block), ">");
                let reply = con.req_command(&read)?;
                let ids = reply::entries(reply)?;
                self.wait = if ids.is_empty() {
                    (block * 2).min(s.opts.block)
                } else {
                    FIRST_BLOCK
                };
                self.emit(ids, &cells.read, ctx);
            }
        }
        Ok(())
    }

    /// Emits `ids` (skipping those still in flight here), counting them in `counter`.
    fn emit(
        &mut self,
        ids: Vec<Entry>,
        counter: &std::sync::atomic::AtomicU64,
        ctx: &mut Context<'_, Message<T>, ReadTurn>,
    ) {
        if ids.is_empty() {
            return;
        }
        let shared = &self.source.shared;
        let mut malformed = Vec::new();
        let mut emitted = 0u64;
        {
            let mut in_flight = shared.in_flight.lock();
            for entry in ids {
                if !in_flight.insert(EntryKey::of(&entry.id)) {
                    Cells::add(&shared.cells.skipped_in_flight, 1);
                    continue;
                }
                emitted += 1;
                let id = entry.id.clone();
                match (self.source.decode)(entry) {
                    Ok(data) => {
                        let mut m =
                            Message::new(data).acknowledger(self.source.ack.clone(), self.seq);
                        self.seq += 1;
                        m.metadata.insert(ID_KEY.to_owned(), id);
                        ctx.emit(m);
                        self.demand = self.demand.saturating_sub(1);
                    }
                    Err((id, why)) => malformed.push((id, why)),
                }
            }
            for (id, _) in &malformed {
                in_flight.remove(&EntryKey::of(id));
            }
        }
        Cells::add(counter, emitted);
        if !malformed.is_empty() {
            Cells::add(&shared.cells.malformed, malformed.len() as u64);
            warn!(
                "redis {}: {} entries did not decode (first: {})",
                shared.settings.opts.stream,
                malformed.len(),
                malformed[0].1
            );
            shared.fail(&malformed);
        }
    }
}

impl<T: Send + 'static> Producer for StreamProducer<T> {
    type Out = Message<T>;
    type Message = ReadTurn;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, Message<T>, ReadTurn>) {
        self.demand += demand;
        self.schedule(ctx, Duration::ZERO);
    }

    fn handle_message(&mut self, _: ReadTurn, ctx: &mut Context<'_, Message<T>, ReadTurn>) {
        self.scheduled = false;
        if self.demand == 0 || ctx.is_stop_requested() || ctx.is_finishing() {
            return;
        }
        let shared = self.source.shared.clone();
        if self.con.is_none() {
            if let Err(e) = self.connect() {
                Cells::add(&shared.cells.errors, 1);
                warn!("redis {}: cannot connect: {e}", shared.settings.opts.stream);
                let delay = self.backoff.next_delay();
                self.schedule(ctx, delay);
                return;
            }
        }
        match self.read_once(ctx) {
            Ok(()) => {
                self.backoff.reset();
                if self.demand > 0 {
                    self.schedule(ctx, Duration::ZERO);
                }
            }
            Err(e) => {
                Cells::add(&shared.cells.errors, 1);
                warn!("redis {}: read failed: {e}", shared.settings.opts.stream);
                if conn::is_fault(&e) {
                    self.con = None;
                } else if matches!(self.phase, Phase::OwnPending(_)) {
                    // A pending list the client cannot read (say, entries deleted from the
                    // stream meanwhile): claiming recovers them instead.
                    self.phase = Phase::Claim("0-0".into());
                }
                let delay = self.backoff.next_delay();
                self.schedule(ctx, delay);
            }
        }
    }
}
