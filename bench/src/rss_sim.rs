//! Simulation of bucket rebalancing at scale, on identical traces for three rebalancers:
//! static RSS (the table never changes), an RSS++-style greedy rebalancer, and xnic's policy
//! (the real `policy::rss` code).
//!
//! The host: one engine over 16 CPUs (128-bucket table) or 64 CPUs (256 buckets, the largest
//! table), 1,000 VMs with 100 flows each; flow rates follow a Zipf law, and a hot spot of 50
//! VMs (load × 8) appears, moves to another 50 VMs, and goes away. A second trace adds five
//! elephant flows of 2 % of all traffic each. Each period the rebalancers see the bucket loads
//! with the measurement noise of counting packets over one period; the metrics are taken on
//! the true loads.

use xnic::policy::rss::{Engine, EngineKind, Loads, Params, Placement, RssPolicy, Vm, spread};

use crate::report::{Better, Report};

const VMS: usize = 1000;
const FLOWS_PER_VM: usize = 100;
/// Zipf exponent of flow rates.
const ZIPF: f64 = 0.8;
const ROUNDS: usize = 300;
/// Period length the noise is computed for (100 ms).
const PERIOD_SECS: f64 = 0.1;
/// Where the load changes: hot spot on, hot spot moves, hot spot off.
const CHANGES: [usize; 3] = [100, 200, 250];
/// Rounds after a change that count as steady state (until the next change).
const SETTLE: usize = 20;
/// The spread the target asks for.
const TARGET_SPREAD: f64 = 0.12;

/// A small deterministic generator (xorshift64*), so every run sees the same traces (and
/// the route benchmark the same tables).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

struct Trace {
    /// Per flow: VM, bucket, base rate (pps).
    flows: Vec<(usize, usize, f64)>,
    hot: [Vec<usize>; 2],
    table: usize,
}

impl Trace {
    fn new(total_pps: f64, table: usize, elephants: usize, seed: u64) -> Trace {
        let mut rng = Rng(seed);
        let n = VMS * FLOWS_PER_VM;
        // Zipf ranks shuffled over flows.
        let mut ranks: Vec<usize> = (1..=n).collect();
        for i in (1..n).rev() {
            ranks.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        let weights: Vec<f64> = ranks.iter().map(|r| 1.0 / (*r as f64).powf(ZIPF)).collect();
        let sum: f64 = weights.iter().sum();
        let mice_share = 1.0 - 0.02 * elephants as f64;
        let mut flows: Vec<(usize, usize, f64)> = weights
            .iter()
            .enumerate()
            .map(|(f, w)| {
                let bucket = (rng.next() % table as u64) as usize;
                (f / FLOWS_PER_VM, bucket, total_pps * mice_share * w / sum)
            })
            .collect();
        for _ in 0..elephants {
            let f = (rng.next() % n as u64) as usize;
            flows[f].2 += total_pps * 0.02;
        }
        let pick = |rng: &mut Rng| {
            (0..50)
                .map(|_| (rng.next() % VMS as u64) as usize)
                .collect()
        };
        let hot = [pick(&mut rng), pick(&mut rng)];
        Trace { flows, hot, table }
    }

    /// True per-bucket loads in `round`.
    fn buckets(&self, round: usize) -> Vec<f64> {
        let hot: &[usize] = if round >= CHANGES[2] {
            &[]
        } else if round >= CHANGES[1] {
            &self.hot[1]
        } else if round >= CHANGES[0] {
            &self.hot[0]
        } else {
            &[]
        };
        let mut b = vec![0.0; self.table];
        for (vm, bucket, rate) in &self.flows {
            b[*bucket] += if hot.contains(vm) { rate * 8.0 } else { *rate };
        }
        b
    }
}

fn cpu_loads(table: &[u32], buckets: &[f64], cpus: usize) -> Vec<f64> {
    let mut l = vec![0.0; cpus];
    for (k, cpu) in table.iter().enumerate() {
        l[*cpu as usize] += buckets[k];
    }
    l
}

/// What the three rebalancers share: a table to keep, measured loads in, moves out.
trait Rebalancer {
    fn name(&self) -> &'static str;
    fn table(&self) -> &[u32];
    /// Adjusts the table for this round's measured loads; returns the buckets moved.
    fn round(&mut self, period: u64, measured: &[f64]) -> usize;
}

struct Static(Vec<u32>);

impl Rebalancer for Static {
    fn name(&self) -> &'static str {
        "static RSS"
    }
    fn table(&self) -> &[u32] {
        &self.0
    }
    fn round(&mut self, _: u64, _: &[f64]) -> usize {
        0
    }
}

