//! The compiled XDP objects, embedded at build time (see the controller's build script).

/// The dataplane programs and maps.
pub static DATAPLANE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xnic-dataplane"));

/// Minimal XDP_PASS and XDP_DROP programs, the benchmarks' reference.
pub static BASELINE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xnic-baseline"));
