//! The userspace side of the map registry (`xnic_common::mapdefs`): a type per map carrying
//! its name and key and value types, so every access names a map the registry has, with the
//! types the programs use; and the check that pinned maps have the registry's layout.

#![allow(non_camel_case_types)]

use std::path::Path;

use anyhow::{Context as _, bail};
use aya::maps::MapInfo;
use xnic_common::mapdefs::{MAPS, MapKind, MapSpec};

/// A map of the registry.
pub trait Registered {
    const NAME: &'static str;
    type Key;
    type Value;
}

macro_rules! handles {
    ($( $(#[doc = $doc:literal])* $name:ident: $kind:ident($k:ty => $v:ty; $len:expr), $pin:ident, $family:ident $version:literal; )*) => {
        $(
            $(#[doc = $doc])*
            pub struct $name;

            impl Registered for $name {
                const NAME: &'static str = stringify!($name);
                type Key = $k;
                type Value = $v;
            }
        )*
    };
}

xnic_common::for_each_map!(handles);

/// The kernel's number for a map kind.
fn kernel_type(kind: MapKind) -> u32 {
    kind as u32
}

/// Whether the map pinned at `path` has `spec`'s layout (`max_entries` of `CPUMAP` is the
/// host's CPU count, and the flow table's the configured size, not the registry's).
pub fn check_pinned(path: &Path, spec: &MapSpec) -> anyhow::Result<()> {
    let info =
        MapInfo::from_pin(path).with_context(|| format!("cannot open {}", path.display()))?;
    let entries_ok = spec.kind == MapKind::CpuMap
        || xnic_common::flow::TABLE_MAPS.contains(&spec.name)
        || info.max_entries() == spec.max_entries;
    let kind = info.map_type().map(|t| t as u32).unwrap_or(u32::MAX);
    if info.key_size() != spec.key_size
        || info.value_size() != spec.value_size
        || !entries_ok
        || kind != kernel_type(spec.kind)
    {
        bail!(
            "pinned map {} has key/value size {}/{} and {} entries, this xnic expects {}/{} and \
             {}; it belongs to another layout of the same version, which no xnic should make: \
             remove it with `xnic down` (this interrupts forwarding) and start again",
            path.display(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            spec.key_size,
            spec.value_size,
            spec.max_entries
        );
    }
    Ok(())
}

/// The pinned maps of the registry.
pub fn pinned_specs() -> impl Iterator<Item = &'static MapSpec> {
    MAPS.iter().filter(|m| m.pinned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_carry_the_registry_names() {
        assert_eq!(PORTS_V2::NAME, "PORTS_V2");
        assert!(MapSpec::find(VERDICTS_V2::NAME).is_some());
        assert_eq!(
            std::mem::size_of::<<PORTS_V2 as Registered>::Value>() as u32,
            MapSpec::find("PORTS_V2").unwrap().value_size
        );
    }
}
