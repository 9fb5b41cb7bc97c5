//! Real PM2 ecosystem files (tests/data/pm2_corpus: one file per public project, each with
//! its repository, path and commit; the apps as the file declares them, evaluated to data
//! and with secrets and hosts redacted) go through `clusterctl import`, and every unit made
//! passes `clusterd --check`. Each file is classified by what the unit files' headers list,
//! and the classification is held to tests/data/pm2_corpus/EXPECTED, so that a change that
//! drops more of what real files say fails here. The counts are printed for the record:
//! `cargo test --test integration pm2_corpus:: -- --nocapture`.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// PM2's log keys: kept as listed reasons until the unit has a `[log]` for them.
const LOG_KEYS: &[&str] = &[
    "out_file",
    "error_file",
    "err_file",
    "log_file",
    "log",
    "out",
    "output",
    "err",
    "error",
    "merge_logs",
    "combine_logs",
    "log_date_format",
    "log_type",
];

/// What importing one file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Every key carried over.
    Clean,
    /// Imported; the header lists only keys that need nothing under clusterd ("Not needed").
    Noted,
    /// Imported; among what is not carried over there are log keys only.
    LogsOnly,
    /// Imported; something else is not carried over.
    Dropped,
    /// No unit, or a unit `clusterd --check` rejects.
    Error,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Class::Clean => "clean",
            Class::Noted => "noted",
            Class::LogsOnly => "logs-only",
            Class::Dropped => "dropped",
            Class::Error => "error",
        }
    }
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pm2_corpus")
}

/// The keys a unit file's header lists under `heading`, up to the next blank comment line.
fn listed(unit: &str, heading: &str) -> Vec<String> {
    unit.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| l.starts_with("#   "))
        .map(|l| {
            let key = l.trim_start_matches("#   ").split(':').next().unwrap_or("");
            // `env.X` and `env_production.X` name variables of a table.
            key.to_string()
        })
        .collect()
}

