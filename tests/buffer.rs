//! The producer buffer (reference §2.2–§2.4): `BufferKeep::First` / `Last` with the discard
//! counts in `counters().discarded`, the default size of 10 000, `handle_demand` asked only for
//! what the buffer does not cover, a finishing producer delivering everything it buffered before
//! its consumer sees `Cancelled(Normal)`, and `buffer_size(0)` refused at spawn.

mod common;

use std::time::Duration;

use common::{collect_events, joined, next, Recorder, Report, LIMIT};
use crossbeam_channel::{Receiver, Sender};
use stageflow::{
    BufferKeep, BuildError, Context, Producer, ProducerHandle, Reason, Reply, SubscribeOptions,
};

enum Cmd<T> {
    /// Emit these events (in one callback), then reply.
    Emit(Vec<T>, Reply<()>),
    /// Emit these events and finish, in the same callback.
    EmitAndFinish(Vec<T>),
    /// Reply once everything before it was handled; the counters are then up to date.
    Sync(Reply<()>),
}

/// Emits only when told to; reports every `handle_demand`.
struct Emitter<T> {
    tx: Sender<Report<T>>,
}

impl<T: Send + 'static> Producer for Emitter<T> {
    type Out = T;
    type Message = Cmd<T>;

    fn handle_demand(&mut self, demand: usize, _: &mut Context<'_, T, Cmd<T>>) {
        let _ = self.tx.send(Report::Demand(demand));
    }

    fn handle_message(&mut self, msg: Cmd<T>, ctx: &mut Context<'_, T, Cmd<T>>) {
        match msg {
            Cmd::Emit(events, reply) => {
                ctx.emit_all(events);
                ctx.reply(reply, ());
            }
            Cmd::EmitAndFinish(events) => {
                ctx.emit_all(events);
                ctx.finish();
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
        }
    }
}

fn emitter<T: Send + 'static>(
    name: &str,
    configure: impl FnOnce(
        stageflow::StageBuilder<Emitter<T>, stageflow::ProducerRole>,
    ) -> stageflow::StageBuilder<Emitter<T>, stageflow::ProducerRole>,
) -> (ProducerHandle<Emitter<T>>, Receiver<Report<T>>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let producer = configure(stageflow::producer(Emitter { tx }).name(name))
        .spawn()
        .expect("spawn producer");
    (producer, rx)
}

fn emit<T: Send + 'static>(producer: &ProducerHandle<Emitter<T>>, events: Vec<T>) {
    producer
        .call(|r| Cmd::Emit(events, r), LIMIT)
        .expect("the producer replies");
}

/// Waits until the producer has handled everything sent to it so far; `buffered` is published
/// at the end of each turn, so it is current once a later call has been answered.
fn sync<T: Send + 'static>(producer: &ProducerHandle<Emitter<T>>) {
    producer
        .call(Cmd::Sync, LIMIT)
        .expect("the producer replies");
}

fn recorder<T: Send + PartialEq + std::fmt::Debug + 'static>(
    producer: &ProducerHandle<Emitter<T>>,
    options: SubscribeOptions,
) -> (stageflow::ConsumerHandle<Recorder<T>>, Receiver<Report<T>>) {
    let (rec, rx) = Recorder::new();
    let consumer = stageflow::consumer(rec)
        .name("recorder")
        .subscribe_to(producer, options)
        .expect("valid options")
        .spawn()
        .expect("spawn consumer");
    assert_eq!(next(&rx), Report::Subscribed);
    (consumer, rx)
}

fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

#[test]
fn smoke() {
    let (producer, _rx) = emitter::<u8>("smoke", |b| b);
    emit(&producer, vec![1, 2, 3]);
    sync(&producer);
    let c = producer.counters();
    assert_eq!((c.buffered, c.discarded), (3, 0));
    producer.stop();
    assert_eq!(joined(&producer), Reason::Shutdown);
    assert_eq!(
        producer.counters().discarded,
        3,
        "a stop discards what is buffered"
    );
}

