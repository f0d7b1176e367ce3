//! Buffered events are never stranded and never overtaken, under every dispatcher; an info
//! queued behind buffered events is delivered as soon as they leave the buffer, by dispatch or
//! by discard.

mod common;

use std::time::Duration;

use common::{joined, next, Recorder, Report, Trickle, LIMIT};
use crossbeam_channel::Sender;
use stageflow::dispatcher::{BroadcastDispatcher, DemandDispatcher, Dispatcher};
use stageflow::{BufferKeep, CancelMode, Context, Producer, Reason, Reply, SubscribeOptions};

/// A consumer takes a few events and leaves with unmet demand; events keep coming while nobody
/// is subscribed; a second consumer subscribes. It must get every remaining event, in order,
/// and the finishing producer must end.
fn nothing_stranded_nothing_overtaken(dispatcher: impl Dispatcher<u64> + 'static) {
    const LIMIT_EVENTS: u64 = 300;
    let p = stageflow::producer(Trickle {
        next: 0,
        limit: LIMIT_EVENTS,
        demand: 0,
        ticking: false,
    })
    .dispatcher(dispatcher)
    .spawn()
    .unwrap();
    let (rec, rx) = Recorder::<u64>::new();
    let leaver = stageflow::consumer(rec)
        .subscribe_to(
            &p,
            SubscribeOptions::new()
                .max_demand(100)
                .cancel(CancelMode::Temporary),
        )
        .unwrap()
        .spawn()
        .unwrap();
    let mut first = Vec::new();
    while first.is_empty() {
        if let Report::Batch(b) = next(&rx) {
            first = b;
        }
    }
    let sub = leaver.counters().subscriptions[0].id;
    leaver.cancel(sub, Reason::Normal).unwrap();
    // Until the cancel reaches the producer, events still go to the leaver (however many, on
    // a loaded machine): they are the leaver's, in order before the late consumer's.
    let mut got: Vec<u64> = first;
    loop {
        match next(&rx) {
            Report::Cancelled(_) => break,
            Report::Batch(b) => got.extend(b),
            _ => {}
        }
    }
    // Events emitted meanwhile are buffered (the producer still owes the leaver's demand).
    std::thread::sleep(Duration::from_millis(20));
    let (rec, rx) = Recorder::<u64>::new();
    let late = stageflow::consumer(rec)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(50))
        .unwrap()
        .spawn()
        .unwrap();
    assert_eq!(joined(&p), Reason::Normal, "the producer delivers and ends");
    assert_eq!(joined(&late), Reason::Normal);
    let mut later = Vec::new();
    for r in rx.try_iter() {
        if let Report::Batch(b) = r {
            later.extend(b);
        }
    }
    assert!(
        later.windows(2).all(|w| w[0] + 1 == w[1]),
        "the late consumer's sequence has gaps or goes backwards: {later:?}"
    );
    got.extend(later);
    assert_eq!(
        got,
        (0..LIMIT_EVENTS).collect::<Vec<_>>(),
        "every event once, in order"
    );
    leaver.stop();
    joined(&leaver);
}

#[test]
fn smoke() {
    nothing_stranded_nothing_overtaken(DemandDispatcher::new());
}

#[test]
fn broadcast_buffered_events_go_out_first() {
    nothing_stranded_nothing_overtaken(BroadcastDispatcher::new());
}

enum Cmd {
    Emit(Vec<char>),
    Info(u32),
    Sync(Reply<()>),
}

/// Emits on command, reports infos.
struct OnCommand {
    infos: Sender<u32>,
}

impl Producer for OnCommand {
    type Out = char;
    type Message = Cmd;

    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, char, Cmd>) {}

    fn handle_message(&mut self, msg: Cmd, ctx: &mut Context<'_, char, Cmd>) {
        match msg {
            Cmd::Emit(events) => ctx.emit_all(events),
            Cmd::Info(n) => {
                let _ = self.infos.send(n);
            }
            Cmd::Sync(reply) => ctx.reply(reply, ()),
        }
    }
}

