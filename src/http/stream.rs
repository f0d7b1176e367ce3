//! [`HttpStream`]: a producer of the events of a streaming HTTP response, and
//! [`StreamBuilder`], its options, validated by [`StreamBuilder::build`].

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{error, info, warn};
use serde::de::DeserializeOwned;

use crate::{Context, Producer, Reason, Subscription};

use super::audience::Audience;
use super::backoff::{Backoff, Class, Retry};
use super::config::{Config, DecodeFn, ReadPolicy};
use super::counters::HttpStats;
use super::error::{Cause, HttpError};
use super::framing::{Frame, Framing};
use super::link::{HttpMsg, Link, Msg};
use super::reader::{Reader, Report};

/// The default largest frame: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// Connection options shared by the stream and polling builders.
#[derive(Clone, Debug)]
pub(crate) struct Net {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) input_buffer: usize,
    pub(crate) stop_on_cancel: bool,
    pub(crate) join_timeout: Duration,
}

impl Default for Net {
    fn default() -> Net {
        Net {
            headers: Vec::new(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            input_buffer: 128 * 1024,
            stop_on_cancel: false,
            join_timeout: Duration::from_secs(2),
        }
    }
}

impl Net {
    /// Checks every option; returns the agent they describe.
    pub(crate) fn validate(&self, url: &str) -> Result<ureq::Agent, HttpError> {
        check_url(url)?;
        for (name, value) in &self.headers {
            if ureq::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(HttpError::invalid(
                    "header",
                    format!("expected a valid header name, got {name:?}"),
                ));
            }
            if ureq::http::HeaderValue::from_str(value).is_err() {
                return Err(HttpError::invalid(
                    "header",
                    format!("expected a valid value for header {name}, got {value:?}"),
                ));
            }
        }
        for (option, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("stall_timeout", self.stall_timeout),
        ] {
            if d.is_zero() {
                return Err(HttpError::invalid(
                    option,
                    format!("expected {option} to be more than zero, got {d:?}"),
                ));
            }
        }
        if self.input_buffer < 1024 {
            return Err(HttpError::invalid(
                "input_buffer",
                format!(
                    "expected input_buffer to be at least 1024 bytes, got {}",
                    self.input_buffer
                ),
            ));
        }
        self.backoff.validate()?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(self.connect_timeout))
            .timeout_recv_response(Some(self.response_timeout))
            .timeout_per_read(Some(self.stall_timeout))
            .input_buffer_size(self.input_buffer)
            .build();
        Ok(config.into())
    }
}

/// Checks that `url` is an absolute http or https URL with a host, and a port from 1 to
/// 65535 if it names one. (`http::Uri` parses `:99999`, `:0` and a `:` with no port after
/// it, and ureq then connects to the scheme's default port: such a URL is refused here.)
pub(crate) fn check_url(url: &str) -> Result<(), HttpError> {
    let bad = || {
        HttpError::invalid(
            "url",
            format!("expected an absolute http or https url, got {url:?}"),
        )
    };
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => {}
        _ => return Err(bad()),
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    if let Some(port) = port_of(authority) {
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(HttpError::invalid(
                "url",
                format!("expected a port from 1 to 65535, got {port:?} in {url:?}"),
            ));
        }
    }
    Ok(())
}

/// The port written in an authority (`user@host:port`, `[v6]:port`), if a `:` introduces
/// one: possibly empty or out of range.
fn port_of(authority: &str) -> Option<&str> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let after_host = match host_port.strip_prefix('[') {
        Some(v6) => &v6[v6.find(']')? + 1..],
        None => host_port,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}

