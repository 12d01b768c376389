//! The dataplane's maps, made from the registry (`xnic_common::mapdefs`): the same list the
//! daemon checks pinned maps against. Pinned maps are pinned by name, so a restarted daemon
//! adopts them with their contents.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, CpuMap, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray,
        RingBuf, XskMap,
    },
};

macro_rules! map_type {
    (hash, $k:ty, $v:ty) => { HashMap<$k, $v> };
    (array, $k:ty, $v:ty) => { Array<$v> };
    (percpu_array, $k:ty, $v:ty) => { PerCpuArray<$v> };
    (cpumap, $k:ty, $v:ty) => { CpuMap };
    (devmap_hash, $k:ty, $v:ty) => { DevMapHash };
    (prog_array, $k:ty, $v:ty) => { ProgramArray };
    (lru_hash, $k:ty, $v:ty) => { LruHashMap<$k, $v> };
    (lpm_trie, $k:ty, $v:ty) => { LpmTrie<$k, $v> };
    (xskmap, $k:ty, $v:ty) => { XskMap };
    (ringbuf, $k:ty, $v:ty) => { RingBuf };
}

macro_rules! map_new {
    ($kind:ident, $k:ty, $v:ty, pinned, $len:expr) => {
        <map_type!($kind, $k, $v)>::pinned($len, 0)
    };
    ($kind:ident, $k:ty, $v:ty, unpinned, $len:expr) => {
        <map_type!($kind, $k, $v)>::with_max_entries($len, 0)
    };
}

macro_rules! statics {
    ($( $(#[doc = $doc:literal])* $name:ident: $kind:ident($k:ty => $v:ty; $len:expr), $pin:ident, $family:ident $version:literal; )*) => {
        $(
            $(#[doc = $doc])*
            #[map]
            pub static $name: map_type!($kind, $k, $v) = map_new!($kind, $k, $v, $pin, $len);
        )*
    };
}

xnic_common::for_each_map!(statics);
