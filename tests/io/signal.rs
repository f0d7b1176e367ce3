//! `io::shutdown_on_signals` in a child process (this test binary run again with
//! `STAGEFLOW_IO_SIGNAL_CHILD` set): SIGINT drains a running pipeline and every line emitted
//! is counted; so does SIGTERM; a second signal stops a drain that cannot finish.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use stageflow::fns::{ForEach, Map};
use stageflow::io::SignalAction;
use stageflow::{
    Consumer, ConsumerContext, Context, DemandMode, Events, Producer, SubscribeOptions,
    Subscription, Topology,
};

const CHILD: &str = "STAGEFLOW_IO_SIGNAL_CHILD";

/// How long the parent waits for any line of the child (which may start slowly on a loaded
/// machine).
const WAIT: Duration = Duration::from_secs(60);

/// The child's side: runs the pipeline named by `STAGEFLOW_IO_SIGNAL_CHILD`, says when it is
/// running, waits for signals and prints the report. Does nothing in a normal test run.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let shutdown = stageflow::io::shutdown_on_signals()
        .drain_timeout(Duration::from_secs(60))
        .on_signal(|signal, action| {
            let action = match action {
                SignalAction::Drain => "drain",
                _ => "stop",
            };
            println!("child: signal {signal} {action}");
        })
        .build()
        .expect("installing the handlers");
    match mode.as_str() {
        "drain" => {
            let counted = Arc::new(AtomicU64::new(0));
            let source = stageflow::from_iter((0u64..).map(|i| format!("line {i}")))
                .spawn()
                .unwrap();
            let parse = stageflow::producer_consumer(Map::new(|l: String| l.len()))
                .subscribe_to(&source, SubscribeOptions::new().max_demand(100))
                .unwrap()
                .spawn()
                .unwrap();
            let c = counted.clone();
            let (first_tx, first) = crossbeam_channel::bounded(1);
            let sink = stageflow::consumer(ForEach::new(move |_: usize| {
                c.fetch_add(1, Ordering::Relaxed);
                let _ = first_tx.try_send(());
            }))
            .subscribe_to(&parse, SubscribeOptions::new().max_demand(100))
            .unwrap()
            .spawn()
            .unwrap();
            first.recv_timeout(WAIT).expect("the pipeline runs");
            let pipeline = Topology::new().with(&source).with(&parse).with(&sink);
            println!("child: running");
            let report = shutdown.run(&pipeline);
            println!("child: report {report}");
            println!(
                "child: emitted {} counted {}",
                source.counters().events_out,
                counted.load(Ordering::Relaxed)
            );
        }
        "stuck" => {
            // A producer that holds events its consumer never asks for: the drain cannot end.
            let source = stageflow::producer(Overflowing).spawn().unwrap();
            let sink = stageflow::consumer(AskOnce)
                .subscribe_to(&source, SubscribeOptions::new())
                .unwrap()
                .spawn()
                .unwrap();
            let pipeline = Topology::new().with(&source).with(&sink);
            println!("child: running");
            let report = shutdown.run(&pipeline);
            println!("child: report {report}");
            println!("child: outcomes {:?}", report.drain.outcomes);
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Emits ten times what it is asked for: the rest waits in its buffer.
struct Overflowing;

impl Producer for Overflowing {
    type Out = u64;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(0..demand as u64 * 10);
    }
}

/// Asks for ten events once, never again.
struct AskOnce;

impl Consumer for AskOnce {
    type In = u64;
    type Message = ();

    fn handle_subscribe(&mut self, p: &Subscription, ctx: &mut ConsumerContext<'_>) -> DemandMode {
        ctx.ask(p.id(), 10);
        DemandMode::Manual
    }

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {}
}

/// A child process, killed if the test fails before it exits.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs this test binary's `child` test in `mode`; its stdout lines come on the channel.
fn spawn(mode: &str) -> (Running, Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "signal::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the child");
    let out = child.stdout.take().unwrap();
    let child = Running(Some(child));
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // The test harness may print its own words before ours on a line.
            if let Some(at) = line.find("child: ") {
                let _ = tx.send(line[at + "child: ".len()..].to_owned());
            }
        }
    });
    (child, rx)
}

fn expect(lines: &Receiver<String>, starting: &str) -> String {
    let line = lines.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!("the child said nothing within {WAIT:?}; expected {starting:?}")
    });
    assert!(
        line.starts_with(starting),
        "expected {starting:?}, got {line:?}"
    );
    line
}

fn kill(child: &Running, signal: &str) {
    let id = child.0.as_ref().expect("a running child").id();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &id.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for the child to exit, within the limit: its output ends when it does.
fn exited(mut child: Running, lines: &Receiver<String>) {
    loop {
        match lines.recv_timeout(WAIT) {
            Ok(_) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => panic!("the child did not exit within {WAIT:?}"),
        }
    }
    let mut running = child.0.take().expect("a running child");
    let status = running.wait().expect("waiting for the child");
    assert!(status.success(), "the child failed: {status}");
}

/// Checks the report of a drained child: every line emitted was counted.
fn drained(signal: &str, number: i32) {
    let (child, lines) = spawn("drain");
    expect(&lines, "running");
    kill(&child, signal);
    expect(&lines, &format!("signal {number} drain"));
    let report = expect(&lines, "report");
    assert_eq!(report, format!("report {signal}: drained; 3 stages ended"));
    let counts = expect(&lines, "emitted");
    let n: Vec<u64> = counts
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 2, "{counts}");
    assert!(
        n[0] > 0 && n[0] == n[1],
        "every line emitted is counted: {counts}"
    );
    exited(child, &lines);
}

#[test]
fn sigint_drains_the_pipeline() {
    drained("SIGINT", 2);
}

#[test]
fn sigterm_drains_the_pipeline() {
    drained("SIGTERM", 15);
}

#[test]
fn a_second_signal_stops_a_drain_that_cannot_finish() {
    let (child, lines) = spawn("stuck");
    expect(&lines, "running");
    kill(&child, "SIGINT");
    expect(&lines, "signal 2 drain");
    kill(&child, "SIGTERM");
    expect(&lines, "signal 15 stop");
    let report = expect(&lines, "report");
    assert_eq!(
        report,
        "report SIGINT: drained, then stopped by SIGTERM; 2 stages ended"
    );
    let outcomes = expect(&lines, "outcomes");
    assert!(outcomes.contains("Shutdown"), "{outcomes}");
    exited(child, &lines);
}
