//! Dry runs for `xnic trace` (see `xnic_common::dry_run`): a second copy of the dataplane's
//! programs, built with `DRY_RUN` on, loaded against an instance's pinned maps without
//! pinning, attaching or writing anything, and run on one frame with `BPF_PROG_TEST_RUN`.
//! The copy's stage table (`CALLS`) is its own, so its entry programs tail-call its own
//! stages; its steps land in its own per-CPU `DRY_STEPS`.

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{PerCpuArray, ProgramArray},
    programs::Xdp,
};
use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};
use xnic_common::{
    ctx::Call,
    dry_run::{DryRunLog, DryRunStep, MAX_STEPS},
    maps::PortRole,
};

use super::{
    PinDir, objects, program_name,
    registry::{self, Registered as _},
    testrun, upgrade,
};

/// What one frame did in a dry run.
#[derive(Clone, Debug)]
pub struct DryRunOutcome {
    /// The XDP action the entry program (or the last stage it called) returned.
    pub action: u32,
    /// The stages in the order they ran.
    pub steps: Vec<DryRunStep>,
    /// Steps recorded beyond [`MAX_STEPS`], left out.
    pub left_out: u32,
    /// The frame as the programs left it (rewritten, wrapped...), without a tag in front.
    pub frame: Vec<u8>,
    /// What the run took, as the kernel measured it.
    pub ns: u64,
}

/// The programs a dry run needs: the entry programs and every stage they tail-call.
pub struct DryRun {
    ebpf: Ebpf,
}

impl DryRun {
    /// Loads the copy against `instance`'s pinned maps. Refuses a dataplane this xnic did not
    /// make as it is (none pinned, an older layout, a map missing), since loading with a pin
    /// directory would make and pin what is missing.
    pub fn open(instance: &str) -> anyhow::Result<DryRun> {
        let pins = PinDir::new(instance);
        if !pins.exists() {
            bail!(
                "instance {instance:?} has no dataplane pinned at {}: start its daemon (`xnic run`) first",
                pins.path().display()
            );
        }
        match upgrade::inspect(&pins)? {
            upgrade::Found::Current => {}
            upgrade::Found::Older { abi, .. } => bail!(
                "the dataplane pinned at {} is an older xnic's (layout {abi}); start this \
                 version's daemon, which upgrades it, then trace",
                pins.path().display()
            ),
            upgrade::Found::Nothing => bail!(
                "{} holds no dataplane; start the daemon (`xnic run`) first",
                pins.path().display()
            ),
        }
        for spec in registry::pinned_specs() {
            let path = pins.maps().join(spec.name);
            registry::check_pinned(&path, spec).with_context(|| {
                format!(
                    "cannot trace against the dataplane at {}",
                    pins.path().display()
                )
            })?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps())
            .override_global("AYA_LOG_LEVEL", &0u8, true)
            .override_global("DRY_RUN", &1u8, true)
            .load(objects::DATAPLANE)
            .context("loading a copy of the XDP programs for the trace failed")?;
        let names = [PortRole::Uplink, PortRole::Vm]
            .map(program_name)
            .into_iter()
            .chain(Call::ALL.iter().map(|c| c.program()));
        super::load_xdp(&mut ebpf, names, "the trace's copy of")?;
        let mut fds = Vec::new();
        for call in Call::ALL {
            let prog: &Xdp = ebpf
                .program(call.program())
                .ok_or_else(|| anyhow!("the XDP object has no program {}", call.program()))?
                .try_into()?;
            fds.push((call, prog.fd()?.try_clone()?));
        }
        let table = ebpf
            .map_mut(registry::CALLS::NAME)
            .ok_or_else(|| anyhow!("the XDP object has no map {}", registry::CALLS::NAME))?;
        let mut calls: ProgramArray<_> = ProgramArray::try_from(table)?;
        for (call, fd) in &fds {
            calls.set(*call as u32, fd, 0).with_context(|| {
                format!("cannot put stage {} in the trace's table", call.program())
            })?;
        }
        Ok(DryRun { ebpf })
    }

    /// Runs `frame` through the entry program of a port of `role`, as if it arrived on
    /// `ifindex` (an interface of the calling thread's network namespace).
    pub fn run(
        &mut self,
        role: PortRole,
        frame: &[u8],
        ifindex: u32,
    ) -> anyhow::Result<DryRunOutcome> {
        // The steps are per CPU: the run and the read stay on one.
        let cpu = usize::try_from(current_cpu()?)?;
        let _pinned = StayOn::cpu(cpu)?;
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(program_name(role))
            .ok_or_else(|| anyhow!("no program {}", program_name(role)))?
            .try_into()?;
        let out = testrun::run(prog, frame, ifindex, 1)?;
        let map = self
            .ebpf
            .map(registry::DRY_STEPS::NAME)
            .ok_or_else(|| anyhow!("the XDP object has no map {}", registry::DRY_STEPS::NAME))?;
        let steps: PerCpuArray<_, DryRunLog> = PerCpuArray::try_from(map)?;
        let per_cpu = steps.get(&0, 0).context("cannot read the trace's steps")?;
        let log = per_cpu
            .get(cpu)
            .ok_or_else(|| anyhow!("no steps for CPU {cpu}"))?;
        let len = log.len as usize;
        Ok(DryRunOutcome {
            action: out.action,
            steps: log.steps[..len.min(MAX_STEPS)].to_vec(),
            left_out: len.saturating_sub(MAX_STEPS) as u32,
            frame: out.frame,
            ns: out.ns_per_run,
        })
    }
}

/// The CPU the calling thread runs on.
fn current_cpu() -> anyhow::Result<u32> {
    Ok(nix::sched::sched_getcpu().context("sched_getcpu failed")? as u32)
}

/// Keeps the calling thread on one CPU until dropped, then lets it run where it could before.
struct StayOn {
    before: CpuSet,
}

impl StayOn {
    fn cpu(cpu: usize) -> anyhow::Result<StayOn> {
        let before = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity failed")?;
        let mut only = CpuSet::new();
        only.set(cpu).context("no such CPU")?;
        sched_setaffinity(Pid::from_raw(0), &only).context("sched_setaffinity failed")?;
        Ok(StayOn { before })
    }
}

impl Drop for StayOn {
    fn drop(&mut self) {
        let _ = sched_setaffinity(Pid::from_raw(0), &self.before);
    }
}
