//! `clusterctl stop A B C`: the named units in the order they stop — a unit after every named
//! unit that lists it in `after` (dependents first, as at shutdown). clusterctl stops them one
//! after the other, each once the previous is gone. The `after` lists come from status.

use std::collections::BTreeSet;

use crate::protocol::StatusReport;

/// `units` ordered dependents first; each name once. Units that wait for each other (a
/// cycle left by configurations a daemon-reload kept) go in the order given.
pub fn stop_order(report: &StatusReport, units: &[String]) -> Vec<String> {
    let mut left: Vec<String> = Vec::new();
    for unit in units {
        if !left.contains(unit) {
            left.push(unit.clone());
        }
    }
    let after = |name: &str| -> Vec<String> {
        report
            .units
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.after.clone())
            .unwrap_or_default()
    };
    let mut order = Vec::new();
    while !left.is_empty() {
        // Still needed: named in the `after` of a unit not stopped yet.
        let needed: BTreeSet<String> = left.iter().flat_map(|u| after(u)).collect();
        let free: Vec<String> = left
            .iter()
            .filter(|u| !needed.contains(*u))
            .cloned()
            .collect();
        let next = if free.is_empty() { left.clone() } else { free };
        left.retain(|u| !next.contains(u));
        order.extend(next);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{UnitState, UnitStatus};

    fn unit(name: &str, after: &[&str]) -> UnitStatus {
        let mut unit = UnitStatus::bare(name, UnitState::Running);
        unit.after = after.iter().map(|s| s.to_string()).collect();
        unit
    }

    #[test]
    fn dependents_stop_first_and_a_cycle_keeps_the_given_order() {
        let report = StatusReport {
            units: vec![
                unit("db", &[]),
                unit("cache", &[]),
                unit("web", &["db", "cache"]),
                unit("worker", &["db"]),
                unit("a", &["b"]),
                unit("b", &["a"]),
            ],
            isolation: None,
            daemon: None,
            stopping: false,
        };
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            stop_order(&report, &names(&["db", "web", "cache", "worker", "web"])),
            names(&["web", "worker", "db", "cache"])
        );
        assert_eq!(stop_order(&report, &names(&["a", "b"])), names(&["a", "b"]));
        assert_eq!(stop_order(&report, &names(&["ghost"])), names(&["ghost"]));
    }
}
