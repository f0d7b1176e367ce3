//! The dashboard endpoint (feature `dashboard`): a small HTTP/1.1 server on its own threads
//! that answers `GET /metrics` (Prometheus), `GET /snapshot.json` and `GET /` (a
//! self-contained page drawing the pipeline), from snapshots; `HEAD` on each gets the same
//! headers without the body.
//!
//! It is written on `std::net` with `httparse` for the request head, rather than on a server
//! crate, so that its limits are ours: a request head larger than
//! [`Dashboard::max_request_bytes`] is refused with 431 before more of it is read, a body is
//! refused with 413, a client that stalls for [`Dashboard::timeout`] while sending its
//! request or taking its response is dropped, so is one that is not done within
//! [`Dashboard::request_deadline`] of being accepted however steadily it trickles, and no
//! more than [`Dashboard::max_connections`] are served at once (others get 503).
//! (`tiny_http` 0.12 reads request heads without a limit, its issue #56.) One request per
//! connection (`Connection: close`).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use super::error::ObserveError;
use super::history::History;
use super::metrics::MetricsSource;
use super::snapshot::{Observe, Observer, Snapshot};
use crate::StageRef;

/// The page served at `/`: no external assets; it polls `/snapshot.json`.
const PAGE: &str = include_str!("page.html");

/// How long a refusal (503, or 408 at the request deadline) gets to be written: a short
/// response fits the socket's send buffer at once unless the client has stopped reading, and
/// then it is not worth holding a connection slot for.
const GRACE: Duration = Duration::from_millis(100);

/// How long, in all, the server reads what a client still sends after its response before
/// closing (see [`respond`]).
const LINGER: Duration = Duration::from_millis(200);

/// Options of the dashboard endpoint; [`Dashboard::serve`] starts it.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use stageflow::observe::Dashboard;
/// use stageflow::Topology;
///
/// let numbers = stageflow::from_iter(0..10u64).name("numbers").spawn()?;
/// let topology = Topology::new().with(&numbers);
/// let dashboard = Dashboard::new().serve("127.0.0.1:0", &topology)?;
///
/// let mut socket = std::net::TcpStream::connect(dashboard.local_addr())?;
/// socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
/// let mut response = String::new();
/// socket.read_to_string(&mut response)?;
/// assert!(response.starts_with("HTTP/1.1 200 OK"));
/// assert!(response.contains("stageflow_events_out_total{stage=\"numbers\",kind=\"producer\"}"));
/// dashboard.stop();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dashboard {
    refresh: Duration,
    history: Duration,
    max_request_bytes: usize,
    max_connections: usize,
    timeout: Duration,
    request_deadline: Duration,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard::new()
    }
}

impl Dashboard {
    /// The default options.
    pub fn new() -> Dashboard {
        Dashboard {
            refresh: Duration::from_secs(1),
            history: Duration::from_secs(600),
            max_request_bytes: 8 * 1024,
            max_connections: 16,
            timeout: Duration::from_secs(5),
            request_deadline: Duration::from_secs(10),
        }
    }

    /// How often the snapshot served at `/snapshot.json` (and drawn by the page) is taken;
    /// its rates cover this interval. At least 10 ms. `/metrics` takes a fresh snapshot per
    /// request. Defaults to 1 s.
    pub fn refresh(mut self, interval: Duration) -> Dashboard {
        self.refresh = interval;
        self
    }

    /// How long a history of the sampled snapshots is kept (per stage, events sent per
    /// second and the share of time in callbacks, one point per
    /// [`refresh`](Dashboard::refresh)), served in `/snapshot.json` as `history` and drawn on
    /// the page as sparklines. Zero keeps none. At most 100 000 points (`history /
    /// refresh`). Defaults to 10 minutes.
    pub fn history(mut self, span: Duration) -> Dashboard {
        self.history = span;
        self
    }

    /// The largest request head (request line and headers) read; a larger one is refused
    /// with 431, or 414 if the request line alone is too long. At least 256. Defaults to
    /// 8 KiB.
    pub fn max_request_bytes(mut self, n: usize) -> Dashboard {
        self.max_request_bytes = n;
        self
    }

