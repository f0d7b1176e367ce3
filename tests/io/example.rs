//! The `log_tail` example, run in this process: its writer appends and rotates, its own timer
//! sends the process SIGINT, and the drain counts every line read.

use crate::log_tail::{run, Options};

#[test]
fn log_tail_drains_on_sigint_with_every_line_read_counted() {
    let summary = run(Options {
        file: None,
        offset: 0,
        rate: 20_000,
        secs: Some(1.0),
        print: false,
    })
    .unwrap();
    let report = &summary.report;
    assert_eq!(report.signal, Some(2), "{report}");
    assert!(report.drain.is_complete(), "{report}");
    let counted: u64 = summary.counted.values().sum();
    assert!(counted > 0, "{summary:?}");
    assert_eq!(
        counted, summary.source.records,
        "every line read is counted"
    );
    assert!(summary.source.records <= summary.written, "{summary:?}");
    assert!(summary.source.rotations <= summary.rotations, "{summary:?}");
}
