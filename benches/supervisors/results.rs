//! Results: the values of every run, the rows of the table, the Markdown and JSON reports.

use super::*;

#[derive(Default)]
pub(super) struct Results {
    /// metric key → peer → one value per run.
    pub(super) values: BTreeMap<String, BTreeMap<Peer, Vec<f64>>>,
    pub(super) notes: Vec<String>,
    pub(super) clusterd_failed: bool,
}

impl Results {
    pub(super) fn add(&mut self, key: &str, peer: Peer, v: f64) {
        self.values
            .entry(key.to_string())
            .or_default()
            .entry(peer)
            .or_default()
            .push(v);
    }
    pub(super) fn fail(&mut self, peer: Peer, what: &str, e: String) {
        let msg = format!("{} {what}: {e}", peer.name());
        eprintln!("supervisors: FAILED {msg}");
        if peer == Peer::Clusterd {
            self.clusterd_failed = true;
        }
        self.notes.push(msg);
    }
    pub(super) fn median(&self, key: &str, peer: Peer) -> Option<f64> {
        let v = self.values.get(key)?.get(&peer)?;
        (!v.is_empty()).then(|| percentile(v, 0.5))
    }
}

pub(super) enum Target {
    None,
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
    /// At least the median of the given peer.
    AtLeastPeer(Peer),
}

pub(super) struct Row {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) target: Target,
    pub(super) target_text: &'static str,
    pub(super) digits: usize,
}

