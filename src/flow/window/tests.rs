//! The windows' unit tests: every kind and trigger driven by hand-picked times, and fixed
//! windows fed by several lanes, including seeded interleavings checked against the
//! watermark rule written out.

use super::*;

type Ev = u64;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// Windows collecting events into a `Vec`, timestamps being the event in seconds.
fn windows(w: Window<Ev>) -> Windows<'static, Ev, Vec<Ev>> {
    Windows::new(
        &w,
        Arc::new(Vec::new),
        Arc::new(|acc: &mut Vec<Ev>, e| acc.push(e)),
        Duration::ZERO,
    )
}

fn fire(index: u64, window: WindowId, fired: Fired, value: &[Ev]) -> Action<Vec<Ev>> {
    Action::Fire {
        index,
        window,
        fired,
        value: value.to_vec(),
    }
}

fn push_all(
    w: &mut Windows<'static, Ev, Vec<Ev>>,
    events: &[Ev],
    now: Duration,
) -> Vec<Action<Vec<Ev>>> {
    let mut out = Vec::new();
    for &e in events {
        w.push(one_lane(), e, now, &mut out);
    }
    out
}

/// The lane of the tests that feed one lane.
fn one_lane() -> SubscriptionId {
    static LANE: std::sync::OnceLock<SubscriptionId> = std::sync::OnceLock::new();
    *LANE.get_or_init(SubscriptionId::unique)
}

fn finish(w: &mut Windows<'static, Ev, Vec<Ev>>) -> Vec<Action<Vec<Ev>>> {
    let mut out = Vec::new();
    w.finish(&mut out);
    out
}

fn tick(w: &mut Windows<'static, Ev, Vec<Ev>>, now: Duration) -> Vec<Action<Vec<Ev>>> {
    let mut out = Vec::new();
    w.tick(now, &mut out);
    out
}

#[test]
fn global_emits_once_when_the_input_completes() {
    let mut w = windows(Window::global());
    assert_eq!(push_all(&mut w, &[1, 2, 3], secs(100)), vec![]);
    assert_eq!(tick(&mut w, secs(1000)), vec![]);
    assert_eq!(
        finish(&mut w),
        vec![fire(0, WindowId::Global, Fired::Done, &[1, 2, 3])]
    );
}

#[test]
fn global_without_events_still_emits_its_initial_state() {
    let mut w = windows(Window::global());
    assert_eq!(
        finish(&mut w),
        vec![fire(0, WindowId::Global, Fired::Done, &[])]
    );
}

#[test]
fn trigger_every_emits_the_state_so_far_and_keeps_it() {
    let mut w = windows(Window::global().trigger_every(2));
    let every = Fired::Trigger(Trigger::Every(2));
    assert_eq!(
        push_all(&mut w, &[1, 2, 3, 4, 5], Duration::ZERO),
        vec![
            fire(0, WindowId::Global, every, &[1, 2]),
            fire(0, WindowId::Global, every, &[1, 2, 3, 4]),
        ]
    );
    assert_eq!(
        finish(&mut w),
        vec![fire(0, WindowId::Global, Fired::Done, &[1, 2, 3, 4, 5])]
    );
}

#[test]
fn count_windows_close_every_n_events_and_the_last_at_completion() {
    let mut w = windows(Window::count(3));
    assert_eq!(
        push_all(&mut w, &[1, 2, 3, 4, 5, 6, 7], Duration::ZERO),
        vec![
            fire(0, WindowId::Count(0), Fired::Closed, &[1, 2, 3]),
            Action::ClosedBelow(1),
            fire(1, WindowId::Count(1), Fired::Closed, &[4, 5, 6]),
            Action::ClosedBelow(2),
        ]
    );
    assert_eq!(
        finish(&mut w),
        vec![fire(2, WindowId::Count(2), Fired::Done, &[7])]
    );
}

#[test]
fn count_windows_with_a_trigger_fire_inside_each_window() {
    let mut w = windows(Window::count(4).trigger_every(2));
    let every = Fired::Trigger(Trigger::Every(2));
    assert_eq!(
        push_all(&mut w, &[1, 2, 3, 4, 5, 6], Duration::ZERO),
        vec![
            fire(0, WindowId::Count(0), every, &[1, 2]),
            fire(0, WindowId::Count(0), Fired::Closed, &[1, 2, 3, 4]),
            Action::ClosedBelow(1),
            fire(1, WindowId::Count(1), every, &[5, 6]),
        ]
    );
}