/// RSS++-style greedy: every round, move the heaviest bucket of the most loaded CPU that
/// still lowers that CPU's load below the pair's, to the least loaded CPU, until no move
/// helps. No smoothing, no tolerance, no budget.
struct Greedy {
    table: Vec<u32>,
    cpus: usize,
}

impl Rebalancer for Greedy {
    fn name(&self) -> &'static str {
        "RSS++-style greedy"
    }
    fn table(&self) -> &[u32] {
        &self.table
    }
    fn round(&mut self, _: u64, measured: &[f64]) -> usize {
        let mut loads = cpu_loads(&self.table, measured, self.cpus);
        let mut moved = 0;
        for _ in 0..self.table.len() {
            let a = (0..self.cpus)
                .max_by(|x, y| loads[*x].total_cmp(&loads[*y]))
                .unwrap_or(0);
            let b = (0..self.cpus)
                .min_by(|x, y| loads[*x].total_cmp(&loads[*y]))
                .unwrap_or(0);
            let gap = loads[a] - loads[b];
            let best = (0..self.table.len())
                .filter(|&k| self.table[k] == a as u32 && measured[k] > 0.0 && measured[k] < gap)
                .max_by(|x, y| measured[*x].total_cmp(&measured[*y]));
            let Some(k) = best else { break };
            self.table[k] = b as u32;
            loads[a] -= measured[k];
            loads[b] += measured[k];
            moved += 1;
        }
        moved
    }
}

/// xnic's policy, with one shared engine holding every CPU and one VM standing for the
/// engine's traffic (VM placement is not what this simulation measures).
struct Xnic(RssPolicy);

impl Rebalancer for Xnic {
    fn name(&self) -> &'static str {
        "xnic policy"
    }
    fn table(&self) -> &[u32] {
        &self.0.engines[0].table
    }
    fn round(&mut self, period: u64, measured: &[f64]) -> usize {
        let loads = Loads {
            vm_pps: vec![measured.iter().sum()],
            bucket_pps: vec![measured.to_vec()],
            cpu_busy: Vec::new(),
        };
        self.0
            .step(period, &loads)
            .iter()
            .filter(|d| matches!(d, xnic::policy::rss::Decision::MoveBucket { .. }))
            .count()
    }
}

#[derive(Default)]
struct Outcome {
    spreads: Vec<f64>,
    max_over_mean: Vec<f64>,
    moved_share: Vec<f64>,
    steady_moves: usize,
    /// Per load change: rounds until the first move, and until the spread is within the
    /// target (over the CPUs beside a lone elephant bucket when that rules the target out).
    react: Vec<(Option<usize>, Option<usize>)>,
    /// Spread over the CPUs without a lone elephant bucket, steady state.
    splittable_spreads: Vec<f64>,
    /// The least spread any table could reach (set by the heaviest bucket), steady state.
    floors: Vec<f64>,
}

/// The least (max − min) / min any table can reach: a CPU holding the heaviest bucket carries
/// at least that, and the other CPUs share the rest.
fn floor_spread(buckets: &[f64], cpus: usize) -> f64 {
    let total: f64 = buckets.iter().sum();
    let heaviest = buckets.iter().copied().fold(0.0, f64::max);
    let mean = total / cpus as f64;
    if heaviest <= mean || cpus < 2 {
        return 0.0;
    }
    let others = (total - heaviest) / (cpus - 1) as f64;
    (heaviest - others) / others
}

