//! `clusterctl ready`: whether units run every instance they want, each ready — the answer an
//! orchestrator's readiness probe needs (a TCP probe of a port clusterd holds open would
//! always pass, even with no instance behind it).

use crate::protocol::{InstanceState, StatusReport, UnitState};

/// Why the named units (every unit when none is named) are not ready, or `None` if they are.
pub fn not_ready(report: &StatusReport, units: &[String]) -> Option<String> {
    if report.stopping {
        return Some("clusterd is stopping".to_string());
    }
    let mut problems: Vec<String> = units
        .iter()
        .filter(|name| !report.units.iter().any(|u| &&u.name == name))
        .map(|name| format!("{name}: no such unit"))
        .collect();
    for unit in report
        .units
        .iter()
        .filter(|u| units.is_empty() || units.contains(&u.name))
    {
        if unit.state == UnitState::Invalid {
            problems.push(format!("{}: its unit file is invalid", unit.name));
            continue;
        }
        // A one-shot is ready once it is done; a scheduled one unless its last run failed
        // (between runs, nothing of it runs by design).
        if let Some(job) = &unit.job {
            let fine = unit.state == UnitState::Done
                || (job.schedule.is_some() && unit.state != UnitState::Failed);
            if !fine {
                problems.push(format!("{}: one-shot {}", unit.name, unit.state));
            }
            continue;
        }
        let ready = unit
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
            .count();
        if ready < unit.wanted_instances as usize {
            problems.push(format!(
                "{}: {ready} of {} instance(s) ready{}",
                unit.name,
                unit.wanted_instances,
                if unit.gave_up { " (gave up)" } else { "" }
            ));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}
