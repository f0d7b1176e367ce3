//! The acknowledger of a stream source: `XACK` in groups for successful entries; failed ones
//! left pending, or moved to the dead-letter stream and acknowledged after N deliveries. It
//! owns one connection, apart from the producers' (which block in `XREADGROUP`).

use std::sync::Arc;
use std::thread;
use std::time::Instant;

use log::{error, warn};
use redis::streams::{StreamPendingCountReply, StreamRangeReply};
use redis::{Connection, RedisError};

use super::conn::{self, Backoff};
use super::counters::Cells;
use super::shared::{EntryKey, Settings, Shared, ID_KEY};
use crate::pipeline::{Acked, Acknowledger, Status};

/// The fields a dead-letter entry gets besides the original ones.
pub(crate) const DEAD_ID: &str = "stageflow.id";
pub(crate) const DEAD_REASON: &str = "stageflow.reason";
pub(crate) const DEAD_DELIVERIES: &str = "stageflow.deliveries";

/// Acknowledges a source's entries: see the module docs.
pub(crate) struct Acker(pub(crate) Arc<Shared>);

impl Acknowledger for Acker {
    fn ack(&self, successful: Vec<Acked>, failed: Vec<Acked>) {
        let ok: Vec<String> = successful
            .into_iter()
            .filter_map(|mut a| a.metadata.remove(ID_KEY))
            .collect();
        let failed: Vec<(String, String)> = failed
            .into_iter()
            .filter_map(|mut a| {
                let reason = match &a.status {
                    Status::Failed(r) => r.clone(),
                    other => other.to_string(),
                };
                a.metadata.remove(ID_KEY).map(|id| (id, reason))
            })
            .collect();
        if !ok.is_empty() {
            self.0.xack(&ok);
        }
        if !failed.is_empty() {
            self.0.fail(&failed);
        }
        let mut in_flight = self.0.in_flight.lock();
        for id in ok.iter().chain(failed.iter().map(|(id, _)| id)) {
            in_flight.remove(&EntryKey::of(id));
        }
    }
}

impl Shared {
    /// `XACK`s `ids`, retrying through connection faults until the acknowledgement timeout.
    pub(crate) fn xack(&self, ids: &[String]) {
        let s = &self.settings;
        let done = self.with_ack_connection(|con| {
            redis::cmd("XACK")
                .arg(&s.opts.stream)
                .arg(&s.opts.group)
                .arg(ids)
                .query::<u64>(con)
        });
        match done {
            Some(n) => Cells::add(&self.cells.acked, n),
            None => Cells::add(&self.cells.ack_failures, ids.len() as u64),
        }
    }

    /// Failed entries (`(id, reason)`): dead-lettered once delivered often enough (with a
    /// dead-letter stream), else left pending for a retry after the idle time.
    pub(crate) fn fail(&self, failed: &[(String, String)]) {
        Cells::add(&self.cells.failed, failed.len() as u64);
        let Some((dead, after)) = self.settings.opts.dead_letter.clone() else {
            Cells::add(&self.cells.left_pending, failed.len() as u64);
            return;
        };
        for (id, reason) in failed {
            let outcome = self.with_ack_connection(|con| {
                dead_letter(con, &self.settings, &dead, after, id, reason)
            });
            match outcome {
                Some(true) => Cells::add(&self.cells.dead_lettered, 1),
                Some(false) => Cells::add(&self.cells.left_pending, 1),
                None => Cells::add(&self.cells.ack_failures, 1),
            }
        }
    }

    /// Runs `f` on the acknowledger's connection, connecting (again) as needed, retrying
    /// connection faults with backoff until the acknowledgement timeout. `None` when it gave
    /// up (logged).
    fn with_ack_connection<R>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<R, RedisError>,
    ) -> Option<R> {
        let s: &Settings = &self.settings;
        let deadline = Instant::now() + s.opts.ack_timeout;
        let mut backoff = Backoff::new(s.opts.backoff.0, s.opts.backoff.1);
        let mut slot = self.ack_con.lock();
        loop {
            if slot.0.is_none() {
                match conn::open(&s.client, s.opts.timeout) {
                    Ok(c) => {
                        if slot.1 {
                            Cells::add(&self.cells.reconnects, 1);
                        }
                        slot.0 = Some(c);
                        slot.1 = true;
                    }
                    Err(e) => {
                        Cells::add(&self.cells.errors, 1);
                        warn!("redis {}: acknowledger cannot connect: {e}", s.opts.stream);
                    }
                }
            }
            if let Some(con) = slot.0.as_mut() {
                match f(con) {
                    Ok(r) => return Some(r),
                    Err(e) => {
                        Cells::add(&self.cells.errors, 1);
                        if conn::is_fault(&e) {
                            warn!("redis {}: acknowledger connection lost: {e}", s.opts.stream);
                            slot.0 = None;
                        } else {
                            error!("redis {}: acknowledgement refused: {e}", s.opts.stream);
                            return None;
                        }
                    }
                }
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay > deadline {
                error!(
                    "redis {}: gave up acknowledging after {:?}; the entries stay pending",
                    s.opts.stream, s.opts.ack_timeout
                );
                return None;
            }
            thread::sleep(delay);
        }
    }
}

/// Moves entry `id` to the dead-letter stream and acknowledges it, atomically, if it has been
/// delivered `after` times or more; `Ok(false)` if it stays pending.
fn dead_letter(
    con: &mut Connection,
    s: &Settings,
    dead: &str,
    after: u64,
    id: &str,
    reason: &str,
) -> Result<bool, RedisError> {
    let pending: StreamPendingCountReply = redis::cmd("XPENDING")
        .arg(&s.opts.stream)
        .arg(&s.opts.group)
        .arg(id)
        .arg(id)
        .arg(1)
        .query(con)?;
    let Some(p) = pending.ids.first() else {
        return Ok(false); // acknowledged meanwhile (by a consumer that claimed it)
    };
    if (p.times_delivered as u64) < after {
        return Ok(false);
    }
    let entry: StreamRangeReply = redis::cmd("XRANGE")
        .arg(&s.opts.stream)
        .arg(id)
        .arg(id)
        .query(con)?;
    let mut fields: Vec<(String, Vec<u8>)> = entry
        .ids
        .into_iter()
        .next()
        .map(|e| {
            super::entry::Entry::from_reply(e)
                .fields
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    fields.push((DEAD_ID.into(), id.as_bytes().to_vec()));
    fields.push((DEAD_REASON.into(), reason.as_bytes().to_vec()));
    fields.push((
        DEAD_DELIVERIES.into(),
        p.times_delivered.to_string().into_bytes(),
    ));
    let (_, acked): (String, u64) = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(dead)
        .arg("*")
        .arg(&fields)
        .cmd("XACK")
        .arg(&s.opts.stream)
        .arg(&s.opts.group)
        .arg(id)
        .query(con)?;
    Ok(acked == 1)
}
