//! The scraper's stages and its run, shared by `examples/scraper/main.rs` and
//! `tests/scraper.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use parking_lot::Mutex;
use stageflow::{
    CastError, Consumer, ConsumerContext, Context, Events, Producer, ProducerHandle, Reason,
    SubscribeOptions, Topology,
};

/// What the producer can be told.
pub(crate) enum PageMsg {
    /// Hand these pages to the workers.
    Scrape(Vec<String>),
    /// No more pages: finish once every page handed over has gone to a worker.
    Finish,
}

/// Holds the pages to scrape and hands them out as workers ask.
pub(crate) struct PageProducer;

impl Producer for PageProducer {
    type Out = String;
    type Message = PageMsg;

    fn handle_demand(&mut self, demand: usize, ctx: &mut Context<'_, String, PageMsg>) {
        // Pages arrive through `scrape_pages`; until then demand is simply remembered by the
        // buffer: pages handed over later go straight to the worker that asked.
        info!("{} received demand for {demand} pages", ctx.name());
    }

    fn handle_message(&mut self, msg: PageMsg, ctx: &mut Context<'_, String, PageMsg>) {
        match msg {
            PageMsg::Scrape(pages) => ctx.emit_all(pages),
            PageMsg::Finish => ctx.finish(),
        }
    }
}

/// Hands `pages` to the producer (a cast: the pages are emitted at once, to workers with
/// demand, the rest buffered).
pub(crate) fn scrape_pages(
    producer: &ProducerHandle<PageProducer>,
    pages: Vec<String>,
) -> Result<(), CastError<PageMsg>> {
    producer.cast(PageMsg::Scrape(pages))
}

/// One scraped page, as a worker recorded it.
#[derive(Clone, Debug)]
pub(crate) struct Scraped {
    /// The worker's number, from 1.
    pub(crate) worker: usize,
    /// The page.
    pub(crate) page: String,
    /// Pages in the batch this page came in (always 1 with max_demand 1).
    pub(crate) batch: usize,
    /// When the worker started on it, since the run started.
    pub(crate) started: Duration,
    /// When it was done.
    pub(crate) finished: Duration,
}

/// A worker: "scrapes" each page by sleeping 1 to 5 work units.
pub(crate) struct PageConsumer {
    worker: usize,
    unit: Duration,
    rng: u64,
    epoch: Instant,
    log: Arc<Mutex<Vec<Scraped>>>,
}

impl PageConsumer {
    fn work_units(&mut self) -> u32 {
        // xorshift64: enough randomness for simulated work, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        1 + (self.rng % 5) as u32
    }
}

impl Consumer for PageConsumer {
    type In = String;
    type Message = ();

    fn handle_events(&mut self, events: Events<'_, String>, ctx: &mut ConsumerContext<'_>) {
        let batch = events.len();
        for page in events {
            info!("{} received {page}", ctx.name());
            let started = self.epoch.elapsed();
            std::thread::sleep(self.unit * self.work_units());
            self.log.lock().push(Scraped {
                worker: self.worker,
                page,
                batch,
                started,
                finished: self.epoch.elapsed(),
            });
        }
    }
}

/// How to run the scraper.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// The pages to scrape.
    pub(crate) pages: Vec<String>,
    /// How many workers.
    pub(crate) workers: usize,
    /// One unit of simulated work; each page takes 1 to 5 units.
    pub(crate) unit: Duration,
    /// Seed of the simulated work times.
    pub(crate) seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pages: [
                "google.com",
                "facebook.com",
                "apple.com",
                "netflix.com",
                "amazon.com",
                "wikipedia.org",
                "rust-lang.org",
                "elixir-lang.org",
                "hex.pm",
                "crates.io",
            ]
            .map(String::from)
            .to_vec(),
            workers: 2,
            unit: Duration::from_millis(100),
            seed: 0x5eed,
        }
    }
}

/// What a run did.
#[derive(Debug)]
pub(crate) struct Report {
    /// Every page scraped, in the order they finished.
    pub(crate) scraped: Vec<Scraped>,
    /// Each stage's name and how it ended.
    pub(crate) outcomes: Vec<(String, Reason)>,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
}

/// Runs the scraper: a producer, `workers` consumers with max_demand 1 / min_demand 0, the
/// pages handed over with `scrape_pages`, then a finish; waits for every stage to end.
pub(crate) fn run(config: &Config) -> Result<Report, Box<dyn std::error::Error>> {
    if config.workers == 0 {
        return Err("expected at least 1 worker, got 0".into());
    }
    let epoch = Instant::now();
    let log = Arc::new(Mutex::new(Vec::new()));
    let producer = stageflow::producer(PageProducer)
        .name("PageProducer")
        .spawn()?;
    let mut topology = Topology::new().with(&producer);
    for worker in 1..=config.workers {
        let consumer = PageConsumer {
            worker,
            unit: config.unit,
            rng: config.seed.wrapping_mul(worker as u64 * 2 + 1) | 1,
            epoch,
            log: log.clone(),
        };
        let handle = stageflow::consumer(consumer)
            .name(format!("PageConsumer-{worker}"))
            .subscribe_to(
                &producer,
                SubscribeOptions::new().max_demand(1).min_demand(0),
            )?
            .spawn()?;
        topology.add(&handle);
    }
    scrape_pages(&producer, config.pages.clone())?;
    producer.cast(PageMsg::Finish)?;
    let outcomes = topology.join();
    let elapsed = epoch.elapsed();
    let scraped = std::mem::take(&mut *log.lock());
    Ok(Report {
        scraped,
        outcomes,
        elapsed,
    })
}