    /// How many connections are served at once; more are answered 503 and closed. At least
    /// 1. Defaults to 16.
    pub fn max_connections(mut self, n: usize) -> Dashboard {
        self.max_connections = n;
        self
    }

    /// How long a client may stall (send nothing while sending its request, take nothing
    /// while taking the response); then it is dropped (408 if its request was incomplete).
    /// This bounds each read and write, not the whole request: see
    /// [`request_deadline`](Dashboard::request_deadline). At least 10 ms. Defaults to `5 s`.
    pub fn timeout(mut self, timeout: Duration) -> Dashboard {
        self.timeout = timeout;
        self
    }

    /// How long a connection may take from being accepted until its response is written,
    /// however steadily its client sends or reads: a client that trickles its request a byte
    /// at a time is cut off at this deadline (with 408), so slow clients cannot hold every
    /// one of the [`max_connections`](Dashboard::max_connections) slots for long. (After the
    /// response, the server reads what the client still sends for at most 200 ms before
    /// closing, so that the close does not reset the connection before the client has read
    /// the response.) At least 10 ms. Defaults to `10 s`.
    pub fn request_deadline(mut self, deadline: Duration) -> Dashboard {
        self.request_deadline = deadline;
        self
    }

    fn validate(&self) -> Result<(), ObserveError> {
        let bad = |option, message| Err(ObserveError::InvalidOption { option, message });
        if self.refresh < Duration::from_millis(10) {
            return bad(
                "refresh",
                format!("expected at least 10ms, got {:?}", self.refresh),
            );
        }
        if self.history.as_secs_f64() / self.refresh.as_secs_f64() > 100_000.0 {
            return bad(
                "history",
                format!(
                    "expected at most 100000 points, got {:?} of history every {:?}",
                    self.history, self.refresh
                ),
            );
        }
        if self.max_request_bytes < 256 {
            return bad(
                "max_request_bytes",
                format!("expected at least 256, got {}", self.max_request_bytes),
            );
        }
        if self.max_connections == 0 {
            return bad("max_connections", "expected at least 1, got 0".into());
        }
        if self.timeout < Duration::from_millis(10) {
            return bad(
                "timeout",
                format!("expected at least 10ms, got {:?}", self.timeout),
            );
        }
        if self.request_deadline < Duration::from_millis(10) {
            return bad(
                "request_deadline",
                format!("expected at least 10ms, got {:?}", self.request_deadline),
            );
        }
        Ok(())
    }

    /// Binds `addr` and serves the dashboard of `stages` (a [`Topology`](crate::Topology), a
    /// handle, a list of [`StageRef`]s) until the returned handle is stopped or dropped.
    /// Serving runs on threads of its own, from snapshots: a slow or stuck client never holds
    /// a stage back. Like a topology, the dashboard holds the stages, so they stay reachable
    /// while it runs.
    ///
    /// Bind to loopback (`127.0.0.1:port`) unless the page is meant for other machines: it
    /// has no authentication.
    ///
    /// # Errors
    ///
    /// [`ObserveError::InvalidOption`] for a bad option, [`ObserveError::Bind`] if `addr`
    /// cannot be bound, [`ObserveError::Spawn`] if a thread could not start.
    pub fn serve(
        self,
        addr: impl ToSocketAddrs,
        stages: &(impl Observe + ?Sized),
    ) -> Result<DashboardHandle, ObserveError> {
        self.validate()?;
        let listener = TcpListener::bind(addr).map_err(ObserveError::Bind)?;
        let local = listener.local_addr().map_err(ObserveError::Bind)?;
        let sources = stages.metrics_sources();
        let stages: Arc<Vec<StageRef>> = Arc::new(stages.observed());
        let mut observer = Observer::new(stages.as_slice());
        for source in &sources {
            observer.add_source(source.clone());
        }
        let mut history = History::new(self.history);
        let first = observer.snapshot();
        let latest = Arc::new(Mutex::new(Arc::new(page_json(&first, &history))));
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = bounded::<()>(0);

        let sampler = {
            let latest = latest.clone();
            let refresh = self.refresh;
            std::thread::Builder::new()
                .name("stageflow-dashboard-sampler".into())
                .spawn(move || loop {
                    match stop_rx.recv_timeout(refresh) {
                        Err(RecvTimeoutError::Timeout) => {
                            let s = observer.snapshot();
                            history.record(&s);
                            let json = Arc::new(page_json(&s, &history));
                            *latest.lock() = json;
                        }
                        _ => return,
                    }
                })
                .map_err(ObserveError::Spawn)?
        };

        let server = Arc::new(Server {
            options: self,
            stages,
            sources,
            latest,
            active: AtomicUsize::new(0),
        });
        let acceptor = {
            let stopping = stopping.clone();
            let server = server.clone();
            std::thread::Builder::new()
                .name("stageflow-dashboard".into())
                .spawn(move || accept_loop(listener, server, stopping))
        };
        let acceptor = match acceptor {
            Ok(t) => t,
            Err(e) => {
                drop(stop_tx);
                let _ = sampler.join();
                return Err(ObserveError::Spawn(e));
            }
        };
        Ok(DashboardHandle {
            local,
            stopping,
            stop: Some(stop_tx),
            threads: vec![acceptor, sampler],
        })
    }
}

