//! Integration tests: the proxy in-process on port 0 in front of a recording mock upstream.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns fail loudly by design"
)]

mod common;
mod demo;
mod errors;
mod explain;
mod fault_replay;
mod faults;
mod gemini_cache;
mod keys;
mod ledger;
mod lifecycle;
mod metrics;
mod passthrough;
mod pool;
mod replay;
mod rewrite;
mod robustness;
mod simulator;
mod single_flight;
mod streaming;
