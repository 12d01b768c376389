//! Every command line `xnic` accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

const ABOUT: &str = "Software smart-NIC for VM hosts: an XDP dataplane, its controller daemon, and \
the CLI to drive both.";

const LONG_ABOUT: &str = "Software smart-NIC for VM hosts.

xnic attaches XDP programs to a host's uplinks and to the host side of each VM's virtual NIC. \
They parse every frame, tell which VM it belongs to, count it, and decide its fate; the daemon \
(`xnic run`) owns the programs and their maps, pins them under /sys/fs/bpf/xnic/INSTANCE so \
forwarding survives daemon restarts, and answers the other commands over \
/run/xnic/INSTANCE.sock (HTTP/JSON, root only).

Try it without any VM: `xnic lab demo` builds a network-namespace lab, runs the daemon and \
drives traffic through it.";

#[derive(Debug, Parser)]
#[command(name = "xnic", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    ///
    /// Loads the XDP programs (or adopts the ones a previous daemon left running), attaches
    /// them to every uplink and VM port in the configuration, and serves the control API until
    /// SIGTERM or SIGINT. Stopping the daemon leaves the dataplane forwarding; `xnic down`
    /// removes it.
    Run(RunArgs),
    /// Validate a configuration file, and say what this host has of what it names.
    ///
    /// The file is checked whole: errors name file:line:column and the field. Then, without
    /// touching anything, the CPUs the RSS engines name and the interfaces the uplinks and VMs
    /// name are looked up on this host (in the configuration's network namespace). A missing
    /// interface is reported, not refused: VMs wait for their ports, uplinks are down until
    /// they appear.
    Check(CheckArgs),
    /// Replace the daemon's desired state with a configuration file, atomically.
    ///
    /// The file is validated whole first; then only what differs is changed, in an order no
    /// frame can see half-done, and kept across restarts. A file that cannot work changes
    /// nothing. With --dry-run, only shows what would change. SIGHUP to the daemon applies its
    /// own configuration file the same way.
    Apply(ApplyArgs),
    /// Show the daemon's desired state as a configuration file, with its generation.
    Config(ReadArgs),
    /// The event stream of every feature: VMs and ports coming and going, changes of the
    /// desired state, RSS migrations, team failovers.
    Events(StreamArgs),
    /// Dropped frames as they happen: reason, stage, port, VM and headers, from the
    /// dataplane's ring buffer (sampled and rate-limited there; off while no monitor runs).
    Monitor(MonitorArgs),
    /// Frames of one port as XDP delivered them (after the pipeline), with their verdict:
    /// one line each, or a pcapng file (-w) whose packet comments hold the verdicts.
    Capture(CaptureArgs),
    /// Run one frame through the real programs against the live maps, changing nothing,
    /// and show each stage's decision and the verdict (like `ovs-appctl ofproto/trace`).
    ///
    /// Describe the frame (--src, --dst, --proto, ports, flags, VLAN) or take it from a pcap
    /// or pcapng file (--pcap, --frame N) or as hex (--hex). On a VM's port the source MAC and
    /// address default to that VM's; a destination address one of the VMs has gives the
    /// destination MAC. The traced frame is not counted, spends no VM's allocation, changes
    /// no flow and is sent nowhere.
    Trace(TraceArgs),
    /// A live view of ports, VMs, CPUs and uplinks with their rates, refreshed every second
    /// (keys: s sort, r reverse, / filter, q quit).
    Top(ReadArgs),
    /// Show the daemon, its dataplane and ports.
    Status(ReadArgs),
    /// Inspect, add, change and remove VMs.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Show per-port counters by verdict reason, per-VM counters and per-CPU totals.
    Stats(ReadArgs),
    /// Software RSS: engines, VM states, CPU loads, migrations.
    #[command(subcommand)]
    Rss(RssCommand),
    /// NIC teaming: uplinks, placements, allocations, failovers.
    #[command(subcommand)]
    Team(TeamCommand),
    /// Flow offload: the connections the XDP fast path carries, and moving them by hand.
    ///
    /// Without a subcommand, lists the offloaded flows: both of conntrack's tuples (so the NAT
    /// shows), the state of each direction, packets and bytes each way, age, idle time and why
    /// the flow was promoted. `conntrack -L` shows the same connections.
    Flows(FlowsArgs),
    /// VNIC routing: the fleet's VNICs, with their rules and counters.
    #[command(subcommand)]
    Vnic(VnicCommand),
    /// Transaction rings: the network worker, memory regions, WRITE and READ to peers.
    #[command(subcommand)]
    Rings(RingsCommand),
    /// VNIC routing's route tables: list, look a destination up, add and remove routes.
    #[command(subcommand)]
    Route(RouteCommand),
    /// VNIC routing's security lists: list, add and remove rules.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Remove an instance's dataplane: detach every program and remove its pins.
    ///
    /// Stops the instance's daemon if it runs. Forwarding through xnic stops; the kernel's own
    /// path takes over.
    Down(InstanceArg),
    /// Build, drive and remove the network-namespace lab.
    #[command(subcommand)]
    Lab(LabCommand),
    /// Print shell completions.
    Completions {
        /// Shell to generate completions for.
        shell: Shell,
    },
    /// Print the man page (roff), or write one per command to a directory.
    #[command(hide = true)]
    Man {
        /// Write xnic.1 and xnic-COMMAND.1 for every command here instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Fail when this host lacks something the file names (an interface, a CPU).
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The configuration file.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// What `xnic events` reads.
#[derive(Debug, Args, Clone)]
pub struct StreamArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Keep printing new events as they happen, until interrupted.
    #[arg(long, short)]
    pub follow: bool,
    /// Only this feature (`vm`, `port`, `config`, `rss`, `team`) or event kind
    /// (`vm_added`, `link_down`, ...).
    #[arg(long, short)]
    pub kind: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct InstanceArg {
    /// Instance to talk to. Default: the only running instance.
    #[arg(short, long, env = "XNIC_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ReadArgs {
    #[command(flatten)]
    pub instance: InstanceArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// What an `events` command reads.
#[derive(Debug, Args, Clone)]
pub struct EventsArgs {
    #[command(flatten)]
    pub read: ReadArgs,
    /// Only events after this id.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Keep printing new events until interrupted.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List VMs with their ports, addresses and traffic.
    List(ReadArgs),
    /// Show one VM in detail.
    Show {
        /// The VM's name.
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add a VM. Its port need not exist yet: the VM waits for it and is attached the moment
    /// the interface appears.
    Add {
        /// The VM's name.
        name: String,
        #[command(flatten)]
        spec: VmSpecArgs,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Change a VM: its port, MACs, addresses, team placement, allocation, priority or RSS
    /// hints. Only what is given changes; `--unset FIELD` returns a setting to its default.
    Set {
        /// The VM's name.
        name: String,
        #[command(flatten)]
        spec: VmSpecArgs,
        /// Settings to return to their default: bandwidth_mbps, burst_kib, uplink,
        /// team_policy, team.
        #[arg(long, value_name = "FIELD")]
        unset: Vec<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Remove a VM: its port is detached, its MACs unbound, its slot freed.
    Del {
        /// The VM's name.
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

/// A VM's settings on the command line (the same as a `[[vm]]` section's).
#[derive(Debug, Args, Clone, Default)]
pub struct VmSpecArgs {
    /// Host-side interface of the VM's virtual NIC (tap or veth).
    #[arg(long)]
    pub port: Option<String>,
    /// A MAC the VM may send from (repeat for several); frames from others are dropped.
    #[arg(long = "mac", value_name = "MAC")]
    pub macs: Vec<String>,
    /// An address of the VM, optionally with a prefix length (repeat for several).
    #[arg(long = "ip", value_name = "ADDR")]
    pub ips: Vec<String>,
    /// RSS state: `auto`, `none` or an engine's name.
    #[arg(long)]
    pub rss: Option<String>,
    /// Higher keeps its allocation, and leaves a shared engine, first.
    #[arg(long, allow_hyphen_values = true)]
    pub priority: Option<i32>,
    /// Offer this VM a dedicated engine first.
    #[arg(long)]
    pub prefer_dedicated: Option<bool>,
    /// The team carrying its frames (`none`: no team).
    #[arg(long)]
    pub team: Option<String>,
    /// The uplink it is pinned to while that is up.
    #[arg(long)]
    pub uplink: Option<String>,
    /// Its placement policy, overriding its team's.
    #[arg(long, value_enum)]
    pub team_policy: Option<TeamPolicyArg>,
    /// Bandwidth allocation in Mbit/s.
    #[arg(long)]
    pub bandwidth_mbps: Option<f64>,
    /// Burst above the allocation, KiB.
    #[arg(long)]
    pub burst_kib: Option<u32>,
    /// How the allocation is enforced: `shaped` (TCP queued at the rate) or `strict`
    /// (everything policed).
    #[arg(long, value_enum)]
    pub allocation_mode: Option<AllocationModeArg>,
    /// Drop its frames this long after a failover moves it.
    #[arg(long)]
    pub failover_pause_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AllocationModeArg {
    Shaped,
    Strict,
}

impl From<AllocationModeArg> for xnic_proto::config::AllocationMode {
    fn from(m: AllocationModeArg) -> Self {
        match m {
            AllocationModeArg::Shaped => Self::Shaped,
            AllocationModeArg::Strict => Self::Strict,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TeamPolicyArg {
    Failover,
    MacHash,
    FlowHash,
    Load,
}

impl From<TeamPolicyArg> for xnic_proto::config::TeamPlacement {
    fn from(p: TeamPolicyArg) -> Self {
        match p {
            TeamPolicyArg::Failover => Self::Failover,
            TeamPolicyArg::MacHash => Self::MacHash,
            TeamPolicyArg::FlowHash => Self::FlowHash,
            TeamPolicyArg::Load => Self::Load,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RssCommand {
    /// Engines with their CPUs, VMs, loads and tables; each VM's state; per-CPU load.
    Status(ReadArgs),
    /// Migrations and bucket moves, with their reasons and figures (oldest first).
    Events(EventsArgs),
    /// Per bucket of an engine: the CPU its table names and the frames each CPU finished.
    Buckets {
        /// The engine's name.
        engine: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add, change or remove engines at run time (kept across restarts, like every change of
    /// the desired state).
    #[command(subcommand)]
    Engine(RssEngineCommand),
    /// Move a VM by hand, or hand it back to the policy; change its hints.
    Set {
        /// The VM's name.
        vm: String,
        /// `auto` (the policy decides), `none` (no-RSS) or an engine's name; anything but
        /// `auto` pins the VM there.
        #[arg(long)]
        state: Option<String>,
        /// Priority when a shared engine must shed a VM (higher goes first).
        #[arg(long)]
        priority: Option<i32>,
        /// Offer this VM a dedicated engine first.
        #[arg(long)]
        prefer_dedicated: Option<bool>,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FlowsArgs {
    #[command(subcommand)]
    pub command: Option<FlowsCommand>,
    /// Only the flows of this VM (through its port, either way).
    #[arg(long)]
    pub vm: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Counters: promoted, demoted by reason, table use, refused for a full table, and the
    /// fast path's own (forwarded, passed to the slow path...).
    Stats(ReadArgs),
    /// Move matching conntrack connections into the fast path at the next period, whatever
    /// the selection says (they must still qualify: established TCP, answered UDP).
    Offload(FlowMatchArgs),
    /// Send matching offloaded flows back to the slow path at the next period.
    Demote(FlowMatchArgs),
}

/// Which flows: conntrack ids (`conntrack -L -o id`), or every flow matching all the fields
/// given.
#[derive(Debug, Args)]
pub struct FlowMatchArgs {
    /// conntrack ids.
    pub ids: Vec<u32>,
    /// Every flow (narrowed by the fields below).
    #[arg(long)]
    pub all: bool,
    /// `tcp` or `udp`.
    #[arg(long)]
    pub proto: Option<String>,
    /// An address either tuple has (source or destination).
    #[arg(long)]
    pub addr: Option<String>,
    /// A port either tuple has.
    #[arg(long)]
    pub port: Option<u16>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Subcommand)]
pub enum TeamCommand {
    /// Each team's uplinks (state, capacity, load, VMs) and each VM's placement and allocation.
    Status(ReadArgs),
    /// Failovers, failbacks and load moves, with how long each switch took (oldest first).
    Events(EventsArgs),
}

#[derive(Debug, Subcommand)]
pub enum RssEngineCommand {
    /// Add an engine: a CPU set and a fresh table dealt evenly over it.
    Add {
        /// The engine's name.
        name: String,
        /// `shared` (serves several VMs) or `dedicated` (serves one).
        #[arg(long, value_enum)]
        kind: EngineKindArg,
        /// Its CPUs, like `2-3` or `0,2,4`.
        #[arg(long, value_parser = cpu_list)]
        cpus: CpuList,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Give an engine a new CPU set. Its buckets are dealt over the new CPUs moving as few
    /// as possible; each moved flow leaves its old CPU only once its queued frames are done.
    Set {
        /// The engine's name.
        name: String,
        /// Its new CPUs, like `0-3`.
        #[arg(long, value_parser = cpu_list)]
        cpus: CpuList,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Remove an engine; its VMs go back to no-RSS (refused while a VM is pinned to it).
    Del {
        /// The engine's name.
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum EngineKindArg {
    Shared,
    Dedicated,
}

impl From<EngineKindArg> for crate::policy::rss::EngineKind {
    fn from(k: EngineKindArg) -> Self {
        match k {
            EngineKindArg::Shared => Self::Shared,
            EngineKindArg::Dedicated => Self::Dedicated,
        }
    }
}

/// A parsed `--cpus` list (a newtype, so clap takes it as one value).
#[derive(Debug, Clone)]
pub struct CpuList(pub Vec<u32>);

fn cpu_list(text: &str) -> Result<CpuList, String> {
    crate::config::parse_cpu_list(text).map(CpuList)
}

#[derive(Debug, Args, Clone)]
pub struct LabConfigArg {
    /// Lab configuration (a configuration with a `[lab]` section). Default: the built-in lab,
    /// instance "lab", four VMs.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What the VMs are: network namespaces on veth pairs, or QEMU guests on tap devices
    /// (booted from the guest image, built first if missing).
    #[arg(long, value_enum, default_value = "netns")]
    pub vms: LabVms,
    /// The guest image's directory (see `xnic lab image`).
    #[arg(long, value_name = "DIR", default_value = crate::lab::guest::DEFAULT_DIR)]
    pub guest_image: PathBuf,
}

impl Default for LabConfigArg {
    fn default() -> Self {
        LabConfigArg {
            config: None,
            vms: LabVms::Netns,
            guest_image: crate::lab::guest::DEFAULT_DIR.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LabVms {
    Netns,
    Qemu,
}

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Where to keep the image.
    #[arg(long, value_name = "DIR", default_value = crate::lab::guest::DEFAULT_DIR)]
    pub guest_image: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Build the guest image the lab's QEMU guests boot (Debian packages only; kept, and
    /// built again only when xnic's recipe for it changes).
    Image(ImageArgs),
    /// Create the lab's namespaces, links and addresses.
    Up(LabConfigArg),
    /// Remove the lab: stop its daemon, remove its dataplane, delete its namespaces.
    Down(LabConfigArg),
    /// Drive traffic through a running lab and report what arrived.
    ///
    /// Without --from/--to: a round of pings, UDP from every VM and an iperf3 run. With them:
    /// one stream of sequence-numbered UDP flows, reporting loss and reordering.
    Traffic(TrafficArgs),
    /// Run a command in a VM: in its namespace, or in its guest's shell (over its control
    /// port), and exit with its status.
    Exec(ExecArgs),
    /// Send sequence-numbered UDP flows from here (what the lab's VMs send; guests run it
    /// from their tools disk) and print the sender's report as JSON.
    #[command(hide = true)]
    SendUdp(SendUdpArgs),
    /// Receive the lab's UDP flows here for a while and print the receiver's report as JSON.
    #[command(hide = true)]
    RecvUdp(RecvUdpArgs),
    /// The whole demo: lab up, daemon, traffic, what xnic sees; then everything removed.
    Demo(DemoArgs),
    /// VNIC routing's demo on its own: three xnic hosts behind a tor, traffic of every
    /// next-hop type, which host takes which flow, a host taken away under traffic; then
    /// everything removed.
    Fleet(FleetArgs),
    /// Transaction rings' demo on its own: two hosts with their daemons and rings workers,
    /// a region written and read through the CLI, thousands of WRITEs and READs checked
    /// byte for byte on a clean and a lossy link, a forged key refused; then everything
    /// removed.
    Rings(RingsLabArgs),
    /// Print the built-in lab configuration (a starting point for your own).
    Config,
}

#[derive(Debug, Args, Clone)]
pub struct SendUdpArgs {
    #[arg(long)]
    pub dst: std::net::SocketAddr,
    #[arg(long, default_value_t = 1000)]
    pub pps: u64,
    #[arg(long, default_value_t = 1.0)]
    pub secs: f64,
    #[arg(long, default_value_t = 1)]
    pub flows: u32,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

#[derive(Debug, Args, Clone)]
pub struct RecvUdpArgs {
    #[arg(long)]
    pub bind: std::net::SocketAddr,
    #[arg(long, default_value_t = 1.0)]
    pub secs: f64,
}

#[derive(Debug, Args, Clone)]
pub struct ExecArgs {
    #[command(flatten)]
    pub config: LabConfigArg,
    /// The VM.
    pub vm: String,
    /// The command and its arguments (a guest runs them with its shell).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    /// Give up after this many seconds (guests only).
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TrafficArgs {
    #[command(flatten)]
    pub config: LabConfigArg,
    /// Sender: a VM's name or `tor`.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// Receiver: a VM's name or `tor`.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Distinct flows (source ports).
    #[arg(long, default_value_t = 16)]
    pub flows: u32,
    /// Datagrams per second, all flows together.
    #[arg(long, default_value_t = 10_000)]
    pub pps: u64,
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Zipf exponent for per-flow rates (e.g. 1.1: a few elephants, many mice); equal shares
    /// when absent.
    #[arg(long)]
    pub zipf: Option<f64>,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Print JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct DemoArgs {
    #[command(flatten)]
    pub config: LabConfigArg,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<u64>,
}

#[derive(Debug, Args, Clone)]
pub struct RingsLabArgs {
    /// Prefix of the rings lab's namespaces (and its daemons' instance names).
    #[arg(long, default_value = "xrings-")]
    pub prefix: String,
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Prefix of the fleet lab's namespaces (and its daemons' instance names).
    #[arg(long, default_value = "xfleet")]
    pub prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum VnicCommand {
    /// Every VNIC: VCN, VNI, MAC, addresses, host VTEP, route table, counters; and this
    /// host's place in the fleet.
    List(ReadArgs),
    /// One VNIC, with its merged security rules.
    Show {
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// VNIC routing's events and drops by reason on this host.
    Stats(ReadArgs),
    /// Add a VNIC (every host of the fleet needs the same change).
    Add(VnicAddArgs),
    /// Remove a VNIC (refused while a route names it).
    Del {
        name: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Debug, Args)]
pub struct VnicAddArgs {
    pub name: String,
    /// Its subnet.
    #[arg(long)]
    pub subnet: String,
    /// The VXLAN network its instance's packets arrive in.
    #[arg(long)]
    pub vni: u32,
    #[arg(long)]
    pub mac: String,
    /// A virtual IP (repeat for more).
    #[arg(long = "ip", required = true)]
    pub ips: Vec<String>,
    /// The VTEP of its instance's host.
    #[arg(long)]
    pub host: String,
    /// Its public IPv4 address behind an internet gateway.
    #[arg(long)]
    pub public_ip: Option<String>,
    /// Its own route table (instead of its subnet's).
    #[arg(long)]
    pub route_table: Option<String>,
    /// Its own security lists (after its subnet's; repeat for more).
    #[arg(long = "security-list")]
    pub security_lists: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Every route, with the packets that took it.
    List {
        /// Only this table's.
        #[arg(long)]
        table: Option<String>,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Which route and next hop a packet from VNIC to ADDR takes, looked up in the tries the
    /// dataplane reads.
    Lookup {
        vnic: String,
        addr: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Add a route to a table: DST (a prefix) via `vnic:NAME`, `router:TABLE`, `igw:NAME`,
    /// `nat:NAME`, `sgw:NAME` or `drg:NAME`.
    Add {
        table: String,
        dst: String,
        via: String,
        #[command(flatten)]
        read: ReadArgs,
    },
    /// Remove a table's route for DST.
    Del {
        table: String,
        dst: String,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Every security list, its rules in order, and who uses it.
    List(ReadArgs),
    /// Add a rule to LIST's DIRECTION (`ingress` or `egress`).
    Add(RuleAddArgs),
    /// Remove rule INDEX (from 0, as `xnic rule list` numbers them) of LIST's DIRECTION.
    Del {
        list: String,
        direction: String,
        index: usize,
        #[command(flatten)]
        read: ReadArgs,
    },
}

#[derive(Debug, Args)]
pub struct RuleAddArgs {
    pub list: String,
    /// `ingress` (toward the VNIC) or `egress` (from it).
    pub direction: String,
    /// `allow` or `deny`.
    #[arg(long)]
    pub action: String,
    /// `any`, `tcp`, `udp`, `icmp` or `icmpv6`.
    #[arg(long, default_value = "any")]
    pub proto: String,
    /// The peer's prefix.
    #[arg(long)]
    pub cidr: String,
    /// Destination ports, `443` or `8000-8080` (tcp and udp).
    #[arg(long)]
    pub ports: Option<String>,
    /// Answers to what it allows come back whatever the other direction says.
    #[arg(long)]
    pub stateful: bool,
    /// Its position (from 0; default: last). The first rule that matches decides.
    #[arg(long)]
    pub at: Option<usize>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Subcommand)]
pub enum RingsCommand {
    /// Run the network worker in the foreground: an AF_XDP socket on one queue of an uplink
    /// (RoCEv2 for its queue pairs is steered there by the instance's dataplane), a control
    /// socket for applications, UDP 4792 for other hosts' workers. Run it on CPUs of its own.
    Run(RingsRunArgs),
    /// The worker's queue pairs, regions, packets, retransmissions and drops by reason.
    Status(ReadArgs),
    /// Memory regions peers may WRITE and READ.
    #[command(subcommand)]
    Region(RingsRegionCommand),
    /// Put bytes at OFFSET of region REGION at PEER.
    Write {
        peer: std::net::IpAddr,
        region: String,
        offset: u64,
        /// The bytes, as text.
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        data: Option<String>,
        /// The bytes, from a file.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// Get LEN bytes at OFFSET of region REGION at PEER (printed, or written to --output).
    Read {
        peer: std::net::IpAddr,
        region: String,
        offset: u64,
        len: u32,
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        instance: InstanceArg,
    },
}

#[derive(Debug, Args)]
pub struct RingsRunArgs {
    #[command(flatten)]
    pub instance: InstanceArg,
    /// The uplink whose queue the worker's socket takes.
    #[arg(long, value_name = "IFNAME")]
    pub interface: String,
    #[arg(long, default_value_t = 0)]
    pub queue: u32,
    /// The network namespace the interface is in (default: this one).
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
    /// CPUs the worker runs on.
    #[arg(long, value_parser = cpu_list)]
    pub cpus: Option<CpuList>,
    /// Microseconds the worker keeps polling after its last work before it sleeps: 0 on
    /// shared CPUs; on CPUs of its own, more saves a wake-up per packet burst (lower
    /// latency, one CPU busy while it polls).
    #[arg(long, value_name = "USEC", default_value_t = 0)]
    pub busy_poll_us: u64,
}

#[derive(Debug, Subcommand)]
pub enum RingsRegionCommand {
    /// A new region of SIZE bytes (zeroed), held by the worker, under NAME.
    Add {
        name: String,
        #[arg(long)]
        size: u64,
        #[command(flatten)]
        instance: InstanceArg,
    },
    /// The worker's regions: id, name, size, key.
    List(ReadArgs),
    /// Remove region NAME: peers' requests to it are refused from now on.
    Del {
        name: String,
        #[command(flatten)]
        instance: InstanceArg,
    },
}

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub instance: InstanceArg,
    /// Only drops of this VM.
    #[arg(long, value_name = "NAME")]
    pub vm: Option<String>,
    /// Only drops on this port.
    #[arg(long, value_name = "NAME")]
    pub port: Option<String>,
    /// Only drops for these reasons (spoofed_mac, over_allocation, ...; repeat or comma-separate).
    #[arg(long, value_name = "REASON", value_delimiter = ',')]
    pub reason: Vec<String>,
    /// Only frames from or to this address.
    #[arg(long, value_name = "IP")]
    pub addr: Option<std::net::IpAddr>,
    /// Only frames from or to this transport port.
    #[arg(long = "l4-port", value_name = "PORT")]
    pub l4_port: Option<u16>,
    /// Only frames of this IP protocol (tcp, udp, icmp, icmpv6 or a number).
    #[arg(long, value_name = "PROTO")]
    pub proto: Option<String>,
    /// Also report every frame of the flow --addr, --l4-port and --proto choose, whatever
    /// its verdict, with the stages it passed (parse → classify → ... → deliver) and where it
    /// went. Rate-limited in the dataplane like drops.
    #[arg(long)]
    pub trace: bool,
    /// One JSON object a line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also print the frame's first bytes (up to 128) in hex.
    #[arg(long)]
    pub hex: bool,
    /// Stop after this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Look at one drop in N (in the dataplane).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sample: u32,
    /// Events per second per CPU at most (in the dataplane); the rest are counted.
    #[arg(long, value_name = "N", default_value_t = xnic_common::monitor::DEFAULT_RATE)]
    pub rate: u32,
}

/// A traced frame's transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The port the frame arrives on (a VM port or an uplink, as `xnic status` names it).
    #[arg(long = "in", value_name = "PORT")]
    pub port: String,
    /// Source MAC (default: the VM's on its port).
    #[arg(long, value_name = "MAC")]
    pub src_mac: Option<String>,
    /// Destination MAC (default: the VM's whose address --dst is, else a router's).
    #[arg(long, value_name = "MAC")]
    pub dst_mac: Option<String>,
    /// Source address (default: the VM's on its port, else 192.0.2.1).
    #[arg(long, value_name = "ADDR")]
    pub src: Option<std::net::IpAddr>,
    /// Destination address (default 192.0.2.2).
    #[arg(long, value_name = "ADDR")]
    pub dst: Option<std::net::IpAddr>,
    #[arg(long, value_enum, default_value = "udp")]
    pub proto: TraceProto,
    #[arg(long, value_name = "PORT", default_value_t = 40000)]
    pub sport: u16,
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    pub dport: u16,
    /// TCP flags, any of S A F R P.
    #[arg(long, value_name = "FLAGS", default_value = "S")]
    pub tcp_flags: String,
    /// An 802.1Q tag with this VLAN id.
    #[arg(long, value_name = "ID")]
    pub vlan: Option<u16>,
    /// Payload bytes after the transport header.
    #[arg(long, value_name = "BYTES", default_value_t = 18)]
    pub payload: usize,
    /// Take the frame from this pcap or pcapng file instead.
    #[arg(long, value_name = "FILE", conflicts_with = "hex")]
    pub pcap: Option<PathBuf>,
    /// Which frame of --pcap (from 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub frame: usize,
    /// Take the frame as hex digits instead (from its Ethernet header on).
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The port (a VM port or an uplink, as `xnic status` names it).
    pub port: String,
    #[command(flatten)]
    pub instance: InstanceArg,
    /// Write a pcapng file (readable by tshark and Wireshark) instead of printing lines.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    pub write: Option<PathBuf>,
    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Frames per second per CPU at most (in the dataplane); the rest are counted.
    #[arg(long, value_name = "N", default_value_t = xnic_common::monitor::DEFAULT_CAPTURE_RATE)]
    pub rate: u32,
    /// Only frames the dataplane finds matching: `host ADDR`, `port N`, `tcp`, `udp`, `icmp`,
    /// `icmp6`, `proto N`, joined by `and` (before the rate limit, so it spends none on the
    /// rest).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
    /// Where to take the frames: `out` as the delivery step finished them, with their
    /// verdict; `in` as they arrived, before any stage; `both` (each frame twice, in first).
    #[arg(long, value_enum, default_value = "out")]
    pub at: CapturePoint,
}

/// Where `xnic capture` takes a port's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CapturePoint {
    In,
    Out,
    Both,
}
