//! The lab's configuration: what `xnic lab up` builds when it is given none.

/// The configuration `xnic lab up` uses when none is given: four VMs, two uplinks.
pub fn default_lab_toml(instance: &str, prefix: &str, vms: usize, ipv6: bool) -> String {
    let mut s = format!(
        "# xnic lab: a host namespace with two uplinks to a tor namespace and {vms} VM namespaces.\n\
         instance = \"{instance}\"\n\
         netns = \"{prefix}-host\"\n\n\
         [daemon]\n\
         xdp_mode = \"auto\"\n\
         log_level = \"info\"\n\n\
         [[uplink]]\nname = \"up0\"\n\n\
         [[uplink]]\nname = \"up1\"\n"
    );
    for i in 0..vms {
        let v6 = if ipv6 {
            format!(", \"fd77::{:x}/64\"", 0x10 + i)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "\n[[vm]]\nname = \"vm{i}\"\nport = \"vm{i}\"\nmacs = [\"02:77:00:00:00:{:02x}\"]\nips = [\"10.77.0.{}/24\"{v6}]\n",
            0x10 + i,
            10 + i
        ));
    }
    let tor_v6 = if ipv6 { ", \"fd77::1/64\"" } else { "" };
    s.push_str(LAB_TEAM_TOML);
    s.push_str(&lab_rss_toml(
        &super::host::online_cpus().unwrap_or_else(|_| vec![0]),
    ));
    s.push_str(&format!(
        "\n[lab]\nprefix = \"{prefix}\"\ntor_ips = [\"10.77.0.1/24\"{tor_v6}]\nipv6 = {ipv6}\n"
    ));
    s
}

/// The lab's team: both uplinks, active/standby, a short hold-down so the demo shows the
/// failback.
pub const LAB_TEAM_TOML: &str = "\n[[team]]\nname = \"uplinks\"\nuplinks = [\"up0\", \"up1\"]\n\
     policy = \"failover\"\nfailback_hold_ms = 2000\n";

/// The lab's RSS section for a host with `cpus`: two shared engines over every CPU and a
/// dedicated engine on the last one, with thresholds low enough that lab traffic moves VMs.
pub fn lab_rss_toml(cpus: &[u32]) -> String {
    let all = cpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let last = cpus.last().copied().unwrap_or(0);
    format!(
        "\n[rss]\ndefault_cpu = {first}\n\n[rss.policy]\n\
         engine_high_pps_per_cpu = 15000.0\nno_rss_high_pps = 4000.0\nvm_low_pps = 500.0\n\
         low_periods = 20\nmin_dwell_periods = 10\n\n\
         [[rss.engine]]\nname = \"shared-a\"\nkind = \"shared\"\ncpus = [{all}]\n\n\
         [[rss.engine]]\nname = \"shared-b\"\nkind = \"shared\"\ncpus = [{all}]\n\n\
         [[rss.engine]]\nname = \"dedicated-1\"\nkind = \"dedicated\"\ncpus = [{last}]\n",
        first = cpus.first().copied().unwrap_or(0)
    )
}
