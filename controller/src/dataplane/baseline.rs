//! The minimal XDP_PASS / XDP_DROP / redirect programs, loaded on their own: the benchmarks' measure of
//! the XDP path itself.

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::DevMap,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};

use super::{objects, testrun};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaselineProgram {
    Pass,
    Drop,
    /// Every frame out of the device set with [`Baseline::redirect_to`].
    Redirect,
}

impl BaselineProgram {
    fn name(self) -> &'static str {
        match self {
            BaselineProgram::Pass => "baseline_pass",
            BaselineProgram::Drop => "baseline_drop",
            BaselineProgram::Redirect => "baseline_redirect",
        }
    }
}

pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub fn load() -> anyhow::Result<Baseline> {
        let mut ebpf = Ebpf::load(objects::BASELINE).context("loading the baseline XDP object")?;
        for p in [
            BaselineProgram::Pass,
            BaselineProgram::Drop,
            BaselineProgram::Redirect,
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(p.name())
                .ok_or_else(|| anyhow!("no program {}", p.name()))?
                .try_into()?;
            prog.load()?;
        }
        Ok(Baseline { ebpf })
    }

    fn program(&mut self, p: BaselineProgram) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(p.name())
            .ok_or_else(|| anyhow!("no program {}", p.name()))?
            .try_into()?)
    }

    pub fn test_run(
        &mut self,
        p: BaselineProgram,
        frame: &[u8],
        repeat: u32,
    ) -> anyhow::Result<testrun::TestRunOutcome> {
        testrun::run(self.program(p)?, frame, 0, repeat)
    }

    /// Where [`BaselineProgram::Redirect`] sends frames.
    pub fn redirect_to(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let map = self
            .ebpf
            .map_mut("REDIRECT_TO")
            .ok_or_else(|| anyhow!("no map REDIRECT_TO in the baseline object"))?;
        let mut devices: DevMap<_> = DevMap::try_from(map)?;
        devices
            .set(0, ifindex, None, 0)
            .context("setting the redirect baseline's device")
    }

    /// Attaches `p` to `ifindex` (native mode) until [`Self::detach`] or drop.
    pub fn attach(&mut self, p: BaselineProgram, ifindex: u32) -> anyhow::Result<XdpLinkId> {
        self.program(p)?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .context("attaching the baseline program")
    }

    pub fn detach(&mut self, p: BaselineProgram, link: XdpLinkId) -> anyhow::Result<()> {
        self.program(p)?.detach(link)?;
        Ok(())
    }
}
