//! `cachet replay`: frozen workloads sent through the simulator, directly and through the proxy,
//! on a virtual clock, to measure cache efficiency against the oracle (`../shared/DESIGN.md`,
//! "Measuring").
//!
//! - `workload`: the requests (built-in generators and recorded JSONL files), drawn from `rng`;
//! - `run`: the driver, one fresh simulator per workload and route;
//! - `oracle`: the most any cache placement could save, on the context-first layout;
//! - `report`: the table and its JSON.

pub mod oracle;
pub mod rng;
pub mod workload;
