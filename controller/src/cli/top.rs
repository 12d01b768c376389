//! `xnic top`: a live view of the instance, refreshed every second: ports, VMs, CPUs and
//! uplinks with their rates. Keys: `s` cycles the VM table's sort (pps, drops, name), `r`
//! reverses it, `/` filters VMs and ports by name (Enter applies, Esc clears), `q` quits.

use std::time::{Duration, Instant};

use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    widgets::{Block, Paragraph, Row, Table},
};
use xnic_proto::api::{Role, StatsView, TeamStatusView};

use super::{args::ReadArgs, block_on, client};

const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SortBy {
    Pps,
    Drops,
    Name,
}

impl SortBy {
    fn next(self) -> SortBy {
        match self {
            SortBy::Pps => SortBy::Drops,
            SortBy::Drops => SortBy::Name,
            SortBy::Name => SortBy::Pps,
        }
    }

    fn name(self) -> &'static str {
        match self {
            SortBy::Pps => "pps",
            SortBy::Drops => "drops",
            SortBy::Name => "name",
        }
    }
}

/// What the view shows and how.
struct View {
    instance: String,
    stats: Option<StatsView>,
    team: Option<TeamStatusView>,
    error: Option<String>,
    sort: SortBy,
    reverse: bool,
    filter: String,
    /// The filter being typed after `/`.
    typing: Option<String>,
}

pub fn run(args: &ReadArgs) -> anyhow::Result<()> {
    let c = client(args)?;
    let instance = super::resolve_instance(&args.instance)?;
    let mut view = View {
        instance,
        stats: None,
        team: None,
        error: None,
        sort: SortBy::Pps,
        reverse: false,
        filter: String::new(),
        typing: None,
    };
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        let mut fetched: Option<Instant> = None;
        loop {
            if fetched.is_none_or(|t| t.elapsed() >= REFRESH) {
                match block_on(c.get::<StatsView>("/v1/stats")) {
                    Ok(s) => {
                        view.stats = Some(s);
                        view.error = None;
                    }
                    Err(e) => view.error = Some(format!("{e:#}")),
                }
                view.team = block_on(c.get::<TeamStatusView>("/v1/team")).ok();
                fetched = Some(Instant::now());
            }
            terminal.draw(|f| draw(f, &view))?;
            if !event::poll(Duration::from_millis(100))? {
                continue;
            }
            let Event::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            if let Some(t) = &mut view.typing {
                match k.code {
                    KeyCode::Enter => view.filter = view.typing.take().unwrap_or_default(),
                    KeyCode::Esc => {
                        view.typing = None;
                        view.filter.clear();
                    }
                    KeyCode::Backspace => {
                        t.pop();
                    }
                    KeyCode::Char(ch) => t.push(ch),
                    _ => {}
                }
                continue;
            }
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('s') => view.sort = view.sort.next(),
                KeyCode::Char('r') => view.reverse = !view.reverse,
                KeyCode::Char('/') => view.typing = Some(String::new()),
                _ => {}
            }
        }
    })();
    ratatui::restore();
    result
}

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

