//! Metrics sources: a layer's counters registered with an observer show up in snapshots,
//! `/metrics`-style Prometheus text (valid: `promtool check metrics` where it is installed),
//! and JSON; a pipeline registers its own; hostile names stay escaped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use stageflow::observe::{MetricSet, Metrics, Observe, Observed, Observer};
use stageflow::pipeline::{self, Batch, BatcherOptions, Message, ProcessorOptions};
use stageflow::{Histogram, Topology};

use crate::common::LIMIT;

/// A source the test drives: a counter, a gauge, a histogram, labelled values.
#[derive(Default)]
struct Gauges {
    hits: AtomicU64,
    sizes: Option<Histogram>,
}

impl Metrics for Gauges {
    fn layer(&self) -> &str {
        "cache"
    }
    fn collect(&self, out: &mut MetricSet) {
        out.counter("hits_total", "Hits.", self.hits.load(Ordering::Relaxed))
            .gauge("fill", "How full, 0 to 1.", 0.25)
            .labelled("shard", "a\"b\\c\nd", |out| {
                out.counter("evictions_total", "Evictions per shard.", 2);
            });
        if let Some(h) = &self.sizes {
            out.histogram("entry_bytes", "Entry sizes.", h.snapshot(), 1.0);
        }
    }
}

#[test]
fn smoke_a_registered_source_is_read_with_every_snapshot() {
    let numbers = stageflow::from_iter(0..10u64)
        .name("numbers")
        .spawn()
        .unwrap();
    let topology = Topology::new().with(&numbers);
    let gauges = Arc::new(Gauges::default());
    let observed = Observed::new(&topology).source("users", gauges.clone());
    let mut observer = Observer::new(&observed);
    assert_eq!(observer.sources().len(), 1);
    let s = observer.snapshot();
    let users = s.source("users").unwrap();
    assert_eq!(users.layer, "cache");
    assert_eq!(users.value("hits_total", &[]), Some(0.0));
    gauges.hits.fetch_add(7, Ordering::Relaxed);
    let s = observer.snapshot();
    assert_eq!(
        s.source("users").unwrap().value("hits_total", &[]),
        Some(7.0)
    );
    assert_eq!(
        s.source("users")
            .unwrap()
            .value("evictions_total", &[("shard", "a\"b\\c\nd")]),
        Some(2.0)
    );
    let text = s.to_prometheus();
    assert!(
        text.contains("# TYPE stageflow_cache_hits_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("stageflow_cache_hits_total{source=\"users\"} 7\n"),
        "{text}"
    );
    assert!(
        text.contains("stageflow_cache_fill{source=\"users\"} 0.25\n"),
        "{text}"
    );
    // The label value is escaped: no raw quote, backslash or newline ends it early.
    assert!(
        text.contains(
            "stageflow_cache_evictions_total{source=\"users\",shard=\"a\\\"b\\\\c\\nd\"} 2\n"
        ),
        "{text}"
    );
    numbers.stop();
    numbers.join();
}

#[test]
fn sources_of_one_layer_share_a_family_and_the_text_is_valid() {
    let h = Histogram::sizes();
    for n in [1, 3, 3, 900] {
        h.record(n);
    }
    let a = Gauges {
        hits: AtomicU64::new(1),
        sizes: Some(h),
    };
    let b = Gauges::default();
    // A hostile source name, and two sources of one layer.
    let evil = "evil\"} 1\n# TYPE x counter\nx{a=\"";
    let observed = Observed::default().source("a", a).source(evil, b);
    let text = observed.snapshot().to_prometheus();
    assert_eq!(
        text.matches("# TYPE stageflow_cache_hits_total counter")
            .count(),
        1,
        "one family, both sources under it:\n{text}"
    );
    assert!(text.contains("stageflow_cache_hits_total{source=\"a\"} 1\n"));
    assert!(
        text.contains(
            "stageflow_cache_hits_total{source=\"evil\\\"} 1\\n# TYPE x counter\\nx{a=\\\"\"} 0\n"
        ),
        "{text}"
    );
    assert!(!text.contains("\n# TYPE x counter"), "no injected line");
    // Histogram buckets are cumulative and end with +Inf, then _sum and _count.
    for line in [
        "stageflow_cache_entry_bytes_bucket{source=\"a\",le=\"1\"} 1\n",
        "stageflow_cache_entry_bytes_bucket{source=\"a\",le=\"5\"} 3\n",
        "stageflow_cache_entry_bytes_bucket{source=\"a\",le=\"+Inf\"} 4\n",
        "stageflow_cache_entry_bytes_sum{source=\"a\"} 907\n",
        "stageflow_cache_entry_bytes_count{source=\"a\"} 4\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    crate::promtool::check(&text);
}

#[test]
fn a_pipeline_registers_its_counters_itself() {
    let p = pipeline::builder("orders")
        .producers(1, |_| stageflow::from_iter((0..25u64).map(Message::new)))
        .processors(
            ProcessorOptions::new().concurrency(2),
            |m: &mut Message<u64>| {
                if m.data == 7 {
                    return Err("seven");
                }
                Ok(m.data)
            },
        )
        .batcher(
            "store",
            BatcherOptions::new()
                .batch_size(10)
                .batch_timeout(Duration::from_secs(60)),
            |_: &mut Batch<u64>| Ok::<(), String>(()),
        )
        .start()
        .unwrap();
    p.topology().join_timeout(LIMIT);
    let snapshot = Observer::new(&p).snapshot();
    assert_eq!(snapshot.stages.len(), p.topology().stages().len());
    let orders = snapshot
        .source("orders")
        .expect("the pipeline's own source");
    assert_eq!(orders.layer, "pipeline");
    assert_eq!(
        orders.value("acknowledged_total", &[("status", "successful")]),
        Some(24.0)
    );
    assert_eq!(
        orders.value("acknowledged_total", &[("status", "failed")]),
        Some(1.0)
    );
    assert_eq!(orders.value("unacknowledged", &[]), Some(0.0));
    assert_eq!(
        orders.value(
            "successful_total",
            &[("layer", "batcher"), ("batcher", "store")]
        ),
        Some(24.0)
    );
    let counters = p.counters();
    let batches = counters.batchers[0].1.batches;
    assert!(batches >= 3, "{counters:?}");
    let text = snapshot.to_prometheus();
    assert!(
        text.contains(
            "stageflow_pipeline_acknowledged_total{source=\"orders\",status=\"successful\"} 24\n"
        ),
        "{text}"
    );
    // Every batch handled was sized and timed.
    assert!(
        text.contains(&format!(
            "stageflow_pipeline_batch_size_messages_count{{source=\"orders\",layer=\"batcher\",batcher=\"store\"}} {batches}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "stageflow_pipeline_batch_seconds_count{{source=\"orders\",layer=\"batcher\",batcher=\"store\"}} {batches}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(
            "stageflow_pipeline_batch_size_messages_sum{source=\"orders\",layer=\"batcher\",batcher=\"store\"} 24\n"
        ),
        "{text}"
    );
    crate::promtool::check(&text);
}

#[cfg(feature = "http")]
#[test]
fn an_http_producer_and_a_flow_window_export_their_counters() {
    let stats = stageflow::http::HttpStats::default();
    let window = stageflow::flow::Window::<u64>::global();
    let observed = Observed::default()
        .source("tweets", stats)
        .source("words", window.counts());
    let s = observed.snapshot();
    let tweets = s.source("tweets").unwrap();
    assert_eq!(tweets.layer, "http");
    for name in [
        "bytes_read_total",
        "frames_total",
        "malformed_total",
        "reconnects_total",
        "pauses_total",
        "paused",
    ] {
        assert_eq!(tweets.value(name, &[]), Some(0.0), "{name}");
    }
    let words = s.source("words").unwrap();
    assert_eq!(words.layer, "flow");
    assert_eq!(words.value("windows_emitted_total", &[]), Some(0.0));
    assert_eq!(words.value("late_events_total", &[]), Some(0.0));
    let text = s.to_prometheus();
    assert!(text.contains("stageflow_http_reconnects_total{source=\"tweets\"} 0\n"));
    assert!(text.contains("stageflow_flow_late_events_total{source=\"words\"} 0\n"));
    crate::promtool::check(&text);
}

#[cfg(feature = "observe-json")]
#[test]
fn sources_and_the_process_are_in_the_json() {
    let source = stageflow::observe::MetricsSource::new("users", Gauges::default());
    let mut observer = Observer::new(&Vec::<stageflow::StageRef>::new());
    observer.add_source(source);
    let v: serde_json::Value = serde_json::from_str(&observer.snapshot().to_json()).unwrap();
    assert_eq!(v["sources"][0]["name"], "users");
    assert_eq!(v["sources"][0]["layer"], "cache");
    assert_eq!(v["sources"][0]["metrics"][0]["name"], "hits_total");
    assert_eq!(v["sources"][0]["metrics"][0]["kind"], "counter");
    assert_eq!(v["sources"][0]["metrics"][0]["value"], 0);
    assert_eq!(
        v["sources"][0]["metrics"][2]["labels"]["shard"],
        "a\"b\\c\nd"
    );
    if cfg!(target_os = "linux") {
        assert!(v["process"]["threads"].as_u64().unwrap() >= 1, "{v}");
        assert!(v["process"]["resident_bytes"].as_u64().unwrap() > 0, "{v}");
    }
}
