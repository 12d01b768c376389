//! The tracepoint programs that count frames the kernel drops after a redirect (see
//! `xnic_common::xmit`), attached next to the XDP programs and pinned under `trace/`.
//!
//! The two that run on every flush (`xdp_devmap_xmit`, `xdp_cpumap_enqueue`) are raw
//! tracepoints: they get the tracepoint's arguments as they are, without the kernel first
//! writing a trace record (a perf tracepoint cost ~5 % of a CPU steering 250k frames a
//! second). Their argument order and the one kernel structure they read (`net_device`'s
//! `ifindex`) are checked against the running kernel's BTF before they attach.
//! `xdp_redirect_err`, which fires only on a failed redirect, stays a classic tracepoint
//! whose record fields are checked against tracefs.

use std::fs;

use anyhow::{Context as _, anyhow, bail};
use aya::programs::{
    FEntry, RawTracePoint, TracePoint, fentry::FEntryLink, links::FdLink,
    raw_trace_point::RawTracePointLink, trace_point::TracePointLink,
};
use btf_rs::{Btf, Type};
use xnic_common::xmit::{
    CPUMAP_ENQUEUE_ARGS, DEVMAP_XMIT_ARGS, REDIRECT_ERR_MAP_ID, REDIRECT_ERR_MAP_INDEX,
};

use super::{
    Dataplane, bpffs,
    registry::{self, Registered as _},
};

const REDIRECT_ERR_PROGRAM: &str = "xnic_redirect_err";
const XMIT_PROGRAM: &str = "xnic_xmit_drops";
const QUEUE_PROGRAM: &str = "xnic_queue_drops";

const CARRIER_PROGRAM: &str = "xnic_carrier_off";
/// The kernel function the carrier hook runs on.
const CARRIER_FUNCTION: &str = "netif_carrier_off";

/// The tracing programs, in load order.
pub const PROGRAMS: [&str; 4] = [
    REDIRECT_ERR_PROGRAM,
    XMIT_PROGRAM,
    QUEUE_PROGRAM,
    CARRIER_PROGRAM,
];

/// Where the running kernel describes its types.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The raw tracepoints and the `TP_PROTO` arguments their programs expect.
const RAW: [(&str, &str, &[&str]); 2] = [
    ("xdp_devmap_xmit", XMIT_PROGRAM, &DEVMAP_XMIT_ARGS),
    ("xdp_cpumap_enqueue", QUEUE_PROGRAM, &CPUMAP_ENQUEUE_ARGS),
];

/// The names of a raw tracepoint's arguments in the running kernel: the parameters of the
/// function that calls its programs (`__bpf_trace_<event>`), after the tracepoint's own data
/// pointer.
fn raw_arguments(btf: &Btf, event: &str) -> anyhow::Result<Vec<String>> {
    let name = format!("__bpf_trace_{event}");
    let types = btf
        .resolve_types_by_name(&name)
        .with_context(|| format!("the kernel's BTF has no {name}"))?;
    let Some(Type::Func(func)) = types.into_iter().next() else {
        bail!("{name} in the kernel's BTF is not a function");
    };
    let Type::FuncProto(proto) = btf.resolve_chained_type(&func)? else {
        bail!("{name} in the kernel's BTF has no prototype");
    };
    proto
        .parameters
        .iter()
        .skip(1)
        .map(|p| btf.resolve_name(p).map_err(anyhow::Error::from))
        .collect()
}

/// The byte offset of member `member` of struct `name` in the running kernel.
fn member_offset(btf: &Btf, name: &str, member: &str) -> anyhow::Result<u32> {
    let types = btf
        .resolve_types_by_name(name)
        .with_context(|| format!("the kernel's BTF has no {name}"))?;
    for t in types {
        let Type::Struct(s) = t else { continue };
        for m in &s.members {
            if btf.resolve_name(m).ok().as_deref() == Some(member) {
                if m.bitfield_size().is_some_and(|b| b != 0) || !m.bit_offset().is_multiple_of(8) {
                    bail!("struct {name}'s {member} is a bit field");
                }
                return Ok(m.bit_offset() / 8);
            }
        }
    }
    bail!("the kernel's struct {name} has no member {member}")
}

/// Where the running kernel keeps the fields the hooks read.
#[derive(Clone, Copy, Debug)]
struct KernelOffsets {
    netdev_ifindex: u32,
    netdev_net: u32,
    net_inum: u32,
}

fn kernel_btf() -> anyhow::Result<Btf> {
    Btf::from_file(KERNEL_BTF)
        .with_context(|| format!("cannot read the kernel's BTF from {KERNEL_BTF}"))
}

/// `net_device`'s `ifindex`, its namespace pointer, and the namespace's inode number.
fn kernel_offsets(btf: &Btf) -> anyhow::Result<KernelOffsets> {
    Ok(KernelOffsets {
        netdev_ifindex: member_offset(btf, "net_device", "ifindex")?,
        // `possible_net_t` is a struct of one pointer, `net`.
        netdev_net: member_offset(btf, "net_device", "nd_net")?,
        net_inum: member_offset(btf, "net", "ns")? + member_offset(btf, "ns_common", "inum")?,
    })
}

/// Checks the raw tracepoints' arguments against the kernel and returns where `net_device`
/// keeps its `ifindex`.
fn check_kernel() -> anyhow::Result<u32> {
    let btf = kernel_btf()?;
    for (event, _, expected) in RAW {
        let args = raw_arguments(&btf, event)?;
        if args != expected {
            bail!(
                "the kernel's {event} tracepoint takes ({}), not ({}) as xnic expects",
                args.join(", "),
                expected.join(", ")
            );
        }
    }
    Ok(kernel_offsets(&btf)?.netdev_ifindex)
}