/// Imports one corpus file into a fresh directory and classifies it; the second value says
/// why, for the table printed.
fn classify(file: &Path, scratch: &Path) -> (Class, String) {
    let text = fs::read_to_string(file).expect("read corpus file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("corpus file is JSON");
    let dir = scratch.join(file.file_stem().expect("a name"));
    let units = dir.join("units");
    fs::create_dir_all(&units).expect("mkdir");
    let ecosystem = dir.join("ecosystem.json");
    fs::write(&ecosystem, doc["ecosystem"].to_string()).expect("write ecosystem.json");
    let out = Command::new(CLUSTERCTL)
        .arg("import")
        .arg("--out")
        .arg(&units)
        .arg(&ecosystem)
        .output()
        .expect("run clusterctl import");
    if !out.status.success() {
        return (
            Class::Error,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        );
    }
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(&units)
        .output()
        .expect("clusterd --check");
    if !check.status.success() {
        return (
            Class::Error,
            format!("--check: {}", String::from_utf8_lossy(&check.stderr).trim()),
        );
    }
    let mut dropped = Vec::new();
    let mut noted = Vec::new();
    for entry in fs::read_dir(&units).expect("units").flatten() {
        let unit = fs::read_to_string(entry.path()).expect("read unit");
        dropped.extend(listed(&unit, "# Not carried over:"));
        noted.extend(listed(&unit, "# Not needed under clusterd:"));
    }
    dropped.sort();
    dropped.dedup();
    noted.sort();
    noted.dedup();
    let (logs, others): (Vec<String>, Vec<String>) = dropped
        .into_iter()
        .partition(|k| LOG_KEYS.contains(&k.as_str()));
    let class = if !others.is_empty() {
        Class::Dropped
    } else if !logs.is_empty() {
        Class::LogsOnly
    } else if !noted.is_empty() {
        Class::Noted
    } else {
        Class::Clean
    };
    let why = [
        (!others.is_empty()).then(|| format!("dropped: {}", others.join(", "))),
        (!logs.is_empty()).then(|| format!("logs: {}", logs.join(", "))),
        (!noted.is_empty()).then(|| format!("not needed: {}", noted.join(", "))),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join("; ");
    (class, why)
}

/// Every file of the corpus imports as EXPECTED says, and the units check.
#[test]
fn real_ecosystem_files_import_as_classified() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("the corpus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 60, "only {} corpus files", files.len());
    let expected: BTreeMap<String, String> = fs::read_to_string(dir.join("EXPECTED"))
        .expect("tests/data/pm2_corpus/EXPECTED")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (file, class) = l.split_once(' ')?;
            Some((file.to_string(), class.trim().to_string()))
        })
        .collect();
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut counts: BTreeMap<Class, usize> = BTreeMap::new();
    let mut got = Vec::new();
    let mut report = String::new();
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let (class, why) = classify(file, scratch.path());
        *counts.entry(class).or_default() += 1;
        report.push_str(&format!("{name:60} {:9} {why}\n", class.name()));
        got.push(format!("{name} {}", class.name()));
    }
    let total = files.len();
    let count = |c: Class| counts.get(&c).copied().unwrap_or(0);
    println!("{report}");
    println!(
        "pm2 corpus: {total} files: {} clean, {} with listed reasons ({} only keys clusterd needs not, {} only log keys, {} other keys dropped), {} errors",
        count(Class::Clean),
        count(Class::Noted) + count(Class::LogsOnly) + count(Class::Dropped),
        count(Class::Noted),
        count(Class::LogsOnly),
        count(Class::Dropped),
        count(Class::Error)
    );
    let differences: Vec<String> = got
        .iter()
        .filter(|line| {
            let (file, class) = line.split_once(' ').unwrap_or_default();
            expected.get(file).map(String::as_str) != Some(class)
        })
        .cloned()
        .collect();
    assert!(
        differences.is_empty(),
        "classification changed (update tests/data/pm2_corpus/EXPECTED if it improved):\n{}\n\n{report}",
        differences.join("\n")
    );
}

/// The test-npm directory `.ci/run` installs into (express, ts-node, typescript,
/// tsconfig-paths, @types/node, bun).
fn test_npm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-npm")
}

/// A server that answers every GET with its pid, on `PORT`, in the module system `kind`
/// (`"cjs"`, `"esm"` or `"ts"`).
fn pid_server(kind: &str) -> String {
    let serve = "http.createServer((_req, res) => res.end(String(process.pid))).listen(Number(process.env.PORT), '127.0.0.1');\n";
    match kind {
        "esm" => format!("import http from 'node:http';\n{serve}"),
        "ts" => format!("import * as http from 'http';\n{serve}"),
        _ => format!("#!/usr/bin/env node\nconst http = require('http');\n{serve}"),
    }
}

/// `n` consecutive free ports on loopback (for `increment_var: "PORT"`), below the kernel's
/// ephemeral range: every `connect()` of the other tests takes its local port from that
/// range, so `n` ports next to one that `bind(0)` gave were often taken by the time they were
/// looked at, on a busy machine every time for 20 s.
fn free_ports(n: u16) -> u16 {
    let ephemeral_low: u16 = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(n).max(10_001));
    // A different start for each test process and call, so parallel tests seldom meet.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id();
    let mut base = low + (seed % u32::from(high - low)) as u16;
    let mut found = None;
    wait_for("consecutive free ports", PATIENCE, || {
        base = if base + n >= high { low } else { base + n };
        let all_free = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            found = Some(base);
        }
        all_free
    });
    found.expect("free ports")
}

