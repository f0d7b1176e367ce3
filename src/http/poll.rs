//! [`HttpPoll`]: a producer that fetches JSON pages from a URL built from a cursor (the
//! "search recent" story), on a fetcher thread of its own; [`PollBuilder`], its options.
//!
//! It serves demand from the events it holds, fetches again only when demand exceeds them,
//! and after a page with no events waits [`PollBuilder::interval`] (a timer on the stage)
//! before asking again. Failures back off by the same [`Backoff`] rules as a stream.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use log::{error, warn};
use serde_json::Value;

use crate::{Context, Producer, Reason, Subscription};

use super::audience::Audience;
use super::backoff::{response_retry_hint, Backoff, Retry};
use super::counters::HttpStats;
use super::error::{Cause, HttpError};
use super::link::{Ctl, HttpMsg, Link, Msg, Wire};
use super::stream::{check_url, net_setters, Net};

/// What one page gave: its events, and the cursor for the next request (`None` keeps the
/// current one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The events, in the order to emit them.
    pub events: Vec<T>,
    /// The next cursor (`since_id`, say), if the page moved it.
    pub cursor: Option<C>,
}

impl<T, C> Page<T, C> {
    /// A page of `events` moving the cursor to `cursor`.
    pub fn new(events: Vec<T>, cursor: Option<C>) -> Page<T, C> {
        Page { events, cursor }
    }
}

type UrlFn<C> = Box<dyn FnMut(Option<&C>) -> String + Send>;
type PageFn<T, C> = Box<dyn FnMut(Value) -> Result<Page<T, C>, String> + Send>;

/// The default largest page body: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// Starts building a polling producer: `url` makes the request's URL from the cursor (`None`
/// before the first page moved it), `page` turns a response's JSON into events and the next
/// cursor (an `Err` is a malformed page: counted, logged, and the producer waits an interval).
///
/// # Examples
///
/// ```
/// use stageflow::http::{self, Page};
///
/// let base = "https://api.x.com/2/tweets/search/recent?query=rust";
/// let search = http::poll(
///     move |since: Option<&String>| match since {
///         Some(id) => format!("{base}&since_id={id}"),
///         None => base.to_owned(),
///     },
///     |body: serde_json::Value| {
///         let texts = body["data"].as_array().into_iter().flatten()
///             .filter_map(|t| t["text"].as_str().map(str::to_owned))
///             .collect();
///         let newest = body["meta"]["newest_id"].as_str().map(str::to_owned);
///         Ok(Page::new(texts, newest))
///     },
/// )
/// .bearer_token("my-token")
/// .build()?;
/// # let _: stageflow::http::HttpPoll<String, String> = search;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn poll<T, C, U, P>(url: U, page: P) -> PollBuilder<T, C>
where
    U: FnMut(Option<&C>) -> String + Send + 'static,
    P: FnMut(Value) -> Result<Page<T, C>, String> + Send + 'static,
{
    PollBuilder {
        url: Box::new(url),
        page: Box::new(page),
        cursor: None,
        net: Net::default(),
        interval: Duration::from_secs(10),
        max_body: DEFAULT_MAX_BODY,
    }
}

/// The options of an [`HttpPoll`]; made by [`poll`].
pub struct PollBuilder<T, C> {
    url: UrlFn<C>,
    page: PageFn<T, C>,
    cursor: Option<C>,
    net: Net,
    interval: Duration,
    max_body: usize,
}

