//! Plays an xnic daemon of dataplane layout 4 (the last one before the map registry): loads
//! its XDP object (`tests/fixtures/dataplane-layout4.o`), pins maps and links where it did,
//! and writes the entries it wrote for a lab without teams or RSS: port and MAC entries, the
//! slot records, the layout version. Then it exits, leaving the dataplane forwarding, as
//! that daemon did; today's daemon must adopt it.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::{
    EbpfLoader,
    maps::{Array, HashMap},
    programs::{Xdp, XdpMode, links::FdLink},
};
use xnic::{config::Config, dataplane::PinDir};
use xnic_common::maps::{MacKey, MacOwner, Name, PortRecord, PortRole, VmRecord};

/// The layout-4 object.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../fixtures/dataplane-layout4.o");

/// Layout 4's `INFO[0]`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Info {
    abi: u32,
    _pad: u32,
    created_unix: u64,
}

/// Layout 4's `PORTS` value.
#[repr(C)]
#[derive(Clone, Copy)]
struct PortEntryV1 {
    slot: u32,
    vm_slot: u32,
    role: u8,
    flags: u8,
    team: u8,
    member: u8,
}

// SAFETY: `repr(C)`, integers only, no padding.
unsafe impl aya::Pod for Info {}
// SAFETY: as above.
unsafe impl aya::Pod for PortEntryV1 {}

/// Makes a layout-4 dataplane for `config` (its uplinks and VMs, slots in configuration
/// order) in its network namespace. Returns the ifindexes attached, by interface name.
pub fn start(config: &Config) -> anyhow::Result<Vec<(String, u32)>> {
    let config = config.clone();
    std::thread::spawn(move || -> anyhow::Result<_> {
        if let Some(ns) = &config.netns {
            xnic::netns::enter(ns)?;
        }
        make(&config)
    })
    .join()
    .map_err(|_| anyhow!("the layout-4 loader panicked"))?
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name).with_context(|| format!("no interface {name}"))
}

fn make(config: &Config) -> anyhow::Result<Vec<(String, u32)>> {
    xnic::dataplane::ensure_bpffs()?;
    let pins = PinDir::new(&config.instance);
    for dir in [pins.maps(), pins.links()] {
        std::fs::create_dir_all(&dir)?;
    }
    let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pins.maps())
        .override_global("AYA_LOG_LEVEL", &0u8, true)
        .map_max_entries("CPUMAP", nr_cpus as u32)
        .load(OBJECT)
        .context("loading the layout-4 object")?;
    for name in ["xnic_uplink", "xnic_vm"] {
        let prog: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        prog.load()?;
    }
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut info: Array<_, Info> = Array::try_from(ebpf.map_mut("INFO").context("INFO")?)?;
    info.set(
        0,
        Info {
            abi: 4,
            _pad: 0,
            created_unix,
        },
        0,
    )?;
    // Slots as that daemon gave them: VMs from 0, ports from 1, in configuration order.
    let mut ports = Vec::new();
    for u in &config.uplinks {
        ports.push((u.name.clone(), PortRole::Uplink, None));
    }
    for (i, v) in config.vms.iter().enumerate() {
        ports.push((v.port.clone(), PortRole::Vm, Some(i as u32)));
    }
    {
        let mut records: Array<_, VmRecord> =
            Array::try_from(ebpf.map_mut("VM_TABLE").context("VM_TABLE")?)?;
        for (i, v) in config.vms.iter().enumerate() {
            records.set(
                i as u32,
                VmRecord {
                    name: Name::new(&v.name),
                    in_use: 1,
                    _pad: [0; 7],
                },
                0,
            )?;
        }
    }
    let mut attached = Vec::new();
    for (slot, (name, role, vm)) in ports.iter().enumerate() {
        let slot = slot as u32 + 1;
        let index = ifindex(name)?;
        let mut table: Array<_, PortRecord> =
            Array::try_from(ebpf.map_mut("PORT_TABLE").context("PORT_TABLE")?)?;
        table.set(
            slot,
            PortRecord {
                name: Name::new(name),
                ifindex: index,
                role: *role as u8,
                _pad: [0; 3],
            },
            0,
        )?;
        let mut map: HashMap<_, u32, PortEntryV1> =
            HashMap::try_from(ebpf.map_mut("PORTS").context("PORTS")?)?;
        map.insert(
            index,
            PortEntryV1 {
                slot,
                vm_slot: vm.unwrap_or(u32::MAX),
                role: *role as u8,
                flags: 0,
                team: 0,
                member: 0,
            },
            0,
        )?;
        attached.push((name.clone(), index));
    }
    {
        let mut macs: HashMap<_, MacKey, MacOwner> =
            HashMap::try_from(ebpf.map_mut("MACS").context("MACS")?)?;
        for (i, v) in config.vms.iter().enumerate() {
            let port_ifindex = ifindex(&v.port)?;
            for mac in v.mac_addrs() {
                macs.insert(
                    MacKey::new(mac.0),
                    MacOwner {
                        vm_slot: i as u32,
                        port_ifindex,
                    },
                    0,
                )?;
            }
        }
    }
    // Native XDP, a pinned bpf_link per interface: what layout 4's daemon left behind.
    for (name, role, _) in &ports {
        let program = match role {
            PortRole::Uplink => "xnic_uplink",
            PortRole::Vm => "xnic_vm",
        };
        let prog: &mut Xdp = ebpf.program_mut(program).context(program)?.try_into()?;
        let id = prog.attach_to_if_index(ifindex(name)?, XdpMode::Driver)?;
        let link: FdLink = prog
            .take_link(id)?
            .try_into()
            .map_err(|_| anyhow!("no bpf_link"))?;
        link.pin(pins.link(name))?;
    }
    Ok(attached)
}

/// The id of the bpf_link pinned for `ifname`: the same link before and after an upgrade
/// means nothing was detached.
pub fn link_id(instance: &str, ifname: &str) -> anyhow::Result<u32> {
    let pin = PinDir::new(instance).link(ifname);
    let link = FdLink::from(aya::programs::links::PinnedLink::from_pin(&pin)?);
    Ok(link.info()?.id())
}

/// Whether map `name` is pinned for `instance`.
pub fn map_pinned(instance: &str, name: &str) -> bool {
    Path::new(&PinDir::new(instance).maps()).join(name).exists()
}
