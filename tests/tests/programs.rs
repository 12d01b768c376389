//! What the verifier makes of each program: its verified instruction count, recorded in
//! `dataplane-ebpf/verified-instructions.txt` so that a change that grows a program shows in
//! review. On the kernel the record was made on, a count that differs from the record fails
//! this test until the record is updated (`XNIC_BLESS=1 cargo test -p xnic-tests --test
//! programs`); on another kernel the counts are printed and the record is left alone.

use std::path::PathBuf;

use xnic::dataplane::Dataplane;
use xnic_tests::unique_name;

/// Far below the verifier's limit of a million processed instructions: a program near this
/// is one stage away from being rejected, and should be split into tail calls first.
const BUDGET: u32 = 200_000;

fn record_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane-ebpf/verified-instructions.txt")
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn verified_instruction_counts_match_the_record() {
    let instance = unique_name();
    let dp = Dataplane::open(&instance, 3).expect("loading the dataplane");
    if let Err(e) = dp.carrier_hook() {
        eprintln!("carrier hook: {e}");
    }
    let counts = dp.verified_instructions().expect("program info");
    let _ = xnic::dataplane::teardown(&instance);
    let kernel = kernel();
    let mut text = format!(
        "# Verified instruction counts of the dataplane's programs (kernel {kernel}).\n\
         # Regenerate with XNIC_BLESS=1 cargo test -p xnic-tests --test programs.\n"
    );
    for (name, n) in &counts {
        text.push_str(&format!("{name} {n}\n"));
    }
    eprint!("{text}");
    for (name, n) in &counts {
        assert!(
            *n < BUDGET,
            "{name} has {n} verified instructions, over the budget of {BUDGET}"
        );
    }
    let path = record_path();
    if std::env::var_os("XNIC_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let recorded = std::fs::read_to_string(&path).unwrap_or_default();
    if !recorded.contains(&format!("(kernel {kernel})")) {
        eprintln!("the record was made on another kernel: not compared");
        return;
    }
    assert_eq!(
        recorded, text,
        "verified instruction counts changed: review the growth, then run \
         XNIC_BLESS=1 cargo test -p xnic-tests --test programs"
    );
}
