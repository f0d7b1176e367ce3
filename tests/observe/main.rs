//! The observability layer (`stageflow::observe`) and the core API it reads: snapshots, their
//! renderings, the reporter and the dashboard endpoint. One test binary; one module per concept.

#[path = "../common/mod.rs"]
mod common;

mod core_api;
