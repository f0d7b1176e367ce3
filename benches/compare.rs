//! `cargo bench --bench compare [-- --quick]`: every pipeline shape, stageflow and a
//! hand-written crossbeam baseline run alternately in the same process, several rounds each;
//! prints events/s median (min-max) for both and the ratio stageflow/baseline, then memory
//! (g) and latency (h). See benches/README.md for the shapes.

mod flow_shape;
#[cfg(feature = "http")]
mod http_decode;
mod observe_shape;
mod pipeline_shape;
#[cfg(feature = "redis")]
mod redis_shape;
mod shapes;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};
use stageflow::{Consumer, ConsumerContext, Context, Events, Producer, SubscribeOptions};

/// Counts allocations, to show what a shape allocates per event.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// `GlobalAlloc`'s contract; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) per 1000 events of one run of `f`.
fn allocations(n: u64, f: impl Fn() -> Duration) -> f64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    f();
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    (after - before) as f64 * 1000.0 / n as f64
}

fn allocation_table(s: &Settings) {
    if s.only
        .as_ref()
        .is_some_and(|o| !o.iter().any(|x| x == "alloc"))
    {
        return;
    }
    println!("## Allocations per 1000 events (one run each, threads and channels included)");
    println!();
    println!("| id | stageflow | baseline |");
    println!("|---|---|---|");
    let n = 1_000_000;
    type Run = Box<dyn Fn() -> Duration>;
    let rows: [(&str, Run, Run, u64); 4] = [
        (
            "a",
            Box::new(move || shapes::stageflow_pair(n, 1000, 500)),
            Box::new(move || shapes::baseline_pair(n, 1000, 500)),
            n,
        ),
        (
            "b",
            Box::new(move || shapes::stageflow_chain(n, 1, 1000, 500)),
            Box::new(move || shapes::baseline_chain(n, 1, 1000, 500)),
            n,
        ),
        (
            "c",
            Box::new(move || shapes::stageflow_fan(n, 2, 1000, 500)),
            Box::new(move || shapes::baseline_fan(n, 2, 1000, 500)),
            n,
        ),
        (
            "f",
            Box::new(|| shapes::stageflow_pair(20_000, 1, 0)),
            Box::new(|| shapes::baseline_pair(20_000, 1, 0)),
            20_000,
        ),
    ];
    for (id, a, b, n) in rows {
        println!(
            "| {id} | {:.2} | {:.2} |",
            allocations(n, a),
            allocations(n, b)
        );
    }
    println!();
}

struct Settings {
    quick: bool,
    rounds: usize,
    only: Option<Vec<String>>,
}

fn settings() -> Settings {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 3 } else { 7 });
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(String::from).collect());
    Settings {
        quick,
        rounds,
        only,
    }
}

/// What the process used: CPU time (user + system, every thread, finished ones included)
/// and context switches (voluntary + involuntary), from `getrusage(RUSAGE_SELF)`.
#[derive(Clone, Copy, Default)]
struct Usage {
    cpu: Duration,
    switches: u64,
}

fn usage() -> Usage {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to writable memory the size of a `rusage`; `getrusage` fills it
    // and only reads `RUSAGE_SELF`. Zeroed memory is a valid `rusage` (plain integers) if it
    // does not.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
        switches: (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
    }
}

/// Runs `f` once: its wall time (as `f` measures it) and what the process used meanwhile.
fn measured(f: &impl Fn() -> Duration) -> (Duration, Usage) {
    let before = usage();
    let wall = f();
    let after = usage();
    (
        wall,
        Usage {
            cpu: after.cpu.saturating_sub(before.cpu),
            switches: after.switches.saturating_sub(before.switches),
        },
    )
}

/// The median and the spread (min, max) of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    (median(&v), v[0], v[v.len() - 1])
}

