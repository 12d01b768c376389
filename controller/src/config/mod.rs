//! The TOML configuration: one file describes the instance, its uplinks and VMs, daemon
//! settings and the lab. It is validated as a whole before anything is touched; every error
//! names the file, line, column and field.
//!
//! The schema itself is shared with API clients (`xnic_proto::config`); here are parsing with
//! positions ([`parse`]), the checks serde cannot make ([`validate`]), the checks that need
//! this host ([`host`]) and the lab's configuration ([`lab`]).

pub mod host;
pub mod lab;
pub mod validate;
pub mod vnics;

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use toml::de::{DeTable, DeValue};
pub use xnic_proto::config::*;

pub use self::{
    lab::{LAB_TEAM_TOML, default_lab_toml, lab_rss_toml},
    validate::{check_cpu_set, check_engine, parse_cpu_list},
};

/// A configuration error with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the position is known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the offending field, like `vm[1].macs[0]`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        position: None,
        field: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text; `file` only names it in errors.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let error =
        |span: Option<std::ops::Range<usize>>, field: Option<String>, message| ConfigError {
            file: file.to_owned(),
            position: span.map(|s| line_col(text, s.start)),
            field,
            message,
        };
    let doc =
        DeTable::parse(text).map_err(|e| error(e.span(), None, e.message().trim().to_string()))?;
    let de = toml::Deserializer::from(doc.clone());
    let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = e.inner();
        let span = inner
            .span()
            .or_else(|| field.as_deref().and_then(|f| locate(doc.get_ref(), f)));
        error(span, field, inner.message().trim().to_string())
    })?;
    validate::validate(&config).map_err(|(field, message)| {
        let span = locate(doc.get_ref(), &field);
        error(span, Some(field), message)
    })?;
    Ok(config)
}

/// The line and column (1-based) of the value of `field` (a dotted path like
/// `vm[1].port`) in configuration text, when it is there.
pub fn position(text: &str, field: &str) -> Option<(usize, usize)> {
    let doc = DeTable::parse(text).ok()?;
    locate(doc.get_ref(), field).map(|span| line_col(text, span.start))
}

/// Where the daemon of `instance` listens.
pub fn socket_path(instance: &str) -> PathBuf {
    PathBuf::from(crate::RUN_DIR).join(format!("{instance}.sock"))
}

/// Where instance `instance`'s rings worker listens for applications.
pub fn rings_socket_path(instance: &str) -> PathBuf {
    PathBuf::from(crate::RUN_DIR)
        .join("rings")
        .join(format!("{instance}.sock"))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The span of the value at `path` (`a.b[2].c`) in the parsed document.
fn locate(root: &DeTable, path: &str) -> Option<std::ops::Range<usize>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            segments.push(Segment::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(i) = usize::from_str(idx.trim_end_matches(']')) {
                segments.push(Segment::Index(i));
            }
        }
    }
    let mut table = root;
    let mut current: Option<&toml::Spanned<DeValue>> = None;
    for seg in segments {
        let next = match (seg, current.map(|c| c.get_ref())) {
            (Segment::Key(k), None) => table.get(k)?,
            (Segment::Key(k), Some(DeValue::Table(t))) => t.get(k)?,
            (Segment::Index(i), Some(DeValue::Array(a))) => a.get(i)?,
            _ => return current.map(|c| c.span()),
        };
        if let DeValue::Table(t) = next.get_ref() {
            table = t;
        }
        current = Some(next);
    }
    current.map(|c| c.span())
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        super::parse(text, Path::new("x.toml"))
    }

    const GOOD: &str = r#"
instance = "t1"

[[uplink]]
name = "eth0"