/// Emits a..e then f,g,h into a buffer of 5 with nobody subscribed, checks the counters, then
/// subscribes a consumer and returns what it receives (and what handle_demand was asked).
fn keep(keep: BufferKeep) -> (Vec<char>, Vec<Report<char>>) {
    let (producer, prx) = emitter::<char>("keeper", |b| b.buffer_size(5).buffer_keep(keep));
    emit(&producer, chars("abcde"));
    sync(&producer);
    assert_eq!(producer.counters().discarded, 0, "a-e fit");
    emit(&producer, chars("fgh"));
    sync(&producer);
    let c = producer.counters();
    assert_eq!(c.discarded, 3, "{keep:?}: one store of 3 beyond the size");
    assert_eq!(c.buffered, 5);
    assert!(prx.try_recv().is_err(), "no demand without a consumer");

    let (consumer, crx) = recorder(&producer, SubscribeOptions::new());
    // The first ask (1000) takes the 5 buffered events in one message and asks handle_demand
    // only for the 995 the buffer did not cover.
    let Report::Batch(got) = next(&crx) else {
        panic!("expected a batch")
    };
    assert_eq!(next(&prx), Report::Demand(995));
    sync(&producer);
    let c = producer.counters();
    assert_eq!((c.buffered, c.events_out, c.discarded), (0, 5, 3));

    producer.stop();
    assert_eq!(joined(&producer), Reason::Shutdown);
    assert_eq!(next(&crx), Report::Cancelled(Reason::Shutdown));
    assert_eq!(joined(&consumer), Reason::Shutdown);
    let rest: Vec<_> = prx.try_iter().collect();
    (got, rest)
}

#[test]
fn keep_first_drops_the_incoming_events() {
    let (got, rest) = keep(BufferKeep::First);
    assert_eq!(got, chars("abcde"));
    assert_eq!(rest, vec![], "no other handle_demand");
}

#[test]
fn keep_last_drops_the_oldest_events() {
    let (got, rest) = keep(BufferKeep::Last);
    assert_eq!(got, chars("defgh"));
    assert_eq!(rest, vec![]);
}

#[test]
fn keep_last_is_the_default_and_discards_add_up() {
    let (producer, _prx) = emitter::<char>("default-keep", |b| b.buffer_size(5));
    emit(&producer, chars("abcde"));
    emit(&producer, chars("fgh"));
    emit(&producer, chars("i"));
    sync(&producer);
    let c = producer.counters();
    assert_eq!((c.discarded, c.buffered), (4, 5));
    let (consumer, crx) = recorder(&producer, SubscribeOptions::new().max_demand(10));
    assert_eq!(next(&crx), Report::Batch(chars("efghi")));
    producer.stop();
    assert_eq!(joined(&producer), Reason::Shutdown);
    assert_eq!(joined(&consumer), Reason::Shutdown);
}

#[test]
fn default_producer_buffer_holds_10_000() {
    let (producer, prx) = emitter::<u32>("default-size", |b| b);
    emit(&producer, (0..10_003).collect());
    sync(&producer);
    let c = producer.counters();
    assert_eq!(c.discarded, 3, "10_003 into 10_000 discards 3");
    assert_eq!(c.buffered, 10_000);

    // Keep-last dropped 0, 1, 2. The consumer (1000/500) drains the buffer in order: the first
    // ask and the next 18 asks of 500 are covered by the buffer; only the last two reach
    // handle_demand.
    let (consumer, crx) = recorder(&producer, SubscribeOptions::new());
    let batches = collect_events(&crx, 10_000);
    assert!(batches.iter().all(|b| b.len() == 500), "chunks of 500");
    let all: Vec<u32> = batches.into_iter().flatten().collect();
    assert_eq!(all, (3..10_003).collect::<Vec<_>>());
    assert_eq!(next(&prx), Report::Demand(500));
    assert_eq!(next(&prx), Report::Demand(500));
    sync(&producer);
    assert!(prx.try_recv().is_err(), "exactly two handle_demand calls");
    let c = producer.counters();
    assert_eq!((c.buffered, c.events_out, c.discarded), (0, 10_000, 3));

    producer.stop();
    assert_eq!(joined(&producer), Reason::Shutdown);
    assert_eq!(joined(&consumer), Reason::Shutdown);
}

