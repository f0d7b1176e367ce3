//! A live view of a busy pipeline, like `top`: a source, a parser, a deliberately slow
//! enrichment stage and a store, with the snapshot table redrawn in place once a second. The
//! slow stage is marked `*` as the bottleneck: its inbox holds what the parser sent, and the
//! store's demand waits on it. When stdout is not a terminal, it prints one line per stage
//! per refresh instead.
//!
//! `cargo run --release --example top [-- --seconds 20 --slow-us 200]`
//!
//! With `--features dashboard` and `--serve 127.0.0.1:9898`, the same pipeline is served at
//! that address too (`/`, `/metrics`, `/snapshot.json`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use stageflow::fns::{ForEach, Generate, Map};
use stageflow::observe::{Observer, Snapshot};
use stageflow::{SubscribeOptions, Topology};

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// How long to run.
    pub(crate) run_for: Duration,
    /// How often to redraw.
    pub(crate) refresh: Duration,
    /// The slow stage's work per event.
    pub(crate) slow: Duration,
    /// Draw on stdout (in place on a terminal).
    pub(crate) print: bool,
    /// Also serve the dashboard at this address (feature `dashboard`).
    pub(crate) serve: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            run_for: Duration::from_secs(15),
            refresh: Duration::from_secs(1),
            slow: Duration::from_micros(200),
            print: true,
            serve: None,
        }
    }
}

/// What the run saw.
#[derive(Debug)]
#[allow(dead_code)] // read by the test that runs the example
pub(crate) struct Seen {
    /// Every snapshot taken, one per refresh.
    pub(crate) frames: Vec<Snapshot>,
    /// The last snapshot, after the pipeline was stopped.
    pub(crate) last: Snapshot,
}

/// Builds the pipeline, redraws every `refresh` until `run_for` has passed, then stops it.
pub(crate) fn run(options: Options) -> Result<Seen, Box<dyn std::error::Error>> {
    let mut next = 0u64;
    let source = stageflow::producer(Generate::new(move |demand, ctx| {
        ctx.emit_all(next..next + demand as u64);
        next += demand as u64;
    }))
    .name("source")
    .spawn()?;
    let parse = stageflow::producer_consumer(Map::new(|n: u64| (n, n.to_string())))
        .name("parse")
        .subscribe_to(&source, SubscribeOptions::new().max_demand(500))?
        .spawn()?;
    let slow = options.slow;
    let enrich = stageflow::producer_consumer(Map::new(move |(n, text): (u64, String)| {
        std::thread::sleep(slow); // the deliberately slow lookup
        (n, text.len())
    }))
    .name("enrich")
    .subscribe_to(&parse, SubscribeOptions::new().max_demand(50))?
    .spawn()?;
    let store = stageflow::consumer(ForEach::new(|(_, len): (u64, usize)| {
        std::hint::black_box(len); // stored
    }))
    .name("store")
    .subscribe_to(&enrich, SubscribeOptions::new().max_demand(100))?
    .spawn()?;
    let topology = Topology::new()
        .with(&source)
        .with(&parse)
        .with(&enrich)
        .with(&store);

    #[cfg(feature = "dashboard")]
    let _dashboard = match &options.serve {
        Some(addr) => {
            let d = stageflow::observe::Dashboard::new().serve(addr.as_str(), &topology)?;
            eprintln!("dashboard at {}", d.url());
            Some(d)
        }
        None => None,
    };
    #[cfg(not(feature = "dashboard"))]
    if options.serve.is_some() {
        return Err("--serve needs --features dashboard".into());
    }

    let mut observer = Observer::new(&topology);
    observer.snapshot(); // the baseline for the first rates
    let terminal = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut frames = Vec::new();
    while started.elapsed() < options.run_for {
        std::thread::sleep(options.refresh); // the refresh rate, not synchronisation
        let snapshot = observer.snapshot();
        if options.print {
            draw(&snapshot, terminal, started.elapsed())?;
        }
        frames.push(snapshot);
    }
    topology.stop();
    topology.join_timeout(Duration::from_secs(10));
    let last = observer.snapshot();
    Ok(Seen { frames, last })
}

fn draw(snapshot: &Snapshot, terminal: bool, at: Duration) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if terminal {
        // Home, clear the screen, draw.
        write!(out, "\x1b[H\x1b[2J")?;
        writeln!(
            out,
            "stageflow top — {:.0}s (Ctrl-C to quit)\n",
            at.as_secs_f64()
        )?;
        write!(out, "{snapshot}")?;
    } else {
        for line in snapshot.report_lines() {
            writeln!(out, "{:>6.1}s {line}", at.as_secs_f64())?;
        }
    }
    out.flush()
}

#[allow(dead_code)] // a test runs `run`
fn main() {
    let mut options = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--seconds" => {
                let v = value("--seconds");
                let secs: f64 = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--seconds: not a number: {v}")));
                options.run_for = Duration::from_secs_f64(secs.max(0.0));
            }
            "--slow-us" => {
                let v = value("--slow-us");
                let us: u64 = v
                    .parse()
                    .unwrap_or_else(|_| fail(&format!("--slow-us: not a number: {v}")));
                options.slow = Duration::from_micros(us);
            }
            "--serve" => options.serve = Some(value("--serve")),
            other => fail(&format!("unknown argument {other}")),
        }
    }
    if let Err(e) = run(options) {
        fail(&e.to_string());
    }
}

fn fail(message: &str) -> ! {
    eprintln!("top: {message}");
    std::process::exit(1);
}