/// Events/s of each round.
fn rates(n: u64, times: &[Duration]) -> Vec<f64> {
    let mut r: Vec<f64> = times.iter().map(|t| n as f64 / t.as_secs_f64()).collect();
    r.sort_by(|a, b| a.partial_cmp(b).expect("rates are finite"));
    r
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e9 {
        format!("{:.2} G", r / 1e9)
    } else if r >= 1e6 {
        format!("{:.1} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn row(
    s: &Settings,
    id: &str,
    shape: &str,
    n: u64,
    stageflow: impl Fn() -> Duration,
    baseline: impl Fn() -> Duration,
) {
    if let Some(only) = &s.only {
        if !only.iter().any(|o| id.starts_with(o.as_str())) {
            return;
        }
    }
    // STAGEFLOW_ONLY=stageflow|baseline runs one side only (for profiling).
    let only = std::env::var("STAGEFLOW_ONLY").ok();
    let run_a = only.as_deref() != Some("baseline");
    let run_b = only.as_deref() != Some("stageflow");
    let stageflow = || {
        if run_a {
            stageflow()
        } else {
            Duration::from_secs(1)
        }
    };
    let baseline = || {
        if run_b {
            baseline()
        } else {
            Duration::from_secs(1)
        }
    };
    // Warm up both once, then alternate.
    stageflow();
    baseline();
    let mut a = Vec::new();
    let mut b = Vec::new();
    let (mut ua, mut ub) = (Vec::new(), Vec::new());
    for _ in 0..s.rounds {
        let (t, u) = measured(&stageflow);
        a.push(t);
        ua.push(u);
        let (t, u) = measured(&baseline);
        b.push(t);
        ub.push(u);
    }
    // Per-round ratios: each round's pair ran back to back, under the same weather.
    let per_round = |f: &dyn Fn(usize) -> f64| spread((0..a.len()).map(f).collect());
    let (ratio, ratio_lo, ratio_hi) =
        per_round(&|i| b[i].as_secs_f64() / a[i].as_secs_f64().max(1e-9));
    let cpu_per_m = |u: &Usage| u.cpu.as_secs_f64() * 1e9 / n as f64; // ns per event
    let sw_per_k = |u: &Usage| u.switches as f64 * 1000.0 / n as f64;
    let (cpu_a, ..) = spread(ua.iter().map(cpu_per_m).collect());
    let (cpu_b, ..) = spread(ub.iter().map(cpu_per_m).collect());
    let (cpu_ratio, cpu_lo, cpu_hi) =
        per_round(&|i| cpu_per_m(&ub[i]) / cpu_per_m(&ua[i]).max(1e-9));
    let (sw_a, ..) = spread(ua.iter().map(sw_per_k).collect());
    let (sw_b, ..) = spread(ub.iter().map(sw_per_k).collect());
    let (ra, rb) = (rates(n, &a), rates(n, &b));
    let (ma, mb) = (median(&ra), median(&rb));
    println!(
        "| {id} | {shape} | {} ({}–{}) | {} ({}–{}) | {:.2}× | {ratio:.2}× ({ratio_lo:.2}–{ratio_hi:.2}) \
         | {cpu_a:.0} / {cpu_b:.0} | {cpu_ratio:.2}× ({cpu_lo:.2}–{cpu_hi:.2}) | {sw_a:.1} / {sw_b:.1} |",
        fmt_rate(ma),
        fmt_rate(ra[0]),
        fmt_rate(ra[ra.len() - 1]),
        fmt_rate(mb),
        fmt_rate(rb[0]),
        fmt_rate(rb[rb.len() - 1]),
        ma / mb
    );
}

fn throughput(s: &Settings) {
    let scale = if s.quick { 5 } else { 1 };
    println!(
        "## Throughput (events/s: median (min–max) of {} rounds, run alternately)",
        s.rounds
    );
    println!();
    println!(
        "Ratios are stageflow ÷ baseline in speed (higher is better): of the medians, then the \
         median of per-round ratios (min–max). CPU is user + system time of the whole process \
         in ns per event (stageflow / baseline), and its ratio baseline ÷ stageflow per \
         round; switches are context switches per 1000 events. CPU time and switches do not \
         depend on whether threads stayed on-core."
    );
    println!();
    println!(
        "| id | shape | stageflow | baseline | ratio | per-round ratio | CPU ns/ev | CPU ratio | switches/k ev |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let n = 10_000_000 / scale;
    row(
        s,
        "a",
        "producer → consumer, 1000/500",
        n,
        || shapes::stageflow_pair(n, 1000, 500),
        || shapes::baseline_pair(n, 1000, 500),
    );
    let nb = 5_000_000 / scale;
    row(
        s,
        "b",
        "producer → producer-consumer (x·2) → consumer, 1000/500",
        nb,
        || shapes::stageflow_chain(nb, 1, 1000, 500),
        || shapes::baseline_chain(nb, 1, 1000, 500),
    );
    row(
        s,
        "c",
        "producer (demand dispatcher) → 2 consumers, 1000/500",
        n,
        || shapes::stageflow_fan(n, 2, 1000, 500),
        || shapes::baseline_fan(n, 2, 1000, 500),
    );
    row(
        s,
        "d",
        "producer (broadcast) → 2 consumers, distinct events, 1000/500",
        n,
        || shapes::stageflow_broadcast(n, 2, 1000, 500),
        || shapes::baseline_broadcast(n, 2, 1000, 500),
    );
    row(
        s,
        "e",
        "producer (partition x mod 2) → 2 consumers, 1000/500",
        n,
        || shapes::stageflow_partition(n, 2, 1000, 500),
        || shapes::baseline_partition(n, 2, 1000, 500),
    );
    let nj = 2_000_000 / scale;
    row(
        s,
        "j",
        "producer → consumer, small batches, 10/5",
        nj,
        || shapes::stageflow_pair(nj, 10, 5),
        || shapes::baseline_pair(nj, 10, 5),
    );
    let nf = 200_000 / scale;
    row(
        s,
        "f",
        "producer → consumer, one event at a time, 1/0",
        nf,
        || shapes::stageflow_pair(nf, 1, 0),
        || shapes::baseline_pair(nf, 1, 0),
    );
    let ni = 2_000_000 / scale;
    for k in [1, 2, 4, 8, 16] {
        row(
            s,
            &format!("i{k}"),
            &format!("chain of {k} producer-consumers, 1000/500"),
            ni,
            || shapes::stageflow_chain(ni, k, 1000, 500),
            || shapes::baseline_chain(ni, k, 1000, 500),
        );
    }
    println!();
}

// ----- g: memory ---------------------------------------------------------------------------

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Emits as fast as asked, forever.
struct Endless(u64);

impl Producer for Endless {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, u64>) {
        ctx.emit_all(self.0..self.0 + demand as u64);
        self.0 += demand as u64;
    }
}

/// Emits 100 events every millisecond whatever the demand (a source that cannot pause).
struct Push(u64);

impl Producer for Push {
    type Out = u64;
    type Message = ();
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, u64>) {}
    fn handle_message(&mut self, _: (), ctx: &mut Context<'_, u64>) {
        ctx.emit_all(self.0..self.0 + 100);
        self.0 += 100;
        ctx.send_after((), Duration::from_millis(1));
    }
}

/// Sleeps 1 ms per event.
struct Slow;

impl Consumer for Slow {
    type In = u64;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, u64>, _: &mut ConsumerContext<'_>) {
        for _ in events {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs `producer` into a consumer sleeping 1 ms per event (max 10) for `secs`; prints one
/// row: RSS before and after, events consumed, discarded and buffered.
fn memory_row<P: Producer<Out = u64, Message = ()>>(
    case: &str,
    producer: stageflow::StageBuilder<P, stageflow::ProducerRole>,
    start_with_cast: bool,
    secs: u64,
) {
    let p = producer.spawn().expect("producer");
    if start_with_cast {
        p.cast(()).expect("start the producer");
    }
    let c = stageflow::consumer(Slow)
        .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
        .expect("options")
        .spawn()
        .expect("consumer");
    std::thread::sleep(Duration::from_millis(200));
    let start = rss_kib();
    std::thread::sleep(Duration::from_secs(secs));
    let end = rss_kib();
    let consumed = c.counters().events_in;
    let pc = p.counters();
    p.stop();
    c.join();
    println!(
        "| {case} | {start} KiB | {end} KiB | {:+} KiB | {consumed} | {} (buffered {}) |",
        end as i64 - start as i64,
        pc.discarded,
        pc.buffered
    );
}

fn memory(s: &Settings) {
    let secs = if s.quick { 2 } else { 10 };
    println!("## g: memory over {secs} s (RSS of the whole process)");
    println!();
    println!("| case | RSS start | RSS end | growth | consumed | discarded |");
    println!("|---|---|---|---|---|---|");
    memory_row(
        "slow consumer (1 ms/event, max 10)",
        stageflow::producer(Endless(0)),
        false,
        secs,
    );
    memory_row(
        "push producer (100k events/s, buffer 10 000)",
        stageflow::producer(Push(0)).buffer_size(10_000),
        true,
        secs,
    );
    println!();
}

// ----- h: latency --------------------------------------------------------------------------

/// Emits the current time every 100 µs (10k events/s), on absolute deadlines, for `run` from
/// the first message (which is sent once the consumer has subscribed: events emitted before
/// that would wait for the subscription, and count as latency).
struct Ticker {
    run: Duration,
    next: Option<(Instant, Instant)>,
}

impl Producer for Ticker {
    type Out = Instant;
    type Message = ();
    fn handle_demand(&mut self, _: usize, _: &mut Context<'_, Instant>) {}
    fn handle_message(&mut self, _: (), ctx: &mut Context<'_, Instant>) {
        let now = Instant::now();
        let (next, until) = self.next.get_or_insert((now, now + self.run));
        if now >= *until {
            ctx.finish();
            return;
        }
        ctx.emit(now);
        *next += Duration::from_micros(100);
        ctx.send_after((), next.saturating_duration_since(now));
    }
}

/// Sends (emitted at, latency in ns) for every event it handles.
struct Latency(Sender<Vec<(Instant, u64)>>);

impl Consumer for Latency {
    type In = Instant;
    type Message = ();
    fn handle_events(&mut self, events: Events<'_, Instant>, _: &mut ConsumerContext<'_>) {
        let now = Instant::now();
        let _ = self
            .0
            .send(events.map(|t| (t, (now - t).as_nanos() as u64)).collect());
    }
}

/// One latency row: events, p50, p99, p99.9 and max in µs; how many took over 100 µs, and in
/// how many bursts (slow events emitted within 1 ms of the previous slow one belong to its
/// burst: a burst is a stall that held up every event behind it).
fn latency_row(name: &str, events: Vec<(Instant, u64)>, steal: u64) {
    let mut slow: Vec<Instant> = events
        .iter()
        .filter(|e| e.1 > 100_000)
        .map(|e| e.0)
        .collect();
    slow.sort_unstable();
    let bursts = slow
        .windows(2)
        .filter(|w| w[1] - w[0] > Duration::from_millis(1))
        .count()
        + usize::from(!slow.is_empty());
    let mut v: Vec<u64> = events.into_iter().map(|e| e.1).collect();
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)] / 1000;
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} in {bursts} | {steal} |",
        v.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        v.last().map_or(0, |ns| ns / 1000),
        slow.len(),
    );
}

