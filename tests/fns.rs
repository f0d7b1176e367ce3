//! Stages from closures (`stageflow::fns`): each behaves like the hand-written stage it
//! replaces, under the same credit protocol.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use common::joined;
use stageflow::fns::{Batches, Collect, Filter, FlatMap, Fold, ForEach, Generate, Map};
use stageflow::{JoinError, Reason, SubscribeOptions};

#[test]
fn smoke() {
    let p = stageflow::from_iter(0..5u64).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let c = stageflow::consumer(ForEach::new(move |x: u64| tx.send(x).unwrap()))
        .subscribe_to(&p, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
}

#[test]
fn map_flat_map_and_filter_in_a_chain() {
    let p = stageflow::from_iter(1..=4u64).spawn().unwrap();
    let words = stageflow::producer_consumer(Map::new(|x: u64| format!("w{x}")))
        .subscribe_to(&p, SubscribeOptions::new().max_demand(2))
        .unwrap()
        .spawn()
        .unwrap();
    let letters =
        stageflow::producer_consumer(FlatMap::new(|w: String| w.chars().collect::<Vec<_>>()))
            .subscribe_to(&words, SubscribeOptions::new().max_demand(3))
            .unwrap()
            .spawn()
            .unwrap();
    let digits = stageflow::producer_consumer(Filter::new(|c: &char| c.is_ascii_digit()))
        .subscribe_to(&letters, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    let got: String = stageflow::stream(&digits, SubscribeOptions::new())
        .unwrap()
        .collect();
    assert_eq!(got, "1234");
    assert_eq!(joined(&digits), Reason::Normal);
}

#[test]
fn batches_are_cut_by_the_subscription() {
    let p = stageflow::from_iter(0..100u64).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let c = stageflow::consumer(Batches::new(move |events: stageflow::Events<'_, u64>| {
        tx.send(events.len()).unwrap()
    }))
    .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(7))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&c), Reason::Normal);
    let sizes: Vec<usize> = rx.try_iter().collect();
    assert_eq!(sizes.iter().sum::<usize>(), 100);
    assert!(
        sizes.iter().all(|&n| n <= 3),
        "chunks of max - min = 3: {sizes:?}"
    );
}

#[test]
fn generate_emits_on_demand_and_finishes() {
    let mut next = 0u64;
    let p = stageflow::producer(Generate::new(move |demand, ctx| {
        for _ in 0..demand.min(7) {
            ctx.emit(next);
            next += 1;
        }
        if next >= 20 {
            ctx.finish();
        }
    }))
    .spawn()
    .unwrap();
    let got: Vec<u64> = stageflow::stream(&p, SubscribeOptions::new().max_demand(5))
        .unwrap()
        .collect();
    assert_eq!(got, (0..got.len() as u64).collect::<Vec<_>>());
    assert!(got.len() >= 20);
    assert_eq!(joined(&p), Reason::Normal);
}

#[test]
fn fold_and_collect_hand_their_result_back_from_the_handle() {
    let numbers = stageflow::from_iter(1..=1000u64).spawn().unwrap();
    let sum = stageflow::consumer(Fold::new(0u64, |acc, x: u64| acc + x))
        .keep_state()
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(7))
        .unwrap()
        .spawn()
        .unwrap();
    let (reason, fold) = sum.join_state();
    assert_eq!(reason, Reason::Normal);
    assert_eq!(fold.expect("kept").into_inner(), Some(500_500));
    // There is one value: the second call gets none.
    assert!(sum.join_state().1.is_none());

    let words = stageflow::from_iter(["a", "b", "c"]).spawn().unwrap();
    let all = stageflow::consumer(Collect::new())
        .keep_state()
        .subscribe_to(&words, SubscribeOptions::new().max_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(
        all.join_state().1.expect("kept").into_vec(),
        vec!["a", "b", "c"]
    );
}

#[test]
fn join_result_hands_back_a_fold_or_a_collection_in_one_call() {
    let numbers = stageflow::from_iter(1..=1000u64).spawn().unwrap();
    let sum = stageflow::consumer(Fold::new(0u64, |acc, x: u64| acc + x))
        .keep_state()
        .subscribe_to(&numbers, SubscribeOptions::new().max_demand(7))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&sum), Reason::Normal);
    assert_eq!(sum.join_result(), Ok(500_500));
    // There is one value: the second call says so.
    let again = sum.join_result().unwrap_err();
    assert!(
        matches!(&again, JoinError::NoResult { stage } if stage == sum.name()),
        "{again:?}"
    );
    assert!(again.to_string().contains("keep_state"), "{again}");

    let words = stageflow::from_iter(["a", "b", "c"]).spawn().unwrap();
    let all = stageflow::consumer(Collect::new())
        .keep_state()
        .subscribe_to(&words, SubscribeOptions::new().max_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&all), Reason::Normal);
    assert_eq!(all.join_result(), Ok(vec!["a", "b", "c"]));
}

#[test]
fn join_result_without_keep_state_says_so() {
    let numbers = stageflow::from_iter(1..=10u64).spawn().unwrap();
    let sum = stageflow::consumer(Fold::new(0u64, |acc, x: u64| acc + x))
        .name("unkept")
        .subscribe_to(&numbers, SubscribeOptions::new())
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&sum), Reason::Normal);
    assert_eq!(
        sum.join_result(),
        Err(JoinError::NoResult {
            stage: "unkept".into()
        })
    );
}