[[vm]]
name = "vm0"
port = "tap0"
macs = ["02:00:00:00:00:01"]
ips = ["10.0.0.2/24", "fd00::2"]
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.instance, "t1");
        assert_eq!(c.daemon.stats_interval_ms, 1000);
        assert_eq!(c.vms[0].mac_addrs()[0].0, [2, 0, 0, 0, 0, 1]);
        assert_eq!(c.vms[0].ip_nets().len(), 2);
    }

    #[test]
    fn shipped_example_is_valid() {
        let c = parse(include_str!("../../../examples/host.toml")).unwrap();
        assert_eq!(c.vms[1].mac_addrs().len(), 2);
    }

    #[test]
    fn default_lab_config_is_valid() {
        let c = parse(&default_lab_toml("lab", "xlab", 4, true)).unwrap();
        assert_eq!(c.vms.len(), 4);
        assert_eq!(c.uplinks.len(), 2);
        assert!(c.lab.unwrap().ipv6);
    }

    #[test]
    fn bad_mac_names_line_column_and_field() {
        let text = GOOD.replace("02:00:00:00:00:01", "02:00:00:00:00:zz");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].macs[0]"));
        assert_eq!(e.position, Some((10, 9)));
        assert!(
            e.to_string().starts_with("x.toml:10:9: vm[0].macs[0]: "),
            "{e}"
        );
    }

    #[test]
    fn a_flows_section_parses_and_its_mistakes_are_named() {
        let c = parse(&format!(
            "{GOOD}\n[flows]\nports = [\"tcp/5201\"]\nmark = \"0x1/0xff\"\n"
        ))
        .unwrap();
        let f = c.flows.unwrap();
        assert!(f.enabled);
        assert_eq!(f.max_flows, xnic_common::flow::DEFAULT_MAX_FLOWS);
        assert_eq!(
            validate::parse_mark(f.mark.as_deref().unwrap()),
            Ok((1, 0xff))
        );
        assert_eq!(validate::parse_port(&f.ports[0]), Ok((6, 5201)));
        for (bad, field) in [
            ("ports = [\"sctp/9\"]", "flows.ports[0]"),
            ("mark = \"0x3/0x1\"", "flows.mark"),
            ("max_flows = 0", "flows.max_flows"),
            ("select = \"selected\"", "flows.select"),
        ] {
            let e = parse(&format!("{GOOD}\n[flows]\n{bad}\n")).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{e}");
        }
    }

    #[test]
    fn unknown_field_is_rejected_with_its_location() {
        let text = GOOD.replace("port = \"tap0\"", "port = \"tap0\"\nmtu = 9000");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("unknown field `mtu`"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(10));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = GOOD.replace("ips = [\"10.0.0.2/24\", \"fd00::2\"]", "ips = 5");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].ips"));
        assert_eq!(e.position.map(|p| p.0), Some(11));
    }

    #[test]
    fn duplicates_are_rejected() {
        let dup_port = format!(
            "{GOOD}\n[[vm]]\nname = \"vm1\"\nport = \"tap0\"\nmacs = [\"02:00:00:00:00:02\"]\n"
        );
        assert_eq!(
            parse(&dup_port).unwrap_err().field.as_deref(),
            Some("vm[1].port")
        );
        let dup_mac = format!(
            "{GOOD}\n[[vm]]\nname = \"vm1\"\nport = \"tap1\"\nmacs = [\"02:00:00:00:00:01\"]\n"
        );
        assert_eq!(
            parse(&dup_mac).unwrap_err().field.as_deref(),
            Some("vm[1].macs[0]")
        );
        let dup_uplink_port = GOOD.replace("tap0", "eth0");
        assert_eq!(
            parse(&dup_uplink_port).unwrap_err().field.as_deref(),
            Some("vm[0].port")
        );
    }

    #[test]
    fn multicast_mac_and_bad_names_are_rejected() {
        let e = parse(&GOOD.replace("02:00:00:00:00:01", "03:00:00:00:00:01")).unwrap_err();
        assert!(e.message.contains("unicast"), "{e}");
        let e = parse(&GOOD.replace("instance = \"t1\"", "instance = \"a/b\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("instance"));
        assert_eq!(e.position, Some((2, 12)));
        let e = parse(&GOOD.replace("eth0", "a-very-long-interface")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("uplink[0].name"));
    }

    const RSS: &str = r#"
[rss]
default_cpu = 0
[rss.policy]
engine_high_pps_per_cpu = 1000.0
[[rss.engine]]
name = "shared-a"
kind = "shared"
cpus = [0, 1]
[[rss.engine]]
name = "solo"
kind = "dedicated"
cpus = [1]
"#;

    #[test]
    fn rss_section_parses_and_references_are_checked() {
        let c = parse(&format!("{GOOD}{RSS}")).unwrap();
        let rss = c.rss.unwrap();
        assert_eq!(
            (rss.table_size, rss.period_ms, rss.engines.len()),
            (128, 100, 2)
        );
        assert_eq!(rss.policy.engine_high_pps_per_cpu, 1000.0);
        assert_eq!(rss.policy.low_periods, 30, "defaults fill the rest");
        let bad = format!(
            "{}{RSS}",
            GOOD.replace("ips = [", "rss = \"nosuch\"\nips = [")
        );
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].rss"));
        assert!(e.message.contains("shared-a, solo"), "{e}");
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("default_cpu = 0", "table_size = 100")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.table_size"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("cpus = [0, 1]", "cpus = [0, 0]")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.engine[0].cpus[1]"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("engine_high_pps_per_cpu = 1000.0", "vm_low_pps = 1e9")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.policy.vm_low_pps"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("engine_high_pps_per_cpu", "engine_hihg_pps_per_cpu")
        ))
        .unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn cpu_lists_and_cpu_limits() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("5\n").unwrap(), vec![5]);
        assert!(parse_cpu_list("3-1").unwrap_err().contains("empty range"));
        assert!(
            parse_cpu_list("x")
                .unwrap_err()
                .contains("not a CPU number")
        );
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("cpus = [1]", "cpus = [1, 4095]")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.engine[1].cpus[1]"));
        assert!(e.message.contains("beyond the 512 CPUs"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("instance = \n").unwrap_err();
        assert!(e.position.is_some(), "{e}");
    }

    #[test]
    fn empty_config_is_rejected() {
        let e = parse("instance = \"x\"\n").unwrap_err();
        assert!(e.message.contains("nothing to manage"), "{e}");
    }
}
