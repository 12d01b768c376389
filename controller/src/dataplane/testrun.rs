//! `BPF_PROG_TEST_RUN` for the XDP programs and the tc programs: run a program on a
//! frame without a network, for tests and per-packet cost benchmarks.

use anyhow::Context as _;
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp};

/// Linear data an XDP test run gets before the rest goes to fragments: one page minus the
/// XDP headroom (256) and the aligned `skb_shared_info` (320) on x86-64.
const TEST_RUN_LINEAR_MAX: usize = 4096 - 256 - 320;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action the program returned.
    pub action: u32,
    /// Average time per run as the kernel measured it, in nanoseconds.
    pub ns_per_run: u64,
    /// The frame as the program left it, without `tag`.
    pub frame: Vec<u8>,
    /// The tag the program put in front of the frame for the program that finishes it (the
    /// CPU map's, `FLOW_TX`'s), taken off as that program would.
    pub tag: Vec<u8>,
}

/// The length of the tag `frame` starts with, if any.
fn tag_len(frame: &[u8]) -> usize {
    use xnic_common::{
        flow::FlowMeta,
        rss::{STEER_TAG, SteerMeta},
    };
    let Some(word) = frame.first_chunk::<4>().map(|m| u32::from_le_bytes(*m)) else {
        return 0;
    };
    if word == STEER_TAG {
        size_of::<SteerMeta>()
    } else if FlowMeta(word).slot_dir().is_some() {
        size_of::<FlowMeta>()
    } else {
        0
    }
}

/// Runs `prog` `repeat` times on `frame`, as if it arrived on `ingress_ifindex` (0: none;
/// otherwise the interface must exist in the caller's network namespace).
pub fn run(
    prog: &mut Xdp,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> anyhow::Result<TestRunOutcome> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex. The kernel wants data = 0 (no metadata) and data_end = the linear size.
    let linear = frame.len().min(TEST_RUN_LINEAR_MAX) as u32;
    let md: [u32; 6] = [0, linear, 0, ingress_ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let mut ctx_out = vec![0u8; ctx.len()];
    // Room for what a program may add in front (VXLAN's outer headers, metadata).
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            repeat,
            ..TestRunOptions::new()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN on a {}-byte frame failed", frame.len()))?;
    // The output starts at the metadata; xdp_md.data is where the frame starts in it.
    out.truncate(result.data_size_out as usize);
    let data = u32::from_ne_bytes(ctx_out[0..4].try_into().expect("four bytes")) as usize;
    let data = data.min(out.len());
    let mut frame = out.split_off(data);
    let tag_len = tag_len(&frame).min(frame.len());
    let rest = frame.split_off(tag_len);
    Ok(TestRunOutcome {
        action: result.return_value,
        ns_per_run: result.duration.as_nanos() as u64,
        frame: rest,
        tag: frame,
    })
}

/// What a tc program did with a frame in a test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcOutcome {
    /// The tc action (`TC_ACT_*`).
    pub action: i32,
    /// `skb->priority` after the run (the shaper's HTB class).
    pub priority: u32,
}

/// `struct __sk_buff`: its size, and the offsets of the fields read or set.
const SKB_CTX_LEN: usize = 192;
const SKB_PRIORITY: usize = 32;

/// Runs a tc program on `frame` (it arrives on `lo`, the test run's device).
pub fn run_tc(prog: &mut SchedClassifier, frame: &[u8]) -> anyhow::Result<TcOutcome> {
    let ctx_in = [0u8; SKB_CTX_LEN];
    let mut ctx_out = [0u8; SKB_CTX_LEN];
    let mut out = vec![0u8; frame.len() + 256];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        })
        .with_context(|| {
            format!(
                "BPF_PROG_TEST_RUN of a tc program on a {}-byte frame failed",
                frame.len()
            )
        })?;
    let priority = u32::from_ne_bytes(
        ctx_out[SKB_PRIORITY..SKB_PRIORITY + 4]
            .try_into()
            .expect("four bytes"),
    );
    Ok(TcOutcome {
        action: result.return_value as i32,
        priority,
    })
}
