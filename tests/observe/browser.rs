//! The dashboard's page in a real browser: headless Chromium loads it from a loopback
//! dashboard, runs its script, and the test reads the DOM it built (stages, shares, timing,
//! sparklines, the layers' metrics, the process line), with a hostile stage name shown as
//! text. Skipped, with a message, where Chromium is not installed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use stageflow::observe::{Dashboard, MetricSet, Metrics, Observed};
use stageflow::{SubscribeOptions, Topology};

use crate::common::{joined, next, LIMIT};
use crate::fixtures::{Push, Pushed, Sink};

/// The first Chromium found on the path.
fn chromium() -> Option<&'static str> {
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .into_iter()
    .find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The DOM of `url` once its script has run for `budget` of virtual time; fails after
/// [`LIMIT`] (the browser is killed).
fn dump_dom(browser: &str, url: &str, budget: Duration) -> String {
    let child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            &format!("--virtual-time-budget={}", budget.as_millis()),
            "--dump-dom",
            url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let pid = child.id();
    let (tx, rx) = bounded(1);
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("chromium's output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("chromium did not finish within {LIMIT:?}");
        }
    };
    waiter.join().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A layer's counters, with a hostile metric label.
struct Cache;

impl Metrics for Cache {
    fn layer(&self) -> &str {
        "cache"
    }
    fn collect(&self, out: &mut MetricSet) {
        out.counter("hits_total", "Hits.", 42)
            .labelled("shard", "<b>bold</b>", |out| {
                out.gauge("fill", "How full.", 0.5);
            });
    }
}

#[test]
fn the_page_draws_stages_timing_history_layers_and_the_process() {
    let Some(browser) = chromium() else {
        eprintln!("chromium not installed: the page was not checked in a browser");
        return;
    };
    let hostile = "<img src=x onerror=alert(1)>";
    let p = stageflow::producer(Pushed).name(hostile).spawn().unwrap();
    let (seen, seen_rx) = bounded(1024);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("page-sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(100))
        .unwrap()
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&p).with(&c);
    let observed = Observed::new(&topology).source("users", Cache);
    let dashboard = Dashboard::new()
        .refresh(Duration::from_millis(50))
        .serve("127.0.0.1:0", &observed)
        .unwrap();
    p.cast(Push::Emit((0..500).collect())).unwrap();
    let mut got = 0;
    while got < 500 {
        got += next(&seen_rx);
    }
    // Wait until the served JSON holds a few points of history.
    let json_url = format!("http://{}/snapshot.json", dashboard.local_addr());
    let deadline = Instant::now() + LIMIT;
    loop {
        let body = ureq::get(&json_url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["history"]["ages_secs"]
            .as_array()
            .is_some_and(|a| a.len() >= 3)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no history in {body}");
        std::thread::sleep(Duration::from_millis(20)); // polling a page refreshed on a timer
    }
    let dom = dump_dom(browser, &dashboard.url(), Duration::from_millis(3000));
    assert!(dom.contains("<table id=\"table\">"), "{dom}");
    // The script ran: the status line and the table were filled in.
    assert!(!dom.contains("connecting…"), "the script never drew: {dom}");
    assert!(dom.contains("<td>page-sink</td>"), "{dom}");
    for column in [
        "busy",
        "wait in",
        "wait demand",
        "callback p50",
        "per event p50",
        "history",
    ] {
        assert!(
            dom.contains(&format!("<th>{column}</th>")),
            "no column {column}: {dom}"
        );
    }
    // The hostile name is text, in the table and the graph, never markup.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(
        !dom.contains("<img"),
        "the stage name became an element: {dom}"
    );
    // Sparklines of throughput and busy share, in the graph and the table.
    assert!(dom.matches("class=\"rate\"").count() >= 2, "{dom}");
    assert!(dom.matches("class=\"busy\"").count() >= 2, "{dom}");
    assert!(dom.contains("<polyline"), "no sparkline drawn: {dom}");
    // The registered layer, with its hostile label as text.
    assert!(dom.contains("<h2>cache: users</h2>"), "{dom}");
    assert!(dom.contains("<td>hits_total</td>"), "{dom}");
    assert!(dom.contains("shard=&lt;b&gt;bold&lt;/b&gt;"), "{dom}");
    assert!(!dom.contains("<b>bold"), "{dom}");
    // The process line.
    if cfg!(target_os = "linux") {
        assert!(dom.contains("threads"), "{dom}");
        assert!(dom.contains("resident"), "{dom}");
    }
    dashboard.stop();
    p.stop();
    joined(&c);
}