fn draw(f: &mut Frame, v: &View) {
    let [head, ports, vms, bottom] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Percentage(30),
        Constraint::Percentage(40),
        Constraint::Min(6),
    ])
    .areas(f.area());
    let [cpus, uplinks] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    let filter = match &v.typing {
        Some(t) => format!("filter: {t}_"),
        None if v.filter.is_empty() => "filter: none".to_string(),
        None => format!("filter: {}", v.filter),
    };
    let status = v.error.as_deref().unwrap_or("refreshing every second");
    f.render_widget(
        Paragraph::new(format!(
            "xnic top — {} — sort: {}{} — {filter} — {status}\nkeys: s sort, r reverse, / filter, q quit",
            v.instance,
            v.sort.name(),
            if v.reverse { " (reversed)" } else { "" },
        ))
        .block(Block::bordered()),
        head,
    );
    let Some(s) = &v.stats else {
        return;
    };
    let shown = |name: &str| v.filter.is_empty() || name.contains(&v.filter);

    let rows: Vec<Row> = s
        .ports
        .iter()
        .filter(|p| shown(&p.name))
        .map(|p| {
            let dropped: u64 = p
                .reasons
                .iter()
                .filter(|(r, _)| is_drop(r))
                .map(|(_, c)| c.packets)
                .sum();
            Row::new(vec![
                p.name.clone(),
                match p.role {
                    Role::Uplink => "uplink".into(),
                    Role::Vm => "vm".into(),
                },
                format!("{:.0}", p.rate.pps),
                human_bits(p.rate.bps),
                p.total.packets.to_string(),
                dropped.to_string(),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(7),
                Constraint::Length(10),
                Constraint::Length(12),
                Constraint::Length(14),
                Constraint::Length(12),
            ],
        )
        .header(Row::new(["PORT", "ROLE", "PPS", "BIT/S", "FRAMES", "DROPPED"]).style(bold()))
        .block(Block::bordered().title(" PORTS ")),
        ports,
    );

    let mut list: Vec<_> = s.vms.iter().filter(|m| shown(&m.name)).collect();
    list.sort_by(|a, b| {
        let pps = |m: &xnic_proto::api::VmStats| m.rates.from_vm.pps + m.rates.to_vm.pps;
        match v.sort {
            SortBy::Pps => pps(b).total_cmp(&pps(a)),
            SortBy::Drops => b.rates.dropped.pps.total_cmp(&a.rates.dropped.pps),
            SortBy::Name => a.name.cmp(&b.name),
        }
    });
    if v.reverse {
        list.reverse();
    }
    let rows: Vec<Row> = list
        .iter()
        .map(|m| {
            Row::new(vec![
                m.name.clone(),
                format!("{:.0}", m.rates.from_vm.pps),
                format!("{:.0}", m.rates.to_vm.pps),
                format!("{:.0}", m.rates.dropped.pps),
                human_bits(m.rates.from_vm.bps + m.rates.to_vm.bps),
                m.counters.dropped.packets.to_string(),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(16),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(12),
            ],
        )
        .header(
            Row::new([
                "VM",
                "FROM VM PPS",
                "TO VM PPS",
                "DROP PPS",
                "BIT/S",
                "DROPPED",
            ])
            .style(bold()),
        )
        .block(Block::bordered().title(" VMS ")),
        vms,
    );

    let rows: Vec<Row> = s
        .cpus
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let q = s.cpu_queue_dropped.get(i).copied().unwrap_or(0);
            Row::new(vec![i.to_string(), c.packets.to_string(), q.to_string()])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(4),
                Constraint::Length(14),
                Constraint::Length(12),
            ],
        )
        .header(Row::new(["CPU", "FRAMES", "QUEUE DROPS"]).style(bold()))
        .block(Block::bordered().title(" CPUS ")),
        cpus,
    );

    let rows: Vec<Row> = v
        .team
        .iter()
        .flat_map(|t| &t.teams)
        .flat_map(|t| t.uplinks.iter().map(move |u| (t, u)))
        .filter(|(_, u)| shown(&u.name))
        .map(|(t, u)| {
            Row::new(vec![
                t.name.clone(),
                u.name.clone(),
                u.state.clone(),
                format!("{:.1}", u.load_mbps),
                u.vms.join(" "),
            ])
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(10),
                Constraint::Length(10),
                Constraint::Length(9),
                Constraint::Length(10),
                Constraint::Min(10),
            ],
        )
        .header(Row::new(["TEAM", "UPLINK", "STATE", "MBIT/S", "VMS"]).style(bold()))
        .block(Block::bordered().title(" UPLINKS ")),
        uplinks,
    );
}

fn is_drop(reason: &str) -> bool {
    xnic_common::verdict::Reason::ALL
        .iter()
        .find(|r| r.name() == reason)
        .is_some_and(|r| r.action() == xnic_common::verdict::Action::Drop)
}

fn human_bits(bps: f64) -> String {
    match bps {
        b if b >= 1e9 => format!("{:.2} G", b / 1e9),
        b if b >= 1e6 => format!("{:.2} M", b / 1e6),
        b if b >= 1e3 => format!("{:.1} k", b / 1e3),
        b => format!("{b:.0}"),
    }
}
