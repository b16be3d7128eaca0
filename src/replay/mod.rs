//! `cachet replay`: frozen workloads sent through the proxy to the simulator on a virtual clock,
//! to measure cache efficiency against the oracle (`../shared/DESIGN.md`, "Measuring").
//!
//! `workload` builds the requests (built-in generators and recorded JSONL files); `rng` is the
//! deterministic generator they draw from. The driver that sends them comes separately.

pub mod rng;
pub mod workload;
