//! Stages in a `std::thread::scope` (`ScopedBuilder::spawn_scoped`): events, messages and
//! stage values that borrow from the caller's stack.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use common::LIMIT;
use stageflow::fns::{Collect, Fold, ForEach};
use stageflow::{
    BuildError, CastError, Consumer, ConsumerContext, Context, Events, Producer, Reason,
    SubscribeOptions,
};

type Failure = Box<dyn std::error::Error>;

/// Runs `f` (a whole scope) on a thread of its own and fails clearly if it has not returned
/// within [`LIMIT`]: a scope waits for every stage in it, so a stage that never ends would
/// otherwise hang the test.
fn in_time<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("the scope did not return within {LIMIT:?}"))
}

fn text() -> Vec<String> {
    (0..500)
        .map(|i| format!("the quick fox {} jumps over the {} dog", i % 7, i % 3))
        .collect()
}

/// The same count by hand, over the same borrowed words.
fn by_hand(lines: &[String]) -> HashMap<&str, u64> {
    let mut counts = HashMap::new();
    for word in lines.iter().flat_map(|l| l.split_whitespace()) {
        *counts.entry(word).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_word_count_keys_by_borrowed_str_and_hands_back_its_map() -> Result<(), Failure> {
    let lines = text();
    let counts = std::thread::scope(|s| -> Result<_, Failure> {
        let source = stageflow::from_iter(lines.iter().map(String::as_str))
            .name("lines")
            .spawn_scoped(s)?;
        let words = stageflow::producer_consumer(stageflow::fns::FlatMap::new(|line: &str| {
            line.split_whitespace()
        }))
        .name("words")
        .subscribe_to(&source, SubscribeOptions::new().max_demand(50))?
        .spawn_scoped(s)?;
        let count = stageflow::consumer(Fold::new(
            HashMap::<&str, u64>::new(),
            |mut counts, word: &str| {
                *counts.entry(word).or_insert(0) += 1;
                counts
            },
        ))
        .name("count")
        .keep_state()
        .subscribe_to(&words, SubscribeOptions::new())?
        .spawn_scoped(s)?;
        Ok(count.join_result()?)
    })?;
    assert_eq!(counts, by_hand(&lines));
    Ok(())
}

#[test]
fn a_scoped_stage_borrows_what_the_caller_owns() -> Result<(), Failure> {
    let seen = AtomicU64::new(0);
    let numbers: Vec<u64> = (1..=1000).collect();
    std::thread::scope(|s| -> Result<(), Failure> {
        let source = stageflow::from_iter(numbers.iter()).spawn_scoped(s)?;
        let sink = stageflow::consumer(ForEach::new(|n: &u64| {
            seen.fetch_add(*n, Ordering::Relaxed);
        }))
        .subscribe_to(&source, SubscribeOptions::new())?
        .spawn_scoped(s)?;
        assert_eq!(sink.join_timeout(LIMIT), Some(Reason::Normal));
        Ok(())
    })?;
    assert_eq!(seen.load(Ordering::Relaxed), 500_500);
    Ok(())
}

#[test]
fn events_keep_their_order_and_none_is_lost() -> Result<(), Failure> {
    let numbers: Vec<u64> = (0..10_000).collect();
    let got = std::thread::scope(|s| -> Result<_, Failure> {
        let source = stageflow::from_iter(numbers.iter()).spawn_scoped(s)?;
        let sink = stageflow::consumer(Collect::new())
            .keep_state()
            .subscribe_to(&source, SubscribeOptions::new().max_demand(7))?
            .spawn_scoped(s)?;
        Ok(sink.join_result()?)
    })?;
    assert!(got.iter().copied().eq(numbers.iter()));
    Ok(())
}

/// Keeps the messages it gets (borrowing their text), and ends on `"end"`: a message after
/// the others, so it has handled them all by then whatever the threads' speed.
struct Listener<'a> {
    heard: Vec<&'a str>,
    mailbox: Option<Result<(), CastError<&'a str>>>,
}

impl<'a> Consumer for Listener<'a> {
    type In = u64;
    type Message = &'a str;

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_, &'a str>) {}

    fn handle_message(&mut self, msg: &'a str, ctx: &mut ConsumerContext<'_, &'a str>) {
        if msg == "end" {
            ctx.finish();
            return;
        }
        self.heard.push(msg);
        if self.mailbox.is_none() {
            self.mailbox = Some(ctx.mailbox().try_cast(msg));
        }
    }
}

#[test]
fn a_handle_casts_borrowed_messages_and_a_mailbox_refuses_them() -> Result<(), Failure> {
    let words = [String::from("one"), String::from("two")];
    let listener = std::thread::scope(|s| -> Result<_, Failure> {
        let stage = stageflow::consumer(Listener {
            heard: Vec::new(),
            mailbox: None,
        })
        .keep_state()
        .spawn_scoped(s)?;
        for w in &words {
            stage.cast(w.as_str()).map_err(|e| e.to_string())?;
        }
        // Not `finish`: it goes on the control path, ahead of casts not yet handled.
        stage.cast("end").map_err(|e| e.to_string())?;
        let (reason, listener) = stage.join_state();
        assert_eq!(reason, Reason::Normal);
        Ok(listener.ok_or("the stage's value was kept")?)
    })?;
    assert_eq!(listener.heard, ["one", "two"]);
    // A mailbox could outlive the scope: a scoped stage's refuses every message.
    assert!(
        matches!(listener.mailbox, Some(Err(CastError::Stopped("one")))),
        "{:?}",
        listener.mailbox
    );
    Ok(())
}

/// Emits without end until stopped.
struct Endless<'a> {
    word: &'a str,
}

