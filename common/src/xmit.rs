//! Frames the kernel drops after the dataplane redirected them: a target port that cannot
//! take redirected frames (`xdp:xdp_redirect_err`, at the redirect) or whose queue is full
//! (`xdp:xdp_devmap_xmit`, at the flush), a CPU whose CPU-map queue is full
//! (`xdp:xdp_cpumap_enqueue`). The programs count a frame where they
//! redirect it; these tracepoints count it again where the kernel gives up on it, so every
//! frame is accounted for.

/// The `xdp_devmap_xmit` raw tracepoint's arguments (its `TP_PROTO`, in order; the daemon
/// checks them against the kernel's BTF before attaching), and the ones read.
pub const DEVMAP_XMIT_ARGS: [&str; 5] = ["from_dev", "to_dev", "sent", "drops", "err"];
pub const DEVMAP_XMIT_FROM_DEV: usize = 0;
pub const DEVMAP_XMIT_TO_DEV: usize = 1;
pub const DEVMAP_XMIT_SENT: usize = 2;
pub const DEVMAP_XMIT_DROPS: usize = 3;
pub const DEVMAP_XMIT_ERR: usize = 4;

/// Whether a flush that sent nothing failed because the target cannot transmit at all:
/// `-ENXIO` (a veth whose peer is down), `-ENETDOWN` (a NIC driver whose link or queues are
/// down). The team stage then stops using that member at once (`MEMBER_DOWN`); other
/// failures (a full ring) are congestion, not a dead link.
#[inline(always)]
pub fn target_dead(sent: i32, err: i32) -> bool {
    const ENXIO: i32 = 6;
    const ENETDOWN: i32 = 100;
    sent == 0 && (err == -ENXIO || err == -ENETDOWN)
}

/// The `xdp_cpumap_enqueue` raw tracepoint's arguments, and the ones read.
pub const CPUMAP_ENQUEUE_ARGS: [&str; 4] = ["map_id", "processed", "drops", "to_cpu"];
pub const CPUMAP_ENQUEUE_MAP_ID: usize = 0;
pub const CPUMAP_ENQUEUE_DROPS: usize = 2;
pub const CPUMAP_ENQUEUE_TO_CPU: usize = 3;

/// Field offsets in the `xdp:xdp_redirect_err` record (its `format` file in tracefs; the
/// daemon checks them before attaching).
pub const REDIRECT_ERR_MAP_ID: usize = 28;
pub const REDIRECT_ERR_MAP_INDEX: usize = 32;

/// A flush on a CPU within this long of one of this instance's redirects there is taken as
/// this instance's. (The devmap record names interfaces by index only, and another network
/// namespace can have the same indexes; a flush follows its redirects within microseconds.)
pub const FLUSH_WINDOW_NS: u64 = 1_000_000;

/// `TRACE_CONFIG[0]`: what the tracepoint programs need to tell this instance's events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceConfig {
    /// Kernel ids of this instance's redirect maps (the records of failed redirects and CPU
    /// queues name their map).
    pub cpumap_id: u32,
    pub tx_ports_id: u32,
    pub flood_id: u32,
    /// Where the running kernel's `struct net_device` keeps `ifindex` (from its BTF): the
    /// devmap tracepoint is handed devices, not indexes.
    pub netdev_ifindex: u32,
    /// Where `struct net_device` keeps its namespace (`nd_net`, a `struct net *`), and where
    /// `struct net` keeps its inode number (`ns.inum`): the carrier hook tells uplinks of
    /// different namespaces apart by them.
    pub netdev_net: u32,
    pub net_inum: u32,
}

/// `REDIRECT_MARK[0]`, per CPU: redirects made here, and when the devmap tracepoint last
/// saw the count move.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectMark {
    pub redirects: u64,
    pub seen: u64,
    pub seen_at_ns: u64,
}