impl<T, C> fmt::Debug for PollBuilder<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollBuilder")
            .field("interval", &self.interval)
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static, C: Send + 'static> PollBuilder<T, C> {
    net_setters!();

    /// How long to wait after a page with no events before asking again. More than zero.
    /// Defaults to `10 s`.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The longest response body read, in bytes; a longer one counts as `oversize` and backs
    /// off as a network error. At least 1. Defaults to `8388608` (8 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The cursor of the first request. Defaults to none.
    pub fn cursor(mut self, cursor: C) -> Self {
        self.cursor = Some(cursor);
        self
    }

    /// Checks the options (and the first URL) and makes the producer.
    ///
    /// # Errors
    ///
    /// [`HttpError::InvalidOption`] naming the option, as for
    /// [`StreamBuilder::build`](super::StreamBuilder::build), plus `interval` and
    /// `max_body`.
    pub fn build(mut self) -> Result<HttpPoll<T, C>, HttpError> {
        let first = (self.url)(self.cursor.as_ref());
        let agent = self.net.validate(&first)?;
        if self.interval.is_zero() {
            return Err(HttpError::invalid(
                "interval",
                "expected interval to be more than zero, got 0ns".into(),
            ));
        }
        if self.max_body == 0 {
            return Err(HttpError::invalid(
                "max_body",
                "expected max_body to be at least 1, got 0".into(),
            ));
        }
        Ok(HttpPoll {
            url: self.url,
            page: self.page,
            cursor: self.cursor,
            held: VecDeque::new(),
            demand: 0,
            busy: false,
            headers: Arc::new(self.net.headers.clone()),
            interval: self.interval,
            max_body: self.max_body,
            stall: self.net.stall_timeout,
            agent,
            stats: HttpStats::default(),
            retry: Retry::new(self.net.backoff),
            link: None,
            audience: Audience::new(self.net.stop_on_cancel),
            join_timeout: self.net.join_timeout,
        })
    }
}

/// A producer of the events of polled JSON pages (made by [`poll`]): an ordinary
/// [`Producer`], whose requests run on a fetcher thread it owns, so the stage answers calls
/// and stops while a request is in flight. Stopping it interrupts the request and joins the
/// thread.
pub struct HttpPoll<T, C> {
    url: UrlFn<C>,
    page: PageFn<T, C>,
    cursor: Option<C>,
    held: VecDeque<T>,
    /// Demand not yet met.
    demand: u64,
    /// A request is in flight or a timer is pending.
    busy: bool,
    headers: Arc<Vec<(String, String)>>,
    interval: Duration,
    max_body: usize,
    stall: Duration,
    agent: ureq::Agent,
    stats: HttpStats,
    retry: Retry,
    link: Option<Link<Result<Value, Cause>>>,
    audience: Audience,
    join_timeout: Duration,
}

impl<T, C> fmt::Debug for HttpPoll<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPoll")
            .field("held", &self.held.len())
            .field("demand", &self.demand)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static, C: Send + 'static> HttpPoll<T, C> {
    /// The producer's live counters (take them before spawning it).
    pub fn stats(&self) -> HttpStats {
        self.stats.clone()
    }

    /// Emits what is held, up to the demand; fetches if demand is left and nothing is held.
    fn serve(&mut self, ctx: &mut Context<'_, T, HttpMsg>) {
        while self.demand > 0 {
            let Some(e) = self.held.pop_front() else {
                break;
            };
            ctx.emit(e);
            self.demand -= 1;
        }
        if self.demand > 0 && !self.busy {
            self.fetch(ctx);
        }
    }

    fn fetch(&mut self, ctx: &mut Context<'_, T, HttpMsg>) {
        if self.link.is_none() {
            let fetcher = Fetcher {
                agent: self.agent.clone(),
                headers: self.headers.clone(),
                max_body: self.max_body,
                stall: self.stall,
                stats: self.stats.clone(),
            };
            let name = format!("{}-fetcher", ctx.name());
            let join = self.join_timeout;
            match Link::spawn(name, self.agent.clone(), join, ctx.mailbox(), move |w| {
                fetcher.run(w)
            }) {
                Ok(link) => self.link = Some(link),
                Err(e) => {
                    ctx.stop(Reason::error(format!(
                        "http poll: could not start the fetcher thread: {e}"
                    )));
                    return;
                }
            }
        }
        let url = (self.url)(self.cursor.as_ref());
        if let Err(e) = check_url(&url) {
            let message = format!("http poll: {e}");
            error!("stage {}: {message}", ctx.name());
            ctx.stop(Reason::Error(message));
            return;
        }
        self.busy = true;
        if let Some(link) = &self.link {
            link.go(url);
        }
    }

    fn fetched(&mut self, result: Result<Value, Cause>, ctx: &mut Context<'_, T, HttpMsg>) {
        let cause = match result.map(|v| (self.page)(v)) {
            Ok(Ok(page)) => {
                self.retry.progressed();
                let n = page.events.len();
                self.stats.add(|c| &c.frames, n as u64);
                if page.cursor.is_some() {
                    self.cursor = page.cursor;
                }
                self.held.extend(page.events);
                if n == 0 {
                    ctx.send_after(HttpMsg(Msg::Retry), self.interval);
                } else {
                    self.busy = false;
                    self.serve(ctx);
                }
                return;
            }
            Ok(Err(e)) => {
                self.stats.add(|c| &c.malformed, 1);
                warn!(
                    "stage {}: the page function refused a page: {e}",
                    ctx.name()
                );
                self.stats.error(format!("page refused: {e}"));
                ctx.send_after(HttpMsg(Msg::Retry), self.interval);
                return;
            }
            Err(cause) => cause,
        };
        self.stats.error(cause.to_string());
        match self.retry.failed(cause.class()) {
            Some(wait) => {
                self.stats.backoff(wait);
                warn!("stage {}: {cause}; retrying in {wait:?}", ctx.name());
                ctx.send_after(HttpMsg(Msg::Retry), wait);
            }
            None => {
                let message = format!(
                    "http poll: giving up after {} failures in a row; last: {cause}",
                    self.retry.failures()
                );
                error!("stage {}: {message}", ctx.name());
                ctx.stop(Reason::Error(message));
            }
        }
    }
}

