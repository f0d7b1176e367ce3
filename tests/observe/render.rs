//! The renderings' shapes: the table, DOT, Prometheus and JSON.

use crossbeam_channel::bounded;
use stageflow::observe::Snapshot;
use stageflow::{Reason, SubscribeOptions, Topology};

use crate::common::{joined, next};
use crate::fixtures::{until, Push, Pushed, Sink};

/// A producer `src` and a consumer `sink` (max 10 / min 5) that has handled 4 events and
/// waits for more: `src` owes it 6 and is the bottleneck. Also a producer named with a quote
/// and a backslash, ended.
fn known() -> (Snapshot, Topology) {
    let p = stageflow::producer(Pushed).name("src").spawn().unwrap();
    let (seen, seen_rx) = bounded(64);
    let c = stageflow::consumer(Sink { seen, gate: None })
        .name("sink")
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .unwrap()
        .spawn()
        .unwrap();
    let odd = stageflow::producer(Pushed)
        .name("say \"hi\"\\")
        .spawn()
        .unwrap();
    odd.cast(Push::End(Reason::Normal)).unwrap();
    joined(&odd);
    p.cast(Push::Emit(vec![1, 2, 3, 4])).unwrap();
    assert_eq!(next(&seen_rx), 4);
    let topology = Topology::new().with(&p).with(&c).with(&odd);
    let s = until(&topology, "4 through, 6 owed", |s| {
        // (A producer counts events out just after they reach the consumer's inbox.)
        s.edges.len() == 1
            && s.edges[0].events == 4
            && s.edges[0].owed == Some(6)
            && s.stages[0].events_out == 4
    });
    (s, topology)
}

#[test]
fn smoke_table() {
    let (s, _t) = known();
    let table = s.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("stage") && lines[0].contains("inbox"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("* src "),
        "the bottleneck is marked:\n{table}"
    );
    assert!(lines[2].starts_with("  sink "), "{table}");
    assert!(
        lines[2].contains("consumer") && lines[2].contains("running"),
        "{table}"
    );
    assert!(lines[3].contains("normal"), "{table}");
    assert!(
        table.contains(&format!(
            "src -> sink  {}  demand 6/10 (min 5)  events 4",
            s.edges[0].subscription
        )),
        "{table}"
    );
    assert!(table.ends_with("bottleneck: src\n"), "{table}");
}

#[test]
fn dot_draws_nodes_and_demand_edges() {
    let (s, _t) = known();
    let dot = s.to_dot();
    assert!(dot.starts_with("digraph stageflow {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    let node = |name: &str| {
        dot.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} [label=")))
            .unwrap_or_else(|| panic!("no node {name} in\n{dot}"))
            .to_owned()
    };
    assert!(
        node("\"src\"").contains("color=red"),
        "the bottleneck is red:\n{dot}"
    );
    assert!(node("\"src\"").contains("producer · running"), "{dot}");
    assert!(!node("\"sink\"").contains("color="), "{dot}");
    // Quotes and backslashes in names are escaped; the ended stage is grey.
    assert!(
        node("\"say \\\"hi\\\"\\\\\"").contains("color=grey"),
        "{dot}"
    );
    assert!(
        dot.contains("\"src\" -> \"sink\" [label=\"demand 6/10\\n0/s\"];"),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> ").count(), 1);
}

#[test]
fn prometheus_text_follows_the_exposition_format() {
    let (s, _t) = known();
    let text = s.to_prometheus();
    // Every sample belongs to a metric announced by HELP and TYPE; counters end in _total.
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                kind == "counter" || kind == "gauge" || kind == "histogram",
                "{line}"
            );
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
            assert!(
                name.starts_with("stageflow_") || name.starts_with("process_"),
                "{line}"
            );
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "twice: {line}"
            );
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix)
                        .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                })
                .unwrap_or(name);
            assert!(typed.contains_key(family), "sample before its TYPE: {line}");
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
    for line in [
        "stageflow_events_out_total{stage=\"src\",kind=\"producer\"} 4",
        "stageflow_events_in_total{stage=\"sink\",kind=\"consumer\"} 4",
        "stageflow_events_emitted_total{stage=\"src\",kind=\"producer\"} 4",
        "stageflow_stage_running{stage=\"say \\\"hi\\\"\\\\\",kind=\"producer\"} 0",
        "stageflow_stage_bottleneck{stage=\"src\",kind=\"producer\"} 1",
        "stageflow_inbox_capacity_messages{stage=\"sink\",kind=\"consumer\"} 1024",
    ] {
        assert!(text.contains(line), "no {line} in\n{text}");
    }
    let sub = s.edges[0].subscription.as_u64();
    for line in [
        format!("stageflow_subscription_demand{{producer=\"src\",consumer=\"sink\",subscription=\"{sub}\"}} 6"),
        format!("stageflow_subscription_events_total{{producer=\"src\",consumer=\"sink\",subscription=\"{sub}\"}} 4"),
        format!("stageflow_subscription_max_demand{{producer=\"src\",consumer=\"sink\",subscription=\"{sub}\"}} 10"),
    ] {
        assert!(text.contains(&line), "no {line} in\n{text}");
    }
    crate::promtool::check(&text);
}

#[cfg(feature = "observe-json")]
#[test]
fn json_has_stages_edges_and_the_bottleneck() {
    let (s, _t) = known();
    let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
    assert_eq!(v["bottleneck"], "src");
    assert_eq!(v["interval_secs"], serde_json::Value::Null);
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[0]["name"], "src");
    assert_eq!(stages[0]["kind"], "producer");
    assert_eq!(stages[0]["state"], "running");
    assert_eq!(stages[0]["outcome"], serde_json::Value::Null);
    assert_eq!(stages[0]["events_out"], 4);
    assert_eq!(stages[0]["emitted"], 4);
    assert_eq!(stages[0]["owed"], 6);
    assert_eq!(stages[0]["busy"], true);
    assert_eq!(stages[1]["inbox_capacity"], 1024);
    assert_eq!(stages[2]["outcome"], "normal");
    let edge = &v["edges"][0];
    assert_eq!(edge["subscription"], s.edges[0].subscription.as_u64());
    assert_eq!(
        (edge["producer"].as_str(), edge["consumer"].as_str()),
        (Some("src"), Some("sink"))
    );
    assert_eq!(
        (edge["demand"].as_u64(), edge["owed"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(
        (edge["max_demand"].as_u64(), edge["min_demand"].as_u64()),
        (Some(10), Some(5))
    );
    assert_eq!(edge["events"], 4);
    assert_eq!(edge["per_sec"], 0.0);
    // Same through serde directly.
    assert_eq!(serde_json::to_value(&s).unwrap(), v);
}
