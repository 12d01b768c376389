//! What the daemon observes: dataplane counters (sampled into rates) and kernel state.

pub mod cpu;
pub mod links;
pub mod sample;