/// One corpus file's app as the test runs it: the file's ecosystem with `changes` merged
/// into its (only) app, imported from `dir` into the daemon's units.
fn import_corpus_app(daemon: &Daemon, file: &str, dir: &Path, changes: serde_json::Value) {
    let text = fs::read_to_string(corpus_dir().join(file)).expect("corpus file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut ecosystem = doc["ecosystem"].clone();
    let app = ecosystem["apps"][0].as_object_mut().expect("one app");
    for (key, value) in changes.as_object().expect("an object") {
        match (app.get_mut(key), value) {
            (Some(serde_json::Value::Object(old)), serde_json::Value::Object(new)) => {
                old.extend(new.clone())
            }
            _ => {
                app.insert(key.clone(), value.clone());
            }
        }
    }
    import_app(daemon, file, dir, &ecosystem);
}

/// `ecosystem` written into `dir` and imported into the daemon's units (`what`: for
/// messages).
fn import_app(daemon: &Daemon, what: &str, dir: &Path, ecosystem: &serde_json::Value) {
    let path = dir.join("ecosystem.json");
    fs::write(&path, ecosystem.to_string()).expect("ecosystem.json");
    let out = Command::new(CLUSTERCTL)
        .arg("import")
        .arg("--out")
        .arg(daemon.units_dir())
        .arg(&path)
        .output()
        .expect("clusterctl import");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every instance of `unit` (`count` of them) answers on `port`: the cluster shares it.
fn every_instance_answers(daemon: &Daemon, unit: &str, count: usize, port: u16) {
    let pids: std::collections::BTreeSet<u32> =
        daemon.wait_running(unit, count).into_iter().collect();
    let mut served = std::collections::BTreeSet::new();
    wait_for(
        &format!("each of {unit}'s {count} instances to answer on port {port}"),
        PATIENCE,
        || {
            if let Ok(pid) = common::http_load::get(port) {
                served.insert(pid);
            }
            served == pids
        },
    );
}

/// Representative corpus apps, imported as their files say (only the port is the test's)
/// with the code their `script` names written for them, run under a real clusterd and
/// answer HTTP: `./bin/www` in cluster mode with PM2's restart and log keys (NOMLT),
/// `./index.mjs` in cluster mode (crawler), `script: "ts-node"` with `-r
/// tsconfig-paths/register ./src/app.ts` in cluster mode (monitor-backend), bun in cluster
/// mode on an `.mjs` (masters), and `increment_var: "PORT"` over three forked instances
/// (Docker-node); and `node_args: ["-r", "ts-node/register"]` in cluster mode. Express's own `bin/www` is import.rs's
/// `an_express_bin_www_app_in_cluster_mode_imports_as_node_cluster_and_serves`.
#[test]
fn representative_corpus_apps_run_and_answer_http() {
    use std::os::unix::fs::PermissionsExt;
    let npm = test_npm();
    let bin = npm.join("node_modules/.bin");
    if !available("node", runs("node", &["--version"]))
        || !available(
            "ts-node, typescript, tsconfig-paths, @types/node and bun in target/test-npm (npm install --prefix target/test-npm ts-node@10 typescript@5 tsconfig-paths@4 @types/node@20 bun@1.4.4)",
            ["ts-node", "tsc", "bun"].iter().all(|b| bin.join(b).exists())
                && npm.join("node_modules/tsconfig-paths").exists()
                && npm.join("node_modules/@types/node").exists(),
        )
    {
        return;
    }
    let daemon = Daemon::start(&[]);
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let app_dir = |name: &str| {
        let dir = daemon.path(name);
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    };
    let write = |path: PathBuf, text: &str| {
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    };

    // NOMLT: ./bin/www, cluster, /dev/null logs, max_restarts with min_uptime, ...
    let www_port = free_port();
    let www = app_dir("nomlt");
    write(www.join("bin/www"), &pid_server("cjs"));
    import_corpus_app(
        &daemon,
        "60-ZilatAIOBC--NOMLT.json",
        &www,
        serde_json::json!({"env": {"PORT": www_port}, "instances": 2}),
    );

    // crawler: ./index.mjs, cluster, instances max.
    let mjs_port = free_port();
    let mjs = app_dir("crawler");
    write(mjs.join("index.mjs"), &pid_server("esm"));
    import_corpus_app(
        &daemon,
        "24-68publishers--crawler.json",
        &mjs,
        serde_json::json!({"env": {"PORT": mjs_port}, "instances": 2}),
    );

    // monitor-backend: script ts-node, args -r tsconfig-paths/register ./src/app.ts.
    let ts_port = free_port();
    let ts = app_dir("monitor-backend");
    write(ts.join("src/app.ts"), &pid_server("ts"));
    write(
        ts.join("tsconfig.json"),
        r#"{"compilerOptions": {"module": "commonjs", "target": "es2020", "esModuleInterop": true, "types": ["node"]}}"#,
    );
    std::os::unix::fs::symlink(npm.join("node_modules"), ts.join("node_modules"))
        .expect("node_modules");
    import_corpus_app(
        &daemon,
        "19-AlanGuo--monitor-backend.json",
        &ts,
        serde_json::json!({"env": {"PORT": ts_port, "PATH": path}}),
    );

    // Not from the corpus (none of its files does it), PM2's documented TypeScript way:
    // node_args -r ts-node/register, cluster mode.
    let register_port = free_port();
    let register = app_dir("register");
    write(register.join("src/main.ts"), &pid_server("ts"));
    fs::copy(ts.join("tsconfig.json"), register.join("tsconfig.json")).expect("tsconfig");
    std::os::unix::fs::symlink(npm.join("node_modules"), register.join("node_modules"))
        .expect("node_modules");
    import_app(
        &daemon,
        "node_args -r ts-node/register",
        &register,
        &serde_json::json!({"apps": [{
            "name": "register", "script": "src/main.ts", "node_args": ["-r", "ts-node/register"],
            "exec_mode": "cluster", "instances": 2, "env": {"PORT": register_port},
        }]}),
    );

    // masters: interpreter bun, ./.output/server/index.mjs, cluster, 4 instances.
    let bun_port = free_port();
    let bun = app_dir("masters");
    write(bun.join(".output/server/index.mjs"), &pid_server("esm"));
    import_corpus_app(
        &daemon,
        "58-aliddy23--masters.json",
        &bun,
        serde_json::json!({"port": bun_port.to_string(), "env": {"PATH": path}}),
    );

    // Docker-node: script node, args index.js, fork, 3 instances, increment_var PORT.
    let base = free_ports(3);
    let forked = app_dir("docker-node");
    write(forked.join("index.js"), &pid_server("cjs"));
    import_corpus_app(
        &daemon,
        "36-srikanth-karthi--Docker-node.json",
        &forked,
        serde_json::json!({"env": {"PORT": base}}),
    );

    let units = daemon.units_dir();
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(&units)
        .output()
        .expect("clusterd --check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&reload.stderr),
        daemon.log()
    );

    every_instance_answers(&daemon, "backend", 2, www_port);
    every_instance_answers(&daemon, "crawler", 2, mjs_port);
    every_instance_answers(&daemon, "newonlyfans-backend", 1, ts_port);
    every_instance_answers(&daemon, "register", 2, register_port);
    every_instance_answers(&daemon, "masters", 4, bun_port);
    let pids = daemon.wait_running("server-cluster", 3);
    for i in 0..3 {
        let port = base + i;
        let mut pid = None;
        wait_for(
            &format!("server-cluster to answer on PORT {port}"),
            PATIENCE,
            || {
                pid = common::http_load::get(port).ok();
                pid.is_some()
            },
        );
        assert!(pid.is_some_and(|p| pids.contains(&p)), "{pid:?} {pids:?}");
    }
    let log = daemon.log();
    assert!(!log.contains("EADDRINUSE"), "{log}");
    assert!(!log.contains("malformed message"), "{log}");
    for unit in [
        "backend",
        "crawler",
        "newonlyfans-backend",
        "register",
        "masters",
        "server-cluster",
    ] {
        assert_eq!(daemon.unit(unit)["restarts"], 0, "{unit} restarted:\n{log}");
    }
}
