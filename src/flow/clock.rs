//! [`Clock`]: where processing time comes from. Periodic windows and periodic triggers read
//! it; [`ManualClock`] lets tests move time by hand, so window tests never sleep.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of processing time, as a duration since an epoch of the clock's choosing.
///
/// Periodic windows are aligned on multiples of their period from that epoch, so every
/// partition reading the same clock cuts time at the same instants (and a departition can
/// merge their windows).
///
/// # For implementors
///
/// `now` must never go backwards; it is called from every reducer thread.
pub trait Clock: Send + Sync + 'static {
    /// The current time, since the clock's epoch.
    fn now(&self) -> Duration;
}

/// The system's wall clock: time since the Unix epoch (a clock set backwards reads as standing
/// still until it catches up).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that moves only when told to: clones share one time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::flow::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let seen_by_a_stage = clock.clone();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(seen_by_a_stage.now(), Duration::from_secs(5));
/// ```
#[derive(Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), Ordering::SeqCst);
    }

    /// Sets the clock to `to`, if that is later than its time (it never goes backwards).
    pub fn set(&self, to: Duration) {
        self.nanos.fetch_max(nanos(to), Ordering::SeqCst);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}