pub(super) const ROWS: &[Row] = &[
    Row {
        key: "rss10",
        label: "daemon RSS, 10 instances (MiB)",
        target: Target::AtMost(3.0),
        target_text: "≤ 3",
        digits: 2,
    },
    Row {
        key: "pss10",
        label: "daemon PSS, 10 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "rss1000",
        label: "daemon RSS, 1000 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 1,
    },
    Row {
        key: "pss1000",
        label: "daemon PSS, 1000 instances (MiB)",
        target: Target::None,
        target_text: "",
        digits: 1,
    },
    Row {
        key: "idle_csw",
        label: "idle context switches / 30 s (10 inst., all threads)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "idle_cpu",
        label: "idle CPU utime+stime / 30 s (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "idle_sched",
        label: "idle on-CPU time / 30 s, schedstat (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_p50",
        label: "restart latency p50 (ms)",
        target: Target::AtMost(1.0),
        target_text: "≤ 1",
        digits: 2,
    },
    Row {
        key: "restart_p90",
        label: "restart latency p90 (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "floor_p50",
        label: "restart latency p50 of a minimal C supervisor, same run (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_vs_floor",
        label: "clusterd restart p50 / C floor, same run",
        target: Target::AtMost(1.2),
        target_text: "≤ 1.2",
        digits: 2,
    },
    Row {
        key: "floor_supervisor_p50",
        label: "restart latency p50 of the minimal C supervisor in a process of its own, killed by the bench like the others (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_vs_floor_supervisor",
        label: "clusterd restart p50 / that C supervisor, same run",
        // Issue 20: at most 1.1x the same minimal supervisor, killed and timed the same way.
        target: Target::AtMost(1.1),
        target_text: "≤ 1.1",
        digits: 2,
    },
    Row {
        key: "featured_floor_p50",
        label: "restart latency p50 of that C supervisor giving each worker what clusterd gives each instance: a cgroup, captured stdout and stderr, a channel (ms)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "restart_vs_featured_floor",
        label: "clusterd restart p50 / that C supervisor with a cgroup, output pipes and a channel per worker, same run",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "log_mbs",
        label: "log capture, 200 MB of 100-byte lines into the log file (MB/s; clusterd timestamped, supervisord has no timestamps)",
        target: Target::AtLeastPeer(Peer::Supervisord),
        target_text: "≥ supervisord",
        digits: 0,
    },
    Row {
        key: "log_cat",
        label: "`writer | cat > file`, same run (MB/s)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "log_cat_cpu",
        label: "`cat`'s CPU for the same 200 MB, same run (ms; all of it the kernel's)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "log_vs_cat",
        label: "log capture / `writer | cat > file` (clusterd timestamped)",
        target: Target::AtLeast(0.8),
        target_text: "≥ 0.8",
        digits: 2,
    },
    Row {
        key: "log_cpu",
        label: "daemon CPU for the 200 MB (ms; clusterd timestamped)",
        target: Target::AtMost(150.0),
        target_text: "≤ 150",
        digits: 0,
    },
    Row {
        key: "log_mbs_untimed",
        label: "log capture, clusterd `timestamps = false` (MB/s)",
        target: Target::AtLeastPeer(Peer::Supervisord),
        target_text: "≥ supervisord",
        digits: 0,
    },
    Row {
        key: "log_vs_cat_untimed",
        label: "clusterd `timestamps = false` / `writer | cat > file`",
        target: Target::AtLeast(1.0),
        target_text: "≥ 1.0",
        digits: 2,
    },
    Row {
        key: "log_cpu_untimed",
        label: "daemon CPU for the 200 MB, clusterd `timestamps = false` (ms)",
        target: Target::AtMost(150.0),
        target_text: "≤ 150",
        digits: 0,
    },
    Row {
        key: "log_rss",
        label: "daemon RSS growth during the 200 MB (MiB)",
        target: Target::Below(2.0),
        target_text: "< 2",
        digits: 2,
    },
    Row {
        key: "log_follow",
        label: "a line's way to `clusterctl logs --follow`, p50 (ms)",
        target: Target::AtMost(10.0),
        target_text: "≤ 10",
        digits: 2,
    },
    Row {
        key: "memlimit",
        label: "memory_max: above the limit → replacement running (ms; check every 1 s)",
        target: Target::AtMost(1050.0),
        target_text: "≤ interval + 50",
        digits: 0,
    },
    Row {
        key: "health_watchdog",
        label: "watchdog: last `WATCHDOG=1` → replacement running (ms; watchdog 1 s)",
        target: Target::AtMost(1150.0),
        target_text: "≤ watchdog + start + 50",
        digits: 0,
    },
    Row {
        key: "health_http",
        label: "HTTP check: answers 500 → replacement running (ms; interval 1 s, failures 1)",
        target: Target::AtMost(1150.0),
        target_text: "≤ interval + start + 50",
        digits: 0,
    },
    Row {
        key: "watchdog_idle_csw",
        label: "context switches / 30 s, 200 instances pinging every 5 s, watchdog 10 s (1200 pings)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "watchdog_off_idle_csw",
        label: "the same 200 pinging instances without a watchdog (pings ignored)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "watch_idle_csw",
        label: "idle context switches / 30 s, 200 instances (all threads)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "watch_idle_cpu",
        label: "idle CPU / 30 s, 200 instances (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "reexec_pause",
        label: "daemon-reexec, 1000 instances: control socket unanswered, as clusterd reports it (ms)",
        target: Target::AtMost(50.0),
        target_text: "≤ 50",
        digits: 1,
    },
    Row {
        key: "reexec_slowest_answer",
        label: "daemon-reexec, 1000 instances: slowest answer to a client asking all along (ms)",
        target: Target::AtMost(50.0),
        target_text: "≤ 50",
        digits: 1,
    },
    Row {
        key: "reexec_round_trip",
        label: "daemon-reexec, 1000 instances: `clusterctl daemon-reexec`, pre-flight included (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "jobs_idle_csw_none",
        label: "idle context switches / 30 s, one service (all threads)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "jobs_idle_csw_100",
        label: "idle context switches / 30 s, one service + 100 scheduled one-shots",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "jobs_idle_csw_none_cpu",
        label: "idle CPU / 30 s, one service (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "jobs_idle_csw_100_cpu",
        label: "idle CPU / 30 s, one service + 100 scheduled one-shots (ms)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "watch_top_cpu",
        label: "daemon CPU with `clusterctl top` attached, 200 instances (% of a CPU)",
        target: Target::Below(1.0),
        target_text: "< 1",
        digits: 2,
    },
    Row {
        key: "watch_top_csw",
        label: "daemon context switches / 30 s with `top` attached",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "watch_top_self_cpu",
        label: "`clusterctl top`'s own CPU, 200 instances (% of a CPU)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "py_uvicorn_clusterd",
        label: "uvicorn, 2 instances on clusterd's socket (req/s, wrk -c50 keep-alive)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "py_uvicorn_clusterd_nagle",
        label: "the same with `listen_options = { nodelay = false }` (req/s)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "py_uvicorn_own",
        label: "`uvicorn --workers 2`, its own master (req/s)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "py_uvicorn_ratio",
        label: "uvicorn under clusterd / under its own master",
        target: Target::AtLeast(0.9),
        target_text: "≥ 0.9",
        digits: 2,
    },
    Row {
        key: "py_gunicorn_clusterd",
        label: "gunicorn, 2 instances of 1 worker on clusterd's socket (req/s)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "py_gunicorn_own",
        label: "`gunicorn --workers 2`, its own master (req/s)",
        target: Target::None,
        target_text: "",
        digits: 0,
    },
    Row {
        key: "py_gunicorn_ratio",
        label: "gunicorn under clusterd / under its own master",
        target: Target::AtLeast(0.9),
        target_text: "≥ 0.9",
        digits: 2,
    },
    Row {
        key: "mass",
        label: "start → 1000th instance started (s)",
        target: Target::AtMost(0.3),
        target_text: "≤ 0.3",
        digits: 3,
    },
    Row {
        key: "mass_floor",
        label: "the same start by the minimal C supervisor (fork + exec in a loop), same run (s)",
        target: Target::None,
        target_text: "",
        digits: 3,
    },
    Row {
        key: "mass_vs_floor",
        label: "clusterd's start of 1000 / the C supervisor's, same run",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "mass_featured_floor",
        label: "the same start by the C supervisor with a cgroup, output pipes and a channel per worker, same run (s)",
        target: Target::None,
        target_text: "",
        digits: 3,
    },
    Row {
        key: "mass_vs_featured_floor",
        label: "clusterd's start of 1000 / that C supervisor's, same run",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "ctl10",
        label: "control round trip, 10 inst. (ms; `clusterctl status --json` with CPU and memory)",
        target: Target::AtMost(5.0),
        target_text: "≤ 5",
        digits: 1,
    },
    Row {
        key: "ctl1000",
        label: "control round trip, 1000 inst. (ms; same)",
        target: Target::AtMost(10.0),
        target_text: "≤ 10",
        digits: 1,
    },
    Row {
        key: "http_shared",
        label: "HTTP req/s, 2 inst. (clusterd: shared)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_reuseport",
        label: "HTTP req/s, 2 inst. (clusterd: reuseport)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_node_rr",
        label: "HTTP req/s, 2 inst. (clusterd: node_cluster round-robin)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "http_node_shared",
        label: "HTTP req/s, 2 inst. (clusterd: node_cluster shared)",
        target: Target::AtLeastPeer(Peer::NodeCluster),
        target_text: "≥ Node",
        digits: 0,
    },
    Row {
        key: "reload_fail_shared",
        label: "failed requests, 2 reloads under load (clusterd: shared)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_reuseport",
        label: "failed requests, 2 reloads under load (clusterd: reuseport)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_node_rr",
        label: "failed requests, 2 reloads under load (clusterd: node_cluster round-robin)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_fail_node_shared",
        label: "failed requests, 2 reloads under load (clusterd: node_cluster shared)",
        target: Target::AtMost(0.0),
        target_text: "0",
        digits: 0,
    },
    Row {
        key: "reload_secs_shared",
        label: "duration of one reload (s) (clusterd: shared)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_reuseport",
        label: "duration of one reload (s) (clusterd: reuseport)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_node_rr",
        label: "duration of one reload (s) (clusterd: node_cluster round-robin)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
    Row {
        key: "reload_secs_node_shared",
        label: "duration of one reload (s) (clusterd: node_cluster shared)",
        target: Target::None,
        target_text: "",
        digits: 2,
    },
];

/// Which peers have a value in the reload rows (PM2's single figure is shown in both).
pub(super) fn peer_key(row_key: &str, peer: Peer) -> String {
    if peer != Peer::Clusterd {
        for (prefix, shared) in [
            ("http_", "http"),
            ("reload_fail_", "reload_fail"),
            ("reload_secs_", "reload_secs"),
            // The peers' log capture, beside clusterd's `timestamps = false` rows.
            ("log_mbs_", "log_mbs"),
            ("log_vs_cat_", "log_vs_cat"),
            ("log_cpu_", "log_cpu"),
        ] {
            if row_key.starts_with(prefix) {
                return shared.to_string();
            }
        }
    }
    row_key.to_string()
}

pub(super) fn fmt_num(v: f64, digits: usize) -> String {
    if v.abs() >= 10_000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.digits$}")
    }
}

