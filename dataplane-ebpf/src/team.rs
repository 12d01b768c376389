//! The team stage: a teamed VM's frame for the network is paced against its allocation and
//! sent to its uplink; see `xnic_common::team` for the design. Also the checks on team
//! uplinks (our own frames coming back, which member takes group frames) and the flood
//! filter on broadcast copies.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_ktime_get_ns, programs::XdpContext};
use xnic_common::{
    ctx::{CTX_GROUP, FrameCtx, Next},
    hash::flow_hash,
    parse::Parsed,
    shaper::wants_shaper,
    team::{
        Egress, FLOW_HASH_MEMBER, MAX_TEAM_MEMBERS, NO_TEAM, VmTeam, admit, cost_ns, member_down,
        member_index, over_rate_reason, pick, table_index, usable_member, vm_member_index,
    },
    verdict::Reason,
};

use crate::{
    lookup::mac_owner,
    maps::{DRY_VM_BUCKET, MEMBER_DOWN, MEMBER_UP, TEAM_TABLES, TEAMS, VM_BUCKETS, VM_TEAM},
};

/// A teamed VM's frame for the network: sets its reason and next hop. A VM in no team keeps
/// going to the kernel, as without teaming.
#[inline(always)]
pub fn egress(cx: &mut FrameCtx) {
    let vm_slot = cx.port.vm_slot;
    let group = cx.has(CTX_GROUP);
    let Some(vm) = VM_TEAM.get(vm_slot) else {
        return;
    };
    if vm.team == NO_TEAM {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let member = match uplink(cx, vm, now) {
        Ok(m) => Some(m),
        // A VM's broadcasts still reach the other VMs when no uplink is up.
        Err(Reason::NoUplink) if group => None,
        Err(reason) => {
            cx.verdict.reason = reason;
            return;
        }
    };
    let cost = cost_ns(vm.ns_per_byte_q16, cx.len);
    if let Some((member, _)) = member
        && !group
        && wants_shaper(vm, &cx.parsed)
    {
        // Its class on the uplink holds it to the rate; what fits in the bucket is charged
        // so the VM's other traffic shares one allocation with it.
        take(vm_slot, cost, vm.burst_ns, now);
        cx.verdict.reason = Reason::ToShaper;
        cx.member_counter = vm_member_index(vm_slot, member);
        return;
    }
    if vm.ns_per_byte_q16 != 0 && !take(vm_slot, cost, vm.burst_ns, now) {
        cx.verdict.reason = over_rate_reason(vm);
        return;
    }
    if group {
        cx.member_counter = vm_member_index(vm_slot, vm.flood_member);
        cx.next = Next::FLOOD;
        return;
    }
    let Some((member, ifindex)) = member else {
        return;
    };
    cx.verdict.reason = Reason::ToUplink;
    cx.member_counter = vm_member_index(vm_slot, member);
    cx.next = Next::port_or_drop(ifindex, Reason::NoUplink);
}

/// The member (and its ifindex) a frame of the teamed VM `vm` leaves through now: its
/// placement's member, or the next one the kernel has not marked down; or why it may not go
/// (paused, shed to rate 0, no usable uplink).
#[inline(always)]
pub fn uplink(cx: &FrameCtx, vm: &VmTeam, now: u64) -> Result<(u32, u32), Reason> {
    let Some(team) = TEAMS.get(vm.team) else {
        return Err(Reason::NoUplink);
    };
    let table_member = if vm.member == FLOW_HASH_MEMBER && !cx.has(CTX_GROUP) {
        let hash = flow_hash(&cx.parsed, team.seed, true);
        TEAM_TABLES.get(table_index(vm.team, hash)).copied()
    } else {
        None
    };
    let member = match pick(vm, now, table_member) {
        Egress::Member(m) => m,
        Egress::Drop(reason) => return Err(reason),
    };
    // The kernel may have taken the member's carrier before the daemon moved the VM.
    let member = match usable_member(vm, member, |m| marked_down(vm.team, m)) {
        Some(m) if m < MAX_TEAM_MEMBERS => m,
        _ => return Err(Reason::NoUplink),
    };
    // The mask changes nothing (checked above) but shows the verifier the bound, which the
    // compiler would otherwise fold into the check and drop.
    let ifindex = team.ifindex[(core::hint::black_box(member) & (MAX_TEAM_MEMBERS - 1)) as usize];
    if ifindex == 0 {
        return Err(Reason::NoUplink);
    }
    Ok((member, ifindex))
}

/// Whether the kernel marked member `m` of `team` down since the daemon put it in use.
#[inline(always)]
fn marked_down(team: u32, m: u32) -> bool {
    let i = member_index(team, m);
    match (MEMBER_DOWN.get(i), MEMBER_UP.get(i)) {
        (Some(down), Some(up)) => member_down(*down, *up),
        _ => false,
    }
}

/// The uplink (ifindex) that carries a VM's broadcasts now: its flood uplink, or, when the
/// kernel marked that one down before the daemon moved the VM, the first of its fallbacks
/// that is not marked (0: none).
#[inline(always)]
fn flood_uplink(vm: &VmTeam) -> u32 {
    if vm.flood_member >= MAX_TEAM_MEMBERS || !marked_down(vm.team, vm.flood_member) {
        return vm.flood_ifindex;
    }
    let Some(team) = TEAMS.get(vm.team) else {
        return 0;
    };
    match usable_member(vm, vm.flood_member, |m| marked_down(vm.team, m)) {
        // The mask: as in `uplink`.
        Some(m) if m < MAX_TEAM_MEMBERS => {
            team.ifindex[(core::hint::black_box(m) & (MAX_TEAM_MEMBERS - 1)) as usize]
        }
        _ => 0,
    }
}

/// GCRA on the VM's shared bucket (`xnic_common::team::admit`) without a lock: a frame that
/// conforms adds its cost with an atomic add, so concurrent CPUs never lose each other's
/// costs and the long-run rate is exact; CPUs racing at the edge of the burst can each admit
/// one frame beyond it (the debt is still recorded). When the bucket was idle (its time in the
/// past) the time restarts from now with a plain store; racing CPUs there can lose each
/// other's cost once per idle period.
#[inline(always)]
fn take(vm_slot: u32, cost: u64, burst_ns: u64, now: u64) -> bool {
    let Some(bucket) = VM_BUCKETS
        .get_ptr_mut(vm_slot)
        .and_then(|b| crate::dry_run::private(b, &DRY_VM_BUCKET))
    else {
        return true;
    };
    // SAFETY: `bucket` points into the VM_BUCKETS array value, which lives as long as the map
    // and is 8-byte aligned; aligned 64-bit loads and stores are not torn.
    let tat: *mut u64 = unsafe { &raw mut (*bucket).tat_ns };
    // SAFETY: as above.
    let before = unsafe { core::ptr::read_volatile(tat) };
    match admit(before, now, cost, burst_ns) {
        None => false,
        Some(_) if before < now => {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(tat, now + cost) };
            true
        }
        Some(_) => {
            crate::atomic::add64(tat, cost);
            true
        }
    }
}

