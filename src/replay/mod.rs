//! `cachet replay`: workloads sent through the simulator on a virtual clock, and the oracle.

pub mod oracle;
