//! Rendering a status report for people: a table of units, then a table of instances.
//!
//! ```text
//! UNIT    STATE    INSTANCES  RESTARTS  CPU   MEM    LOG   DESCRIPTION
//! crashy  failed   0/1        3         -     -      file  crashes on purpose
//! web     running  2/2        0         0.4%  24.1M  file  example web server
//!
//! crashy: gave up: more than 3 restart(s) within 30s
//!
//! UNIT    #  PID    STATE    UPTIME  CPU   MEM    RESTARTS  LAST EXIT
//! crashy  0  -      stopped  -       -     -      3         exited with code 1
//! web     0  41230  running  2m 4s   0.2%  12.1M  0         -
//! ```

use std::time::Duration;

use crate::printable::printable;
use crate::protocol::{InstanceState, JobStatus, StatusReport, UnitState};

pub fn render(report: &StatusReport) -> String {
    if report.units.is_empty() {
        return "no units loaded\n".to_string();
    }
    let mut tables = Tables::new(false);
    tables.add(report, None);
    tables.finish()
}

/// The status of several hosts in one set of tables, each row starting with its HOST; a host
/// that did not answer is a note with its error.
pub fn render_hosts(reports: &[(String, Result<StatusReport, String>)]) -> String {
    let mut tables = Tables::new(true);
    for (host, report) in reports {
        match report {
            Ok(report) if report.units.is_empty() => {
                tables.notes.push(format!("{host}: no units loaded"));
            }
            Ok(report) => tables.add(report, Some(host)),
            Err(error) => tables.notes.push(format!("{host}: {error}")),
        }
    }
    tables.finish()
}

/// The rows of the tables being rendered, and what follows them.
struct Tables {
    units: Vec<Vec<String>>,
    notes: Vec<String>,
    instances: Vec<Vec<String>>,
    /// The events of `status UNIT` and the isolation line, after the tables.
    tail: String,
}

/// A row, with its host's cell first when there is a HOST column.
fn row<const N: usize>(host: Option<&str>, cells: [String; N]) -> Vec<String> {
    host.map(str::to_string).into_iter().chain(cells).collect()
}

impl Tables {
    fn new(host_column: bool) -> Tables {
        let host = host_column.then_some("HOST");
        Tables {
            units: vec![row(
                host,
                [
                    "UNIT".to_string(),
                    "STATE".into(),
                    "INSTANCES".into(),
                    "RESTARTS".into(),
                    "CPU".into(),
                    "MEM".into(),
                    "LOG".into(),
                    "DESCRIPTION".into(),
                ],
            )],
            notes: Vec::new(),
            instances: vec![row(
                host,
                [
                    "UNIT".to_string(),
                    "#".into(),
                    "PID".into(),
                    "STATE".into(),
                    "UPTIME".into(),
                    "CPU".into(),
                    "MEM".into(),
                    "RESTARTS".into(),
                    "LAST EXIT".into(),
                ],
            )],
            tail: String::new(),
        }
    }

    fn finish(self) -> String {
        let mut out = String::new();
        if self.units.len() > 1 {
            out.push_str(&table(&self.units));
        }
        if !self.notes.is_empty() {
            if !out.is_empty() {
                out.push('\n');
            }
            for note in self.notes {
                out.push_str(&printable(&note));
                out.push('\n');
            }
        }
        if self.instances.len() > 1 {
            out.push('\n');
            out.push_str(&table(&self.instances));
        }
        out + &self.tail
    }

