//! The flow layer's ready-made departitions (`departition_sum`, `departition_counts`,
//! `departition_collect`, `departition_top`): each merges every partition's result per window
//! as the three-closure `departition` it replaces would, checked against a single-threaded
//! computation.

use std::collections::HashMap;
use std::time::Duration;

use stageflow::flow::{top_n, Flow, Partitions, Window};

#[test]
fn smoke() {
    let total = Flow::from_iter(1..=1000u64)
        .stages(2)
        .partition(Partitions::by_event().stages(3))
        .reduce(|| 0u64, |sum: &mut u64, x| *sum += x)
        .departition_sum()
        .collect()
        .unwrap();
    assert_eq!(total.len(), 1, "one window: the global one");
    assert_eq!(total[0].value, 500_500);
    assert_eq!(total[0].partition, None);
}

#[test]
fn departition_sum_adds_every_partitions_total_per_window() {
    // Count windows of 100 events per partition: each window's departition adds the
    // partitions' sums for that window, so the windows' sums add up to the whole.
    let sums = Flow::from_iter(1..=10_000u64)
        .stages(2)
        .partition(Partitions::by_event().stages(4).window(Window::count(100)))
        .reduce(|| 0u64, |sum: &mut u64, x| *sum += x)
        .departition_sum()
        .collect()
        .unwrap();
    assert!(sums.len() > 1, "several windows: {}", sums.len());
    assert_eq!(sums.iter().map(|e| e.value).sum::<u64>(), 50_005_000);
}

#[test]
fn departition_counts_adds_a_key_counted_in_several_partitions() {
    // Partitioned by the whole number, counted by its residue: every partition counts every
    // residue, so merging by `extend` would keep one partition's count; the counts must add.
    let counts = Flow::from_iter(0..3000u64)
        .stages(2)
        .partition(Partitions::by_event().stages(4))
        .count_by_key(|x| x % 3)
        .departition_counts()
        .collect()
        .unwrap();
    assert_eq!(counts.len(), 1);
    let expected: HashMap<u64, u64> = [(0, 1000), (1, 1000), (2, 1000)].into();
    assert_eq!(counts[0].value, expected);
}

#[test]
fn departition_counts_after_flow_count_by_key_equals_a_single_threaded_count() {
    let text = "the cat and the dog and the bird saw a cat";
    let lines: Vec<&'static str> = (0..200).map(|_| text).collect();
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for w in lines.iter().flat_map(|l| l.split(' ')) {
        *expected.entry(w).or_default() += 1;
    }
    let counts = Flow::from_iter(lines)
        .stages(2)
        .flat_map(|line: &'static str| line.split(' '))
        .count_by_key(|w: &&str| *w, Partitions::by_event().stages(3))
        .departition_counts()
        .collect()
        .unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].value, expected);
}

#[test]
fn departition_collect_gathers_every_partitions_items_once() {
    let all = Flow::from_iter(0..5000u32)
        .stages(2)
        .partition(Partitions::by_event().stages(4))
        .reduce(Vec::new, |v: &mut Vec<u32>, x| v.push(x))
        .departition_collect()
        .collect()
        .unwrap();
    assert_eq!(all.len(), 1);
    let mut got = all[0].value.clone();
    got.sort_unstable();
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
}

#[test]
fn departition_top_ranks_the_partitions_tops_as_one_list() {
    // Word k appears k times (ties broken by the word), spread over 4 partitions.
    let words: Vec<String> = (1..=40u64)
        .flat_map(|k| std::iter::repeat_n(format!("w{k:02}"), k as usize))
        .collect();
    let mut single: HashMap<String, u64> = HashMap::new();
    for w in &words {
        *single.entry(w.clone()).or_default() += 1;
    }
    let expected = top_n(single, 5, |(_, n)| *n);
    let top = Flow::from_iter(words)
        .stages(2)
        .count_by_key(|w: &String| w.clone(), Partitions::by_event().stages(4))
        .take_top(5, |(_, n)| *n)
        .departition_top(5, |(_, n)| *n)
        .collect()
        .unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].value, expected);
    assert_eq!(top[0].value[0], ("w40".to_string(), 40));
}

/// Bounded: a flow that hangs fails the test instead of the CI job.
#[test]
fn a_windowed_departition_ends_with_its_input() {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let out = Flow::from_iter(0..100u64)
            .partition(Partitions::by_event().stages(2).window(Window::count(10)))
            .reduce(Vec::new, |v: &mut Vec<u64>, x| v.push(x))
            .departition_collect()
            .collect();
        let _ = tx.send(out.map(|o| o.into_iter().map(|e| e.value.len()).sum::<usize>()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the flow ends");
    assert_eq!(got.unwrap(), 100);
}