#[test]
fn join_result_of_a_panicked_fold_is_an_error_naming_the_panic() {
    let numbers = stageflow::from_iter(1..=10u64).spawn().unwrap();
    let sum = stageflow::consumer(Fold::new(0u64, |acc, x: u64| {
        assert!(x != 3, "three is not welcome");
        acc + x
    }))
    .name("sum")
    .keep_state()
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(1))
    .unwrap()
    .spawn()
    .unwrap();
    joined(&sum);
    let err = sum.join_result().unwrap_err();
    assert!(
        matches!(&err, JoinError::Panicked { stage, message }
            if stage == "sum" && message.contains("three is not welcome")),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("no result: stage sum panicked"),
        "{err}"
    );
}

#[test]
fn join_result_of_a_stopped_stage_is_an_error_and_leaves_the_value() {
    let numbers = stageflow::from_iter(0u64..).spawn().unwrap(); // endless
    let (tx, rx) = mpsc::channel();
    let count = stageflow::consumer(Fold::new(0u64, move |n, _: u64| {
        if n == 100 {
            let _ = tx.send(());
        }
        n + 1
    }))
    .name("count")
    .keep_state()
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(10))
    .unwrap()
    .spawn()
    .unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(30))
        .expect("the count passes 100");
    count.stop();
    assert_eq!(joined(&count), Reason::Shutdown);
    let err = count.join_result().unwrap_err();
    assert_eq!(
        err,
        JoinError::Ended {
            stage: "count".into(),
            reason: Reason::Shutdown
        }
    );
    // The partial count is still there for whoever wants it.
    let (reason, fold) = count.join_state();
    assert_eq!(reason, Reason::Shutdown);
    assert!(fold.and_then(Fold::into_inner).unwrap() > 100);
    numbers.stop();
    assert_eq!(joined(&numbers), Reason::Shutdown);
}

#[test]
fn a_fold_whose_closure_panicked_says_so_instead_of_panicking_again() {
    let numbers = stageflow::from_iter(1..=10u64).spawn().unwrap();
    let sum = stageflow::consumer(Fold::new(0u64, |acc, x: u64| {
        assert!(x != 3, "three is not welcome");
        acc + x
    }))
    .keep_state()
    .subscribe_to(&numbers, SubscribeOptions::new().max_demand(1))
    .unwrap()
    .spawn()
    .unwrap();
    let (reason, fold) = sum.join_state();
    assert!(
        matches!(&reason, Reason::Panicked(m) if m.contains("three is not welcome")),
        "{reason:?}"
    );
    // The state is kept however the stage ended; the accumulator went with the unwinding.
    let fold = fold.expect("keep_state keeps the fold after a panic");
    assert_eq!(fold.get(), None);
    assert_eq!(format!("{fold:?}"), "Fold { acc: None }");
    assert_eq!(fold.into_inner(), None);
}

#[test]
fn without_keep_state_the_value_is_dropped_before_join_returns() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Flag(dropped.clone());
    let numbers = stageflow::from_iter(0..3u64).spawn().unwrap();
    let sink = stageflow::consumer(ForEach::new(move |_: u64| {
        let _ = &flag;
    }))
    .subscribe_to(&numbers, SubscribeOptions::new())
    .unwrap()
    .spawn()
    .unwrap();
    let (reason, state) = sink.join_state();
    assert_eq!(reason, Reason::Normal);
    assert!(state.is_none());
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn closure_stages_see_their_context_and_their_end() {
    use stageflow::fns::{Process, Sink};
    use stageflow::{ConsumerContext, Context, Events};
    // A producer-consumer that emits each event twice and ends itself at 10.
    let twice = Process::new(|events: Events<'_, u64>, ctx: &mut Context<'_, u64>| {
        for x in events {
            ctx.emit(x);
            ctx.emit(x);
            if x == 10 {
                ctx.finish();
            }
        }
    });
    let (end_tx, end_rx) = mpsc::channel();
    let (seen_tx, seen_rx) = mpsc::channel();
    let numbers = stageflow::from_iter(0..1_000u64).spawn().unwrap();
    let doubled =
        stageflow::producer_consumer(twice.on_terminate(move |r| end_tx.send(r.clone()).unwrap()))
            .subscribe_to(&numbers, SubscribeOptions::new().max_demand(1))
            .unwrap()
            .spawn()
            .unwrap();
    let (sink_end_tx, sink_end_rx) = mpsc::channel();
    let sink = stageflow::consumer(
        Sink::new(
            move |events: Events<'_, u64>, _: &mut ConsumerContext<'_>| {
                seen_tx.send(events.collect::<Vec<_>>()).unwrap();
            },
        )
        .on_terminate(move |r| sink_end_tx.send(r.clone()).unwrap()),
    )
    .subscribe_to(&doubled, SubscribeOptions::new())
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(joined(&sink), Reason::Normal);
    let seen: Vec<u64> = seen_rx.try_iter().flatten().collect();
    let expected: Vec<u64> = (0..=10).flat_map(|x| [x, x]).collect();
    assert_eq!(seen, expected);
    // Its terminate has run by the time its join returns.
    assert_eq!(joined(&doubled), Reason::Normal);
    assert_eq!(end_rx.try_recv().ok(), Some(Reason::Normal));
    assert_eq!(sink_end_rx.try_recv().ok(), Some(Reason::Normal));
    numbers.stop();
}