/// Whether a frame arriving on a team member carries a local VM's source MAC: one of our own
/// frames coming back.
#[inline(always)]
pub fn looped(parsed: &Parsed) -> bool {
    mac_owner(parsed.src_mac).is_some()
}

/// Whether `member` accepts group frames for team `team`.
#[inline(always)]
pub fn receives_group(team: u32, member: u32) -> bool {
    TEAMS.get(team).is_some_and(|t| t.rx_member == member)
}

/// The devmap program on each uplink's `FLOOD` entry: a broadcast copy goes out of an uplink
/// only when it is the flood uplink of the VM that sent it (so the network sees each VM's
/// MACs on one port, and never our copy of a frame that came from the network), or that
/// uplink's fallback while the kernel has it marked down.
#[inline(always)]
pub fn flood_filter(ctx: &XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 12 > end {
        return xdp_action::XDP_DROP;
    }
    let mut src = [0u8; 6];
    // SAFETY: [data, data + 12) is inside the frame (checked above); bytes 6..12 are the
    // source MAC.
    unsafe { core::ptr::copy_nonoverlapping((data + 6) as *const u8, src.as_mut_ptr(), 6) };
    let Some(owner) = mac_owner(src) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: `ctx.ctx` is this invocation's xdp_md.
    let egress = unsafe { (*ctx.ctx).egress_ifindex };
    match VM_TEAM.get(owner.vm_slot) {
        Some(vm) if vm.flood_ifindex != 0 && flood_uplink(vm) == egress => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}
