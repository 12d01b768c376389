//! Lets userspace put the shared map types in aya maps.

use crate::{
    maps::{Counter, DataplaneInfo, MacKey, MacOwner, PortEntry, PortRecord, VmCounters, VmRecord},
    rss::{EngineEntry, FlowDone, FlowSlot, RssConfig, VmRss},
    team::{TeamEntry, VmBucket, VmTeam},
};

// SAFETY: each type is `#[repr(C)]`, `Copy`, made of integers and byte arrays with explicit
// padding fields, so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for Counter {}
// SAFETY: as above.
unsafe impl aya::Pod for PortEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for MacKey {}
// SAFETY: as above.
unsafe impl aya::Pod for MacOwner {}
// SAFETY: as above.
unsafe impl aya::Pod for VmCounters {}
// SAFETY: as above.
unsafe impl aya::Pod for PortRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for VmRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for DataplaneInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::maps::LayoutInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for RssConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for VmRss {}
// SAFETY: as above.
unsafe impl aya::Pod for EngineEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowDone {}
// SAFETY: as above.
unsafe impl aya::Pod for VmTeam {}
// SAFETY: as above.
unsafe impl aya::Pod for TeamEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for VmBucket {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::xmit::TraceConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::xmit::RedirectMark {}
// SAFETY: as above (the slot types assert their sizes: no padding).
unsafe impl aya::Pod for crate::index::PortSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::index::MacSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::team::CarrierKey {}
// SAFETY: repr(C) plain data, every bit pattern valid, no padding the kernel reads.
unsafe impl aya::Pod for crate::flow::FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::flow::FlowRef {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::flow::FlowState {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::flow::FlowLive {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::dry_run::DryRunLog {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::flow::FlowConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::flow::Tunnel {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::RouteAddrV4 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::RouteAddrV6 {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::RouteEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::VnicConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::VnicEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::VnicMacKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::VnicAddrKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::GatewayEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::PublicEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::AclRule {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::NatKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::NatEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::FleetHostEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::VnicCounters {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::RouteCacheKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::vnic::CachedRoute {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::monitor::MonitorConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::monitor::Bucket {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::monitor::WatchConfig {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::monitor::FlowMatch {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::monitor::CaptureFilter {}