/// (max − min) / min over the CPUs that do not carry a lone bucket heavier than the mean CPU
/// load: those CPUs are at the floor whatever the table, the others are what balancing can
/// still even out.
fn splittable_spread(table: &[u32], buckets: &[f64], cpus: usize) -> f64 {
    let loads = cpu_loads(table, buckets, cpus);
    let mean = loads.iter().sum::<f64>() / cpus as f64;
    let lone_elephant = |cpu: usize| {
        let mine: Vec<f64> = table
            .iter()
            .zip(buckets)
            .filter(|(c, b)| **c as usize == cpu && **b > 0.0)
            .map(|(_, b)| *b)
            .collect();
        mine.len() == 1 && mine[0] > mean
    };
    let rest: Vec<f64> = (0..cpus)
        .filter(|&c| !lone_elephant(c))
        .map(|c| loads[c])
        .collect();
    spread(&rest)
}

fn run(reb: &mut dyn Rebalancer, trace: &Trace, cpus: usize, seed: u64) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    let mut change_at: Option<usize> = None;
    for round in 0..ROUNDS {
        if CHANGES.contains(&round) {
            change_at = Some(round);
            out.react.push((None, None));
        }
        let truth = trace.buckets(round);
        let measured: Vec<f64> = truth
            .iter()
            .map(|t| {
                let packets = t * PERIOD_SECS;
                let noise = if packets > 0.0 {
                    rng.normal() / packets.sqrt()
                } else {
                    0.0
                };
                (t * (1.0 + noise)).max(0.0)
            })
            .collect();
        let moved = reb.round(round as u64 + 1, &measured);
        let loads = cpu_loads(reb.table(), &truth, cpus);
        let s = spread(&loads);
        let mean = loads.iter().sum::<f64>() / cpus as f64;
        let max = loads.iter().copied().fold(0.0, f64::max);
        let floor = floor_spread(&truth, cpus);
        let rest = splittable_spread(reb.table(), &truth, cpus);
        // Where the heaviest bucket rules the target out, the CPUs beside it must meet it.
        let balanced = if floor > TARGET_SPREAD {
            rest <= TARGET_SPREAD
        } else {
            s <= TARGET_SPREAD
        };
        if let (Some(at), Some(r)) = (change_at, out.react.last_mut()) {
            if moved > 0 && r.0.is_none() {
                r.0 = Some(round - at);
            }
            if balanced && r.1.is_none() {
                r.1 = Some(round - at);
            }
        }
        let steady = change_at.is_none_or(|at| round >= at + SETTLE);
        if steady && round >= SETTLE {
            out.spreads.push(s);
            out.splittable_spreads.push(rest);
            out.floors.push(floor);
            out.max_over_mean.push(max / mean);
            out.steady_moves += moved;
        }
        out.moved_share
            .push(moved as f64 / reb.table().len() as f64);
    }
    out
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn simulate(report: &mut Report) {
    for (cpus, table, total_pps) in [(16usize, 128usize, 4.0e6), (64, 256, 16.0e6)] {
        for elephants in [0usize, 5] {
            let trace = Trace::new(total_pps, table, elephants, 0x5EED + cpus as u64);
            let what = if elephants == 0 {
                "Zipf flows, moving hot spot".to_string()
            } else {
                format!("Zipf flows, moving hot spot, {elephants} elephants at 2 %")
            };
            compare(report, &trace, cpus, table, &what);
        }
    }
}

