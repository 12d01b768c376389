//! The daemon's one event stream: every feature's events (VM and port lifecycle, changes of
//! the desired state, RSS migrations, team failovers) in one bounded ring with one shape.
//! Features hand events to the reconciler as [`NewEvent`]s; the ring numbers and times them.
//! Readers (`GET /v1/events`, the per-feature event views, `--follow`) never block a writer
//! for longer than a copy.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::watch;
use xnic_proto::api::{Event, EventDetail};

/// Events kept in memory (older ones are in the log). A failover storm over a thousand VMs is
/// one event per team, so this is hours of history on a busy host.
pub const EVENT_HISTORY: usize = 4096;

/// An event a feature reports; the ring gives it its id and time.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub feature: &'static str,
    pub kind: String,
    pub subject: String,
    pub message: String,
    pub detail: EventDetail,
}

impl NewEvent {
    pub fn new(
        feature: &'static str,
        kind: impl Into<String>,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> NewEvent {
        NewEvent {
            feature,
            kind: kind.into(),
            subject: subject.into(),
            message: message.into(),
            detail: EventDetail::None,
        }
    }

    pub fn with(mut self, detail: EventDetail) -> NewEvent {
        self.detail = detail;
        self
    }
}

struct Ring {
    events: VecDeque<Event>,
    next: u64,
    /// Events by `feature/kind` since the daemon started.
    counts: BTreeMap<(String, String), u64>,
}

/// The ring, shared by the reconciler (writer) and the API (readers).
#[derive(Clone)]
pub struct EventLog {
    ring: Arc<Mutex<Ring>>,
    /// The id of the newest event, for readers that wait for new ones.
    newest: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            ring: Arc::new(Mutex::new(Ring {
                events: VecDeque::new(),
                next: 1,
                counts: BTreeMap::new(),
            })),
            newest: watch::channel(0).0,
        }
    }
}

fn lock(m: &Mutex<Ring>) -> std::sync::MutexGuard<'_, Ring> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventLog {
    /// Appends events, numbering and timing them (per-feature records get the same id).
    pub fn push(&self, new: impl IntoIterator<Item = NewEvent>) {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut ring = lock(&self.ring);
        let mut newest = None;
        for e in new {
            let id = ring.next;
            ring.next += 1;
            let mut detail = e.detail;
            match &mut detail {
                EventDetail::Rss(r) => {
                    r.id = id;
                    r.unix_ms = unix_ms;
                }
                EventDetail::Team(t) => {
                    t.id = id;
                    t.unix_ms = unix_ms;
                }
                _ => {}
            }
            *ring
                .counts
                .entry((e.feature.to_string(), e.kind.clone()))
                .or_default() += 1;
            if ring.events.len() == EVENT_HISTORY {
                ring.events.pop_front();
            }
            ring.events.push_back(Event {
                id,
                unix_ms,
                feature: e.feature.to_string(),
                kind: e.kind,
                subject: e.subject,
                message: e.message,
                detail,
            });
            newest = Some(id);
        }
        drop(ring);
        if let Some(id) = newest {
            self.newest.send_replace(id);
        }
    }

    /// Events after `since` that `keep` accepts.
    pub fn since(&self, since: u64, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        lock(&self.ring)
            .events
            .iter()
            .filter(|e| e.id > since && keep(e))
            .cloned()
            .collect()
    }

    /// Like [`Self::since`], but when there are none yet waits up to `wait` for one.
    pub async fn wait_since(
        &self,
        since: u64,
        wait: Duration,
        keep: impl Fn(&Event) -> bool,
    ) -> Vec<Event> {
        let mut rx = self.newest.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self.since(since, &keep);
            if !found.is_empty() || tokio::time::Instant::now() >= deadline {
                return found;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return self.since(since, &keep);
            }
        }
    }

    /// Events of `feature` by kind since the daemon started.
    pub fn counts(&self, feature: &str) -> BTreeMap<String, u64> {
        lock(&self.ring)
            .counts
            .iter()
            .filter(|((f, _), _)| f == feature)
            .map(|((_, k), n)| (k.clone(), *n))
            .collect()
    }

    /// Every count, as (feature, kind) → events.
    pub fn all_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.ring).counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_across_features_and_feature_records_share_the_id() {
        let log = EventLog::default();
        log.push([
            NewEvent::new("vm", "vm_added", "vm0", "added"),
            NewEvent::new("rss", "vm_migration", "vm0", "moved")
                .with(EventDetail::Rss(xnic_proto::api::RssEvent::default())),
        ]);
        let all = log.since(0, |_| true);
        assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1, 2]);
        match &all[1].detail {
            EventDetail::Rss(r) => assert_eq!(r.id, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(log.since(1, |_| true).len(), 1);
        assert_eq!(log.counts("rss").get("vm_migration"), Some(&1));
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let log = EventLog::default();
        log.push((0..EVENT_HISTORY + 5).map(|i| NewEvent::new("vm", "x", format!("{i}"), "")));
        let all = log.since(0, |_| true);
        assert_eq!(all.len(), EVENT_HISTORY);
        assert_eq!(all[0].id, 6);
    }
}