impl<T: Send + 'static, C: Send + 'static> Producer for HttpPoll<T, C> {
    type Out = T;
    type Message = HttpMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, T, HttpMsg>) {
        self.demand += demand as u64;
        self.serve(ctx);
    }

    fn handle_message(&mut self, msg: HttpMsg, ctx: &mut Context<'_, T, HttpMsg>) {
        match msg.0 {
            Msg::Wake => {
                let Some(link) = &self.link else { return };
                let results: Vec<_> = link.drain().collect();
                for r in results {
                    self.fetched(r, ctx);
                }
            }
            Msg::Retry => {
                self.busy = false;
                self.serve(ctx);
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

/// The fetcher thread: one request per order, its JSON (or why not) reported back.
struct Fetcher {
    agent: ureq::Agent,
    headers: Arc<Vec<(String, String)>>,
    max_body: usize,
    stall: Duration,
    stats: HttpStats,
}

impl Fetcher {
    fn run(self, wire: Wire<Result<Value, Cause>>) {
        while let Some(ctl) = wire.recv() {
            let Ctl::Go(url) = ctl else { continue };
            let result = self.fetch(&wire, &url);
            if wire.stopping() || !wire.report(result) {
                return;
            }
        }
    }

    fn fetch(&self, wire: &Wire<Result<Value, Cause>>, url: &str) -> Result<Value, Cause> {
        let requests = self
            .stats
            .cells
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if requests > 0 {
            self.stats.add(|c| &c.reconnects, 1);
        }
        let mut request = self.agent.get(url);
        for (k, v) in self.headers.iter() {
            request = request.header(k, v);
        }
        let response = wire
            .call(|| request.call())
            .map_err(|e| Cause::from_ureq(e, self.stall, true))?;
        let code = response.status().as_u16();
        self.stats.status(code);
        let hint = response_retry_hint(response.headers());
        let body = response
            .into_body()
            .into_with_config()
            .limit(self.max_body as u64)
            .read_to_vec();
        let body = match body {
            Ok(b) => b,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                self.stats.add(|c| &c.oversize, 1);
                return Err(Cause::TooLong(self.max_body));
            }
            Err(e) => return Err(Cause::from_ureq(e, self.stall, false)),
        };
        self.stats.add(|c| &c.bytes_read, body.len() as u64);
        if !(200..300).contains(&code) {
            let shown = &body[..body.len().min(256)];
            return Err(Cause::Status {
                code,
                excerpt: String::from_utf8_lossy(shown).trim().to_owned(),
                hint,
            });
        }
        serde_json::from_slice(&body).map_err(|e| {
            self.stats.add(|c| &c.malformed, 1);
            Cause::NotJson(e.to_string())
        })
    }
}
