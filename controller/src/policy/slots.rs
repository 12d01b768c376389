//! Which counter slot each port and VM gets.
//!
//! Slots index the dataplane's counter arrays, and those arrays outlive the daemon (they are
//! pinned), so a name must keep its slot across restarts or its counters would jump to
//! another name. The daemon records slot → name in pinned tables; on start it plans from that
//! record and the configuration.

use std::collections::BTreeSet;

/// The outcome of [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotPlan {
    /// Names that keep the slot they had.
    pub keep: Vec<(String, u32)>,
    /// New names and the free slot each gets (its counters must be zeroed first).
    pub assign: Vec<(String, u32)>,
    /// Recorded names no longer wanted; their slots become free.
    pub release: Vec<(String, u32)>,
}

impl SlotPlan {
    /// The slot of `name` after the plan is applied.
    pub fn slot_of(&self, name: &str) -> Option<u32> {
        self.keep
            .iter()
            .chain(&self.assign)
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no free slot for {name:?}: all {capacity} slots are in use")]
pub struct SlotsExhausted {
    pub name: String,
    pub capacity: u32,
}

/// Plans slots for `desired` names given what is `recorded` (slot, name), using slots
/// `first..capacity`. New names take the lowest free slots, in the order given. A name recorded
/// twice (which a crash mid-update could leave) keeps its lowest slot and frees the other; a
/// slot recorded for two names stays with the first.
pub fn plan(
    recorded: &[(u32, String)],
    desired: &[String],
    first: u32,
    capacity: u32,
) -> Result<SlotPlan, SlotsExhausted> {
    let mut out = SlotPlan::default();
    let mut recorded: Vec<(u32, String)> = recorded.to_vec();
    recorded.sort();
    // Sets, not scans: a host has thousands of names and this runs on every change.
    let wanted: BTreeSet<&str> = desired.iter().map(String::as_str).collect();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut used = BTreeSet::new();
    for (slot, name) in &recorded {
        let keep = wanted.contains(name.as_str())
            && !placed.contains(name)
            && (first..capacity).contains(slot)
            && !used.contains(slot);
        if keep {
            out.keep.push((name.clone(), *slot));
            placed.insert(name.clone());
            used.insert(*slot);
        } else {
            out.release.push((name.clone(), *slot));
        }
    }
    let mut next = first;
    for name in desired {
        if placed.contains(name) {
            continue;
        }
        while used.contains(&next) {
            next += 1;
        }
        if next >= capacity {
            return Err(SlotsExhausted {
                name: name.clone(),
                capacity: capacity - first,
            });
        }
        used.insert(next);
        placed.insert(name.clone());
        out.assign.push((name.clone(), next));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn first_start_assigns_in_order_from_first() {
        let p = plan(&[], &names(&["a", "b"]), 1, 10).unwrap();
        assert_eq!(p.assign, vec![("a".into(), 1), ("b".into(), 2)]);
        assert!(p.keep.is_empty() && p.release.is_empty());
    }

    #[test]
    fn restart_keeps_slots_and_fills_holes() {
        let recorded = vec![
            (1, "a".to_string()),
            (3, "c".to_string()),
            (4, "gone".to_string()),
        ];
        let p = plan(&recorded, &names(&["c", "b", "a"]), 1, 10).unwrap();
        assert_eq!(p.keep, vec![("a".into(), 1), ("c".into(), 3)]);
        assert_eq!(p.assign, vec![("b".into(), 2)]);
        assert_eq!(p.release, vec![("gone".into(), 4)]);
        assert_eq!(p.slot_of("b"), Some(2));
    }

    #[test]
    fn duplicates_and_out_of_range_records_are_released() {
        let recorded = vec![
            (2, "a".to_string()),
            (5, "a".to_string()),
            (0, "b".to_string()),
        ];
        let p = plan(&recorded, &names(&["a", "b"]), 1, 10).unwrap();
        assert_eq!(p.keep, vec![("a".into(), 2)]);
        assert_eq!(p.assign, vec![("b".into(), 1)]);
        assert_eq!(p.release.len(), 2);
    }

    #[test]
    fn running_out_of_slots_is_an_error() {
        let e = plan(&[], &names(&["a", "b", "c"]), 1, 3).unwrap_err();
        assert_eq!(e.name, "c");
    }

    proptest! {
        #[test]
        fn every_desired_name_gets_a_distinct_slot_in_range(
            recorded in proptest::collection::vec((0u32..40, "[a-f]"), 0..20),
            desired in proptest::collection::btree_set("[a-k]", 0..12),
        ) {
            let desired: Vec<String> = desired.into_iter().collect();
            let p = plan(&recorded, &desired, 1, 40).unwrap();
            let mut slots = std::collections::BTreeSet::new();
            for name in &desired {
                let s = p.slot_of(name).unwrap();
                prop_assert!((1..40).contains(&s));
                prop_assert!(slots.insert(s), "slot {} given twice", s);
            }
            // A kept name keeps exactly a slot it was recorded with.
            for (name, slot) in &p.keep {
                prop_assert!(recorded.contains(&(*slot, name.clone())));
            }
        }
    }
}
