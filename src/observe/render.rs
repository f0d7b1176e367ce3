//! Renderings of a [`Snapshot`]: a text table (`Display`), Graphviz DOT, and the Prometheus
//! text exposition format.

use std::fmt::{self, Write as _};

use super::metrics::{scaled, MetricValue};
use super::snapshot::{EdgeSnapshot, Snapshot, StageSnapshot};
use crate::HistogramSnapshot;

/// Formats a count compactly: `999`, `12.3k`, `4.56M`, `7.89G`.
pub(crate) fn compact(n: f64) -> String {
    let a = n.abs();
    if a < 1_000.0 {
        format!("{n:.0}")
    } else if a < 1_000_000.0 {
        format!("{:.1}k", n / 1e3)
    } else if a < 1_000_000_000.0 {
        format!("{:.2}M", n / 1e6)
    } else {
        format!("{:.2}G", n / 1e9)
    }
}

fn demand_text(e: &EdgeSnapshot) -> String {
    let d = e.demand.or(e.owed).unwrap_or(0);
    format!("{d}/{}", e.max_demand)
}

/// The table: one line per stage (the bottleneck marked `*`; `busy` is the share of the
/// interval in callbacks), then one per subscription.
///
/// ```text
///   stage        kind               state        in      out    in/s   out/s  disc   buf  inbox  busy
///   source       producer           running   10.0k    10.0k    1.2k    1.2k     0     0  0/1024    1%
/// * slow         producer_consumer  running   10.0k     9.0k    1.2k    1.1k     0   120  3/1024   97%
///   ...
///   source -> slow  #1  demand 500/1000 (min 500)  events 10.0k  1.2k/s
/// ```
impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self
            .stages
            .iter()
            .map(|s| s.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "  {:<w$}  {:<17}  {:<10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>11} {:>5}",
            "stage", "kind", "state", "in", "out", "in/s", "out/s", "disc", "buf", "inbox", "busy"
        )?;
        for (i, s) in self.stages.iter().enumerate() {
            let mark = if self.bottleneck == Some(i) { '*' } else { ' ' };
            writeln!(
                f,
                "{mark} {:<w$}  {:<17}  {:<10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>11} {:>4.0}%",
                s.name,
                s.kind.as_str(),
                short_state(s),
                compact(s.events_in as f64),
                compact(s.events_out as f64),
                compact(s.in_per_sec),
                compact(s.out_per_sec),
                compact(s.discarded as f64),
                compact(s.buffered as f64),
                format!("{}/{}", s.inbox_len, s.inbox_capacity),
                s.share_busy * 100.0,
            )?;
        }
        for e in &self.edges {
            writeln!(
                f,
                "  {} -> {}  {}  demand {} (min {})  events {}  {}/s",
                e.producer,
                e.consumer,
                e.subscription,
                demand_text(e),
                e.min_demand,
                compact(e.events as f64),
                compact(e.per_sec),
            )?;
        }
        if let Some(b) = self.bottleneck_stage() {
            writeln!(f, "  bottleneck: {}", b.name)?;
        }
        Ok(())
    }
}

fn short_state(s: &StageSnapshot) -> String {
    let mut state = s.state();
    if state.chars().count() > 10 {
        state = state.chars().take(9).collect::<String>() + "…";
    }
    state
}