    /// Adds one host's report (`host`: `None` without a HOST column).
    fn add(&mut self, report: &StatusReport, host: Option<&str>) {
        let notes = &mut self.notes;
        let note_prefix = host.map_or(String::new(), |h| format!("{h}: "));
        for unit in &report.units {
            let running = unit
                .instances
                .iter()
                .filter(|i| !i.draining && i.state == InstanceState::Running)
                .count();
            self.units.push(row(
                host,
                [
                    unit.name.clone(),
                    unit.state.to_string(),
                    if unit.state == UnitState::Invalid {
                        "-".into()
                    } else {
                        format!("{running}/{}", unit.wanted_instances)
                    },
                    unit.restarts.to_string(),
                    unit.cpu_percent.map_or("-".into(), |p| format!("{p:.1}%")),
                    unit.memory_bytes.map_or("-".into(), format_bytes),
                    unit.log.as_deref().map_or("-".into(), |log| {
                        // `file PATH`: the path is in `--json`; the column says where.
                        log.split(' ').next().unwrap_or(log).to_string()
                    }),
                    unit.description.clone().unwrap_or_default(),
                ],
            ));
            if let Some(error) = &unit.error {
                notes.push(format!("{note_prefix}{}: {error}", unit.name));
            }
            if let Some(problem) = &unit.log_problem {
                notes.push(format!("{note_prefix}{}: log: {problem}", unit.name));
            }
            if let Some(problem) = &unit.watch_problem {
                notes.push(format!("{note_prefix}{}: watch: {problem}", unit.name));
            }
            if let Some(what) = &unit.waiting_for {
                notes.push(format!("{note_prefix}{}: waiting for {what}", unit.name));
            }
            if let Some(job) = &unit.job {
                notes.push(format!("{note_prefix}{}: {}", unit.name, job_note(job)));
            }
            for instance in &unit.instances {
                let mut state = instance.state.to_string();
                if instance.draining && instance.state != InstanceState::Draining {
                    // Stopping, say: it was replaced all the same.
                    state.push_str(" (replaced)");
                }
                if let Some(health) = instance
                    .health
                    .as_ref()
                    .filter(|h| h.state == crate::protocol::HealthState::Failing)
                {
                    state.push_str(" (unhealthy)");
                    if let Some(reason) = &health.reason {
                        notes.push(format!(
                            "{note_prefix}{}[{}]: health: {reason}",
                            unit.name, instance.index
                        ));
                    }
                }
                let last = match (&instance.last_exit, &instance.status_text) {
                    (Some(exit), Some(text)) => format!("{exit}; status: {text}"),
                    (Some(exit), None) => exit.clone(),
                    (None, Some(text)) => format!("status: {text}"),
                    (None, None) => "-".into(),
                };
                self.instances.push(row(
                    host,
                    [
                        unit.name.clone(),
                        instance.index.to_string(),
                        instance.pid.map_or("-".into(), |p| p.to_string()),
                        state,
                        instance
                            .uptime_ms
                            .map_or("-".into(), |ms| format_uptime(Duration::from_millis(ms))),
                        instance
                            .cpu_percent
                            .map_or("-".into(), |p| format!("{p:.1}%")),
                        instance.memory_bytes.map_or("-".into(), format_bytes),
                        instance.restarts.to_string(),
                        last,
                    ],
                ));
            }
        }
        // `status UNIT`: why things happened, newest last.
        for unit in report.units.iter().filter(|u| !u.events.is_empty()) {
            let mut events = vec![vec!["WHEN".to_string(), "WHAT".into()]];
            for event in &unit.events {
                let who = match event.instance {
                    Some(i) => format!("{}[{i}]", unit.name),
                    None => unit.name.clone(),
                };
                events.push(vec![
                    format!("{} ago", format_uptime(Duration::from_millis(event.ago_ms))),
                    format!("{note_prefix}{who}: {}", event.text),
                ]);
            }
            self.tail.push('\n');
            self.tail.push_str(&table(&events));
        }
        if let Some(isolation) = &report.isolation {
            self.tail.push_str(&format!(
                "\n{note_prefix}instances isolated by {}\n",
                printable(isolation)
            ));
        }
        // Which clusterd answers, once it has been re-executed (after a package upgrade, the
        // binary on disk and the one running may differ until then).
        if let Some(daemon) = &report.daemon {
            if let Some(at) = daemon.reexecuted_at_seconds {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let ago = Duration::from_secs_f64((now - at).max(0.0));
                self.tail.push_str(&format!(
                    "{note_prefix}clusterd {} (pid {}), re-executed {} ago\n",
                    printable(&daemon.version),
                    daemon.pid,
                    format_uptime(ago)
                ));
            }
        }
    }
}