#[test]
fn an_info_is_delivered_when_its_events_are_discarded() {
    let (tx, infos) = crossbeam_channel::unbounded();
    let p = stageflow::producer(OnCommand { infos: tx })
        .buffer_size(2)
        .buffer_keep(BufferKeep::Last)
        .spawn()
        .unwrap();
    p.cast(Cmd::Emit(vec!['a', 'b'])).unwrap();
    p.info(Cmd::Info(1)).unwrap();
    p.call(Cmd::Sync, LIMIT).unwrap();
    assert!(infos.try_recv().is_err(), "a and b are still buffered");
    // c and d push a and b out: the info behind them is due at once, with no demand at all.
    p.cast(Cmd::Emit(vec!['c', 'd'])).unwrap();
    assert_eq!(next(&infos), 1);
    let c = p.counters();
    assert_eq!((c.discarded, c.buffered), (2, 2));
    p.stop();
    joined(&p);
}

#[test]
fn a_broadcasting_producer_consumer_keeps_to_its_slowest_consumer() {
    // The second consumer subscribes after the first asked: the producer-consumer's demand
    // falls to the slowest's, so it handles no more input than they can take, and its bounded
    // buffer never overflows.
    let source = stageflow::from_iter(0..2000u64).spawn().unwrap();
    let map = stageflow::producer_consumer(stageflow::fns::Map::new(|x: u64| x))
        .dispatcher(BroadcastDispatcher::new())
        .buffer_size(101)
        .subscribe_to(&source, SubscribeOptions::new().max_demand(4).min_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    let (a, arx) = Recorder::<u64>::new();
    let a = stageflow::consumer(a)
        .subscribe_to(&map, SubscribeOptions::new().max_demand(8).min_demand(1))
        .unwrap()
        .spawn()
        .unwrap();
    let (b, brx) = Recorder::<u64>::new();
    let b = stageflow::consumer(b)
        .subscribe_to(&map, SubscribeOptions::new().max_demand(2).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    for s in [
        source.stage_ref(),
        map.stage_ref(),
        a.stage_ref(),
        b.stage_ref(),
    ] {
        assert_eq!(s.join_timeout(LIMIT), Some(Reason::Normal), "{}", s.name());
    }
    assert_eq!(map.counters().discarded, 0);
    let count = |rx: &crossbeam_channel::Receiver<Report<u64>>| -> usize {
        rx.try_iter()
            .map(|r| match r {
                Report::Batch(b) => b.len(),
                _ => 0,
            })
            .sum()
    };
    let (got_a, got_b) = (count(&arx), count(&brx));
    // B sees what was dispatched after it subscribed: everything but what A got alone.
    assert!(got_a >= got_b && got_a == 2000, "a {got_a}, b {got_b}");
}

#[test]
fn a_timer_driven_broadcast_producer_never_stalls() {
    // The guide's blocking-source pattern under a broadcast, a big consumer then a small one:
    // the producer must be asked for more as they ask, and finish.
    let p = stageflow::producer(Trickle {
        next: 0,
        limit: 2298,
        demand: 0,
        ticking: false,
    })
    .dispatcher(BroadcastDispatcher::new())
    .spawn()
    .unwrap();
    let (a, _arx) = Recorder::<u64>::new();
    let a = stageflow::consumer(a)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(1000).min_demand(544))
        .unwrap()
        .spawn()
        .unwrap();
    let (b, _brx) = Recorder::<u64>::new();
    let b = stageflow::consumer(b)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(7).min_demand(0))
        .unwrap()
        .spawn()
        .unwrap();
    for s in [p.stage_ref(), a.stage_ref(), b.stage_ref()] {
        assert_eq!(s.join_timeout(LIMIT), Some(Reason::Normal), "{}", s.name());
    }
    assert_eq!(a.counters().events_in, 2298);
    assert_eq!(p.counters().discarded, 0);
}