/// Starts building a producer of the events of a streaming response from `url`; see
/// [`StreamBuilder`].
///
/// # Examples
///
/// ```
/// use stageflow::http::{self, Framing};
///
/// // Checked now, connected when a consumer first asks.
/// let tweets = http::stream("https://api.x.com/2/tweets/sample/stream")
///     .bearer_token("my-token")
///     .framing(Framing::Ndjson)
///     .build()?;
/// let stats = tweets.stats();
/// let producer = stageflow::producer(tweets).name("tweets").spawn()?;
/// assert_eq!(stats.snapshot().requests, 0);
/// producer.stop();
/// producer.join();
///
/// let bad = http::stream("ftp://example.com").build().unwrap_err();
/// assert_eq!(bad.to_string(), "invalid http option url: expected an absolute http or https url, got \"ftp://example.com\"");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stream(url: impl Into<String>) -> StreamBuilder<serde_json::Value> {
    StreamBuilder {
        url: url.into(),
        net: Net::default(),
        framing: Framing::Ndjson,
        max_frame: DEFAULT_MAX_FRAME,
        policy: ReadPolicy::default(),
        read_size: 64 * 1024,
        finish_at_end: false,
        decode: json_decoder(),
    }
}

fn json_decoder<T: DeserializeOwned + Send + 'static>() -> DecodeFn<T> {
    Arc::new(|f: Frame<'_>| serde_json::from_slice(f.data()).map_err(|e| e.to_string()))
}

/// The options of an [`HttpStream`] producing events of type `T`. Made by [`stream`]; events
/// are [`serde_json::Value`] until [`json`](StreamBuilder::json),
/// [`bytes`](StreamBuilder::bytes), [`text`](StreamBuilder::text) or
/// [`decode_with`](StreamBuilder::decode_with) says otherwise.
pub struct StreamBuilder<T> {
    url: String,
    net: Net,
    framing: Framing,
    max_frame: usize,
    policy: ReadPolicy,
    read_size: usize,
    finish_at_end: bool,
    decode: DecodeFn<T>,
}

impl<T> fmt::Debug for StreamBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBuilder")
            .field("url", &self.url)
            .field("framing", &self.framing)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

macro_rules! net_setters {
    () => {
        /// Adds a request header (sent on every connection). Checked by `build`.
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.net.headers.push((name.into(), value.into()));
            self
        }

        /// Adds `Authorization: Bearer <token>`.
        ///
        /// ureq's own trace logging prints request headers: at `trace` level (through the
        /// `log` crate) it logs the bytes of every request, this header included, unredacted
        /// (the targets `ureq` and `ureq_proto`; its `debug` level redacts headers). A program
        /// that enables trace logging for them writes the token to its log.
        pub fn bearer_token(self, token: impl AsRef<str>) -> Self {
            let value = format!("Bearer {}", token.as_ref());
            self.header("Authorization", value)
        }

        /// When to reconnect after a failure, and when to give up. Defaults to
        /// [`Backoff::new`]: Twitter/X's rules, never giving up.
        pub fn backoff(mut self, backoff: Backoff) -> Self {
            self.net.backoff = backoff;
            self
        }

        /// The longest wait for a connection to be established (TLS included). Defaults to
        /// `10 s`.
        pub fn connect_timeout(mut self, timeout: Duration) -> Self {
            self.net.connect_timeout = timeout;
            self
        }

        /// The longest wait for a response's status and headers once connected. Defaults to
        /// `30 s`.
        pub fn response_timeout(mut self, timeout: Duration) -> Self {
            self.net.response_timeout = timeout;
            self
        }

        /// The stall detector: a read that gets no byte (not even a heartbeat) for this long
        /// drops the connection as a network error (ureq's `timeout_per_read`: time spent
        /// paused for demand does not count). Set it above the server's heartbeat interval
        /// (Twitter/X sends one every 20 s). Defaults to `60 s`.
        pub fn stall_timeout(mut self, timeout: Duration) -> Self {
            self.net.stall_timeout = timeout;
            self
        }

        /// ureq's input buffer, the most bytes it reads from the socket ahead of the
        /// decoder (beyond that, unread bytes wait in the kernel's socket buffer). At least
        /// 1024. Defaults to `131072` (128 KiB).
        pub fn input_buffer(mut self, bytes: usize) -> Self {
            self.net.input_buffer = bytes;
            self
        }

        /// How long stopping the producer waits for its I/O thread to exit once interrupted.
        /// A stop closes the connection, which cuts a blocked read or write at once, so the
        /// thread normally exits in moments; only a decoder of yours that is still running
        /// can hold it up, and after this long the thread is left to end by itself. A thread
        /// inside a request's connect (or DNS lookup), which nothing can interrupt, is not
        /// waited for at all: it ends by itself within the connect timeout. Zero never
        /// waits. Defaults to `2 s`.
        pub fn join_timeout(mut self, timeout: Duration) -> Self {
            self.net.join_timeout = timeout;
            self
        }

        /// Ends the producer ([`Reason::Normal`](crate::Reason::Normal)) once every consumer
        /// that subscribed has left, which closes the connection at once. Defaults to off:
        /// the producer waits for another consumer.
        pub fn stop_on_cancel(mut self) -> Self {
            self.net.stop_on_cancel = true;
            self
        }
    };
}
pub(crate) use net_setters;