/// Quotes `s` as a DOT string.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Snapshot {
    /// The pipeline as a Graphviz DOT graph: stages as nodes (kind, state, rates, buffer and
    /// inbox; the bottleneck drawn red and bold, ended stages grey), subscriptions as edges
    /// labelled with their outstanding demand over `max_demand` and their rate. Render it with
    /// `dot -Tsvg`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph stageflow {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"monospace\"];\n  edge [fontname=\"monospace\"];\n",
        );
        for (i, s) in self.stages.iter().enumerate() {
            let label = format!(
                "{}\n{} · {}\nin {}/s · out {}/s\nbuf {} · inbox {}/{}",
                s.name,
                s.kind.as_str(),
                s.state(),
                compact(s.in_per_sec),
                compact(s.out_per_sec),
                s.buffered,
                s.inbox_len,
                s.inbox_capacity
            );
            let style = if self.bottleneck == Some(i) {
                ", color=red, penwidth=2"
            } else if !s.is_running() {
                ", color=grey, fontcolor=grey"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} [label={}{style}];",
                dot_quote(&s.name),
                dot_quote(&label)
            );
        }
        for e in &self.edges {
            let label = format!("demand {}\n{}/s", demand_text(e), compact(e.per_sec));
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                dot_quote(&e.producer),
                dot_quote(&e.consumer),
                dot_quote(&label)
            );
        }
        out.push_str("}\n");
        out
    }

    /// The snapshot in the Prometheus text exposition format (version 0.0.4): counters
    /// `stageflow_events_in_total`, `stageflow_events_out_total`,
    /// `stageflow_events_emitted_total`, `stageflow_events_discarded_total` and `stageflow_subscription_events_total`; gauges
    /// `stageflow_stage_running`, `stageflow_events_buffered`, `stageflow_inbox_messages`,
    /// `stageflow_inbox_capacity_messages`, `stageflow_stage_bottleneck`,
    /// `stageflow_subscription_demand`, `stageflow_subscription_owed` and
    /// `stageflow_subscription_max_demand`. Stages are labelled `stage` (and `kind`),
    /// subscriptions `producer`, `consumer` and `subscription`.
    ///
    /// Rates are left to Prometheus (`rate(stageflow_events_out_total[1m])`).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        let stage_metric =
            |out: &mut String,
             name: &str,
             kind: &str,
             help: &str,
             value: &dyn Fn(usize, &StageSnapshot) -> f64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (i, s) in self.stages.iter().enumerate() {
                    let v = value(i, s);
                    let _ = writeln!(
                        out,
                        "{name}{{stage=\"{}\",kind=\"{}\"}} {v}",
                        label_escape(&s.name),
                        s.kind.as_str()
                    );
                }
            };
        stage_metric(
            &mut out,
            "stageflow_events_in_total",
            "counter",
            "Events a stage received from its producers.",
            &|_, s| s.events_in as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_events_out_total",
            "counter",
            "Events a stage sent to its consumers.",
            &|_, s| s.events_out as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_events_emitted_total",
            "counter",
            "Events a stage emitted, each once however many consumers received it.",
            &|_, s| s.emitted as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_events_discarded_total",
            "counter",
            "Events a stage dropped (buffer keep policy, or left when it ended).",
            &|_, s| s.discarded as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_events_buffered",
            "gauge",
            "Events waiting in a stage (its buffer, or received and not yet handled).",
            &|_, s| s.buffered as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_inbox_messages",
            "gauge",
            "Messages waiting in a stage's inbox.",
            &|_, s| s.inbox_len as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_inbox_capacity_messages",
            "gauge",
            "The capacity of a stage's inbox, in messages.",
            &|_, s| s.inbox_capacity as f64,
        );
        stage_metric(
            &mut out,
            "stageflow_stage_running",
            "gauge",
            "1 while a stage runs, 0 once it has ended.",
            &|_, s| f64::from(u8::from(s.is_running())),
        );
        stage_metric(
            &mut out,
            "stageflow_stage_bottleneck",
            "gauge",
            "1 for the stage the snapshot found holding the pipeline back.",
            &|i, _| f64::from(u8::from(self.bottleneck == Some(i))),
        );
        let edge_metric = |out: &mut String,
                           name: &str,
                           kind: &str,
                           help: &str,
                           value: &dyn Fn(&EdgeSnapshot) -> Option<u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for e in &self.edges {
                if let Some(v) = value(e) {
                    let _ = writeln!(
                        out,
                        "{name}{{producer=\"{}\",consumer=\"{}\",subscription=\"{}\"}} {v}",
                        label_escape(&e.producer),
                        label_escape(&e.consumer),
                        e.subscription.as_u64()
                    );
                }
            }
        };
        edge_metric(
            &mut out,
            "stageflow_subscription_events_total",
            "counter",
            "Events that went through a subscription.",
            &|e| Some(e.events),
        );
        edge_metric(
            &mut out,
            "stageflow_subscription_demand",
            "gauge",
            "A consumer's outstanding demand on a subscription: asked and not yet received.",
            &|e| e.demand,
        );
        edge_metric(
            &mut out,
            "stageflow_subscription_owed",
            "gauge",
            "Demand a producer has not met yet on a subscription: asked and not yet sent.",
            &|e| e.owed,
        );
        edge_metric(
            &mut out,
            "stageflow_subscription_max_demand",
            "gauge",
            "A subscription's max_demand.",
            &|e| Some(e.max_demand),
        );
        self.timing_metrics(&mut out);
        self.process_metrics(&mut out);
        self.source_metrics(&mut out);
        out
    }

    /// Per stage: time in callbacks (histograms per callback and per event) and the time
    /// spent busy and waiting, as counters.
    fn timing_metrics(&self, out: &mut String) {
        let labels = |s: &StageSnapshot| {
            vec![
                ("stage".to_owned(), s.name.clone()),
                ("kind".to_owned(), s.kind.as_str().to_owned()),
            ]
        };
        for (name, help, pick) in [
            (
                "stageflow_stage_callback_seconds",
                "Time a stage spent in one callback (handle_events per batch, handle_demand, handle_message), sampled.",
                (|s: &StageSnapshot| &s.timing.callbacks) as fn(&StageSnapshot) -> &HistogramSnapshot,
            ),
            (
                "stageflow_stage_event_seconds",
                "Time a stage's handle_events spent per event, sampled.",
                |s: &StageSnapshot| &s.timing.per_event,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for s in &self.stages {
                write_histogram(out, name, &labels(s), pick(s), 1e-9);
            }
        }
        for (name, help, pick) in [
            (
                "stageflow_stage_busy_seconds_total",
                "Time a stage spent in its callbacks (estimated from samples for fast callbacks).",
                (|s: &StageSnapshot| s.timing.busy) as fn(&StageSnapshot) -> std::time::Duration,
            ),
            (
                "stageflow_stage_waiting_input_seconds_total",
                "Time a stage waited for input (events, messages, timers).",
                |s: &StageSnapshot| s.timing.waiting_for_input,
            ),
            (
                "stageflow_stage_waiting_demand_seconds_total",
                "Time a stage waited for its consumers' demand.",
                |s: &StageSnapshot| s.timing.waiting_for_demand,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for s in &self.stages {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    label_set(&labels(s), None),
                    number(pick(s).as_secs_f64())
                );
            }
        }
    }

    /// The process's CPU time, memory and threads, under the names Prometheus's client
    /// libraries use.
    fn process_metrics(&self, out: &mut String) {
        let Some(p) = &self.process else {
            return;
        };
        for (name, kind, help, value) in [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                p.cpu().as_secs_f64(),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                p.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                p.virtual_bytes as f64,
            ),
            (
                "process_threads",
                "gauge",
                "Number of OS threads in the process.",
                p.threads as f64,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                number(value)
            );
        }
    }

    /// The registered sources' metrics, `stageflow_<layer>_<name>{source="…",…}`, each
    /// family once (its first HELP and kind), its values from every source together.
    fn source_metrics(&self, out: &mut String) {
        let mut families: Vec<(String, &str, &'static str, String)> = Vec::new();
        for source in &self.sources {
            for m in &source.metrics {
                let family = format!(
                    "stageflow_{}_{}",
                    metric_name(&source.layer),
                    metric_name(&m.name)
                );
                let kind = m.value.kind();
                let i = match families.iter().position(|f| f.0 == family) {
                    Some(i) if families[i].2 == kind => i,
                    Some(_) => continue, // the same name with another kind: not valid
                    None => {
                        families.push((family.clone(), &m.help, kind, String::new()));
                        families.len() - 1
                    }
                };
                let mut labels = vec![("source".to_owned(), source.name.clone())];
                labels.extend(m.labels.iter().cloned());
                let body = &mut families[i].3;
                match &m.value {
                    MetricValue::Counter(n) => {
                        let _ = writeln!(body, "{family}{} {n}", label_set(&labels, None));
                    }
                    MetricValue::Gauge(v) => {
                        let _ =
                            writeln!(body, "{family}{} {}", label_set(&labels, None), number(*v));
                    }
                    MetricValue::Histogram { snapshot, scale } => {
                        write_histogram(body, &family, &labels, snapshot, *scale);
                    }
                }
            }
        }
        for (family, help, kind, body) in families {
            let _ = write!(
                out,
                "# HELP {family} {}\n# TYPE {family} {kind}\n{body}",
                help_escape(help)
            );
        }
    }
}