#[test]
fn periodic_windows_follow_the_clock() {
    let mut w = windows(Window::periodic(secs(5)));
    let span = |k: u64| WindowId::Periodic {
        start: secs(5 * k),
        end: secs(5 * k + 5),
    };
    assert_eq!(push_all(&mut w, &[1, 2], secs(1)), vec![]);
    assert_eq!(tick(&mut w, ms(4999)), vec![]);
    assert_eq!(
        tick(&mut w, secs(5)),
        vec![
            fire(0, span(0), Fired::Closed, &[1, 2]),
            Action::ClosedBelow(1)
        ]
    );
    assert_eq!(tick(&mut w, secs(6)), vec![]);
    assert_eq!(push_all(&mut w, &[3], secs(6)), vec![]);
    // An event in a later period closes the earlier ones even before a tick.
    assert_eq!(
        push_all(&mut w, &[4], secs(16)),
        vec![
            fire(1, span(1), Fired::Closed, &[3]),
            Action::ClosedBelow(3)
        ]
    );
    assert_eq!(finish(&mut w), vec![fire(3, span(3), Fired::Done, &[4])]);
}

#[test]
fn periodic_windows_without_events_emit_nothing_but_progress() {
    let mut w = windows(Window::periodic(secs(1)));
    assert_eq!(tick(&mut w, secs(3)), vec![Action::ClosedBelow(3)]);
    assert_eq!(tick(&mut w, ms(3500)), vec![]);
    assert_eq!(finish(&mut w), vec![]);
}

#[test]
fn trigger_periodically_fires_once_per_period_passed() {
    let mut w = windows(Window::global().trigger_periodically(secs(1)));
    let periodic = Fired::Trigger(Trigger::Periodically(secs(1)));
    push_all(&mut w, &[1], Duration::ZERO);
    assert_eq!(tick(&mut w, ms(999)), vec![]);
    assert_eq!(
        tick(&mut w, secs(1)),
        vec![fire(0, WindowId::Global, periodic, &[1])]
    );
    assert_eq!(tick(&mut w, ms(1500)), vec![]);
    push_all(&mut w, &[2], ms(1500));
    // Two periods passed between ticks: one firing.
    assert_eq!(
        tick(&mut w, ms(3200)),
        vec![fire(0, WindowId::Global, periodic, &[1, 2])]
    );
    assert_eq!(tick(&mut w, ms(3900)), vec![]);
}

#[test]
fn fixed_windows_close_when_event_time_passes_their_end() {
    let w = Window::fixed(secs(10), |e: &Ev| secs(*e));
    let late = w.late_events();
    let mut w = windows(w);
    let span = |k: u64| WindowId::Fixed {
        start: secs(10 * k),
        end: secs(10 * k + 10),
    };
    // Processing time plays no part.
    assert_eq!(push_all(&mut w, &[1, 5, 9], secs(1000)), vec![]);
    assert_eq!(tick(&mut w, secs(5000)), vec![]);
    assert_eq!(
        push_all(&mut w, &[12], Duration::ZERO),
        vec![
            fire(0, span(0), Fired::Closed, &[1, 5, 9]),
            Action::ClosedBelow(1)
        ]
    );
    // Too late: window 0 is closed.
    assert_eq!(push_all(&mut w, &[3], Duration::ZERO), vec![]);
    assert_eq!(late.get(), 1);
    // Out of order within open windows is fine; a jump closes every window passed.
    assert_eq!(push_all(&mut w, &[19, 11], Duration::ZERO), vec![]);
    assert_eq!(
        push_all(&mut w, &[25], Duration::ZERO),
        vec![
            fire(1, span(1), Fired::Closed, &[12, 19, 11]),
            Action::ClosedBelow(2)
        ]
    );
    assert_eq!(
        push_all(&mut w, &[41], Duration::ZERO),
        vec![
            fire(2, span(2), Fired::Closed, &[25]),
            Action::ClosedBelow(4)
        ]
    );
    assert_eq!(finish(&mut w), vec![fire(4, span(4), Fired::Done, &[41])]);
}

