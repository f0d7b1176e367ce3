//! Reconnect rules: [`Backoff`], the delays stream providers ask for by kind of failure, and
//! the pure arithmetic behind them (including `Retry-After` and `x-rate-limit-reset`). The
//! waits themselves are timers on the stage, never a sleeping thread.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::error::HttpError;

/// How long to wait before reconnecting, by what went wrong. The defaults are the rules of
/// the Twitter/X streaming endpoints:
///
/// * network errors (refused, reset, cut, a stall, an oversize frame, the body ending):
///   reconnect at once, then back off linearly, +250 ms a try, up to 16 s;
/// * HTTP errors (a status other than 2xx and 429/420): exponentially from 5 s, doubling, up
///   to 320 s;
/// * rate limiting (429, or Twitter's old 420): the server's `Retry-After` (seconds or a date)
///   or `x-rate-limit-reset` (a UNIX time) when present, else from 60 s, doubling, up to
///   960 s.
///
/// A random jitter of up to 10 % is added to every non-zero wait (never subtracted, so a
/// `Retry-After` is always honoured).
///
/// The counts start again only after a healthy connection: one that delivered a frame or a
/// heartbeat and stayed up for [`Backoff::healthy_after`] (30 s by default), as stream
/// providers ask. A server that cuts every connection a moment after its first frame is
/// therefore backed off like any other failing server, not reconnected at once forever. (A
/// polling producer's page that arrives whole is healthy: each page resets the counts.)
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use stageflow::http::Backoff;
///
/// let quick = Backoff::new()
///     .http(Duration::from_millis(100), Duration::from_secs(1))
///     .jitter(0.0)
///     .max_attempts(5);
/// # let _ = quick;
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    network_step: Duration,
    network_max: Duration,
    http_first: Duration,
    http_max: Duration,
    rate_first: Duration,
    rate_max: Duration,
    jitter: f64,
    max_attempts: Option<u32>,
    healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            network_step: Duration::from_millis(250),
            network_max: Duration::from_secs(16),
            http_first: Duration::from_secs(5),
            http_max: Duration::from_secs(320),
            rate_first: Duration::from_secs(60),
            rate_max: Duration::from_secs(960),
            jitter: 0.1,
            max_attempts: None,
            healthy_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The default rules (see [`Backoff`]).
    pub fn new() -> Backoff {
        Backoff::default()
    }

    /// Network errors: the first reconnect is immediate, each next one waits `step` more, up
    /// to `max`. Defaults to `250 ms` and `16 s`.
    pub fn network(mut self, step: Duration, max: Duration) -> Backoff {
        self.network_step = step;
        self.network_max = max;
        self
    }

    /// HTTP errors: wait `first`, then double, up to `max`. Defaults to `5 s` and `320 s`.
    pub fn http(mut self, first: Duration, max: Duration) -> Backoff {
        self.http_first = first;
        self.http_max = max;
        self
    }

    /// Rate limiting without a `Retry-After` or `x-rate-limit-reset`: wait `first`, then
    /// double, up to `max`. Defaults to `60 s` and `960 s`.
    pub fn rate_limit(mut self, first: Duration, max: Duration) -> Backoff {
        self.rate_first = first;
        self.rate_max = max;
        self
    }

    /// The largest random fraction added to a wait, from 0.0 (none) to 1.0 (up to double).
    /// Defaults to `0.1`.
    pub fn jitter(mut self, fraction: f64) -> Backoff {
        self.jitter = fraction;
        self
    }

    /// Gives up after `attempts` failures in a row: the producer then ends with a
    /// [`Reason::Error`](crate::Reason::Error) saying what failed last. At least 1. Defaults
    /// to never giving up.
    pub fn max_attempts(mut self, attempts: u32) -> Backoff {
        self.max_attempts = Some(attempts);
        self
    }

    /// How long a streaming connection must stay up (and deliver at least a frame or a
    /// heartbeat) before it counts as healthy, which resets the failure counts: the next drop
    /// then reconnects at once again. A connection that ends sooner counts as one more
    /// failure in a row, however many frames it delivered. Zero makes any frame or heartbeat
    /// reset the counts. Defaults to `30 s`.
    pub fn healthy_after(mut self, up: Duration) -> Backoff {
        self.healthy_after = up;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), HttpError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(HttpError::invalid(
                "backoff.jitter",
                format!("expected jitter between 0.0 and 1.0, got {}", self.jitter),
            ));
        }
        if self.max_attempts == Some(0) {
            return Err(HttpError::invalid(
                "backoff.max_attempts",
                "expected max_attempts to be at least 1, got 0".into(),
            ));
        }
        for (option, first, max) in [
            ("backoff.network", self.network_step, self.network_max),
            ("backoff.http", self.http_first, self.http_max),
            ("backoff.rate_limit", self.rate_first, self.rate_max),
        ] {
            if first > max {
                return Err(HttpError::invalid(
                    option,
                    format!(
                        "expected the first wait ({first:?}) to be at most the largest ({max:?})"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The kind of failure, which picks the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Network,
    Http,
    /// With the wait the server asked for, if it said.
    RateLimited(Option<Duration>),
}

/// Failures in a row, per kind, and the jitter's random numbers.
#[derive(Debug)]
pub(crate) struct Retry {
    rules: Backoff,
    network: u32,
    http: u32,
    rate: u32,
    failures: u32,
    rng: u64,
}

impl Retry {
    pub(crate) fn new(rules: Backoff) -> Retry {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Retry {
            rules,
            network: 0,
            http: 0,
            rate: 0,
            failures: 0,
            rng: h.finish() | 1,
        }
    }

    /// A streaming connection ended after it had been `up` that long since its response, or
    /// `None` if it delivered nothing (not a frame, not a heartbeat): the counts start again
    /// if it was up for the healthy period.
    pub(crate) fn connection_ended(&mut self, up: Option<Duration>) {
        if up.is_some_and(|up| up >= self.rules.healthy_after) {
            self.progressed();
        }
    }

    /// A request succeeded (a polling page): start counting again.
    pub(crate) fn progressed(&mut self) {
        self.network = 0;
        self.http = 0;
        self.rate = 0;
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// One more failure: the wait before the next try, or `None` to give up.
    pub(crate) fn failed(&mut self, class: Class) -> Option<Duration> {
        self.failures += 1;
        if self.rules.max_attempts.is_some_and(|m| self.failures >= m) {
            return None;
        }
        let r = &self.rules;
        let base = match class {
            Class::Network => {
                self.network += 1;
                r.network_step
                    .saturating_mul(self.network - 1)
                    .min(r.network_max)
            }
            Class::Http => {
                self.http += 1;
                doubled(r.http_first, self.http - 1).min(r.http_max)
            }
            Class::RateLimited(hint) => {
                self.rate += 1;
                hint.unwrap_or_else(|| doubled(r.rate_first, self.rate - 1).min(r.rate_max))
            }
        };
        Some(base + base.mul_f64(self.rules.jitter * self.unit()))
    }

    /// A number in [0, 1) (xorshift64).
    fn unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn doubled(first: Duration, times: u32) -> Duration {
    first.saturating_mul(1u32.checked_shl(times.min(31)).unwrap_or(u32::MAX))
}

/// [`retry_hint`] from a response's headers, now.
pub(crate) fn response_retry_hint(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    retry_hint(
        header("retry-after"),
        header("x-rate-limit-reset"),
        SystemTime::now(),
    )
}

/// The wait a rate-limited response asks for: `Retry-After` (delay-seconds or an HTTP date),
/// else `x-rate-limit-reset` (a UNIX time in seconds). A time already past means no wait.
pub(crate) fn retry_hint(
    retry_after: Option<&str>,
    rate_limit_reset: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    let until = |t: SystemTime| t.duration_since(now).unwrap_or(Duration::ZERO);
    if let Some(v) = retry_after.map(str::trim) {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Some(t) = http_date(v) {
            return Some(until(t));
        }
    }
    let reset = rate_limit_reset?.trim().parse::<u64>().ok()?;
    Some(until(UNIX_EPOCH + Duration::from_secs(reset)))
}

/// Parses an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT` (the form HTTP senders must use).
fn http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms[..] else { return None };
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> Backoff {
        Backoff::new().jitter(0.0)
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn network_errors_reconnect_at_once_then_back_off_linearly_to_16s() {
        let mut r = Retry::new(exact());
        let waits: Vec<_> = (0..70).map(|_| r.failed(Class::Network).unwrap()).collect();
        assert_eq!(waits[0], Duration::ZERO);
        assert_eq!(waits[1], Duration::from_millis(250));
        assert_eq!(waits[2], Duration::from_millis(500));
        assert_eq!(waits[64], Duration::from_secs(16));
        assert_eq!(waits[69], Duration::from_secs(16));
    }

    #[test]
    fn http_errors_double_from_5s_to_320s() {
        let mut r = Retry::new(exact());
        let waits: Vec<_> = (0..9)
            .map(|_| r.failed(Class::Http).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 320, 320]);
    }

    #[test]
    fn rate_limits_honour_the_hint_else_double_from_a_minute() {
        let mut r = Retry::new(exact());
        assert_eq!(r.failed(Class::RateLimited(secs(3))), secs(3));
        assert_eq!(r.failed(Class::RateLimited(None)), secs(120));
        assert_eq!(r.failed(Class::RateLimited(None)), secs(240));
        r.progressed();
        assert_eq!(r.failed(Class::RateLimited(None)), secs(60));
    }

    #[test]
    fn progress_resets_and_max_attempts_gives_up() {
        let mut r = Retry::new(exact().max_attempts(3));
        assert!(r.failed(Class::Http).is_some());
        assert!(r.failed(Class::Network).is_some());
        assert_eq!(r.failed(Class::Http), None, "third failure in a row");
        r.progressed();
        assert_eq!(r.failed(Class::Http), secs(5));
    }

    #[test]
    fn only_a_connection_up_for_the_healthy_period_resets_the_counts() {
        let mut r = Retry::new(exact().healthy_after(Duration::from_secs(30)));
        // A server that cuts every connection a moment after its first frame.
        let waits: Vec<_> = (0..5)
            .map(|_| {
                r.connection_ended(Some(Duration::from_millis(40)));
                r.failed(Class::Network).unwrap().as_millis()
            })
            .collect();
        assert_eq!(waits, [0, 250, 500, 750, 1000], "the waits grow");
        // A connection that delivered nothing resets nothing, however long it lasted.
        r.connection_ended(None);
        assert_eq!(r.failed(Class::Network), Some(Duration::from_millis(1250)));
        // Up for the healthy period: the next drop reconnects at once again.
        r.connection_ended(Some(Duration::from_secs(30)));
        assert_eq!(r.failed(Class::Network), Some(Duration::ZERO));
        assert_eq!(r.failures(), 1);
        // Zero: any frame or heartbeat resets (the rule before `healthy_after`).
        let mut r = Retry::new(exact().healthy_after(Duration::ZERO));
        for _ in 0..3 {
            r.connection_ended(Some(Duration::ZERO));
            assert_eq!(r.failed(Class::Network), Some(Duration::ZERO));
        }
        assert_eq!(Backoff::new().healthy_after, Duration::from_secs(30));
    }

    #[test]
    fn jitter_only_adds_and_stays_within_its_fraction() {
        let mut r = Retry::new(Backoff::new().jitter(0.5));
        for _ in 0..200 {
            r.progressed();
            let w = r.failed(Class::RateLimited(secs(10))).unwrap();
            assert!(
                w >= Duration::from_secs(10) && w < Duration::from_secs(15),
                "{w:?}"
            );
        }
        assert_eq!(r.failed(Class::Network), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_seconds_date_and_rate_limit_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(retry_hint(Some(" 7 "), None, now), secs(7));
        assert_eq!(
            retry_hint(Some("Sun, 06 Nov 1994 08:50:07 GMT"), None, now),
            secs(30)
        );
        assert_eq!(
            retry_hint(Some("Sat, 05 Nov 1994 08:49:37 GMT"), None, now),
            secs(0),
            "a date in the past: no wait"
        );
        assert_eq!(retry_hint(None, Some("784111800"), now), secs(23));
        assert_eq!(retry_hint(Some("soon"), Some("784111800"), now), secs(23));
        assert_eq!(retry_hint(Some("soon"), None, now), None);
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
        assert_eq!(
            http_date("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(UNIX_EPOCH + Duration::from_secs(951_825_600))
        );
    }

    #[test]
    fn bad_rules_are_refused_naming_the_option() {
        let e = Backoff::new().jitter(2.0).validate().unwrap_err();
        assert!(
            e.to_string().contains("jitter") && e.to_string().contains('2'),
            "{e}"
        );
        let e = Backoff::new().max_attempts(0).validate().unwrap_err();
        assert!(e.to_string().contains("max_attempts"), "{e}");
        let e = Backoff::new()
            .http(Duration::from_secs(9), Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(matches!(
            e,
            HttpError::InvalidOption {
                option: "backoff.http",
                ..
            }
        ));
    }
}