/// A running dashboard. Dropping it stops the server and waits for its threads (connections
/// being served finish within the request deadline on their own threads).
pub struct DashboardHandle {
    local: SocketAddr,
    stopping: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for DashboardHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DashboardHandle")
            .field("local_addr", &self.local)
            .finish()
    }
}

impl DashboardHandle {
    /// The address the server listens on (with the port chosen if `:0` was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `http://<local_addr>/`, the page's address (a loopback one if the server listens on
    /// every interface).
    pub fn url(&self) -> String {
        format!("http://{}/", wake_addr(self.local))
    }

    /// Stops the server and waits for its threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stopping.store(true, Ordering::SeqCst);
        self.stop.take();
        // Wake the acceptor blocked in `accept`.
        let _ = TcpStream::connect_timeout(&wake_addr(self.local), Duration::from_secs(1));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DashboardHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Where to connect to reach a listener bound to `addr` (loopback for an unspecified
/// address).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

struct Server {
    options: Dashboard,
    stages: Arc<Vec<StageRef>>,
    sources: Vec<MetricsSource>,
    /// The latest sampled snapshot with the history, as served at `/snapshot.json`.
    latest: Arc<Mutex<Arc<String>>>,
    active: AtomicUsize,
}

fn accept_loop(listener: TcpListener, server: Arc<Server>, stopping: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else {
            // Out of descriptors, a reset before accept: not the server's end. A short pause
            // keeps a persistent error from spinning.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let deadline = Instant::now() + server.options.request_deadline;
        let _ = stream.set_read_timeout(Some(server.options.timeout));
        let _ = stream.set_write_timeout(Some(server.options.timeout));
        if server.active.fetch_add(1, Ordering::SeqCst) >= server.options.max_connections {
            server.active.fetch_sub(1, Ordering::SeqCst);
            // No lingering here: the acceptor must not wait on a client.
            let refusal = Response::text(503, "too many connections\n");
            respond(stream, &refusal, Instant::now() + GRACE, GRACE, false);
            continue;
        }
        let s = server.clone();
        let spawned = std::thread::Builder::new()
            .name("stageflow-dashboard-conn".into())
            .spawn(move || {
                serve_connection(&s, stream, deadline);
                s.active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            server.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// An HTTP response, ready to write.
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: bool,
    /// An answer to `HEAD`: the headers (with the body's length), not the body.
    head_only: bool,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response::new(
            status,
            "text/plain; charset=utf-8",
            body.as_bytes().to_vec(),
        )
    }

    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            body,
            allow: false,
            head_only: false,
        }
    }
}

/// `/snapshot.json`: the snapshot's JSON with `history` added.
fn page_json(snapshot: &Snapshot, history: &History) -> String {
    let mut v = match serde_json::to_value(snapshot) {
        Ok(v) => v,
        Err(e) => return format!("{{\"error\":{:?}}}", e.to_string()),
    };
    if let (serde_json::Value::Object(map), Ok(h)) = (&mut v, serde_json::to_value(history)) {
        map.insert("history".to_owned(), h);
    }
    v.to_string()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// The time left before `deadline`, at most `timeout`; `None` once it has passed.
fn left(deadline: Instant, timeout: Duration) -> Option<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    (!left.is_zero()).then(|| left.min(timeout))
}

/// Writes all of `bytes` by `deadline`, each write bounded by `timeout` too.
fn write_by(
    stream: &mut TcpStream,
    mut bytes: &[u8],
    deadline: Instant,
    timeout: Duration,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let Some(wait) = left(deadline, timeout) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(wait))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `r` by `deadline` (each write bounded by `timeout` too) and closes; with `linger`,
/// first drains what the client still sends (for at most [`LINGER`] in all).
fn respond(
    mut stream: TcpStream,
    r: &Response,
    deadline: Instant,
    timeout: Duration,
    linger: bool,
) {
    let allow = if r.allow { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        r.status,
        reason_phrase(r.status),
        r.content_type,
        r.body.len()
    );
    let body: &[u8] = if r.head_only { &[] } else { &r.body };
    let _ = write_by(&mut stream, head.as_bytes(), deadline, timeout)
        .and_then(|()| write_by(&mut stream, body, deadline, timeout))
        .and_then(|()| stream.flush());
    // Tell the client we are done, then read (and drop) what it still sends for a moment
    // before closing: closing a socket with unread input resets the connection, and the
    // reset can destroy the response before the client reads it (a client cut off mid-head
    // would never see its 431). The moment is `LINGER` in all, whatever the client sends: a
    // client trickling bytes must not hold the connection here either.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if !linger {
        return;
    }
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 256 * 1024 {
        let Some(wait) = left(until, LINGER) else {
            break;
        };
        let _ = stream.set_read_timeout(Some(wait));
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// What reading a request head gave.
enum Head {
    /// Method and path of a complete, acceptable head.
    Request(String, String),
    /// Refused with this response.
    Refused(Response),
    /// The client went away.
    Gone,
}

fn serve_connection(server: &Server, mut stream: TcpStream, deadline: Instant) {
    let o = &server.options;
    match read_head(&mut stream, o.max_request_bytes, deadline, o.timeout) {
        Head::Gone => {}
        Head::Refused(r) => {
            // A 408 is sent at the deadline: it gets a moment to be written.
            let by = deadline.max(Instant::now() + GRACE);
            respond(stream, &r, by, o.timeout, true);
        }
        Head::Request(method, path) => {
            let r = route(server, &method, &path);
            respond(stream, &r, deadline, o.timeout, true);
        }
    }
}

/// Reads a request head of at most `max` bytes by `deadline`, each read bounded by
/// `timeout` too.
fn read_head(stream: &mut TcpStream, max: usize, deadline: Instant, timeout: Duration) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = match left(deadline, timeout) {
            Some(wait) => stream
                .set_read_timeout(Some(wait))
                .and_then(|()| stream.read(&mut chunk)),
            None => Err(io::ErrorKind::TimedOut.into()),
        };
        let n = match read {
            Ok(0) => return Head::Gone,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return if buf.is_empty() {
                    Head::Gone
                } else {
                    Head::Refused(Response::text(408, "request not received in time\n"))
                };
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Head::Gone,
        };
        // Never hold more than `max + 1` bytes of head (enough to know it is too large).
        let take = n.min(max + 1 - buf.len());
        buf.extend_from_slice(&chunk[..take]);
        match parse(&buf) {
            Parsed::Complete(head) => return head,
            Parsed::Partial if buf.len() > max => {
                let line_done = buf.windows(2).any(|w| w == b"\r\n") || buf.contains(&b'\n');
                return Head::Refused(if line_done {
                    Response::text(431, "request head too large\n")
                } else {
                    Response::text(414, "request line too long\n")
                });
            }
            Parsed::Partial => {}
        }
    }
}

enum Parsed {
    Complete(Head),
    Partial,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Complete(Head::Refused(Response::text(
            431,
            "too many request headers\n",
        ))),
        Err(e) => Parsed::Complete(Head::Refused(Response::text(
            400,
            &format!("malformed request: {e}\n"),
        ))),
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version)
            else {
                return Parsed::Complete(Head::Refused(Response::text(400, "malformed request\n")));
            };
            if version > 1 {
                return Parsed::Complete(Head::Refused(Response::text(
                    505,
                    "HTTP/1.0 and HTTP/1.1 only\n",
                )));
            }
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length")
                        && std::str::from_utf8(h.value)
                            .map(|v| v.trim() != "0")
                            .unwrap_or(true))
            });
            if has_body {
                return Parsed::Complete(Head::Refused(Response::text(
                    413,
                    "request bodies are not accepted\n",
                )));
            }
            Parsed::Complete(Head::Request(method.to_owned(), path.to_owned()))
        }
    }
}