impl<'a> Producer for Endless<'a> {
    type Out = &'a str;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, &'a str>) {
        ctx.emit_all(std::iter::repeat_n(self.word, demand));
    }
}

#[test]
fn the_scope_returns_once_an_endless_pipeline_is_stopped() {
    let counted = in_time(|| {
        let word = String::from("again");
        std::thread::scope(|s| -> Result<_, Failure> {
            let source = stageflow::producer(Endless { word: &word }).spawn_scoped(s)?;
            let (tx, rx) = crossbeam_channel::bounded(1);
            let sink = stageflow::consumer(Fold::new(0u64, move |n, w: &str| {
                assert_eq!(w, "again");
                if n == 10_000 {
                    let _ = tx.try_send(());
                }
                n + 1
            }))
            .keep_state()
            .subscribe_to(&source, SubscribeOptions::new())?
            .spawn_scoped(s)?;
            rx.recv_timeout(LIMIT)?;
            source.stop();
            // The sink's subscription is permanent: the producer's end ends it.
            let (reason, fold) = sink.join_state();
            assert_ne!(reason, Reason::Normal);
            Ok(fold.ok_or("kept")?.into_inner().ok_or("no panic")?)
        })
        .map_err(|e| e.to_string())
    });
    let counted = counted.expect("the pipeline ran");
    assert!(counted > 10_000, "{counted}");
}

/// Panics on its first event.
struct Fragile;

impl Consumer for Fragile {
    type In = u64;
    type Message = ();

    fn handle_events(&mut self, _: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        panic!("fragile");
    }
}

#[test]
fn a_panicking_scoped_stage_is_reported_and_the_scope_still_returns() {
    let reason = in_time(|| {
        let numbers: Vec<u64> = (0..100).collect();
        std::thread::scope(|s| -> Result<_, Failure> {
            let source = stageflow::from_iter(numbers.iter().copied()).spawn_scoped(s)?;
            let sink = stageflow::consumer(Fragile)
                .subscribe_to(&source, SubscribeOptions::new())?
                .spawn_scoped(s)?;
            let reason = sink.join_timeout(LIMIT).ok_or("the sink ended")?;
            // Its producer has lost its only consumer; it ends as well.
            source.stop();
            Ok(reason)
        })
        .map_err(|e| e.to_string())
    });
    assert_eq!(reason, Ok(Reason::Panicked("fragile".into())));
}