impl Dataplane {
    /// Attaches the tracepoints that count frames the kernel drops after a redirect (a
    /// target port that cannot take them, a full CPU queue), replacing an earlier daemon's.
    pub(super) fn attach_tracepoints(&mut self) -> anyhow::Result<()> {
        let netdev_ifindex = check_kernel()?;
        let tracefs = bpffs::ensure_tracefs()?;
        let format_path = tracefs.join("events/xdp/xdp_redirect_err/format");
        let format = fs::read_to_string(&format_path)
            .with_context(|| format!("cannot read {}", format_path.display()))?;
        for (field, offset) in [
            ("map_id", REDIRECT_ERR_MAP_ID),
            ("map_index", REDIRECT_ERR_MAP_INDEX),
        ] {
            if bpffs::field_offset(&format, field) != Some(offset) {
                bail!(
                    "xdp:xdp_redirect_err has field {field} at {:?}, not at {offset} as xnic expects",
                    bpffs::field_offset(&format, field)
                );
            }
        }

        let id = |map: &aya::maps::Map| match map {
            aya::maps::Map::CpuMap(d) | aya::maps::Map::DevMapHash(d) => {
                d.info().map(|i| i.id()).map_err(anyhow::Error::from)
            }
            _ => Err(anyhow!("not a redirect map")),
        };
        let mut config = self.array::<registry::TRACE_CONFIG>()?.get(&0, 0)?;
        config.cpumap_id = id(self.map(registry::CPUMAP::NAME)?)?;
        config.tx_ports_id = id(self.map(registry::TX_PORTS::NAME)?)?;
        config.flood_id = id(self.map(registry::FLOOD::NAME)?)?;
        config.netdev_ifindex = netdev_ifindex;
        self.array_mut::<registry::TRACE_CONFIG>()?
            .set(0, config, 0)?;

        let link = {
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(REDIRECT_ERR_PROGRAM)
                .ok_or_else(|| anyhow!("the XDP object has no program {REDIRECT_ERR_PROGRAM}"))?
                .try_into()?;
            prog.load().with_context(|| {
                format!("the kernel rejected tracepoint program {REDIRECT_ERR_PROGRAM}")
            })?;
            let id = prog
                .attach("xdp", "xdp_redirect_err")
                .context("cannot attach to xdp:xdp_redirect_err")?;
            let link: TracePointLink = prog.take_link(id)?;
            FdLink::try_from(link)
                .map_err(|_| anyhow!("xdp:xdp_redirect_err was attached without a bpf_link"))?
        };
        self.pin_trace_link(REDIRECT_ERR_PROGRAM, link)?;
        for (event, program, _) in RAW {
            let prog: &mut RawTracePoint = self
                .ebpf
                .program_mut(program)
                .ok_or_else(|| anyhow!("the XDP object has no program {program}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected tracepoint program {program}"))?;
            let id = prog
                .attach(event)
                .with_context(|| format!("cannot attach to raw tracepoint {event}"))?;
            let link: RawTracePointLink = prog.take_link(id)?;
            self.pin_trace_link(program, FdLink::from(link))?;
        }
        Ok(())
    }

    /// Attaches the carrier hook (fentry on `netif_carrier_off`), replacing an earlier
    /// daemon's: from then on a team member whose carrier the kernel takes is marked down in
    /// `MEMBER_DOWN` at once, and the team stage uses the VMs' fallbacks.
    pub(super) fn attach_carrier_hook(&mut self) -> anyhow::Result<()> {
        let offsets = kernel_offsets(&kernel_btf()?)?;
        let mut config = self.array::<registry::TRACE_CONFIG>()?.get(&0, 0)?;
        config.netdev_ifindex = offsets.netdev_ifindex;
        config.netdev_net = offsets.netdev_net;
        config.net_inum = offsets.net_inum;
        self.array_mut::<registry::TRACE_CONFIG>()?
            .set(0, config, 0)?;
        let btf = aya::Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
        let prog: &mut FEntry = self
            .ebpf
            .program_mut(CARRIER_PROGRAM)
            .ok_or_else(|| anyhow!("the XDP object has no program {CARRIER_PROGRAM}"))?
            .try_into()?;
        prog.load(CARRIER_FUNCTION, &btf)
            .with_context(|| format!("the kernel rejected fentry program {CARRIER_PROGRAM}"))?;
        let id = prog
            .attach()
            .with_context(|| format!("cannot attach to {CARRIER_FUNCTION}"))?;
        let link: FEntryLink = prog.take_link(id)?;
        self.pin_trace_link(CARRIER_PROGRAM, FdLink::from(link))
    }

    /// Pins `link` as `trace/<program>`; the earlier daemon's link there goes first (two
    /// would count every drop twice).
    fn pin_trace_link(&self, program: &str, link: FdLink) -> anyhow::Result<()> {
        let pin = self.pins.trace().join(program);
        let _ = fs::remove_file(&pin);
        link.pin(&pin)
            .with_context(|| format!("cannot pin {}", pin.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running kernel's BTF names the arguments xnic reads (skipped where the kernel
    /// has no BTF).
    #[test]
    fn the_kernel_passes_the_arguments_the_programs_read() {
        if !std::path::Path::new(KERNEL_BTF).exists() {
            return;
        }
        let offset = check_kernel().unwrap();
        assert!(
            offset > 0 && offset.is_multiple_of(4),
            "ifindex at {offset}"
        );
    }
}