fn compare(report: &mut Report, trace: &Trace, cpus: usize, table: usize, what: &str) {
    let initial: Vec<u32> = (0..table).map(|k| (k % cpus) as u32).collect();
    let params = Params {
        rebalance_above: 0.10,
        rebalance_to: 0.05,
        // 5 % of the table per round.
        max_bucket_moves: table * 5 / 100,
        bucket_dwell_periods: 5,
        smoothing: 0.5,
        rebalance_min_pps: 1000.0,
        ..Params::default()
    };
    let mut engine = Engine::new("sim", EngineKind::Shared, (0..cpus as u32).collect(), table);
    engine.table = initial.clone();
    let mut vm = Vm::new("all");
    vm.placement = Placement::Engine(0);
    vm.pinned = true;
    let mut rebalancers: Vec<Box<dyn Rebalancer>> = vec![
        Box::new(Static(initial.clone())),
        Box::new(Greedy {
            table: initial.clone(),
            cpus,
        }),
        Box::new(Xnic(RssPolicy::new(vec![engine], vec![vm], params))),
    ];
    let outcomes: Vec<(&'static str, Outcome)> = rebalancers
        .iter_mut()
        .map(|r| (r.name(), run(r.as_mut(), trace, cpus, 42)))
        .collect();
    let get = |name: &str| &outcomes.iter().find(|(n, _)| *n == name).expect("ran").1;
    let ours = get("xnic policy");
    let baselines = |f: &dyn Fn(&Outcome) -> f64| -> Vec<(&'static str, f64)> {
        ["static RSS", "RSS++-style greedy"]
            .iter()
            .map(|n| (*n, f(get(n))))
            .collect()
    };
    let scenario = |metric: &str| {
        format!(
            "simulation, {cpus} CPUs, {table} buckets, {VMS} VMs × {FLOWS_PER_VM} flows, {what}: {metric}"
        )
    };
    let spread_mean = |o: &Outcome| mean(&o.spreads);
    let mut spread_baselines = baselines(&spread_mean);
    spread_baselines.push(("least any table allows", mean(&ours.floors)));
    report.add(
        "per-CPU load (max−min)/min",
        &scenario("steady-state mean"),
        "ratio",
        Better::Lower,
        spread_mean(ours),
        &spread_baselines,
    );
    if mean(&ours.floors) > TARGET_SPREAD {
        let rest = |o: &Outcome| mean(&o.splittable_spreads);
        report.add(
            "per-CPU load (max−min)/min beside unsplittable buckets",
            &scenario("CPUs not carrying a lone bucket heavier than the mean, steady-state mean"),
            "ratio",
            Better::Lower,
            rest(ours),
            &baselines(&rest),
        );
    }
    let mm = |o: &Outcome| mean(&o.max_over_mean);
    report.add(
        "per-CPU load max/mean",
        &scenario("steady-state mean"),
        "ratio",
        Better::Lower,
        mm(ours),
        &baselines(&mm),
    );
    let moved = |o: &Outcome| mean(&o.moved_share) * 100.0;
    report.add(
        "buckets moved per round",
        &scenario("mean over all rounds"),
        "% of table",
        Better::Lower,
        moved(ours),
        &baselines(&moved),
    );
    let peak = |o: &Outcome| o.moved_share.iter().copied().fold(0.0, f64::max) * 100.0;
    report.add(
        "buckets moved per round",
        &scenario("worst round"),
        "% of table",
        Better::Lower,
        peak(ours),
        &baselines(&peak),
    );
    let steady = |o: &Outcome| o.steady_moves as f64;
    report.add(
        "bucket moves in steady state",
        &scenario("total over steady rounds"),
        "moves",
        Better::Lower,
        steady(ours),
        &baselines(&steady),
    );
    let first = |o: &Outcome| {
        mean(
            &o.react
                .iter()
                .map(|r| r.0.map_or(ROUNDS as f64, |x| x as f64))
                .collect::<Vec<_>>(),
        )
    };
    report.add(
        "rounds to react to a load change",
        &scenario("first move, mean of 3 changes"),
        "rounds",
        Better::Lower,
        first(ours),
        &baselines(&first),
    );
    let settle = |o: &Outcome| {
        mean(
            &o.react
                .iter()
                .map(|r| r.1.map_or(ROUNDS as f64, |x| x as f64))
                .collect::<Vec<_>>(),
        )
    };
    report.add(
        "rounds to balance after a load change",
        &scenario("spread within target, mean of 3 changes"),
        "rounds",
        Better::Lower,
        settle(ours),
        &baselines(&settle),
    );
    for (name, o) in &outcomes {
        eprintln!(
            "  {cpus:>2} CPUs {what:<48} {name:<20} spread {:.3} (floor {:.3}, beside elephants {:.3})  max/mean {:.3}  moved/round {:.2}% (worst {:.1}%)  steady moves {}  react {:?}",
            mean(&o.spreads),
            mean(&o.floors),
            mean(&o.splittable_spreads),
            mean(&o.max_over_mean),
            mean(&o.moved_share) * 100.0,
            peak(o),
            o.steady_moves,
            o.react
        );
    }
}