#[test]
fn a_scoped_stage_in_a_simulation_is_refused_naming_the_option() {
    let numbers = [1u64, 2, 3];
    let outcome = stageflow::sim::Sim::new(1).build(|| {
        std::thread::scope(|s| {
            stageflow::from_iter(numbers.iter())
                .spawn_scoped(s)
                .map(|_| ())
        })
    });
    match outcome {
        Err(BuildError::InvalidOption { option, message }) => {
            assert_eq!(option, "spawn_scoped");
            assert!(message.contains("simulation"), "{message}");
        }
        other => panic!("expected the option refused, got {other:?}"),
    }
}

#[test]
fn a_scoped_chain_partitions_borrowed_words_by_key() -> Result<(), Failure> {
    let lines = text();
    let lanes = std::thread::scope(|s| -> Result<_, Failure> {
        let sinks = stageflow::from_iter(lines.iter().map(String::as_str))
            .chain_in(s)
            .via(stageflow::fns::FlatMap::new(|line: &str| {
                line.split_whitespace()
            }))
            .partition(3, |word: &&str| *word)
            .to(|_lane| {
                stageflow::consumer(Fold::new(
                    HashMap::<&str, u64>::new(),
                    |mut counts, word: &str| {
                        *counts.entry(word).or_insert(0) += 1;
                        counts
                    },
                ))
                .keep_state()
            })
            .run_sinks()?;
        let mut lanes = Vec::new();
        for sink in sinks {
            lanes.push(sink.join_result()?);
        }
        Ok(lanes)
    })?;
    assert_eq!(lanes.len(), 3);
    let mut all = HashMap::new();
    for lane in &lanes {
        for (word, n) in lane {
            // Every word meets in one lane.
            assert!(all.insert(*word, *n).is_none(), "{word} in two lanes");
        }
    }
    assert_eq!(all, by_hand(&lines));
    Ok(())
}

#[test]
fn a_scoped_chain_collects_in_order() -> Result<(), Failure> {
    let numbers: Vec<u64> = (0..5000).collect();
    let doubled = std::thread::scope(|s| {
        stageflow::from_iter(numbers.iter())
            .chain_in(s)
            .via(stageflow::fns::Map::new(|n: &u64| n * 2))
            .collect()
    })?;
    assert!(doubled.iter().copied().eq(numbers.iter().map(|n| n * 2)));
    Ok(())
}

#[test]
fn a_scoped_chain_that_fails_to_build_stops_what_it_started() {
    // The source and the first link are started (each link starts the one before it), the
    // first link subscribed to the source, and then a later link fails. The two still reach
    // each other, and the source waits for a release that will not come: only a stop ends
    // them, and the scope returns only once they have ended.
    let result = in_time(|| {
        let numbers: Vec<u64> = (0..10).collect();
        std::thread::scope(|s| {
            stageflow::from_iter(numbers.iter())
                .chain_in(s)
                .via(stageflow::fns::Map::new(|n: &u64| *n))
                .via(stageflow::fns::Map::new(|n: u64| n + 1))
                .parallel(0)
                .to(|_| ForEach::new(|_: u64| {}))
                .run()
        })
    });
    match result {
        Err(BuildError::InvalidOption { option, .. }) => assert_eq!(option, "parallel"),
        other => panic!("expected parallel refused, got {other:?}"),
    }
}

#[test]
fn a_scoped_flow_counts_borrowed_words_both_ways() -> Result<(), Failure> {
    use stageflow::flow::{Partitions, ScopedFlow};
    let lines = text();
    let (combined, partitioned) = std::thread::scope(|s| -> Result<_, Failure> {
        // The key written once: each lane counts its batch before the partition.
        let combined = ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
            .stages(2)
            .flat_map(|line: &str| line.split_whitespace())
            .count_by_key(|word| *word, Partitions::by_event().stages(3))
            .departition_counts()
            .collect_in(s)?;
        // Partitioned, then counted in the reducers.
        let partitioned = ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
            .stages(2)
            .flat_map(|line: &str| line.split_whitespace())
            .partition(Partitions::by_key(|word: &&str| *word).stages(2))
            .count_by_key(|word| *word)
            .departition_counts()
            .collect_in(s)?;
        Ok((combined, partitioned))
    })?;
    let expected = by_hand(&lines);
    assert_eq!(combined.len(), 1, "one global window");
    assert_eq!(combined[0].value, expected);
    assert_eq!(partitioned[0].value, expected);
    Ok(())
}

