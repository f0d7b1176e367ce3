//! A loopback HTTP/1.1 server for the `http_*` tests: every connection is handled on its own
//! thread by the test's script, which gets the parsed request and writes what it likes. The
//! test reads each request (with its arrival time) from a channel, so it can wait for "the
//! second connection" instead of sleeping. Dropping the server tells scripts to give up and
//! joins every thread.

#![allow(dead_code, unreachable_pub)] // Each test file uses a different part of it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};

/// A request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    /// 0 for the first connection, 1 for the second...
    pub index: usize,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One connection, for the script to answer.
pub struct Conn {
    stream: TcpStream,
    shutdown: Receiver<()>,
    pub request: Request,
}

impl Conn {
    /// Writes a status line and headers for a body that ends when the connection closes.
    pub fn head(&mut self, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.write(head.as_bytes())
    }

    /// A whole response with a `Content-Length` body.
    pub fn respond(
        &mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let len = body.len().to_string();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.push(("Content-Length", &len));
        self.head(status, &all)?;
        self.write(body)
    }

    /// Writes all of `bytes`, however long the client takes to read them, unless the server
    /// is dropped meanwhile.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            match self.stream.write(&bytes[done..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shut_down() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits up to `max` for the client to close the connection; `true` if it did.
    pub fn wait_closed(&mut self, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline && !self.shut_down() {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }

    /// Keeps the connection open and silent up to `max` (or until the server is dropped, or
    /// the client closes).
    pub fn hold(&mut self, max: Duration) {
        self.wait_closed(max);
    }

    fn shut_down(&self) -> bool {
        matches!(
            self.shutdown.try_recv(),
            Err(crossbeam_channel::TryRecvError::Disconnected)
        )
    }
}

/// The server; see the module docs.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<Sender<()>>,
    accept: Option<JoinHandle<()>>,
    requests: Receiver<Request>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Server {
    /// Starts a server on a free loopback port; `script` answers every connection.
    pub fn start(script: impl Fn(&mut Conn) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        let (shutdown_tx, shutdown_rx) = bounded::<()>(0);
        let (req_tx, req_rx) = unbounded();
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let script = Arc::new(script);
        let accept = {
            let conns = conns.clone();
            std::thread::Builder::new()
                .name("test-server".into())
                .spawn(move || {
                    for (index, stream) in listener.incoming().enumerate() {
                        if matches!(
                            shutdown_rx.try_recv(),
                            Err(crossbeam_channel::TryRecvError::Disconnected)
                        ) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        let script = script.clone();
                        let shutdown = shutdown_rx.clone();
                        let req_tx = req_tx.clone();
                        let t = std::thread::spawn(move || {
                            serve(index, stream, shutdown, req_tx, &*script);
                        });
                        conns.lock().unwrap().push(t);
                    }
                })
                .unwrap()
        };
        Server {
            addr,
            shutdown: Some(shutdown_tx),
            accept: Some(accept),
            requests: req_rx,
            conns,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, waiting up to `within`; panics naming what it waited for.
    pub fn next_request(&self, within: Duration) -> Request {
        match self.requests.recv_timeout(within) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => panic!("no request within {within:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the server stopped"),
        }
    }

    /// Requests already received and not yet read.
    pub fn pending_requests(&self) -> Vec<Request> {
        self.requests.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown = None;
        // Wake the accept loop with a connection of our own.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for t in conns {
            let _ = t.join();
        }
    }
}

fn serve(
    index: usize,
    mut stream: TcpStream,
    shutdown: Receiver<()>,
    requests: Sender<Request>,
    script: &(dyn Fn(&mut Conn) + Send + Sync),
) {
    // Bounded waits, so a script never outlives the server by more than a moment.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(20)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.set_nodelay(true);
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => return,
            Ok(_) => head.push(byte[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline
                    || matches!(
                        shutdown.try_recv(),
                        Err(crossbeam_channel::TryRecvError::Disconnected)
                    )
                {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let request = Request {
        index,
        path,
        headers,
        at: Instant::now(),
    };
    let _ = requests.send(request.clone());
    let mut conn = Conn {
        stream,
        shutdown,
        request,
    };
    script(&mut conn);
}

/// Waits up to `max` for `cond`, checking every few milliseconds; panics with `what`. For
/// conditions no channel can announce (a counter that stops growing, say).
/// A server that answers its first request `429` with `Retry-After: 1`, and every later
/// one as `then` does.
pub fn rate_limited_once(then: impl Fn(&mut Conn) + Send + Sync + 'static) -> Server {
    Server::start(move |c| {
        if c.request.index == 0 {
            let _ = c.respond(429, &[("Retry-After", "1")], b"slow down");
        } else {
            then(c);
        }
    })
}

/// Waits for the server's first two requests and checks that the second came the
/// `Retry-After` of [`rate_limited_once`] (1 s) after the first, not the client's own,
/// shorter backoff.
pub fn assert_retried_after_one_second(server: &Server) {
    let first = server.next_request(LIMIT);
    let second = server.next_request(LIMIT);
    let waited = second.at - first.at;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}");
    assert!(waited < Duration::from_secs(3), "retried after {waited:?}");
}

pub fn wait_for(what: &str, max: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {max:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The longest any http test waits for one thing.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A consumer that forwards every event to a channel; with `manual`, it asks only when the
/// test says so (`Stage::ask`).
pub struct Sink<T> {
    tx: Sender<T>,
    manual: bool,
}

impl<T: Send + 'static> stageflow::Consumer for Sink<T> {
    type In = T;
    type Message = ();

    fn handle_events(
        &mut self,
        events: stageflow::Events<'_, T>,
        _: &mut stageflow::ConsumerContext<'_>,
    ) {
        for e in events {
            let _ = self.tx.send(e);
        }
    }

    fn handle_subscribe(
        &mut self,
        _: &stageflow::Subscription,
        _: &mut stageflow::ConsumerContext<'_>,
    ) -> stageflow::DemandMode {
        if self.manual {
            stageflow::DemandMode::Manual
        } else {
            stageflow::DemandMode::Automatic
        }
    }
}

/// A consumer of `producer` with automatic demand, and the channel its events arrive on.
pub fn sink<T: Send + 'static>(
    producer: &impl stageflow::Upstream<'static, T>,
    max_demand: usize,
) -> (stageflow::ConsumerHandle<Sink<T>>, Receiver<T>) {
    let (tx, rx) = unbounded();
    let c = stageflow::consumer(Sink { tx, manual: false })
        .subscribe_to(
            producer,
            stageflow::SubscribeOptions::new().max_demand(max_demand),
        )
        .unwrap()
        .spawn()
        .unwrap();
    (c, rx)
}

/// A consumer of `producer` that asks only when told, its subscription, and its channel.
pub fn manual_sink<T: Send + 'static>(
    producer: &impl stageflow::Upstream<'static, T>,
    max_demand: usize,
) -> (
    stageflow::ConsumerHandle<Sink<T>>,
    stageflow::SubscriptionId,
    Receiver<T>,
) {
    let (tx, rx) = unbounded();
    let c = stageflow::consumer(Sink { tx, manual: true })
        .spawn()
        .unwrap();
    let sub = c
        .subscribe_to(
            producer,
            stageflow::SubscribeOptions::new().max_demand(max_demand),
        )
        .unwrap();
    (c, sub, rx)
}

/// The next `n` events, each waited for at most [`LIMIT`].
pub fn take<T>(rx: &Receiver<T>, n: usize) -> Vec<T> {
    (0..n)
        .map(|i| {
            rx.recv_timeout(LIMIT)
                .unwrap_or_else(|e| panic!("event {i} of {n} did not arrive within {LIMIT:?}: {e}"))
        })
        .collect()
}

/// Asserts that no event arrives for `d`.
pub fn none_for<T: std::fmt::Debug>(rx: &Receiver<T>, d: Duration) {
    if let Ok(x) = rx.recv_timeout(d) {
        panic!("expected no event, got {x:?}");
    }
}

/// Stops a stage and waits (bounded) for it to end.
pub fn stop<S, R: stageflow::Role<S>>(stage: &stageflow::Stage<S, R>) -> stageflow::Reason {
    stage.stop();
    stage
        .join_timeout(LIMIT)
        .unwrap_or_else(|| panic!("stage {} did not stop within {LIMIT:?}", stage.name()))
}

/// A loopback listener that never accepts, its backlog full: a connect to it hangs (Linux
/// drops the SYN of a connection its full accept queue has no room for, and the client
/// retries for a minute or more).
pub struct FullListener {
    pub addr: SocketAddr,
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl FullListener {
    pub fn start() -> FullListener {
        use std::os::fd::AsRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().unwrap();
        // std listens with a large backlog; listening again sets it to 0, so the accept queue
        // has room for one connection. (std offers no backlog setting; filling its default
        // queue would take more connections than a test may open files.)
        // SAFETY: `listen` on a valid, open socket that this function owns.
        let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
        assert_eq!(rc, 0, "listen: {}", io::Error::last_os_error());
        let mut queued = Vec::new();
        for _ in 0..16 {
            // A loopback connect completes inside the call when there is room, however busy
            // the machine: only a full queue makes it time out.
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(s) => queued.push(s),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return FullListener {
                        addr,
                        _listener: listener,
                        _queued: queued,
                    }
                }
                Err(e) => panic!("filling the backlog: {e}"),
            }
        }
        panic!("the backlog of {addr} never filled");
    }

    /// Whether a connect to it is hanging now: a socket in SYN_SENT towards its port in
    /// `/proc/net/tcp` (its own fillers are established, or closed).
    pub fn connect_hanging(&self) -> bool {
        let port = format!(":{:04X}", self.addr.port());
        std::fs::read_to_string("/proc/net/tcp")
            .expect("read /proc/net/tcp")
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .any(|f| f.len() > 3 && f[2].ends_with(&port) && f[3] == "02")
    }
}