fn route(server: &Server, method: &str, target: &str) -> Response {
    let path = target.split(['?', '#']).next().unwrap_or("");
    let known = matches!(path, "/" | "/index.html" | "/metrics" | "/snapshot.json");
    if !known {
        return Response::text(404, "not found: try /, /metrics or /snapshot.json\n");
    }
    if method != "GET" && method != "HEAD" {
        let mut r = Response::text(405, "only GET and HEAD are allowed\n");
        r.allow = true;
        return r;
    }
    let mut r = match path {
        "/metrics" => {
            let mut observer = Observer::new(server.stages.as_slice());
            for source in &server.sources {
                observer.add_source(source.clone());
            }
            Response::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                observer.snapshot().to_prometheus().into_bytes(),
            )
        }
        "/snapshot.json" => {
            let json = server.latest.lock().clone();
            Response::new(200, "application/json", json.as_bytes().to_vec())
        }
        _ => Response::new(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
    };
    r.head_only = method == "HEAD";
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(buf: &[u8]) -> Option<u16> {
        match parse(buf) {
            Parsed::Partial => None,
            Parsed::Complete(Head::Refused(r)) => Some(r.status),
            Parsed::Complete(Head::Request(..)) => Some(200),
            Parsed::Complete(Head::Gone) => Some(0),
        }
    }

    #[test]
    fn heads() {
        assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), Some(200));
        assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a"), None);
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Some(413)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Some(200)
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Some(413)
        );
        assert_eq!(status(b"\x00\x01garbage\r\n\r\n"), Some(400));
        assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), Some(400)); // httparse knows 1.x only
        let many: String = (0..60).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Some(431)
        );
    }

    #[test]
    fn the_page_wraps_or_cuts_long_stage_names() {
        // The table's name cells wrap anywhere; the SVG boxes cut the name to fit.
        assert!(PAGE.contains(
            "td:first-child { max-width: 32ch; min-width: 10ch; overflow-wrap: anywhere;"
        ));
        assert!(PAGE.contains("fit(el(\"text\", { x: 10, y: 18, class: \"name\" }"));
    }

    #[test]
    fn deadlines_bound_each_wait_and_end() {
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(
            left(far, Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        let near = left(
            Instant::now() + Duration::from_millis(50),
            Duration::from_secs(5),
        );
        assert!(
            near.is_some_and(|d| d <= Duration::from_millis(50)),
            "{near:?}"
        );
        assert_eq!(left(Instant::now(), Duration::from_secs(5)), None);
    }

    #[test]
    fn wake_addresses() {
        let any: SocketAddr = "0.0.0.0:80".parse().unwrap();
        assert_eq!(wake_addr(any), "127.0.0.1:80".parse().unwrap());
        let local: SocketAddr = "127.0.0.2:80".parse().unwrap();
        assert_eq!(wake_addr(local), local);
    }
}
