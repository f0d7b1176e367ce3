//! A throwaway `redis-server` for the Redis examples, tests and benches: on a free loopback
//! port, persistence off, in a temporary directory; killed (and its directory removed) on
//! drop. Without a `redis-server` binary (or `$REDIS_SERVER`) it is `Ok(None)` outside CI,
//! and an error in CI (`CI` set), where the tests must run.

// Each user (the example, the tests, the bench) needs a different part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running `redis-server` this process started.
#[derive(Debug)]
pub(crate) struct RedisServer {
    bin: String,
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// The server binary: `$REDIS_SERVER`, or `redis-server` on the `PATH`, if it runs.
fn binary() -> Option<String> {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(bin)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

impl RedisServer {
    /// Starts a server and waits (10 s at most) until it answers `PING`.
    ///
    /// `Ok(None)`, with a message on stderr, when there is no binary and `CI` is unset.
    pub(crate) fn start() -> Result<Option<RedisServer>, String> {
        let Some(bin) = binary() else {
            if in_ci() {
                return Err("no redis-server binary (install redis-server, or set \
                            REDIS_SERVER); CI must run the Redis tests"
                    .to_owned());
            }
            eprintln!("SKIPPED: no redis-server binary found (set REDIS_SERVER or install it)");
            return Ok(None);
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let dir =
            std::env::temp_dir().join(format!("stageflow-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let child = spawn(&bin, port, &dir)?;
        let mut server = RedisServer {
            bin,
            child,
            port,
            dir,
        };
        server.wait_ready()?;
        Ok(Some(server))
    }

    /// Its URL, `redis://127.0.0.1:<port>/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Saves its data, shuts it down (clients see their connections drop), waits `down`,
    /// and starts it again on the same port with the saved data.
    pub(crate) fn restart(&mut self, down: Duration) -> Result<(), String> {
        let _ = self.command("SHUTDOWN SAVE");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if Instant::now() > deadline {
                return Err("redis-server did not shut down within 10 s".into());
            }
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(down);
        self.child = spawn(&self.bin, self.port, &self.dir)?;
        self.wait_ready()
    }

    /// Sends one inline command and returns the first line of the reply.
    pub(crate) fn command(&self, line: &str) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{line}\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        let reply = String::from_utf8_lossy(&buf[..n]);
        Ok(reply.lines().next().unwrap_or("").to_owned())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(reply) = self.command("PING") {
                if reply == "+PONG" {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited at start: {status}"));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn spawn(bin: &str, port: u16, dir: &std::path::Path) -> Result<Child, String> {
    Command::new(bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {bin}: {e}"))
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
