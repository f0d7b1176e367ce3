//! The rules a [`Group`](super::Group) restarts by, pure and free of threads: which ends restart
//! a child ([`RestartPolicy`]), which siblings restart with it ([`Strategy`]), how many
//! restarts are too many ([`Intensity`], and its sliding window), and how long to wait first
//! ([`Backoff`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::Reason;

/// When a child is started again after it ends by itself (OTP's `restart` of a child spec).
/// An end the group asked for (a drain, a stop, a sibling's restart) is never a reason to
/// restart under this policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RestartPolicy {
    /// Always restarted, whatever ended it, a normal finish included (OTP's `:permanent`).
    /// The default. A finite stage that finishes normally should be `Transient`.
    #[default]
    Permanent,
    /// Restarted only after an abnormal end: a panic, an error, a failure that reached it
    /// through a subscription. Not after [`Reason::Normal`] or [`Reason::Shutdown`] (OTP's
    /// `:transient`).
    Transient,
    /// Never restarted (OTP's `:temporary`). A strategy that restarts siblings does not
    /// restart it either.
    Temporary,
}

impl RestartPolicy {
    /// Whether a child with this policy is restarted after it ended by itself with `reason`.
    pub fn restarts_after(self, reason: &Reason) -> bool {
        match self {
            RestartPolicy::Permanent => true,
            RestartPolicy::Transient => !reason.is_normal(),
            RestartPolicy::Temporary => false,
        }
    }
}

/// Which children restart when one must (OTP's supervisor strategies). Children are ordered as
/// they were added to the group; in a pipeline that is from the sources to the sinks, so the
/// children after one are those downstream of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Only the child that ended. Its consumers in the group stay up and subscribe to its new
    /// incarnation. The default.
    #[default]
    OneForOne,
    /// The child that ended and every child added after it: those are stopped, then all are
    /// started again in order (OTP's `:rest_for_one`, which GenStage recommends for a producer
    /// and its consumers).
    RestForOne,
    /// Every child: the others are stopped, then all are started again in order.
    OneForAll,
}

impl Strategy {
    /// The indexes of the children that restart when child `failed` of `len` must.
    pub(crate) fn affected(self, failed: usize, len: usize) -> std::ops::Range<usize> {
        match self {
            Strategy::OneForOne => failed..failed + 1,
            Strategy::RestForOne => failed..len,
            Strategy::OneForAll => 0..len,
        }
    }
}

/// At most `max_restarts` restarts within `period`; one more ends the group with a reason that
/// names the child and its last failure, instead of a restart storm (OTP's `max_restarts` and
/// `max_seconds`). A restart of several children at once (a strategy's) counts once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Intensity {
    /// Restarts allowed within `period`; 0 ends the group at the first failure that would
    /// restart a child.
    pub max_restarts: usize,
    /// The sliding window the restarts are counted in.
    pub period: Duration,
}

impl Default for Intensity {
    /// 3 restarts in 5 seconds: OTP's and Broadway's defaults.
    fn default() -> Intensity {
        Intensity::new(3, Duration::from_secs(5))
    }
}

impl Intensity {
    /// At most `max_restarts` within `period`.
    pub fn new(max_restarts: usize, period: Duration) -> Intensity {
        Intensity {
            max_restarts,
            period,
        }
    }
}

/// The restarts within the last [`Intensity::period`], to decide whether one more is allowed.
#[derive(Debug)]
pub(crate) struct Window {
    intensity: Intensity,
    restarts: VecDeque<Instant>,
}

impl Window {
    pub(crate) fn new(intensity: Intensity) -> Window {
        Window {
            intensity,
            restarts: VecDeque::new(),
        }
    }

    /// Records a restart at `now` if the intensity allows one more; `false` if it does not.
    pub(crate) fn admit(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.restarts.front() {
            if now.saturating_duration_since(first) >= self.intensity.period {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= self.intensity.max_restarts {
            return false;
        }
        self.restarts.push_back(now);
        true
    }

    /// Restarts within the window, the last admitted included.
    pub(crate) fn recent(&self) -> usize {
        self.restarts.len()
    }
}

/// How long a child waits before it is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backoff {
    /// The same wait before every restart (zero: at once, as OTP does).
    Fixed(Duration),
    /// `first` before the first restart within the intensity period, doubling with each
    /// further restart in it, never more than `max`.
    Exponential {
        /// The wait before the first restart.
        first: Duration,
        /// The longest wait.
        max: Duration,
    },
}

impl Default for Backoff {
    /// No wait: `Backoff::Fixed(Duration::ZERO)`.
    fn default() -> Backoff {
        Backoff::Fixed(Duration::ZERO)
    }
}

impl Backoff {
    /// The wait before a restart that is the `nth` (from 1) within the intensity period.
    pub fn delay(self, nth: usize) -> Duration {
        match self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { first, max } => {
                let doublings = nth.saturating_sub(1).min(31) as u32;
                first.saturating_mul(1 << doublings).min(max)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_follow_otp() {
        let panicked = Reason::Panicked("boom".into());
        for reason in [Reason::Normal, Reason::Shutdown, panicked.clone()] {
            assert!(RestartPolicy::Permanent.restarts_after(&reason));
            assert!(!RestartPolicy::Temporary.restarts_after(&reason));
        }
        assert!(RestartPolicy::Transient.restarts_after(&panicked));
        assert!(RestartPolicy::Transient.restarts_after(&Reason::error("x")));
        assert!(!RestartPolicy::Transient.restarts_after(&Reason::Normal));
        assert!(!RestartPolicy::Transient.restarts_after(&Reason::Shutdown));
    }

    #[test]
    fn strategies_pick_the_affected_children() {
        assert_eq!(Strategy::OneForOne.affected(1, 4), 1..2);
        assert_eq!(Strategy::RestForOne.affected(1, 4), 1..4);
        assert_eq!(Strategy::OneForAll.affected(1, 4), 0..4);
    }

    #[test]
    fn the_window_admits_max_restarts_per_period() {
        let t0 = Instant::now();
        let mut w = Window::new(Intensity::new(2, Duration::from_secs(5)));
        assert!(w.admit(t0));
        assert!(w.admit(t0 + Duration::from_secs(1)));
        assert!(!w.admit(t0 + Duration::from_secs(2)));
        // The first restart leaves the window 5 s after it.
        assert!(w.admit(t0 + Duration::from_secs(5)));
        assert_eq!(w.recent(), 2);
        assert!(!Window::new(Intensity::new(0, Duration::from_secs(1))).admit(t0));
    }

    #[test]
    fn backoff_doubles_up_to_its_max() {
        let b = Backoff::Exponential {
            first: Duration::from_millis(10),
            max: Duration::from_millis(50),
        };
        let ms: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 50, 50]);
        assert_eq!(Backoff::default().delay(7), Duration::ZERO);
        assert_eq!(b.delay(usize::MAX), Duration::from_millis(50));
    }
}