/// A one-shot's runs in a line: `last run 3m ago: run done: exited with code 0, after 1s;
/// 4 run(s), 1 failed; next in 57m (0 3 * * *)`.
fn job_note(job: &JobStatus) -> String {
    let ago = |ms: u64| format_uptime(Duration::from_millis(ms));
    let mut parts = Vec::new();
    match &job.last_run {
        None => parts.push("not run yet".to_string()),
        Some(run) => match &run.result {
            Some(result) => parts.push(format!(
                "last run {} ago: {result}",
                ago(run.started_ago_ms)
            )),
            None => parts.push(format!("running for {}", ago(run.started_ago_ms))),
        },
    }
    parts.push(format!("{} run(s), {} failed", job.runs, job.failures));
    if job.skipped > 0 {
        parts.push(format!("{} skipped (overlap)", job.skipped));
    }
    if let (Some(next), Some(schedule)) = (job.next_run_in_ms, &job.schedule) {
        parts.push(format!("next in {} ({schedule})", ago(next)));
    }
    parts.join("; ")
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    // Anything an instance can influence (its STATUS= text) is shown escaped, and the widths
    // are those of what is shown.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| printable(cell).into_owned())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `45s`, `12m 5s`, `3h 12m`, `2d 4h`: two units at most, enough to read at a glance.
pub fn format_uptime(uptime: Duration) -> String {
    let s = uptime.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// `512K`, `12.3M`, `1.2G`: memory, as `ps` and `top` show it.
fn format_bytes(bytes: u64) -> String {
    const K: f64 = 1024.0;
    let b = bytes as f64;
    if b < K * K {
        format!("{:.0}K", b / K)
    } else if b < K * K * K {
        format!("{:.1}M", b / K / K)
    } else {
        format!("{:.1}G", b / K / K / K)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{InstanceStatus, UnitStatus};

    #[test]
    fn uptimes_read_at_a_glance() {
        assert_eq!(format_uptime(Duration::from_secs(45)), "45s");
        assert_eq!(format_uptime(Duration::from_secs(725)), "12m 5s");
        assert_eq!(format_uptime(Duration::from_secs(3 * 3600 + 720)), "3h 12m");
        assert_eq!(
            format_uptime(Duration::from_secs(2 * 86400 + 4 * 3600)),
            "2d 4h"
        );
    }

    #[test]
    fn tables_align_columns() {
        let report = StatusReport {
            units: vec![UnitStatus {
                name: "web".into(),
                state: UnitState::Running,
                description: Some("demo".into()),
                restarts: 1,
                gave_up: false,
                wanted_instances: 1,
                error: None,
                log: Some("file /var/log/clusterd/web.log".into()),
                log_problem: None,
                watched_directories: None,
                watch_problem: None,
                cpu_percent: Some(2.5),
                memory_bytes: Some(12 << 20),
                events: Vec::new(),
                memory_replacements: 0,
                give_ups: 0,
                waiting_for: None,
                job: None,
                after: Vec::new(),
                health_replacements: 0,
                instances: vec![InstanceStatus {
                    index: 0,
                    pid: Some(4242),
                    state: InstanceState::Running,
                    restarts: 1,
                    uptime_ms: Some(5000),
                    last_exit: Some("exited with code 1".into()),
                    status_text: None,
                    draining: false,
                    cpu_percent: Some(2.5),
                    cpu_seconds: Some(0.1),
                    memory_bytes: Some(12 << 20),
                    health: None,
                }],
            }],
            isolation: None,
            daemon: None,
            stopping: false,
        };
        let text = render(&report);
        assert_eq!(
            text,
            "UNIT  STATE    INSTANCES  RESTARTS  CPU   MEM    LOG   DESCRIPTION\n\
             web   running  1/1        1         2.5%  12.0M  file  demo\n\
             \n\
             UNIT  #  PID   STATE    UPTIME  CPU   MEM    RESTARTS  LAST EXIT\n\
             web   0  4242  running  5s      2.5%  12.0M  1         exited with code 1\n"
        );
    }
}
