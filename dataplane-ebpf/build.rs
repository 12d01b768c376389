//! The eBPF binaries are linked by `bpf-linker`, which cargo does not know about: rebuild when
//! it changes (a new LLVM means different code).
fn main() {
    // Without this a build made before `cargo xtask setup` keeps replaying its warning.
    println!("cargo:rerun-if-env-changed=PATH");
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found in PATH; run `cargo xtask setup` to install it"
        ),
    }
}