impl<T: Send + 'static> StreamBuilder<T> {
    net_setters!();

    /// How the body is cut into frames. Defaults to [`Framing::Ndjson`].
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// The longest frame accepted, in bytes: a longer one is counted (`oversize`), never
    /// buffered whole, and its connection is dropped and reopened. At least 1. Defaults to
    /// `4194304` (4 MiB).
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// What to do when there is no demand. Defaults to [`ReadPolicy::PauseWhenNoDemand`].
    pub fn read_policy(mut self, policy: ReadPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The most bytes taken from the body per read. At least 1. Defaults to `65536`.
    pub fn read_size(mut self, bytes: usize) -> Self {
        self.read_size = bytes;
        self
    }

    /// Finishes the producer normally when the body ends, instead of reconnecting (for
    /// finite bodies: a file served over HTTP, a test). An unfinished frame at the end is
    /// dropped and logged, never emitted. Defaults to `false`.
    pub fn finish_at_end(mut self, finish: bool) -> Self {
        self.finish_at_end = finish;
        self
    }

    fn decoder<U>(self, decode: DecodeFn<U>) -> StreamBuilder<U> {
        StreamBuilder {
            url: self.url,
            net: self.net,
            framing: self.framing,
            max_frame: self.max_frame,
            policy: self.policy,
            read_size: self.read_size,
            finish_at_end: self.finish_at_end,
            decode,
        }
    }

    /// Events of any type serde can deserialize from each frame's JSON. A frame that does not
    /// fit is malformed (counted, logged, skipped).
    pub fn json<U: DeserializeOwned + Send + 'static>(self) -> StreamBuilder<U> {
        self.decoder(json_decoder())
    }

    /// Each frame's raw bytes, for users who parse themselves.
    pub fn bytes(self) -> StreamBuilder<Vec<u8>> {
        self.decoder(Arc::new(|f: Frame<'_>| Ok(f.data().to_vec())))
    }

    /// Each frame as text; a frame that is not UTF-8 is malformed.
    pub fn text(self) -> StreamBuilder<String> {
        self.decoder(Arc::new(|f: Frame<'_>| {
            std::str::from_utf8(f.data())
                .map(str::to_owned)
                .map_err(|e| e.to_string())
        }))
    }

    /// Events made by `decode` from each [`Frame`] (which carries the SSE `event` and `id`
    /// too). An `Err` marks the frame malformed: counted, logged with its message, skipped.
    pub fn decode_with<U, F>(self, decode: F) -> StreamBuilder<U>
    where
        F: Fn(Frame<'_>) -> Result<U, String> + Send + Sync + 'static,
    {
        self.decoder(Arc::new(decode))
    }

    /// Checks the options and makes the producer; hand it to
    /// [`stageflow::producer`](crate::producer). Nothing connects until a consumer asks.
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidOption`] naming the option: a URL that is not absolute http(s), a
    /// header that is not valid, a zero timeout, size or limit, bad backoff rules.
    pub fn build(self) -> Result<HttpStream<T>, HttpError> {
        let agent = self.net.validate(&self.url)?;
        for (option, v) in [("max_frame", self.max_frame), ("read_size", self.read_size)] {
            if v == 0 {
                return Err(HttpError::invalid(
                    option,
                    format!("expected {option} to be at least 1, got 0"),
                ));
            }
        }
        let config = Config {
            url: self.url,
            headers: self.net.headers.clone(),
            framing: self.framing,
            max_frame: self.max_frame,
            policy: self.policy,
            stall_timeout: self.net.stall_timeout,
            read_size: self.read_size,
            finish_at_end: self.finish_at_end,
        };
        Ok(HttpStream {
            config: Arc::new(config),
            decode: self.decode,
            agent,
            stats: HttpStats::default(),
            retry: Retry::new(self.net.backoff),
            credits: Arc::new(AtomicU64::new(0)),
            link: None,
            audience: Audience::new(self.net.stop_on_cancel),
            join_timeout: self.net.join_timeout,
        })
    }
}

/// A producer of the events of a streaming HTTP response (made by [`stream`]). It connects
/// when its consumers first ask, reads on a thread of its own only while they have demand
/// (see [`ReadPolicy`]), and reconnects by its [`Backoff`]. To the rest of the crate it is an
/// ordinary [`Producer`]: any dispatcher, buffer option, `stream`, `Topology` or cancel mode
/// works with it.
///
/// Stopping it, dropping the [`Topology`](crate::Topology) that holds it, or (with
/// `stop_on_cancel`) its last consumer leaving, closes the connection at once, even in the
/// middle of a blocked read, and joins the reader thread.
///
/// While the reader thread runs it holds a [`Mailbox`](crate::Mailbox) to the stage, so the
/// stage does not end merely because every handle was dropped: stop it (or use a
/// `Topology`).
pub struct HttpStream<T> {
    config: Arc<Config>,
    decode: DecodeFn<T>,
    agent: ureq::Agent,
    stats: HttpStats,
    retry: Retry,
    credits: Arc<AtomicU64>,
    link: Option<Link<Report<T>>>,
    audience: Audience,
    join_timeout: Duration,
}

impl<T> fmt::Debug for HttpStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStream")
            .field("url", &self.config.url)
            .field("framing", &self.config.framing)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> HttpStream<T> {
    /// The producer's live counters (take them before spawning it).
    pub fn stats(&self) -> HttpStats {
        self.stats.clone()
    }

    fn start(&mut self, ctx: &mut Context<'_, T, HttpMsg>) {
        let reader = Reader {
            config: self.config.clone(),
            decode: self.decode.clone(),
            agent: self.agent.clone(),
            credits: self.credits.clone(),
            stats: self.stats.clone(),
            name: ctx.name().to_owned(),
        };
        let name = format!("{}-reader", ctx.name());
        let join = self.join_timeout;
        match Link::spawn(name, self.agent.clone(), join, ctx.mailbox(), move |w| {
            reader.run(w)
        }) {
            Ok(link) => {
                link.go(self.config.url.clone());
                self.link = Some(link);
            }
            Err(e) => ctx.stop(Reason::error(format!(
                "http stream {}: could not start the reader thread: {e}",
                self.config.url
            ))),
        }
    }

    fn ended(&mut self, cause: Cause, retry: Option<Duration>, ctx: &mut Context<'_, T, HttpMsg>) {
        self.stats.error(cause.to_string());
        if self.config.finish_at_end && matches!(cause, Cause::End { .. }) {
            if let Cause::End { partial: 1.. } = cause {
                warn!("stage {}: {cause}", ctx.name());
            }
            ctx.finish();
            return;
        }
        let class = cause.class();
        match self.retry.failed(class) {
            None => {
                let message = format!(
                    "http stream {}: giving up after {} failures in a row; last: {cause}",
                    self.config.url,
                    self.retry.failures()
                );
                error!("stage {}: {message}", ctx.name());
                ctx.stop(Reason::Error(message));
            }
            Some(mut wait) => {
                if class == Class::Network {
                    wait = wait.max(retry.unwrap_or_default());
                }
                self.stats.backoff(wait);
                if matches!(cause, Cause::End { partial: 0 }) {
                    info!("stage {}: {cause}; reconnecting in {wait:?}", ctx.name());
                } else {
                    warn!("stage {}: {cause}; reconnecting in {wait:?}", ctx.name());
                }
                ctx.send_after(HttpMsg(Msg::Retry), wait);
            }
        }
    }
}

impl<T: Send + 'static> Producer for HttpStream<T> {
    type Out = T;
    type Message = HttpMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, HttpMsg>) {
        self.credits.fetch_add(demand as u64, Ordering::AcqRel);
        match &self.link {
            Some(link) => link.wake(),
            None => self.start(ctx),
        }
    }

    fn handle_message(&mut self, msg: HttpMsg, ctx: &mut Context<'_, T, HttpMsg>) {
        match msg.0 {
            Msg::Wake => {
                let Some(link) = &self.link else { return };
                let reports: Vec<_> = link.drain().collect();
                for report in reports {
                    match report {
                        Report::Events(events) => ctx.emit_all(events),
                        Report::Ended { cause, up, retry } => {
                            self.retry.connection_ended(up);
                            self.ended(cause, retry, ctx);
                        }
                    }
                }
            }
            Msg::Retry => {
                if let Some(link) = &self.link {
                    link.go(self.config.url.clone());
                }
            }
            Msg::Counters(reply) => {
                reply.send(self.stats.snapshot());
            }
        }
    }

    fn handle_subscribe(&mut self, _: &Subscription, _: &mut Context<'_, T, HttpMsg>) {
        self.audience.joined();
    }

    fn handle_cancel(&mut self, _: &Subscription, _: &Reason, ctx: &mut Context<'_, T, HttpMsg>) {
        if self.audience.left() {
            ctx.stop(Reason::Normal);
        }
    }

    fn format_discarded(&mut self, count: usize) -> bool {
        self.stats.add(|c| &c.discarded, count as u64);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn option_of(url: &str) -> Option<&'static str> {
        match check_url(url) {
            Ok(()) => None,
            Err(HttpError::InvalidOption { option, .. }) => Some(option),
        }
    }

    #[test]
    fn ports_out_of_range_zero_or_empty_are_refused() {
        for url in [
            "http://127.0.0.1:99999/",
            "http://127.0.0.1:65536/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:/",
            "https://user:pw@example.com:70000/x",
            "http://[::1]:0/",
            "http://[::1]:123456/",
        ] {
            assert_eq!(option_of(url), Some("url"), "{url}");
        }
        // What the check is for: `http::Uri` takes these, and ureq would use port 80.
        for url in ["http://h:99999/", "http://h:0/", "http://h:/"] {
            let uri: ureq::http::Uri = url.parse().unwrap();
            assert!(matches!(uri.port_u16(), None | Some(0)), "{url}");
        }
        let e = check_url("http://127.0.0.1:99999/")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"99999\""), "{e}");
    }

    #[test]
    fn ports_in_range_and_no_port_are_accepted() {
        for url in [
            "http://127.0.0.1/",
            "http://127.0.0.1:1/",
            "http://127.0.0.1:65535/",
            "https://user:pw@example.com/x",
            "https://user:pw@example.com:8443/x?a=b:c",
            "http://[::1]/",
            "http://[::1]:8080/",
        ] {
            assert_eq!(option_of(url), None, "{url}");
        }
    }
}
