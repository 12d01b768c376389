//! Empty library target: the controller's build script names this package as a build
//! dependency so cargo rebuilds the eBPF binaries when their sources change.
#![no_std]