#[test]
fn allowed_lateness_emits_at_the_watermark_then_takes_late_events_until_it_passes() {
    let w = Window::fixed(secs(10), |e: &Ev| secs(*e)).allowed_lateness(secs(5));
    let late = w.late_events();
    let mut w = windows(w);
    let span0 = WindowId::Fixed {
        start: Duration::ZERO,
        end: secs(10),
    };
    let span1 = WindowId::Fixed {
        start: secs(10),
        end: secs(20),
    };
    assert_eq!(push_all(&mut w, &[1], Duration::ZERO), vec![]);
    assert_eq!(
        push_all(&mut w, &[12], Duration::ZERO),
        vec![fire(0, span0, Fired::Watermark, &[1])]
    );
    // Late, but within the allowed lateness: taken, no new watermark emission.
    assert_eq!(push_all(&mut w, &[3, 14], Duration::ZERO), vec![]);
    assert_eq!(
        push_all(&mut w, &[15], Duration::ZERO),
        vec![
            fire(0, span0, Fired::Closed, &[1, 3]),
            Action::ClosedBelow(1)
        ]
    );
    // Beyond the allowed lateness: dropped and counted.
    assert_eq!(push_all(&mut w, &[4, 9], Duration::ZERO), vec![]);
    assert_eq!(late.get(), 2);
    assert_eq!(
        push_all(&mut w, &[20], Duration::ZERO),
        vec![fire(1, span1, Fired::Watermark, &[12, 14, 15])]
    );
    assert_eq!(
        finish(&mut w),
        vec![
            fire(1, span1, Fired::Done, &[12, 14, 15]),
            fire(
                2,
                WindowId::Fixed {
                    start: secs(20),
                    end: secs(30)
                },
                Fired::Done,
                &[20]
            ),
        ]
    );
}

#[test]
fn bad_options_are_errors_naming_the_option() {
    let cases: Vec<(Window<Ev>, &str)> = vec![
        (Window::count(0), "window"),
        (Window::periodic(Duration::ZERO), "window"),
        (Window::fixed(Duration::ZERO, |_| Duration::ZERO), "window"),
        (Window::global().trigger_every(0), "trigger"),
        (
            Window::global().trigger_periodically(Duration::ZERO),
            "trigger",
        ),
        (Window::periodic(secs(1)).tick(Duration::ZERO), "tick"),
    ];
    for (w, name) in cases {
        match w.validate() {
            Err(FlowError::InvalidOption { option, .. }) => assert_eq!(option, name, "{w:?}"),
            other => panic!("{w:?}: {other:?}"),
        }
    }
    assert!(Window::<Ev>::periodic(secs(1)).validate().is_ok());
}

#[test]
fn ticks_only_when_time_matters() {
    assert_eq!(Window::<Ev>::global().tick_period(), None);
    assert_eq!(Window::<Ev>::count(3).trigger_every(1).tick_period(), None);
    assert_eq!(Window::<Ev>::periodic(secs(5)).tick_period(), Some(ms(100)));
    assert_eq!(Window::<Ev>::periodic(ms(100)).tick_period(), Some(ms(5)));
    assert_eq!(
        Window::<Ev>::global()
            .trigger_periodically(secs(1))
            .tick(ms(7))
            .tick_period(),
        Some(ms(7))
    );
}

/// Fixed windows of 1 s with 500 ms of lateness, timestamps being the event in ms.
fn fixed_ms() -> (Windows<'static, Ev, Vec<Ev>>, LateEvents) {
    let w = Window::fixed(secs(1), |e: &Ev| ms(*e)).allowed_lateness(ms(500));
    let late = w.late_events();
    (windows(w), late)
}

fn span_ms(k: u64) -> WindowId {
    WindowId::Fixed {
        start: secs(k),
        end: secs(k + 1),
    }
}

fn push_from(
    w: &mut Windows<'static, Ev, Vec<Ev>>,
    lane: SubscriptionId,
    events: &[Ev],
) -> Vec<Action<Vec<Ev>>> {
    let mut out = Vec::new();
    for &e in events {
        w.push(lane, e, Duration::ZERO, &mut out);
    }
    out
}

