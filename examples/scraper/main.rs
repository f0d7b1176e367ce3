//! The scraper with two workers: a `PageProducer` hands out pages to scrape, and two
//! `PageConsumer` workers, each asking for one page at a time (max_demand 1, min_demand 0),
//! take them as they become free. The story of the scraper chapter in our seed material.
//!
//! ```text
//! cargo run --release --example scraper
//! cargo run --release --example scraper -- --workers 3 --unit-ms 20 --pages a.com,b.com,c.com
//! ```
//!
//! Flags, or the environment: `--pages` / `SCRAPER_PAGES` (comma-separated), `--workers` /
//! `SCRAPER_WORKERS` (default 2), `--unit-ms` / `SCRAPER_UNIT_MS` (one unit of simulated work;
//! each page takes 1 to 5; default 100), `--seed` / `SCRAPER_SEED`. Logs go to stderr;
//! `RUST_LOG` sets the level (default info).

mod scraper;

use std::time::Duration;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    if let Err(e) = run() {
        eprintln!("scraper: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = parse(std::env::args().skip(1).collect())?;
    let report = scraper::run(&config)?;
    for (stage, outcome) in &report.outcomes {
        if *outcome != stageflow::Reason::Normal {
            return Err(format!("stage {stage} ended abnormally: {outcome}").into());
        }
    }
    log::info!(
        "scraped {} pages in {:.2} s",
        report.scraped.len(),
        report.elapsed.as_secs_f64()
    );
    for worker in 1..=config.workers {
        let mine: Vec<&scraper::Scraped> = report
            .scraped
            .iter()
            .filter(|s| s.worker == worker)
            .collect();
        let busy: Duration = mine.iter().map(|s| s.finished - s.started).sum();
        let pages: Vec<&str> = mine.iter().map(|s| s.page.as_str()).collect();
        log::info!(
            "PageConsumer-{worker} scraped {} pages in {:.2} s of work: {}",
            pages.len(),
            busy.as_secs_f64(),
            pages.join(", ")
        );
        if let Some(s) = mine.iter().find(|s| s.batch != 1) {
            return Err(format!("worker {worker} got {} pages at once", s.batch).into());
        }
    }
    if report.scraped.len() != config.pages.len() {
        return Err(format!(
            "expected {} pages scraped, got {}",
            config.pages.len(),
            report.scraped.len()
        )
        .into());
    }
    Ok(())
}

fn parse(args: Vec<String>) -> Result<scraper::Config, Box<dyn std::error::Error>> {
    let mut config = scraper::Config::default();
    let env = |key: &str| std::env::var(key).ok();
    let mut pages = env("SCRAPER_PAGES");
    let mut workers = env("SCRAPER_WORKERS");
    let mut unit = env("SCRAPER_UNIT_MS");
    let mut seed = env("SCRAPER_SEED");
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let slot = match flag.as_str() {
            "--pages" => &mut pages,
            "--workers" => &mut workers,
            "--unit-ms" => &mut unit,
            "--seed" => &mut seed,
            "-h" | "--help" => {
                println!(
                    "usage: scraper [--pages a.com,b.com] [--workers N] [--unit-ms MS] [--seed N]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}; see --help").into()),
        };
        *slot = Some(it.next().ok_or(format!("{flag} needs a value"))?);
    }
    if let Some(p) = pages {
        config.pages = p
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    if let Some(w) = workers {
        config.workers = w
            .parse()
            .map_err(|_| format!("expected --workers to be a number, got {w:?}"))?;
    }
    if let Some(u) = unit {
        let ms: u64 = u
            .parse()
            .map_err(|_| format!("expected --unit-ms to be a number, got {u:?}"))?;
        config.unit = Duration::from_millis(ms);
    }
    if let Some(s) = seed {
        config.seed = s
            .parse()
            .map_err(|_| format!("expected --seed to be a number, got {s:?}"))?;
    }
    Ok(config)
}
