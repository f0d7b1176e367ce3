//! criterion benches of the throughput shapes (benches/README.md): in each group, stageflow
//! and the hand-written crossbeam baseline of the same topology, `Throughput::Elements`.
//! `cargo bench --bench pipeline`; the ratio table comes from `cargo bench --bench compare`.

mod shapes;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn timed(iters: u64, f: impl Fn() -> Duration) -> Duration {
    (0..iters).map(|_| f()).sum()
}

/// a: producer -> consumer, 1000/500.
fn pair(c: &mut Criterion) {
    let n = 1_000_000;
    let mut g = c.benchmark_group("a_producer_consumer");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_pair(n, 1000, 500)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_pair(n, 1000, 500)))
    });
    g.finish();
}

/// b: producer -> producer-consumer -> consumer, 1000/500.
fn chain(c: &mut Criterion) {
    let n = 1_000_000;
    let mut g = c.benchmark_group("b_producer_pc_consumer");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_chain(n, 1, 1000, 500)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_chain(n, 1, 1000, 500)))
    });
    g.finish();
}

/// c: producer (demand dispatcher) -> 2 consumers, 1000/500.
fn fan(c: &mut Criterion) {
    let n = 1_000_000;
    let mut g = c.benchmark_group("c_demand_dispatcher_2_consumers");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_fan(n, 2, 1000, 500)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_fan(n, 2, 1000, 500)))
    });
    g.finish();
}

/// d: producer (broadcast) -> 2 consumers, distinct events.
fn broadcast(c: &mut Criterion) {
    let n = 1_000_000;
    let mut g = c.benchmark_group("d_broadcast_2_consumers");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_broadcast(n, 2, 1000, 500)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_broadcast(n, 2, 1000, 500)))
    });
    g.finish();
}

/// e: producer (partition x mod 2) -> 2 consumers.
fn partition(c: &mut Criterion) {
    let n = 1_000_000;
    let mut g = c.benchmark_group("e_partition_2_consumers");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_partition(n, 2, 1000, 500)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_partition(n, 2, 1000, 500)))
    });
    g.finish();
}

/// f: one event at a time, 1/0.
fn one_at_a_time(c: &mut Criterion) {
    let n = 20_000;
    let mut g = c.benchmark_group("f_one_at_a_time");
    g.throughput(Throughput::Elements(n));
    g.bench_function("stageflow", |b| {
        b.iter_custom(|i| timed(i, || shapes::stageflow_pair(n, 1, 0)))
    });
    g.bench_function("baseline", |b| {
        b.iter_custom(|i| timed(i, || shapes::baseline_pair(n, 1, 0)))
    });
    g.finish();
}

/// i: a chain of k producer-consumers.
fn scaling(c: &mut Criterion) {
    let n = 500_000;
    let mut g = c.benchmark_group("i_chain_scaling");
    g.throughput(Throughput::Elements(n));
    for k in [1usize, 2, 4, 8, 16] {
        g.bench_with_input(BenchmarkId::new("stageflow", k), &k, |b, &k| {
            b.iter_custom(|i| timed(i, || shapes::stageflow_chain(n, k, 1000, 500)))
        });
        g.bench_with_input(BenchmarkId::new("baseline", k), &k, |b, &k| {
            b.iter_custom(|i| timed(i, || shapes::baseline_chain(n, k, 1000, 500)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = pair, chain, fan, broadcast, partition, one_at_a_time, scaling
}
criterion_main!(benches);