#[test]
fn a_fast_lane_never_makes_a_slow_lanes_events_late() {
    // The issue in miniature: one lane is seconds ahead of the other.
    let (mut w, late) = fixed_ms();
    let (fast, slow) = (SubscriptionId::unique(), SubscriptionId::unique());
    w.subscribe(fast);
    w.subscribe(slow);
    assert_eq!(push_from(&mut w, fast, &[100, 1200, 2900, 5000]), vec![]);
    assert_eq!(push_from(&mut w, slow, &[50, 300]), vec![]);
    assert_eq!(
        push_from(&mut w, slow, &[1100]),
        vec![fire(0, span_ms(0), Fired::Watermark, &[100, 50, 300])]
    );
    // 250 ms behind the slow lane's latest: within the lateness, whatever the fast lane did.
    assert_eq!(push_from(&mut w, slow, &[850]), vec![]);
    assert_eq!(
        push_from(&mut w, slow, &[1500]),
        vec![
            fire(0, span_ms(0), Fired::Closed, &[100, 50, 300, 850]),
            Action::ClosedBelow(1)
        ]
    );
    // Now window 0 is closed for both lanes: late from either.
    assert_eq!(push_from(&mut w, fast, &[999]), vec![]);
    assert_eq!(push_from(&mut w, slow, &[10]), vec![]);
    assert_eq!(late.get(), 2);
}

#[test]
fn a_window_opened_behind_the_watermark_is_emitted_as_past_its_end_at_once() {
    let (mut w, late) = fixed_ms();
    let lane = SubscriptionId::unique();
    w.subscribe(lane);
    assert_eq!(push_from(&mut w, lane, &[1200]), vec![]);
    // Window 0 had no event: it opens now, 300 ms behind, within the lateness.
    assert_eq!(
        push_from(&mut w, lane, &[900]),
        vec![fire(0, span_ms(0), Fired::Watermark, &[900])]
    );
    assert_eq!(push_from(&mut w, lane, &[950]), vec![]);
    assert_eq!(
        push_from(&mut w, lane, &[1500]),
        vec![
            fire(0, span_ms(0), Fired::Closed, &[900, 950]),
            Action::ClosedBelow(1)
        ]
    );
    assert_eq!(late.get(), 0);
}

#[test]
fn a_lane_that_has_sent_nothing_holds_windows_open_until_it_sends_or_ends() {
    let (mut w, late) = fixed_ms();
    let lanes = [
        SubscriptionId::unique(),
        SubscriptionId::unique(),
        SubscriptionId::unique(),
    ];
    lanes.iter().for_each(|&l| w.subscribe(l));
    assert_eq!(push_from(&mut w, lanes[0], &[100, 9000]), vec![]);
    assert_eq!(push_from(&mut w, lanes[1], &[200, 9500]), vec![]);
    // Lane 2 may still send anything: nothing is emitted, nothing is late.
    assert_eq!(push_from(&mut w, lanes[0], &[10]), vec![]);
    assert_eq!(late.get(), 0);
    // It ends without sending: event time moves to 9 s, closing windows 0 to 7.
    let mut out = Vec::new();
    w.end_lane(lanes[2], &mut out);
    assert_eq!(
        out,
        vec![
            fire(0, span_ms(0), Fired::Watermark, &[100, 200, 10]),
            fire(0, span_ms(0), Fired::Closed, &[100, 200, 10]),
            Action::ClosedBelow(8),
        ]
    );
    // Ending a lane again, or one never seen, changes nothing.
    let mut out = Vec::new();
    w.end_lane(lanes[2], &mut out);
    w.end_lane(SubscriptionId::unique(), &mut out);
    assert_eq!(out, vec![]);
    assert_eq!(
        finish(&mut w),
        vec![fire(9, span_ms(9), Fired::Done, &[9000, 9500])]
    );
}

#[test]
fn an_idle_lane_holds_event_time_until_it_ends_and_completion_emits_every_window() {
    let (mut w, late) = fixed_ms();
    let (busy, idle) = (SubscriptionId::unique(), SubscriptionId::unique());
    w.subscribe(busy);
    w.subscribe(idle);
    assert_eq!(push_from(&mut w, idle, &[700]), vec![]);
    // The idle lane's last event holds event time at 700 ms: nothing closes.
    assert_eq!(push_from(&mut w, busy, &[1000, 2000, 3000, 4000]), vec![]);
    assert_eq!(late.get(), 0);
    // At completion every window is emitted, whole.
    assert_eq!(
        finish(&mut w),
        vec![
            fire(0, span_ms(0), Fired::Done, &[700]),
            fire(1, span_ms(1), Fired::Done, &[1000]),
            fire(2, span_ms(2), Fired::Done, &[2000]),
            fire(3, span_ms(3), Fired::Done, &[3000]),
            fire(4, span_ms(4), Fired::Done, &[4000]),
        ]
    );
}

