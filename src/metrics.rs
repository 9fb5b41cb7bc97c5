//! Prometheus metrics: a status report in the text exposition format (version 0.0.4), for
//! `clusterctl metrics` (node_exporter's textfile collector) and `clusterd --metrics-listen`.
//! Both render the same report the same way.
//!
//! Names follow Prometheus conventions: units in the name, counters end in `_total`, and no
//! label takes unbounded values (a unit's name and an instance index, never a pid or an exit
//! code).

use std::fmt::Write;

use crate::protocol::{HealthState, InstanceState, StatusReport, UnitState};

/// The exposition text of `report`; `now` is the current time in seconds since the epoch
/// (instances' start times are derived from their uptime).
pub fn render(report: &StatusReport, now: f64) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {}", number(value));
        }
    };
    let instances = || {
        report.units.iter().flat_map(|unit| {
            unit.instances
                .iter()
                .filter(|i| !i.draining)
                .map(move |i| (unit, i))
        })
    };
    let instance_labels =
        |unit: &str, index: u32| format!("{{unit=\"{}\",instance=\"{index}\"}}", escape(unit));
    let unit_labels = |unit: &str| format!("{{unit=\"{}\"}}", escape(unit));

    family(
        "clusterd_instance_up",
        "gauge",
        "1 when the instance's process runs and is ready, else 0.",
        instances()
            .map(|(u, i)| {
                let up = i.pid.is_some() && i.state == InstanceState::Running;
                (instance_labels(&u.name, i.index), f64::from(u8::from(up)))
            })
            .collect(),
    );
    family(
        "clusterd_instance_restarts_total",
        "counter",
        "Automatic restarts of the instance since its unit was last started by hand.",
        instances()
            .map(|(u, i)| (instance_labels(&u.name, i.index), f64::from(i.restarts)))
            .collect(),
    );
    family(
        "clusterd_instance_cpu_seconds_total",
        "counter",
        "CPU time of every process of the instance (its current process and what it started).",
        instances()
            .filter_map(|(u, i)| Some((instance_labels(&u.name, i.index), i.cpu_seconds?)))
            .collect(),
    );
    family(
        "clusterd_instance_healthy",
        "gauge",
        "1 while the instance's watchdog and [health] check pass, 0 while they fail; absent while unknown or unchecked.",
        instances()
            .filter_map(|(u, i)| {
                let healthy = match i.health.as_ref()?.state {
                    HealthState::Ok => 1.0,
                    HealthState::Failing => 0.0,
                    HealthState::Unknown => return None,
                };
                Some((instance_labels(&u.name, i.index), healthy))
            })
            .collect(),
    );
    family(
        "clusterd_instance_resident_memory_bytes",
        "gauge",
        "Resident memory of every process of the instance.",
        instances()
            .filter_map(|(u, i)| Some((instance_labels(&u.name, i.index), i.memory_bytes? as f64)))
            .collect(),
    );
    family(
        "clusterd_instance_start_time_seconds",
        "gauge",
        "When the instance's current process started, in seconds since the Unix epoch.",
        instances()
            .filter_map(|(u, i)| {
                let uptime = i.uptime_ms? as f64 / 1000.0;
                Some((instance_labels(&u.name, i.index), (now - uptime).floor()))
            })
            .collect(),
    );
    family(
        "clusterd_unit_restarts_total",
        "counter",
        "Automatic restarts of the unit's instances since it was last started by hand.",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u.restarts)))
            .collect(),
    );
    family(
        "clusterd_unit_gave_up",
        "gauge",
        "1 while the unit has given up (its restart limit was reached), else 0.",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u8::from(u.gave_up))))
            .collect(),
    );
    family(
        "clusterd_unit_give_ups_total",
        "counter",
        "Times the unit reached its restart limit and gave up.",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u.give_ups)))
            .collect(),
    );
    family(
        "clusterd_unit_memory_limit_replacements_total",
        "counter",
        "Instances of the unit replaced for going above its memory_max.",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u.memory_replacements)))
            .collect(),
    );
    family(
        "clusterd_unit_health_replacements_total",
        "counter",
        "Instances of the unit replaced because they were hung (watchdog or [health] check).",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u.health_replacements)))
            .collect(),
    );
    family(
        "clusterd_unit_wanted_instances",
        "gauge",
        "How many instances the unit is meant to run.",
        report
            .units
            .iter()
            .map(|u| (unit_labels(&u.name), f64::from(u.wanted_instances)))
            .collect(),
    );
    family(
        "clusterd_unit_invalid",
        "gauge",
        "1 when the unit's file does not parse, else 0.",
        report
            .units
            .iter()
            .map(|u| {
                (
                    unit_labels(&u.name),
                    f64::from(u8::from(u.state == UnitState::Invalid)),
                )
            })
            .collect(),
    );
    // One-shots only: a service has no runs.
    let jobs = || {
        report
            .units
            .iter()
            .filter_map(|u| Some((unit_labels(&u.name), u.job.as_ref()?)))
    };
    family(
        "clusterd_job_runs_total",
        "counter",
        "Runs of the one-shot unit started since clusterd started.",
        jobs().map(|(l, j)| (l, j.runs as f64)).collect(),
    );
    family(
        "clusterd_job_failures_total",
        "counter",
        "Runs of the one-shot unit that failed.",
        jobs().map(|(l, j)| (l, j.failures as f64)).collect(),
    );
    family(
        "clusterd_job_skipped_total",
        "counter",
        "Scheduled runs skipped because the previous run was still going.",
        jobs().map(|(l, j)| (l, j.skipped as f64)).collect(),
    );
    family(
        "clusterd_job_last_success_time_seconds",
        "gauge",
        "When the one-shot's last successful run ended, in seconds since the Unix epoch (alert on time() - this).",
        jobs()
            .filter_map(|(l, j)| {
                let ago = j.last_success_ago_ms? as f64 / 1000.0;
                Some((l, (now - ago).floor()))
            })
            .collect(),
    );
    if let Some(daemon) = &report.daemon {
        family(
            "process_cpu_seconds_total",
            "counter",
            "CPU time of clusterd itself.",
            vec![(String::new(), daemon.cpu_seconds)],
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of clusterd itself.",
            vec![(String::new(), daemon.memory_bytes as f64)],
        );
        family(
            "process_open_fds",
            "gauge",
            "File descriptors clusterd has open.",
            vec![(String::new(), daemon.open_fds as f64)],
        );
        family(
            "process_start_time_seconds",
            "gauge",
            "When clusterd started, in seconds since the Unix epoch.",
            vec![(String::new(), daemon.start_time_seconds.floor())],
        );
    }
    out
}

