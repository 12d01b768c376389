//! Every fixed size in the dataplane, with the reason for it. Map sizes are fixed when a map is
//! created and pinned maps outlive the daemon, so changing one is an ABI change
//! ([`DATAPLANE_ABI`]).

/// Version of the pinned dataplane layout as a whole (the map set, key and value layouts,
/// sizes, meanings). A daemon adopts a dataplane of this version as it is, upgrades one of an
/// older version it knows (`dataplane::upgrade`), and refuses a newer one rather than misread
/// it. Layout 5 brought the map registry, counter headroom and the staged pipeline.
pub const DATAPLANE_ABI: u32 = 5;

/// The oldest pinned layout this xnic upgrades in place, without detaching anything.
pub const OLDEST_UPGRADABLE_ABI: u32 = 4;

/// Verdict counter slots per port (reasons there are: `Reason::COUNT`). Headroom for reasons
/// later versions add without a new layout; costs `MAX_PORTS × 32 × 16` bytes per CPU
/// (≈2.1 MiB, ≈136 MiB on 64 CPUs).
pub const REASON_SLOTS: usize = 32;

/// Shape counter slots per port: a frame's shapes are a 16-bit set.
pub const SHAPE_SLOTS: usize = 16;

/// Steering counter slots.
pub const STEER_SLOTS: usize = 16;

/// `MONITOR_STATS` slots: the monitor's four counters and room for more.
pub const MONITOR_SLOTS: usize = 8;
/// Entries of `WATCH_STATS`: 3 watch counters and room for one more.
pub const WATCH_SLOTS: usize = 4;

/// VMs one host can carry. Thousands of small VMs or containers per host is the design point;
/// per-CPU VM counters cost `MAX_VMS × 48` bytes per CPU (≈200 KiB).
pub const MAX_VMS: u32 = 4096;

/// Uplinks (physical NICs or their veth stand-ins) per host. Bonds in the wild have 2–8
/// members; 64 leaves room for hosts with many NIC ports.
pub const MAX_UPLINKS: u32 = 64;

/// Port slots: one per VM port and per uplink, plus slot 0 for traffic on an interface the
/// dataplane does not know (a stale attachment), so nothing goes uncounted.
pub const MAX_PORTS: u32 = MAX_VMS + MAX_UPLINKS + 1;

/// The port slot that counts frames seen on interfaces with no port entry.
pub const UNKNOWN_PORT_SLOT: u32 = 0;

/// MAC addresses one VM may own (its vNICs' MACs plus, say, nested containers' macvlans).
pub const MAX_MACS_PER_VM: usize = 16;

/// All bound MACs: on average four per VM at full VM count.
pub const MAX_MACS: u32 = MAX_VMS * 4;

/// Longest VM name, so names fit a fixed-size record in the pinned VM table.
pub const MAX_NAME_LEN: usize = 63;

/// Linux interface names are at most 15 bytes (IFNAMSIZ − 1).
pub const MAX_IFNAME_LEN: usize = 15;
