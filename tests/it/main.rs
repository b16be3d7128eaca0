//! Integration tests: the proxy in-process on port 0 in front of a recording mock upstream.

mod common;
mod errors;
mod lifecycle;
mod metrics;
mod passthrough;
mod simulator;
mod streaming;