/// One arrival at a reducer, in a seeded interleaving of lanes.
#[derive(Clone, Copy, Debug)]
enum Arrival {
    Event(usize, u64),
    End(usize),
}

/// Lanes of events (ms), each at its own pace, each event up to `disorder` ms older than
/// the latest of its lane, a few of them `far` ms older; interleaved at random, every lane
/// ending at a random point after its last event (some send nothing at all).
fn seeded_arrivals(seed: u64, disorder: u64, far: u64) -> (usize, Vec<Arrival>) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut below = move |n: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let lanes = 2 + below(4) as usize;
    let mut queues: Vec<Vec<u64>> = (0..lanes)
        .map(|_| {
            let n = if below(8) == 0 { 0 } else { below(120) };
            let step = 1 + below(40);
            (0..n)
                .map(|i| {
                    let at = 1000 + i * step;
                    let back = if below(20) == 0 {
                        far
                    } else {
                        below(disorder + 1)
                    };
                    at.saturating_sub(back)
                })
                .rev() // popped from the back
                .collect()
        })
        .collect();
    let mut ended = vec![false; lanes];
    let mut arrivals = Vec::new();
    loop {
        let live: Vec<usize> = (0..lanes).filter(|&l| !ended[l]).collect();
        if live.is_empty() {
            break;
        }
        let l = live[below(live.len() as u64) as usize];
        match queues[l].pop() {
            Some(at) => arrivals.push(Arrival::Event(l, at)),
            None if below(3) == 0 => {
                ended[l] = true;
                arrivals.push(Arrival::End(l));
            }
            None => {}
        }
    }
    (lanes, arrivals)
}

/// The rule, written out: before arrival `i` the watermark is the greatest, over the
/// moments `j < i`, of the least latest timestamp of the lanes not ended at `j` (none
/// while one of them has sent nothing); an event is late iff its window's end plus the
/// lateness is at or before it. Returns per arrival the watermark after it and whether it
/// is late.
fn reference(
    lanes: usize,
    arrivals: &[Arrival],
    size: u64,
    lateness: u64,
) -> Vec<(Option<u64>, bool)> {
    let mut latest: Vec<Option<u64>> = vec![None; lanes];
    let mut ended = vec![false; lanes];
    let mut watermark: Option<u64> = None;
    let mut out = Vec::new();
    for a in arrivals {
        let late = match *a {
            Arrival::Event(l, at) => {
                let late = watermark.is_some_and(|w| (at / size + 1) * size + lateness <= w);
                latest[l] = latest[l].max(Some(at));
                late
            }
            Arrival::End(l) => {
                ended[l] = true;
                false
            }
        };
        let live: Vec<Option<u64>> = (0..lanes)
            .filter(|&l| !ended[l])
            .map(|l| latest[l])
            .collect();
        if !live.is_empty() && live.iter().all(Option::is_some) {
            let least = live.iter().flatten().min().copied();
            watermark = watermark.max(least);
        }
        out.push((watermark, late));
    }
    out
}