/// `{k="v",…}` with the values escaped (and `le` last if given); empty for no labels.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", metric_name(k), label_escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A histogram's `_bucket`, `_sum` and `_count` lines, its values times `scale`.
fn write_histogram(
    out: &mut String,
    name: &str,
    labels: &[(String, String)],
    h: &HistogramSnapshot,
    scale: f64,
) {
    let mut total = 0;
    for (bound, cumulative) in h.cumulative() {
        let le = match bound {
            Some(b) => number(scaled(b, scale)),
            None => "+Inf".to_owned(),
        };
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            label_set(labels, Some(&le))
        );
        total = cumulative;
    }
    if h.counts.is_empty() {
        let _ = writeln!(out, "{name}_bucket{} 0", label_set(labels, Some("+Inf")));
    }
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        label_set(labels, None),
        number(scaled(h.sum, scale))
    );
    let _ = writeln!(out, "{name}_count{} {total}", label_set(labels, None));
}

/// A sample value as Prometheus writes it (`+Inf`, `-Inf`, `NaN`).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

/// A metric or label name made valid: `[a-zA-Z_][a-zA-Z0-9_]*`, anything else as `_`.
fn metric_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Escapes HELP text: backslash and newline.
fn help_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Escapes a Prometheus label value: backslash, double quote and newline.
fn label_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_counts() {
        assert_eq!(compact(999.0), "999");
        assert_eq!(compact(12_345.0), "12.3k");
        assert_eq!(compact(4_560_000.0), "4.56M");
        assert_eq!(compact(7.89e9), "7.89G");
    }

    #[test]
    fn escapes() {
        assert_eq!(dot_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
        assert_eq!(label_escape("x\"y\\z\n"), "x\\\"y\\\\z\\n");
        assert_eq!(help_escape("a\\b\nc"), "a\\\\b\\nc");
        assert_eq!(metric_name("9 bad-name{}"), "_9_bad_name__");
        assert_eq!(metric_name(""), "_");
        assert_eq!(
            label_set(&[("a b".into(), "\"}".into())], Some("+Inf")),
            "{a_b=\"\\\"}\",le=\"+Inf\"}"
        );
    }

    #[test]
    fn nanoseconds_in_seconds_are_the_nearest_float() {
        assert_eq!(scaled(321, 1e-9), 3.21e-7);
        assert_eq!(number(scaled(100, 1e-9)), "0.0000001");
        assert_eq!(scaled(7, 1.0), 7.0);
        assert_eq!(scaled(3, 0.3), 3.0 * 0.3);
    }

    #[test]
    fn numbers_as_prometheus_writes_them() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(1e-7), "0.0000001");
        assert_eq!(number(3.0), "3");
    }
}
