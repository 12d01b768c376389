//! What the daemon manages, one feature at a time: the base (ports, VMs, their slots and
//! MACs), RSS engines, NIC teams and flow offload. Every feature has the same hooks, called
//! only by the reconciler:
//!
//! - **reconcile**: bring the feature's own state in line with a new desired state (or
//!   refuse it: then the reconciler restores everything and nothing changed);
//! - **render**: write the feature's part of the dataplane [`Image`] from that state;
//! - **tick**: a periodic decision on measurements taken outside the reconciler;
//! - **view**: what the API shows.
//!
//! Features never touch the dataplane themselves: the reconciler diffs the rendered image
//! against what is written and executes the difference in a safe order
//! ([`crate::policy::plan`]).

pub mod base;
pub mod flows;
pub mod rss;
pub mod team;
pub mod vnic;

use std::collections::BTreeMap;

use xnic_proto::config::{AttachMode, Config};

pub use self::base::Slots;
pub use crate::policy::plan::Programs;
use crate::{events::NewEvent, monitor::links::Interfaces, policy::plan::Image};

/// What every hook may look at: the desired state and the host as it is now.
pub struct Context<'a> {
    pub desired: &'a Config,
    pub host: &'a Interfaces,
    /// The mode this instance's program runs in, per interface it is attached to.
    pub attached: &'a BTreeMap<String, AttachMode>,
    /// This daemon's programs.
    pub programs: Programs,
    /// CLOCK_MONOTONIC nanoseconds (the dataplane's clock), read by the caller.
    pub now_ns: u64,
}

/// The hooks every feature has.
pub trait Feature {
    /// Measurements for one period, taken by the sampler with its own map handles.
    type Sample;

    /// Brings the feature's state in line with `cx.desired`. `Err` refuses the change.
    fn reconcile(
        &mut self,
        cx: &Context,
        slots: &Slots,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), String>;

    /// Writes the feature's part of `image`.
    fn render(&self, cx: &Context, slots: &Slots, image: &mut Image);

    /// One period on `sample`. Returns whether the rendered image may have changed.
    fn tick(
        &mut self,
        cx: &Context,
        slots: &Slots,
        sample: Self::Sample,
        events: &mut Vec<NewEvent>,
    ) -> bool;
}