pub(super) fn cell(r: &Results, row: &Row, peer: Peer) -> Option<(f64, String)> {
    let v = r.values.get(&peer_key(row.key, peer))?.get(&peer)?;
    if v.is_empty() {
        return None;
    }
    let med = percentile(v, 0.5);
    let (lo, hi) = (percentile(v, 0.0), percentile(v, 1.0));
    let text = if v.len() > 1 {
        format!(
            "{} [{}–{}]",
            fmt_num(med, row.digits),
            fmt_num(lo, row.digits),
            fmt_num(hi, row.digits)
        )
    } else {
        fmt_num(med, row.digits)
    };
    Some((med, text))
}

pub(super) fn render_table(r: &Results, opts: &Opts) -> String {
    // Peers that were skipped or measured nothing get no column.
    let peers: Vec<Peer> = PEERS
        .iter()
        .copied()
        .filter(|&p| {
            p == Peer::Clusterd
                || (opts.peer_on(p) && r.values.values().any(|m| m.contains_key(&p)))
        })
        .collect();
    let mut out = String::new();
    out.push_str("| metric | target |");
    for p in &peers {
        out.push_str(&format!(" {} |", p.name()));
    }
    for p in peers.iter().skip(1) {
        out.push_str(&format!(" clusterd/{} |", p.name()));
    }
    out.push_str(" target met |\n|---|---|");
    for _ in 0..(peers.len() * 2 - 1) {
        out.push_str("---:|");
    }
    out.push_str(":-:|\n");
    for row in ROWS {
        let cells: Vec<Option<(f64, String)>> = peers.iter().map(|&p| cell(r, row, p)).collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        out.push_str(&format!("| {} | {} |", row.label, row.target_text));
        for c in &cells {
            out.push_str(&format!(
                " {} |",
                c.as_ref().map_or("–".to_string(), |c| c.1.clone())
            ));
        }
        let cd = cells[0].as_ref().map(|c| c.0);
        for c in cells.iter().skip(1) {
            let ratio = match (cd, c.as_ref().map(|c| c.0)) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.3}", a / b),
                _ => "–".into(),
            };
            out.push_str(&format!(" {ratio} |"));
        }
        let met = match (&row.target, cd) {
            (Target::AtMost(t), Some(v)) => {
                if v <= *t + 1e-9 {
                    "yes"
                } else {
                    "**no**"
                }
            }
            (Target::AtLeast(t), Some(v)) => {
                if v >= *t - 1e-9 {
                    "yes"
                } else {
                    "**no**"
                }
            }
            (Target::Below(t), Some(v)) => {
                if v < *t {
                    "yes"
                } else {
                    "**no**"
                }
            }
            (Target::AtLeastPeer(p), Some(v)) => match r.median(&peer_key(row.key, *p), *p) {
                Some(peer_v) if v >= peer_v => "yes",
                Some(_) => "**no**",
                None => "?",
            },
            _ => "",
        };
        out.push_str(&format!(" {met} |\n"));
    }
    out
}

pub(super) fn results_json(r: &Results, opts: &Opts, machine: &Value) -> Value {
    let mut rows = Vec::new();
    for row in ROWS {
        let mut vals = serde_json::Map::new();
        for p in PEERS {
            if let Some(v) = r.values.get(&peer_key(row.key, p)).and_then(|m| m.get(&p)) {
                if !v.is_empty() {
                    vals.insert(
                        p.key().into(),
                        json!({"median": percentile(v, 0.5), "min": percentile(v, 0.0),
                               "max": percentile(v, 1.0), "runs": v}),
                    );
                }
            }
        }
        rows.push(json!({"key": row.key, "label": row.label, "values": vals}));
    }
    json!({"machine": machine, "runs": opts.runs, "rows": rows, "notes": r.notes})
}