#[test]
fn unbounded_buffer_never_discards() {
    let (producer, _prx) = emitter::<u32>("unbounded", |b| b.buffer_unbounded());
    emit(&producer, (0..25_000).collect());
    sync(&producer);
    let c = producer.counters();
    assert_eq!((c.discarded, c.buffered), (0, 25_000));
    producer.stop();
    assert_eq!(joined(&producer), Reason::Shutdown);
    assert_eq!(producer.counters().discarded, 25_000);
}

/// Reads a recorder's reports up to its `Cancelled`, returning the batches and the reason.
fn until_cancelled<T: std::fmt::Debug>(rx: &Receiver<Report<T>>) -> (Vec<Vec<T>>, Reason) {
    let mut batches = Vec::new();
    loop {
        match next(rx) {
            Report::Batch(b) => batches.push(b),
            Report::Cancelled(reason) => return (batches, reason),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn finish_delivers_everything_buffered_before_the_consumer_sees_normal() {
    let (producer, prx) = emitter::<u32>("finisher", |b| b);
    let (rec, crx) = Recorder::new();
    let consumer = stageflow::consumer(Recorder {
        delay: Duration::from_millis(1), // a slow consumer: the buffer really has to wait
        ..rec
    })
    .name("slow")
    .subscribe_to(&producer, SubscribeOptions::new().max_demand(10))
    .unwrap()
    .spawn()
    .unwrap();
    assert_eq!(next(&crx), Report::Subscribed);
    assert_eq!(next(&prx), Report::Demand(10));

    // 10 go out at once, 40 wait in the buffer; the producer is finishing.
    producer
        .cast(Cmd::EmitAndFinish((0..50).collect()))
        .unwrap();
    let (batches, reason) = until_cancelled(&crx);
    assert_eq!(reason, Reason::Normal);
    assert!(batches.iter().all(|b| b.len() == 5), "{batches:?}");
    let all: Vec<u32> = batches.into_iter().flatten().collect();
    assert_eq!(all, (0..50).collect::<Vec<_>>(), "nothing lost on finish");
    assert_eq!(joined(&consumer), Reason::Normal);
    assert_eq!(joined(&producer), Reason::Normal);
    let c = producer.counters();
    assert_eq!((c.events_out, c.discarded, c.buffered), (50, 0, 0));
    assert!(
        prx.try_recv().is_err(),
        "a finishing producer's handle_demand is not called again"
    );
}

#[test]
fn finish_with_nobody_subscribed_waits_for_a_consumer() {
    let (producer, prx) = emitter::<u32>("patient", |b| b);
    producer
        .cast(Cmd::EmitAndFinish((0..20).collect()))
        .unwrap();
    // Still running (it answers), still holding the 20 events.
    sync(&producer);
    assert_eq!(producer.outcome(), None);
    assert_eq!(producer.counters().buffered, 20);

    let (consumer, crx) = recorder(&producer, SubscribeOptions::new().max_demand(8));
    let (batches, reason) = until_cancelled(&crx);
    assert_eq!(reason, Reason::Normal);
    let all: Vec<u32> = batches.into_iter().flatten().collect();
    assert_eq!(all, (0..20).collect::<Vec<_>>());
    assert_eq!(joined(&consumer), Reason::Normal);
    assert_eq!(joined(&producer), Reason::Normal);
    assert_eq!(producer.counters().discarded, 0);
    assert!(prx.try_recv().is_err(), "no handle_demand after finish");
}

fn assert_buffer_size_error(err: BuildError) {
    let text = err.to_string();
    match err {
        BuildError::InvalidOption { option, message } => {
            assert_eq!(option, "buffer_size");
            assert_eq!(message, "expected buffer_size to be at least 1, got 0");
        }
        other => panic!("expected InvalidOption, got {other:?}"),
    }
    assert_eq!(
        text,
        "invalid stage option: expected buffer_size to be at least 1, got 0"
    );
}

#[test]
fn buffer_size_zero_fails_at_spawn() {
    let (tx, _rx) = crossbeam_channel::unbounded::<Report<u32>>();
    let err = stageflow::producer(Emitter { tx })
        .buffer_size(0)
        .spawn()
        .expect_err("buffer_size 0 must be refused");
    assert_buffer_size_error(err);

    let err = stageflow::producer_consumer(common::Pass)
        .buffer_size(0)
        .spawn()
        .expect_err("buffer_size 0 must be refused");
    assert_buffer_size_error(err);
}

#[test]
fn format_discarded_sees_each_store_and_can_silence_the_warning() {
    // GenStage's format_discarded: called after each store that dropped events, with that
    // store's count; the events are counted either way.
    struct Quiet(crossbeam_channel::Sender<usize>);
    impl stageflow::Producer for Quiet {
        type Out = u32;
        type Message = Vec<u32>;
        fn handle_demand(&mut self, _: usize, _: &mut stageflow::Context<'_, u32, Vec<u32>>) {}
        fn handle_message(
            &mut self,
            events: Vec<u32>,
            ctx: &mut stageflow::Context<'_, u32, Vec<u32>>,
        ) {
            ctx.emit_all(events);
        }
        fn format_discarded(&mut self, count: usize) -> bool {
            let _ = self.0.send(count);
            false
        }
    }
    let logs = common::capture_logs();
    let (tx, rx) = crossbeam_channel::unbounded();
    let p = stageflow::producer(Quiet(tx))
        .name("quiet")
        .buffer_size(5)
        .spawn()
        .unwrap();
    p.cast(vec![1, 2, 3, 4, 5]).unwrap();
    p.cast(vec![6, 7, 8]).unwrap();
    p.cast(vec![9]).unwrap();
    assert_eq!(common::next(&rx), 3);
    assert_eq!(common::next(&rx), 1);
    assert_eq!(p.counters().discarded, 4);
    assert_eq!(common::logged(&logs, "stage quiet: discarded"), vec![]);
    p.stop();
    common::joined(&p);
}

#[test]
fn every_discard_is_logged_at_warn_level_with_the_stage_and_the_count() {
    let logs = common::capture_logs();
    let (p, _rx) = emitter("overflowing", |b| b.buffer_size(5));
    emit(&p, vec![1u32, 2, 3, 4, 5]);
    emit(&p, vec![6, 7, 8]);
    assert_eq!(
        common::logged(&logs, "stage overflowing: discarded"),
        vec![(
            log::Level::Warn,
            "stage overflowing: discarded 3 events from buffer".to_string()
        )]
    );
    p.stop();
    joined(&p);
}

#[test]
fn a_stage_that_keeps_discarding_logs_a_line_per_second_and_counts_every_event() {
    let logs = common::capture_logs();
    let (p, _rx) = emitter("flooded", |b| b.buffer_size(5));
    emit(&p, vec![0u32; 5]);
    // 2 000 stores that each discard 3 events, well within a second on any machine.
    for _ in 0..2_000 {
        emit(&p, vec![1, 2, 3]);
    }
    p.stop();
    joined(&p);
    // The stop discards the 5 events still buffered.
    assert_eq!(p.counters().discarded, 6_000 + 5);
    let lines = common::logged(&logs, "stage flooded: discarded");
    // The first store logs at once; the rest is summed into a line a second (or at the end).
    assert!(
        lines.len() < 20,
        "one line per second at most, got {}",
        lines.len()
    );
    assert_eq!(
        lines[0],
        (
            log::Level::Warn,
            "stage flooded: discarded 3 events from buffer".to_string()
        )
    );
    let logged: u64 = lines
        .iter()
        .filter_map(|(_, l)| {
            l.strip_prefix("stage flooded: discarded ")?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    // Every discarded event is in some line.
    assert_eq!(logged, 6_000 + 5, "{lines:?}");
}