#[test]
fn a_scoped_flow_s_closures_and_window_borrow_from_the_caller() -> Result<(), Failure> {
    use stageflow::flow::{Partitions, ScopedFlow, ScopedWindow, WindowId};
    use std::time::Duration;
    // Each event's time is looked up in a table the caller owns, and each event seen is
    // counted in a counter the caller owns: both borrowed by the flow's closures.
    let times: HashMap<u64, Duration> = (0..100).map(|i| (i, Duration::from_secs(i))).collect();
    let seen = AtomicU64::new(0);
    let numbers: Vec<u64> = (0..100).collect();
    let windows = std::thread::scope(|s| -> Result<_, Failure> {
        let window = ScopedWindow::fixed(Duration::from_secs(10), |n: &u64| times[n]);
        Ok(ScopedFlow::from_borrowed(numbers.iter().copied())
            .stages(2)
            .inspect(|_| {
                seen.fetch_add(1, Ordering::Relaxed);
            })
            .partition(Partitions::by_event().stages(2).window(window))
            .reduce(|| 0u64, |sum: &mut u64, n| *sum += n)
            .departition_sum()
            .collect_in(s)?)
    })?;
    assert_eq!(seen.load(Ordering::Relaxed), 100);
    let mut sums: Vec<(u64, u64)> = windows
        .iter()
        .map(|w| match w.window {
            WindowId::Fixed { start, .. } => (start.as_secs() / 10, w.value),
            other => panic!("a fixed window, got {other:?}"),
        })
        .collect();
    sums.sort_unstable();
    let expected: Vec<(u64, u64)> = (0..10).map(|w| (w, (w * 10..w * 10 + 10).sum())).collect();
    assert_eq!(sums, expected);
    Ok(())
}

#[test]
fn a_scoped_flow_whose_operation_panics_fails_and_the_scope_returns() {
    use stageflow::flow::{FlowError, ScopedFlow};
    let outcome = in_time(|| {
        let numbers: Vec<u64> = (0..10_000).collect();
        std::thread::scope(|s| {
            ScopedFlow::from_borrowed(numbers.iter())
                .stages(2)
                .map(|n: &u64| {
                    assert!(*n != 5000, "five thousand");
                    *n
                })
                .run_in(s)
                .map_err(|e| match e {
                    FlowError::Failed { reason, .. } => reason.to_string(),
                    e => format!("another error: {e}"),
                })
        })
    });
    let reason = outcome.expect_err("the flow failed");
    assert!(reason.contains("five thousand"), "{reason}");
}

/// Emits the words of borrowed lines, then finishes.
struct Words<'a> {
    lines: std::slice::Iter<'a, String>,
}

impl<'a> Producer for Words<'a> {
    type Out = &'a str;
    type Message = ();

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, &'a str>) {
        for line in self.lines.by_ref().take(demand) {
            ctx.emit_all(line.split_whitespace());
        }
        if self.lines.len() == 0 {
            ctx.finish();
        }
    }
}

#[test]
fn a_scoped_flow_reads_borrowing_producers_and_running_scoped_stages() -> Result<(), Failure> {
    use stageflow::flow::{Partitions, ScopedFlow};
    let lines = text();
    let (half, rest) = lines.split_at(lines.len() / 2);
    let counts = std::thread::scope(|s| -> Result<_, Failure> {
        // One half through a producer the flow starts, the other through a running stage.
        let running = stageflow::producer(Words { lines: rest.iter() })
            .demand(stageflow::ProducerDemand::Accumulate)
            .spawn_scoped(s)?;
        let from_producer = ScopedFlow::from_producer(Words { lines: half.iter() })
            .count_by_key(|word| *word, Partitions::by_event().stages(2))
            .departition_counts()
            .collect_in(s)?;
        let from_stage = ScopedFlow::from_producer_stages([running])
            .count_by_key(|word| *word, Partitions::by_event().stages(2))
            .departition_counts()
            .collect_in(s)?;
        Ok((from_producer, from_stage))
    })?;
    let mut all = counts.0[0].value.clone();
    for (word, n) in &counts.1[0].value {
        *all.entry(word).or_insert(0) += n;
    }
    assert_eq!(all, by_hand(&lines));
    Ok(())
}

