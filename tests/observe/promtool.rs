//! `promtool check metrics` on exposition text, where promtool is installed (skipped with a
//! message where it is not).

use std::io::Write;
use std::process::{Command, Stdio};

/// Fails if promtool finds a problem (lint warnings included) in `text`.
pub(crate) fn check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => {
            eprintln!("promtool not installed: the exposition text was not checked by it");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    // promtool reads its input to the end and exits: it needs no timeout of ours.
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n--- the text:\n{text}"
    );
}
