//! Rate limiting: at most `allowed` messages per `interval` for the whole pipeline, as a pure
//! token window the processors draw their demand from (no threads here; time is passed in).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::error::PipelineError;

/// At most `allowed_messages` per `interval`, across all producers of a pipeline (Broadway's
/// `rate_limiting: [allowed_messages:, interval:]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages allowed per interval; at least 1.
    pub allowed_messages: usize,
    /// The interval; at least 1 ms.
    pub interval: Duration,
}

impl RateLimit {
    /// `allowed_messages` per `interval`.
    pub fn new(allowed_messages: usize, interval: Duration) -> RateLimit {
        RateLimit {
            allowed_messages,
            interval,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), PipelineError> {
        if self.allowed_messages == 0 {
            return Err(PipelineError::invalid(
                "rate_limiting.allowed_messages",
                "expected allowed_messages to be at least 1, got 0",
            ));
        }
        if self.interval < Duration::from_millis(1) {
            return Err(PipelineError::invalid(
                "rate_limiting.interval",
                format!(
                    "expected interval to be at least 1ms, got {:?}",
                    self.interval
                ),
            ));
        }
        Ok(())
    }
}

/// The shared window. Demand is charged when it is *asked*; demand asked in one window and
/// not yet delivered is charged again to the next, so that what is delivered in any window
/// never exceeds `allowed_messages`.
#[derive(Debug)]
pub(crate) struct Limiter {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    limit: RateLimit,
    start: Instant,
    used: usize,
    /// Asked for and not yet delivered, all processors together.
    outstanding: usize,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Limiter {
        Limiter {
            state: Mutex::new(Window {
                limit,
                start: now,
                used: 0,
                outstanding: 0,
            }),
        }
    }

    /// Takes up to `want` tokens; returns how many, and when the window next resets.
    pub(crate) fn take(&self, want: usize, now: Instant) -> (usize, Instant) {
        let mut w = self.state.lock();
        w.roll(now);
        let granted = want.min(w.limit.allowed_messages.saturating_sub(w.used));
        w.used += granted;
        w.outstanding += granted;
        (granted, w.start + w.limit.interval)
    }

    /// `n` messages asked for have arrived.
    pub(crate) fn delivered(&self, n: usize) {
        let mut w = self.state.lock();
        w.outstanding = w.outstanding.saturating_sub(n);
    }

    /// `n` messages asked for will never arrive (their subscription ended).
    pub(crate) fn forget(&self, n: usize) {
        self.delivered(n);
    }

    pub(crate) fn get(&self) -> RateLimit {
        self.state.lock().limit
    }

    /// Changes the limit; it applies to the current window at once.
    pub(crate) fn set(&self, limit: RateLimit) {
        self.state.lock().limit = limit;
    }
}

impl Window {
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.start);
        if elapsed >= self.limit.interval {
            let windows = elapsed.as_nanos() / self.limit.interval.as_nanos();
            let step = self.limit.interval.as_nanos() * windows;
            self.start += Duration::from_nanos(u64::try_from(step).unwrap_or(u64::MAX));
            self.used = self.outstanding;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_at_most_the_limit_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let l = Limiter::new(RateLimit::new(10, ms(100)), t0);
        assert_eq!(l.take(6, t0).0, 6);
        assert_eq!(l.take(6, t0 + ms(10)).0, 4);
        let (n, reset) = l.take(6, t0 + ms(20));
        assert_eq!((n, reset), (0, t0 + ms(100)));
        l.delivered(10);
        // A new window: everything delivered, the full limit again.
        assert_eq!(l.take(20, t0 + ms(150)).0, 10);
        // Undelivered demand is charged to the next window.
        l.delivered(4);
        assert_eq!(l.take(20, t0 + ms(250)).0, 4);
        // Windows stay aligned on the interval.
        assert_eq!(l.take(1, t0 + ms(299)).1, t0 + ms(300));
    }

    #[test]
    fn the_limit_changes_at_once() {
        let t0 = Instant::now();
        let l = Limiter::new(RateLimit::new(2, Duration::from_secs(1)), t0);
        assert_eq!(l.take(5, t0).0, 2);
        l.set(RateLimit::new(5, Duration::from_secs(1)));
        assert_eq!(l.take(5, t0).0, 3);
        assert_eq!(l.get().allowed_messages, 5);
    }
}
