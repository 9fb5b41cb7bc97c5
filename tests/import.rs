//! `clusterctl import`: a PM2 ecosystem file, written the way PM2's docs write them, becomes
//! unit files that `clusterd --check` accepts and clusterd runs.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// `clusterctl import [EXTRA...] [--out OUT] FILE`, with one more variable in its environment
/// if given (the ecosystem file below reads TEST_PORT).
fn import(file: &Path, out: Option<&Path>, extra: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut command = Command::new(CLUSTERCTL);
    command.arg("import").args(extra);
    if let Some(out) = out {
        command.arg("--out").arg(out);
    }
    if let Some((key, value)) = env {
        command.env(key, value);
    }
    command.arg(file).output().expect("run clusterctl import")
}

/// `clusterd --check --units UNITS` accepts every file (`context` names what they came from).
fn assert_units_check(units: &Path, context: &str) {
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(units)
        .output()
        .expect("clusterd --check");
    assert!(
        check.status.success(),
        "{context}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Three apps as PM2's ecosystem documentation shows them: a Node server in cluster mode, a
/// Python worker, and a shell script run as is.
const ECOSYSTEM: &str = r#"
module.exports = {
  apps: [
    {
      name: "api",
      script: "./server.js",
      instances: 2,
      exec_mode: "cluster",
      env: { NODE_ENV: "development", PORT: process.env.TEST_PORT },
      env_production: { NODE_ENV: "production" },
      max_memory_restart: "300M",
      watch: ["lib"],
      instance_var: "APP_ID",
    },
    {
      name: "worker",
      script: "worker.py",
      args: ["--queue", "mail"],
      exp_backoff_restart_delay: 100,
      kill_timeout: 3000,
    },
    {
      name: "ticker",
      script: "sh",
      args: "-c 'while :; do sleep 1; done'",
      interpreter: "none",
      cron_restart: "0 3 * * *",
    },
  ],
};
"#;

const SERVER_JS: &str = r#"
require('http').createServer((req, res) => res.end(process.env.NODE_ENV))
  .listen(+process.env.PORT, '127.0.0.1');
"#;

#[test]
fn a_pm2_ecosystem_file_becomes_units_that_check_and_run() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let port = free_port();
    let ecosystem = daemon.path("ecosystem.config.js");
    fs::write(&ecosystem, ECOSYSTEM).expect("write the ecosystem file");
    fs::write(daemon.path("server.js"), SERVER_JS).expect("server.js");
    fs::write(
        daemon.path("worker.py"),
        "import time\nwhile True:\n    time.sleep(1)\n",
    )
    .expect("worker.py");

    let out = import(
        &ecosystem,
        Some(&daemon.units_dir()),
        &["--env", "production", "--allow-exec"],
        Some(("TEST_PORT", &port.to_string())),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("api.toml; not carried over (see the file's header): instance_var"),
        "{stdout}"
    );
    let api = fs::read_to_string(daemon.units_dir().join("api.toml")).expect("api.toml");
    assert!(
        api.contains("#   instance_var: each instance gets CLUSTERD_INSTANCE"),
        "{api}"
    );
    assert!(api.contains("watch = [\"lib\"]   # pm2: watch"), "{api}");

    assert_units_check(&daemon.units_dir(), "ecosystem.config.js");

    // The units run: the Node app in cluster mode, with env_production merged.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    daemon.wait_running("api", 2);
    daemon.wait_running("worker", 1);
    daemon.wait_running("ticker", 1);
    let mut body = String::new();
    wait_for("the api to answer", PATIENCE, || {
        use std::io::{Read, Write};
        body.clear();
        std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                s.read_to_string(&mut body)
            })
            .is_ok()
            && body.ends_with("production")
    });

    // A second import does not overwrite without --force.
    let again = import(
        &ecosystem,
        Some(&daemon.units_dir()),
        &["--allow-exec"],
        None,
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; nothing written"));
}

/// PM2 reads its `.json` files leniently, and its own examples use that: unquoted keys,
/// comments, trailing commas, and the older `pm2` list instead of `apps`. JSON5 does all of
/// that, without node.
#[test]
fn a_lenient_json_ecosystem_file_as_pm2_writes_them_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("process.json");
    fs::write(
        &file,
        "{\n  // the old form\n  pm2: [\n    { name: 'echo', script: './echo.js', instances: 2, },\n  ],\n}\n",
    )
    .expect("write");
    let out = import(&file, None, &[], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# ---- echo.toml ----"), "{stdout}");
    assert!(
        stdout.contains("command = [\"node\", \"./echo.js\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("instances = 2"), "{stdout}");
}

/// PM2's own ecosystem files: the templates `pm2 init` writes and its sample apps, from its
/// npm package (`.ci/run` unpacks pm2 into target/test-npm/pm2). Each imports, and every
/// unit passes `clusterd --check`.
#[test]
fn pm2s_own_ecosystem_templates_and_sample_apps_import_and_check() {
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-npm/pm2/lib/templates");
    if !available("node", runs("node", &["--version"]))
        || !available(
            "PM2's package in target/test-npm/pm2 (npm pack pm2, unpacked)",
            templates.is_dir(),
        )
    {
        return;
    }
    let mut files: Vec<std::path::PathBuf> = fs::read_dir(&templates)
        .expect("templates")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tpl"))
        .collect();
    for app in fs::read_dir(templates.join("sample-apps"))
        .expect("sample apps")
        .flatten()
    {
        files.push(app.path().join("ecosystem.config.js"));
    }
    assert!(files.len() >= 7, "{files:?}");
    for file in files {
        // `pm2 init` writes a template out as ecosystem.config.js.
        let dir = tempfile::tempdir().expect("temp dir");
        let copy = dir.path().join("ecosystem.config.js");
        fs::copy(&file, &copy).expect("copy");
        let units = dir.path().join("units");
        let out = import(&copy, Some(&units), &["--allow-exec"], None);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_units_check(&units, &file.display().to_string());
    }
}

/// PM2's `process.yml` form, read without a YAML library: the subset those files use.
#[test]
fn a_process_yml_as_pm2s_examples_write_it_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("process.yml");
    fs::write(
        &file,
        "apps:\n  - name : 'HTTP-API'\n    script: 'apps/http.js'\n    instances: 'max'\n    max_memory_restart: '260M'\n    ignore_watch : ['node_modules']\n    env:\n      NODE_ENV : 'development'\n    env_production:\n      NODE_ENV : 'production'\n  - name : 'Checks'\n    script : 'apps/connection_check.sh'\n",
    )
    .expect("write");
    let units = dir.path().join("units");
    let out = import(&file, Some(&units), &[], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = fs::read_to_string(units.join("HTTP-API.toml")).expect("HTTP-API.toml");
    assert!(api.contains("memory_max = \"260MiB\""), "{api}");
    assert!(
        api.contains("[environments.production]\nNODE_ENV = \"production\""),
        "{api}"
    );
    let checks = fs::read_to_string(units.join("Checks.toml")).expect("Checks.toml");
    assert!(
        checks.contains("command = [\"bash\", \"apps/connection_check.sh\"]"),
        "{checks}"
    );
    assert_units_check(&units, "process.yml");
}