#[test]
fn only_a_stage_on_its_own_thread_has_an_untyped_handle() -> Result<(), Failure> {
    use stageflow::{InScope, Place, Unscoped};
    let unscoped = stageflow::from_iter(0..3u64).spawn_in(Unscoped)?;
    let untyped = Unscoped
        .stage_ref(&unscoped)
        .ok_or("a stage on its own thread has one")?;
    assert_eq!(untyped.name(), unscoped.name());
    unscoped.stop();
    let numbers = [1u64, 2, 3];
    std::thread::scope(|s| -> Result<(), Failure> {
        let place = InScope::new(s);
        let scoped = stageflow::from_iter(numbers.iter()).spawn_in(place)?;
        assert!(
            place.stage_ref(&scoped).is_none(),
            "a stage in a scope has none"
        );
        scoped.stop();
        Ok(())
    })
}

#[test]
fn a_stream_reads_borrowed_events_on_the_calling_thread() {
    let lines = text();
    let words = in_time(move || {
        std::thread::scope(|s| -> Result<Vec<String>, String> {
            let source = stageflow::from_iter(lines.iter().map(String::as_str))
                .spawn_scoped(s)
                .map_err(|e| e.to_string())?;
            let words = stageflow::producer_consumer(stageflow::fns::FlatMap::new(|line: &str| {
                line.split_whitespace()
            }))
            .subscribe_to(&source, SubscribeOptions::new().max_demand(20))
            .map_err(|e| e.to_string())?
            .spawn_scoped(s)
            .map_err(|e| e.to_string())?;
            // The stream's items are `&str`s into `lines`, read here, on the scope's thread.
            let stream = stageflow::stream_scoped(s, &words, SubscribeOptions::new().max_demand(7))
                .map_err(|e| e.to_string())?;
            let got: Vec<&str> = stream.collect();
            Ok(got.into_iter().map(str::to_owned).collect())
        })
    })
    .expect("the stream read every word");
    let expected: Vec<String> = text()
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(str::to_owned)
        .collect();
    assert_eq!(words, expected);
}

#[test]
fn a_scoped_stream_dropped_early_lets_the_scope_end() {
    let numbers: Vec<u64> = (0..100_000).collect();
    let first = in_time(move || {
        std::thread::scope(|s| {
            let source = stageflow::from_iter(numbers.iter())
                .spawn_scoped(s)
                .expect("spawn");
            let mut stream =
                stageflow::stream_scoped(s, &source, SubscribeOptions::new().max_demand(10))
                    .expect("stream");
            let first: Vec<u64> = stream.by_ref().take(5).copied().collect();
            // Dropping the stream cancels its subscription; the producer, whose only
            // consumer left, is stopped here so that the scope can end.
            drop(stream);
            source.stop();
            first
        })
    });
    assert_eq!(first, [0, 1, 2, 3, 4]);
}

#[test]
fn a_scoped_flow_streams_its_borrowed_output_to_the_scope() {
    let lines = text();
    let (counts, first) = in_time(move || {
        let counts = std::thread::scope(|s| {
            let mut words =
                stageflow::flow::ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
                    .flat_map(|line: &str| line.split_whitespace())
                    .stages(2)
                    .stream_in(s)
                    .expect("the flow starts");
            let mut counts: HashMap<String, u64> = HashMap::new();
            for word in words.by_ref() {
                *counts.entry(word.to_owned()).or_insert(0) += 1;
            }
            words.finish().expect("every stage ends normally");
            counts
        });
        // Dropped after three words: the flow stops and the scope ends.
        let first = std::thread::scope(|s| {
            let words =
                stageflow::flow::ScopedFlow::from_borrowed(lines.iter().map(String::as_str))
                    .flat_map(|line: &str| line.split_whitespace())
                    .stream_in(s)
                    .expect("the flow starts");
            words.take(3).count()
        });
        (counts, first)
    });
    let lines = text();
    let expected: HashMap<String, u64> = by_hand(&lines)
        .into_iter()
        .map(|(w, n)| (w.to_owned(), n))
        .collect();
    assert_eq!(counts, expected);
    assert_eq!(first, 3);
}
