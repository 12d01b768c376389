//! conntrack's entries as flow offload sees them: a dump to start from, kept current by
//! conntrack's events (new, update, destroy) instead of a dump every period, which on a host
//! with 100k connections costs the kernel and the daemon a few hundred milliseconds each.
//!
//! Events carry an entry's tuples, status, mark, TCP state and its timeout at that moment,
//! but not its byte and packet counters (conntrack sends those only when an entry dies):
//! whoever needs them (elephant thresholds, a full table weighing candidates) asks for a dump
//! every period. A timeout is as of when it was learned, so entries are handed out with the
//! time since then taken off.

use std::collections::HashMap;

use super::conntrack::{CtEntry, CtEvent};

const NS_PER_S: u64 = 1_000_000_000;

/// conntrack's entries by id, each with when it was learned (`CLOCK_MONOTONIC` ns).
#[derive(Debug, Default)]
pub struct CtMirror {
    entries: HashMap<u32, (CtEntry, u64)>,
    /// When the last dump was taken in (`None`: never).
    dumped_ns: Option<u64>,
}

impl CtMirror {
    /// Starts again from a dump taken at `now_ns`.
    pub fn replace(&mut self, dump: Vec<CtEntry>, now_ns: u64) {
        self.entries = dump.into_iter().map(|e| (e.id, (e, now_ns))).collect();
        self.dumped_ns = Some(now_ns);
    }

    /// When the last dump was taken in.
    pub fn dumped_ns(&self) -> Option<u64> {
        self.dumped_ns
    }

    /// Takes in events received at `now_ns`, in the order conntrack sent them.
    pub fn apply(&mut self, events: Vec<CtEvent>, now_ns: u64) {
        for ev in events {
            match ev {
                CtEvent::New(mut e) | CtEvent::Update(mut e) => {
                    if let Some((old, _)) = self.entries.get(&e.id)
                        && old.orig == e.orig
                        && e.counters.is_none()
                    {
                        // The event has no counters: the last dump's stand.
                        e.counters = old.counters;
                    }
                    self.entries.insert(e.id, (e, now_ns));
                }
                CtEvent::Destroy(e) => {
                    self.entries.remove(&e.id);
                }
            }
        }
    }

    /// The entries as of `now_ns`: each timeout less the time since it was learned.
    pub fn entries(&self, now_ns: u64) -> Vec<CtEntry> {
        self.entries
            .values()
            .map(|(e, at)| {
                let aged = now_ns.saturating_sub(*at) / NS_PER_S;
                CtEntry {
                    timeout: (u64::from(e.timeout).saturating_sub(aged)) as u32,
                    ..e.clone()
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::monitor::conntrack::{CtCounter, CtTuple};

    fn entry(id: u32, sport: u16, timeout: u32) -> CtEntry {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "198.51.100.1".parse().unwrap();
        CtEntry {
            id,
            orig: CtTuple {
                src: a,
                dst: b,
                proto: 17,
                src_port: sport,
                dst_port: 53,
            },
            reply: CtTuple {
                src: b,
                dst: a,
                proto: 17,
                src_port: 53,
                dst_port: sport,
            },
            status: 0,
            timeout,
            mark: 0,
            zone: 0,
            tcp: None,
            counters: None,
        }
    }

    fn ids(m: &CtMirror, now: u64) -> Vec<u32> {
        let mut v: Vec<u32> = m.entries(now).iter().map(|e| e.id).collect();
        v.sort();
        v
    }

    #[test]
    fn events_add_change_and_remove_entries() {
        let mut m = CtMirror::default();
        m.replace(vec![entry(1, 1000, 30), entry(2, 1001, 30)], 0);
        let mut seen = entry(2, 1001, 120);
        seen.status = 0x2;
        m.apply(
            vec![
                CtEvent::New(entry(3, 1002, 30)),
                CtEvent::Update(seen),
                CtEvent::Destroy(entry(1, 1000, 0)),
            ],
            NS_PER_S,
        );
        assert_eq!(ids(&m, NS_PER_S), [2, 3]);
        let two = m.entries(NS_PER_S).into_iter().find(|e| e.id == 2).unwrap();
        assert_eq!((two.status, two.timeout), (0x2, 120));
    }

    #[test]
    fn an_update_keeps_the_dumps_counters() {
        let mut m = CtMirror::default();
        let mut dumped = entry(7, 1000, 30);
        dumped.counters = Some(
            [CtCounter {
                packets: 5,
                bytes: 500,
            }; 2],
        );
        m.replace(vec![dumped], 0);
        m.apply(vec![CtEvent::Update(entry(7, 1000, 120))], 0);
        let e = &m.entries(0)[0];
        assert_eq!(e.counters.unwrap()[0].bytes, 500);
        // The same id for another connection (ids are reused) keeps nothing of the old one.
        m.apply(vec![CtEvent::New(entry(7, 2000, 30))], 0);
        assert!(m.entries(0)[0].counters.is_none());
    }

    #[test]
    fn timeouts_run_down_from_when_they_were_learned() {
        let mut m = CtMirror::default();
        m.replace(vec![entry(1, 1000, 30)], 10 * NS_PER_S);
        assert_eq!(m.entries(10 * NS_PER_S)[0].timeout, 30);
        assert_eq!(m.entries(22 * NS_PER_S)[0].timeout, 18);
        assert_eq!(m.entries(100 * NS_PER_S)[0].timeout, 0);
        m.apply(vec![CtEvent::Update(entry(1, 1000, 120))], 50 * NS_PER_S);
        assert_eq!(m.entries(60 * NS_PER_S)[0].timeout, 110);
    }
}