/// A sample value: integers without a fraction, others as Rust prints them.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// A label value escaped as the format wants: backslash, double quote, newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{InstanceStatus, UnitStatus};

    #[test]
    fn families_have_help_type_and_labelled_samples() {
        let report = StatusReport {
            units: vec![UnitStatus {
                name: "web".into(),
                state: UnitState::Running,
                description: None,
                restarts: 2,
                gave_up: false,
                wanted_instances: 1,
                error: None,
                log: None,
                log_problem: None,
                watched_directories: None,
                watch_problem: None,
                cpu_percent: None,
                memory_bytes: None,
                instances: vec![InstanceStatus {
                    index: 0,
                    pid: Some(42),
                    state: InstanceState::Running,
                    restarts: 2,
                    uptime_ms: Some(10_000),
                    last_exit: None,
                    status_text: None,
                    draining: false,
                    cpu_percent: Some(1.0),
                    cpu_seconds: Some(0.25),
                    memory_bytes: Some(1 << 20),
                    health: Some(crate::protocol::HealthStatus {
                        state: HealthState::Failing,
                        failures: 2,
                        reason: Some("HTTP status 503".into()),
                    }),
                }],
                events: Vec::new(),
                memory_replacements: 0,
                give_ups: 1,
                waiting_for: None,
                job: None,
                after: Vec::new(),
                health_replacements: 3,
            }],
            isolation: None,
            daemon: None,
            stopping: false,
        };
        let text = render(&report, 1_000_000.0);
        assert!(text.contains("# TYPE clusterd_instance_up gauge\n"));
        assert!(text.contains("clusterd_instance_up{unit=\"web\",instance=\"0\"} 1\n"));
        assert!(text
            .contains("clusterd_instance_cpu_seconds_total{unit=\"web\",instance=\"0\"} 0.25\n"));
        assert!(text.contains(
            "clusterd_instance_start_time_seconds{unit=\"web\",instance=\"0\"} 999990\n"
        ));
        assert!(text.contains("clusterd_unit_restarts_total{unit=\"web\"} 2\n"));
        assert!(text.contains("clusterd_unit_give_ups_total{unit=\"web\"} 1\n"));
        assert!(text.contains("clusterd_instance_healthy{unit=\"web\",instance=\"0\"} 0\n"));
        assert!(text.contains("clusterd_unit_health_replacements_total{unit=\"web\"} 3\n"));
        assert!(!text.contains("42"), "no pid in any label or value: {text}");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
