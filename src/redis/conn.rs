//! Connections: opening one with timeouts, making sure the consumer group exists, telling a
//! connection fault from a command error, and the reconnect backoff (pure).

use std::time::Duration;

use redis::{Client, Connection, RedisError};

/// Opens a connection with `timeout` for connecting, reading and writing.
pub(crate) fn open(client: &Client, timeout: Duration) -> Result<Connection, RedisError> {
    let con = client.get_connection_with_timeout(timeout)?;
    con.set_read_timeout(Some(timeout))?;
    con.set_write_timeout(Some(timeout))?;
    Ok(con)
}

/// Creates `group` on `stream` at `start_id` (and the stream if missing); a group that
/// already exists is left as it is.
pub(crate) fn ensure_group(
    con: &mut Connection,
    stream: &str,
    group: &str,
    start_id: &str,
) -> Result<(), RedisError> {
    let created: Result<(), RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start_id)
        .arg("MKSTREAM")
        .query(con);
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Whether `e` means the connection is unusable (drop it and connect again), rather than a
/// command the server refused. A missing group (the server restarted without its data) also
/// asks for a new connection, which creates the group again.
pub(crate) fn is_fault(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.code() == Some("NOGROUP")
        || e.code() == Some("LOADING")
}

/// Exponential backoff between reconnection attempts: `first`, doubling, at most `max`;
/// [`reset`](Backoff::reset) after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The delay before the next attempt; the one after is twice as long.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(got, [50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(50));
    }
}