/// CPU time the hypervisor gave to others while this machine's vCPUs wanted it ("steal" in
/// `/proc/stat`), in ms; 0 where unknown.
fn steal_ms() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let cpu = s.lines().next()?.split_whitespace().collect::<Vec<_>>();
            cpu.get(8)?.parse::<u64>().ok()
        })
        .map_or(0, |ticks| ticks * 10)
}

fn latency(s: &Settings) {
    let run = Duration::from_secs(if s.quick { 1 } else { 3 });
    println!(
        "## h: latency, 10k events/s on a timer, max_demand 10 (µs from emit to handle_events)"
    );
    println!();
    println!("| pipeline | events | p50 | p99 | p99.9 | max | over 100 µs (bursts) | steal ms |");
    println!("|---|---|---|---|---|---|---|---|");
    {
        let (tx, rx) = unbounded();
        let steal = steal_ms();
        let p = stageflow::producer(Ticker { run, next: None })
            .spawn()
            .expect("producer");
        let c = stageflow::consumer(Latency(tx))
            .subscribe_to(&p, SubscribeOptions::new().max_demand(10).min_demand(5))
            .expect("options")
            .spawn()
            .expect("consumer");
        p.cast(()).expect("start");
        c.join();
        latency_row(
            "stageflow",
            rx.try_iter().flatten().collect(),
            steal_ms() - steal,
        );
    }
    {
        // By hand: a thread sending each timestamp on a bounded channel, one receiving.
        let (tx, rx) = bounded::<Instant>(1024);
        let steal = steal_ms();
        let start = Instant::now();
        let sender = std::thread::spawn(move || {
            let mut next = start;
            while Instant::now() < start + run {
                let _ = tx.send(Instant::now());
                next += Duration::from_micros(100);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        let mut v = Vec::new();
        for t in rx {
            v.push((t, (Instant::now() - t).as_nanos() as u64));
        }
        sender.join().expect("sender");
        latency_row(
            "baseline (crossbeam, one event per send)",
            v,
            steal_ms() - steal,
        );
    }
    println!();
}

/// Jobs per second through a `Supervisor` with trivial jobs (what running a job on a worker
/// costs), beside the same jobs run by hand on a new thread each, 8 at a time.
fn supervisor(s: &Settings) {
    if s.only.as_ref().is_some_and(|o| !o.iter().any(|x| x == "k")) {
        return;
    }
    let n = if s.quick { 5_000u64 } else { 20_000 };
    let start = Instant::now();
    let jobs = stageflow::from_iter(0..n).spawn().expect("producer");
    let sup = stageflow::consumer(stageflow::Supervisor::new(|x: u64| {
        std::hint::black_box(x);
        Ok(())
    }))
    .subscribe_to(&jobs, SubscribeOptions::new().max_demand(8).min_demand(4))
    .expect("options")
    .spawn()
    .expect("supervisor");
    sup.join();
    let pooled = n as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut x = 0;
    while x < n {
        let threads: Vec<_> = (x..(x + 8).min(n))
            .map(|job| std::thread::spawn(move || std::hint::black_box(job)))
            .collect();
        for t in threads {
            t.join().expect("job");
        }
        x += 8;
    }
    let by_hand = n as f64 / start.elapsed().as_secs_f64();
    println!("## k: supervisor, {n} trivial jobs, max_demand 8 (jobs/s)");
    println!();
    println!("| stageflow `Supervisor` (pooled worker threads) | by hand, a thread per job, 8 at a time |");
    println!("|---|---|");
    println!("| {:.0} k | {:.0} k |", pooled / 1e3, by_hand / 1e3);
    println!();
}

fn main() {
    let s = settings();
    let started = Instant::now();
    println!(
        "stageflow compare: {} cores, {}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if s.quick { "quick mode, " } else { "" },
        format_args!("{} rounds", s.rounds)
    );
    println!();
    throughput(&s);
    supervisor(&s);
    #[cfg(feature = "http")]
    if s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == "l")) {
        http_decode::table(s.quick, s.rounds);
    }
    if s.only
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x.starts_with('n')))
    {
        flow_shape::table(s.quick, s.rounds, s.only.as_deref());
    }
    if s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == "o")) {
        observe_shape::table(s.quick, s.rounds);
    }
    if s.only
        .as_ref()
        .is_none_or(|o| o.iter().any(|x| x.starts_with('m')))
    {
        pipeline_shape::table(&s);
    }
    #[cfg(feature = "redis")]
    if s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == "r")) {
        redis_shape::table(&s);
    }
    allocation_table(&s);
    if s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == "g")) {
        memory(&s);
    }
    if s.only.as_ref().is_none_or(|o| o.iter().any(|x| x == "h")) {
        latency(&s);
    }
    println!("(ran in {:.1} s)", started.elapsed().as_secs_f64());
}
