//! The scraper example's own code (`examples/scraper/scraper.rs`) driven end to end: workers
//! with max_demand 1 / min_demand 0 take one page at a time, every page is scraped exactly once,
//! every worker takes part, a worker never holds two pages at once, and every stage ends
//! normally.

#[allow(dead_code)]
#[path = "../examples/scraper/scraper.rs"]
mod scraper;

mod common;

use std::collections::HashMap;
use std::time::Duration;

use stageflow::Reason;

/// `scraper::run` on another thread, so that a hung pipeline fails the test after
/// `common::LIMIT` instead of hanging it (`run` joins its stages without a deadline).
fn run(config: &scraper::Config) -> Result<scraper::Report, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let config = config.clone();
    std::thread::spawn(move || {
        let _ = tx.send(scraper::run(&config).map_err(|e| e.to_string()));
    });
    common::next(&rx)
}

/// Runs the scraper and checks everything that must hold whatever the timing.
fn check(config: &scraper::Config) -> scraper::Report {
    let report = run(config).expect("the scraper runs");

    // Every stage ended normally: the producer after handing out its last page, each worker
    // after its last page.
    let mut names: Vec<String> = vec!["PageProducer".into()];
    names.extend((1..=config.workers).map(|w| format!("PageConsumer-{w}")));
    let outcomes: Vec<(String, Reason)> = names.into_iter().map(|n| (n, Reason::Normal)).collect();
    assert_eq!(report.outcomes, outcomes);

    // Every page scraped exactly once: none lost, none twice.
    assert_eq!(report.scraped.len(), config.pages.len());
    let mut times: HashMap<&str, usize> = HashMap::new();
    for s in &report.scraped {
        *times.entry(s.page.as_str()).or_default() += 1;
    }
    for page in &config.pages {
        assert_eq!(times.get(page.as_str()), Some(&1), "{page} scraped once");
    }

    // max_demand 1: one page per batch.
    for s in &report.scraped {
        assert_eq!(
            s.batch, 1,
            "worker {} got {} pages at once",
            s.worker, s.batch
        );
    }

    let index: HashMap<&str, usize> = config
        .pages
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    for worker in 1..=config.workers {
        let mut mine: Vec<&scraper::Scraped> = report
            .scraped
            .iter()
            .filter(|s| s.worker == worker)
            .collect();
        assert!(!mine.is_empty(), "worker {worker} took part");
        mine.sort_by_key(|s| s.started);
        for s in &mine {
            assert!(s.started <= s.finished);
            // Each page takes 1 to 5 units of work.
            assert!(
                s.finished - s.started >= config.unit,
                "{} took a unit",
                s.page
            );
        }
        // A worker never held more than one page at a time.
        for w in mine.windows(2) {
            assert!(
                w[0].finished <= w[1].started,
                "worker {worker} started {} at {:?} before finishing {} at {:?}",
                w[1].page,
                w[1].started,
                w[0].page,
                w[0].finished
            );
        }
        // Pages leave the producer in order, so each worker sees them in order.
        let order: Vec<usize> = mine.iter().map(|s| index[s.page.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "worker {worker} got pages out of order: {order:?}"
        );
        let busy: Duration = mine.iter().map(|s| s.finished - s.started).sum();
        assert!(busy <= report.elapsed);
    }
    report
}

#[test]
fn smoke() {
    let report = run(&scraper::Config {
        pages: vec!["only.page".into()],
        workers: 1,
        unit: Duration::from_millis(1),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(report.scraped.len(), 1);
    assert_eq!(report.scraped[0].page, "only.page");
    assert!(report.outcomes.iter().all(|(_, r)| *r == Reason::Normal));
}

#[test]
fn two_workers_scrape_the_ten_default_pages() {
    let config = scraper::Config {
        unit: Duration::from_millis(5),
        ..Default::default()
    };
    assert_eq!((config.pages.len(), config.workers), (10, 2));
    check(&config);
}

#[test]
fn three_workers_scrape_forty_pages() {
    let config = scraper::Config {
        pages: (1..=40).map(|i| format!("page-{i}.example")).collect(),
        workers: 3,
        unit: Duration::from_millis(5),
        ..Default::default()
    };
    check(&config);
}

#[test]
fn no_pages_still_ends_normally() {
    let config = scraper::Config {
        pages: Vec::new(),
        unit: Duration::from_millis(1),
        ..Default::default()
    };
    let report = run(&config).unwrap();
    assert!(report.scraped.is_empty());
    assert_eq!(report.outcomes.len(), 3);
    assert!(report.outcomes.iter().all(|(_, r)| *r == Reason::Normal));
}

#[test]
fn zero_workers_is_an_error() {
    let err = run(&scraper::Config {
        workers: 0,
        ..Default::default()
    })
    .expect_err("no workers");
    assert_eq!(err, "expected at least 1 worker, got 0");
}
