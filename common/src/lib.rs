//! Types and logic shared by the XDP programs and the controller.
//!
//! Everything here is `no_std` and allocation-free so it compiles for the BPF target; the same
//! code runs in ordinary unit and property tests on the host.
#![no_std]

#[macro_use]
mod counters;
pub mod csum;
pub mod ctx;
pub mod dry_run;
pub mod flow;
pub mod frame;
pub mod hash;
pub mod headers;
pub mod index;
pub mod limits;
#[macro_use]
pub mod mapdefs;
pub mod maps;
pub mod monitor;
pub mod parse;
pub mod rewrite;
pub mod rings;
pub mod rss;
pub mod shaper;
pub mod tcp;
pub mod team;
pub mod verdict;
pub mod vnic;
pub mod xmit;

#[cfg(feature = "user")]
mod pod;