fn check_seeded(seed: u64, disorder: u64, far: u64) -> u64 {
    let (size, lateness) = (1000, 500);
    let (lanes, arrivals) = seeded_arrivals(seed, disorder, far);
    let expected = reference(lanes, &arrivals, size, lateness);
    let (mut w, late) = fixed_ms();
    let ids: Vec<SubscriptionId> = (0..lanes).map(|_| SubscriptionId::unique()).collect();
    ids.iter().for_each(|&l| w.subscribe(l));
    let mut totals: BTreeMap<u64, Vec<Ev>> = BTreeMap::new();
    let mut got: BTreeMap<u64, Vec<Ev>> = BTreeMap::new();
    let mut expected_late = 0;
    for (a, &(watermark, is_late)) in arrivals.iter().zip(&expected) {
        let mut out = Vec::new();
        match *a {
            Arrival::Event(l, at) => {
                w.push(ids[l], at, Duration::ZERO, &mut out);
                if is_late {
                    expected_late += 1;
                } else {
                    totals.entry(at / size).or_default().push(at);
                }
            }
            Arrival::End(l) => w.end_lane(ids[l], &mut out),
        }
        assert_eq!(late.get(), expected_late, "seed {seed}: late after {a:?}");
        for action in out {
            if let Action::Fire {
                index,
                fired,
                value,
                ..
            } = action
            {
                let end = (index + 1) * size;
                let reached = |t: u64| watermark.is_some_and(|w| w >= t);
                match fired {
                    Fired::Watermark => assert!(reached(end), "seed {seed}: {index} early"),
                    Fired::Closed => {
                        assert!(reached(end + lateness), "seed {seed}: {index} closed early");
                        got.insert(index, value);
                    }
                    other => panic!("seed {seed}: {other:?} before the end"),
                }
            }
        }
    }
    for action in finish(&mut w) {
        if let Action::Fire { index, value, .. } = action {
            got.insert(index, value);
        }
    }
    for v in totals.values_mut().chain(got.values_mut()) {
        v.sort_unstable();
    }
    assert_eq!(got, totals, "seed {seed}: windows");
    expected_late
}

#[test]
fn seeded_lanes_within_the_lateness_lose_no_event() {
    // Disorder up to the lateness within each lane, however the lanes run apart.
    for seed in 0..500 {
        assert_eq!(check_seeded(seed, 500, 0), 0, "seed {seed}");
    }
}

#[test]
fn seeded_lanes_beyond_the_lateness_count_exactly_the_events_the_rule_makes_late() {
    let mut late = 0;
    for seed in 0..500 {
        late += check_seeded(seed, 500, 3000);
    }
    assert!(late > 100, "the seeds should make events late: {late}");
}

#[test]
fn a_batch_is_the_same_as_its_events_one_by_one() {
    // `push_all` (one window lookup per batch where it can) against `push` of each event, for
    // every kind of window, with and without triggers, batches crossing periods.
    let kinds: Vec<fn() -> Window<Ev>> = vec![
        Window::global,
        || Window::global().trigger_every(3),
        || Window::count(4),
        || Window::periodic(secs(5)),
        || Window::periodic(secs(5)).trigger_every(2),
        || Window::fixed(secs(5), |e: &Ev| secs(*e)),
    ];
    let batches: [(&[Ev], u64); 4] = [
        (&[1, 2, 3], 1),
        (&[], 2),
        (&[4, 5, 6, 7, 8], 7),
        (&[9, 10], 12),
    ];
    for make in kinds {
        let (mut by_batch, mut by_event) = (windows(make()), windows(make()));
        for (events, at) in batches {
            let mut out = Vec::new();
            by_batch.push_all(one_lane(), events.iter().copied(), secs(at), &mut out);
            assert_eq!(
                out,
                push_all(&mut by_event, events, secs(at)),
                "{:?}",
                make()
            );
        }
        assert_eq!(finish(&mut by_batch), finish(&mut by_event), "{:?}", make());
    }
}

#[test]
fn a_batch_for_one_window_is_folded_by_the_caller_and_counted() {
    // Global: the window's accumulator, the events counted for triggers and windows.
    let mut w = windows(Window::global());
    let mut out = Vec::new();
    w.batch_window(3, secs(1), &mut out)
        .expect("one window")
        .extend([1, 2, 3]);
    assert_eq!(w.open[&0].events, 3);
    assert!(w.batch_window(0, secs(1), &mut out).is_none(), "no events");
    // Periodic: entering a later period closes the earlier one first.
    let mut w = windows(Window::periodic(secs(10)));
    w.batch_window(2, secs(1), &mut out).unwrap().extend([1, 2]);
    assert!(out.is_empty());
    w.batch_window(1, secs(12), &mut out).unwrap().push(3);
    let first = WindowId::Periodic {
        start: secs(0),
        end: secs(10),
    };
    assert_eq!(
        out,
        vec![
            fire(0, first, Fired::Closed, &[1, 2]),
            Action::ClosedBelow(1)
        ]
    );
    // Count windows and `Every` triggers count event by event: no batch window.
    let mut out = Vec::new();
    assert!(windows(Window::count(2))
        .batch_window(3, secs(1), &mut out)
        .is_none());
    assert!(windows(Window::global().trigger_every(2))
        .batch_window(3, secs(1), &mut out)
        .is_none());
    assert!(out.is_empty());
}
