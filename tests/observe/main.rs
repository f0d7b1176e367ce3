//! The observability layer (`stageflow::observe`) and the core API it reads: snapshots, their
//! renderings, the reporter, the dashboard endpoint and the `top` example. One test binary;
//! one module per concept.

#[path = "../common/mod.rs"]
mod common;

#[cfg(all(feature = "dashboard", feature = "http"))]
mod browser;
mod core_api;
#[cfg(all(feature = "dashboard", feature = "http"))]
mod dashboard;
mod examples;
mod fixtures;
mod metrics;
mod promtool;
mod render;
mod reporter;
mod snapshot;
mod timing;
