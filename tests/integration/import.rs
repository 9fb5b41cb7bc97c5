//! `clusterctl import`: a PM2 ecosystem file, written the way PM2's docs write them, becomes
//! unit files that `clusterd --check` accepts and clusterd runs.

use crate::common;

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
    let api = fs::read_to_string(daemon.units_dir().join("api.toml")).expect("api.toml");
    assert!(
        api.contains("instance_variable = \"APP_ID\"   # pm2: instance_var"),
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

/// A temporary directory that uid 65534 can enter and read (tempfile makes them 0700).
fn open_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 18: a `process.json` holding JavaScript was run by node, as root. A data file is
/// parsed whatever its name, never run, even with --allow-exec; JavaScript (.js) runs as
/// root only with --allow-exec, and as any other user as that user.
#[test]
fn data_files_never_run_and_javascript_runs_as_root_only_with_allow_exec() {
    use std::os::unix::process::CommandExt;
    if !available("node", runs("node", &["--version"])) || !have_root() {
        return;
    }
    let dir = open_dir();
    let marker = dir.path().join("ran");
    let run_it = format!(
        "require('fs').writeFileSync({}, 'ran') || 'app.js'",
        serde_json::to_string(&marker.display().to_string()).expect("a JSON string")
    );
    for name in ["process.json", "ecosystem.json5", "ecosystem.config"] {
        let file = dir.path().join(name);
        fs::write(
            &file,
            format!("{{apps: [{{name: 'x', script: {run_it}}}]}}\n"),
        )
        .expect("write");
        for extra in [&[][..], &["--allow-exec"][..]] {
            let out = import(&file, None, extra, None);
            let err = stderr_of(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {extra:?}: {err}");
            assert!(
                err.contains(&format!(
                    "{}: line 1, column 29: `require` is not a value",
                    file.display()
                )),
                "{name}: {err}"
            );
            assert!(!marker.exists(), "{name} {extra:?} ran");
        }
    }

    // JavaScript, as root: refused without --allow-exec, run with it.
    let js = dir.path().join("ecosystem.config.js");
    fs::write(
        &js,
        format!(
            "{};\nmodule.exports = {{ apps: [{{ name: 'uid-' + process.getuid(), script: 'app.js' }}] }};\n",
            run_it
        ),
    )
    .expect("write");
    let refused = import(&js, None, &[], None);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr_of(&refused).contains("runs it with node, as root"),
        "{}",
        stderr_of(&refused)
    );
    assert!(stderr_of(&refused).contains("--allow-exec"));
    assert!(!marker.exists(), "the .js ran without --allow-exec");
    let allowed = import(&js, None, &["--allow-exec"], None);
    assert!(allowed.status.success(), "{}", stderr_of(&allowed));
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("# ---- uid-0.toml ----"));
    assert!(marker.exists());
    // An ES module too; a timer the file leaves behind does not keep node from finishing.
    let mjs = dir.path().join("ecosystem.config.mjs");
    fs::write(
        &mjs,
        "setInterval(() => {}, 1000);\nexport default { apps: [{ name: 'm', script: 'm.js' }] };\n",
    )
    .expect("write");
    let out = import(&mjs, None, &["--allow-exec"], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("# ---- m.toml ----"));

    // Another user runs it as itself, without the flag.
    let js = dir.path().join("mine.config.js");
    fs::write(
        &js,
        "module.exports = { apps: [{ name: 'uid-' + process.getuid(), script: 'app.js' }] };\n",
    )
    .expect("write");
    let out = Command::new(copy_for_everyone(CLUSTERCTL, dir.path()))
        .arg("import")
        .arg(&js)
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run clusterctl as uid 65534");
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("# ---- uid-65534.toml ----"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A JavaScript ecosystem file that never finishes, or prints without end: node is killed
/// (with what it started), and clusterctl says why.
#[test]
fn node_that_never_finishes_or_floods_its_output_is_killed_with_what_it_started() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let pids = dir.path().join("pids");
    let hang = dir.path().join("hang.config.js");
    fs::write(
        &hang,
        format!(
            "const child = require('child_process').spawn('sleep', ['1000'], {{ stdio: 'ignore' }});\n\
             require('fs').writeFileSync({}, process.pid + ' ' + child.pid);\n\
             for (;;) {{}}\n",
            serde_json::to_string(&pids.display().to_string()).expect("a JSON string")
        ),
    )
    .expect("write");
    let started = std::time::Instant::now();
    let out = import(&hang, None, &["--allow-exec"], None);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("node did not finish evaluating it within 20 s, and was killed"),
        "{}",
        stderr_of(&out)
    );
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    let pids: Vec<u32> = fs::read_to_string(&pids)
        .expect("the pids")
        .split(' ')
        .map(|p| p.parse().expect("a pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    wait_for("node and its child to be gone", PATIENCE, || {
        pids.iter().all(|&pid| !alive(pid))
    });

    let flood = dir.path().join("flood.config.js");
    fs::write(
        &flood,
        "module.exports = { apps: [{ name: 'x', script: 'x'.repeat(32 << 20) }] };\n",
    )
    .expect("write");
    let out = import(&flood, None, &["--allow-exec"], None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("node printed more than 16 MiB evaluating it, and was killed"),
        "{}",
        stderr_of(&out)
    );
}

/// The keys a unit made by import may have; an app can add no other.
const IMPORTED_KEYS: &[&str] = &[
    "command",
    "working_directory",
    "watch",
    "watch_ignore",
    "kill_signal",
    "kill_timeout",
    "environment",
    "environments",
];

/// Issue 18: a key or value with a newline left its comment or string and added lines to the
/// unit (`on_giveup`, `user`, `environment_file`, `listen` were injected), and app names are
/// file names. A real hostile ecosystem file: every unit reads back as exactly what was
/// meant, every comment stays one line, every file lands in the output directory, and
/// `clusterd --check` accepts them all.
#[test]
fn hostile_names_keys_and_values_stay_in_their_strings_comments_and_directory() {
    use serde_json::json;
    let dir = tempfile::tempdir().expect("temp dir");
    // A real directory whose name would be a line of TOML.
    let cwd = dir
        .path()
        .join("srv\nenvironment_file = \"/etc/shadow\"\n[x]");
    fs::create_dir_all(cwd.join("lib\nuser = \"root\"")).expect("the app's directory");
    let cwd = cwd.display().to_string();
    let long = "é".repeat(100_000);
    let hostile_args = vec![
        "--a\nuser = \"root\"".to_string(),
        "'''".into(),
        "\"\"\"".into(),
        "]".into(),
        "[".into(),
        "=".into(),
        "\u{1}\u{7f}\u{9b}\u{2028}\u{202e}\r\n".into(),
        long.clone(),
    ];
    let plain = "line1\nline2 = \"x\"\n[environments.evil]\r\n'''\"\"\"\\\u{1b}[2J\u{2028}#";
    let on_giveup = "production\non_giveup = [\"sh\", \"-c\", \"touch /tmp/pwned\"]";
    let mut apps = vec![json!({
        "name": "web\non_giveup = [\"sh\", \"-c\", \"touch /tmp/pwned\"]\n[x]",
        "script": "server.js",
        "args": hostile_args,
        "cwd": cwd,
        "watch": ["lib\nuser = \"root\""],
        "ignore_watch": ["a/b\nenvironment_file = \"/etc/shadow\"", "node_modules\nlisten = 1"],
        "env": {
            "K\nlisten = [\"tcp://0.0.0.0:1\"]": "v",
            "NUL": "a\u{0}b",
            "PLAIN": plain,
            "Q\"]\n[x": 1,
        },
        "env_production": { "NODE_ENV": on_giveup },
        "env_evil\n[environment]\nLD_PRELOAD": { "X": "1" },
        "unknown\nuser = \"root\"\n# \u{2028}\u{202e}": 1,
        "cron_restart": "0 3 * * *\nuser = \"root\"",
    })];
    for name in [
        "../../etc/x",
        "/",
        ".",
        "",
        "a\u{0}b",
        &"x".repeat(5000),
        "[environment]",
        "'''",
        "é😀\u{202e}",
        "-..-etc-x",
    ] {
        apps.push(json!({"name": name, "script": "app.js", "cwd": "/"}));
    }
    let file = dir.path().join("hostile.json");
    fs::write(
        &file,
        serde_json::to_string_pretty(&json!({ "apps": apps })).expect("JSON"),
    )
    .expect("write");
    let units = dir.path().join("units");
    let out = import(&file, Some(&units), &[], None);
    assert!(out.status.success(), "{}", stderr_of(&out));

    let mut names: Vec<String> = fs::read_dir(&units)
        .expect("the units")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = [
        "web-on_giveup-----sh-----c----touch--tmp-pwned----x-",
        "-..-etc-x",
        "-",
        "app",
        "app-2",
        "a-b",
        &"x".repeat(100),
        "-environment-",
        "---",
        "----2",
        "-..-etc-x-2",
    ]
    .iter()
    .map(|n| format!("{n}.toml"))
    .collect();
    expected.sort();
    assert_eq!(names, expected);
    // Nothing was written anywhere else.
    let mut beside: Vec<String> = fs::read_dir(dir.path())
        .expect("the directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    beside.sort();
    assert_eq!(beside.len(), 3, "{beside:?}");

    for name in &names {
        let text = fs::read_to_string(units.join(name)).expect("a unit");
        let table: toml::Table =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        for key in table.keys() {
            assert!(
                IMPORTED_KEYS.contains(&key.as_str()),
                "{name}: {key}\n{text}"
            );
        }
        // The header: comment lines, one line each, nothing that ends or disguises a line.
        for line in text.lines().take_while(|l| !l.is_empty()) {
            assert!(line.starts_with('#'), "{name}: {line:?}");
            assert!(
                !line.chars().any(|c| (c.is_control() && c != '\t')
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}')),
                "{name}: {line:?}"
            );
        }
    }

    // The carrier reads back as exactly what it should be.
    let web = fs::read_to_string(units.join(expected_web())).expect("web");
    let table: toml::Table = toml::from_str(&web).expect("web parses");
    let mut command = vec!["node".to_string(), "server.js".to_string()];
    command.extend(hostile_args);
    let expected = toml::toml! {
        kill_signal = "SIGINT"
        kill_timeout = "1600ms"
    };
    let mut expected = expected;
    expected.insert(
        "command".into(),
        toml::Value::try_from(&command).expect("command"),
    );
    expected.insert("working_directory".into(), toml::Value::String(cwd.clone()));
    expected.insert(
        "watch".into(),
        toml::Value::try_from(["lib\nuser = \"root\""]).expect("watch"),
    );
    expected.insert(
        "watch_ignore".into(),
        toml::Value::try_from([
            "a/b\nenvironment_file = \"/etc/shadow\"",
            "node_modules\nlisten = 1",
        ])
        .expect("ignore"),
    );
    let mut environment = toml::Table::new();
    environment.insert("PLAIN".into(), toml::Value::String(plain.into()));
    environment.insert("Q\"]\n[x".into(), toml::Value::Integer(1));
    expected.insert("environment".into(), toml::Value::Table(environment));
    let mut production = toml::Table::new();
    production.insert("NODE_ENV".into(), toml::Value::String(on_giveup.into()));
    let mut environments = toml::Table::new();
    environments.insert("production".into(), toml::Value::Table(production));
    expected.insert("environments".into(), toml::Value::Table(environments));
    assert_eq!(table, expected, "{web}");
    for not_carried in [
        "#   env.K\\nlisten = [\"tcp://0.0.0.0:1\"]: not a variable name",
        "#   env.NUL: a NUL byte",
        "#   env_evil\\n[environment]\\nLD_PRELOAD: not an environment name",
        "#   unknown\\nuser = \"root\"\\n# \\u{2028}\\u{202e}: not a key PM2 reads",
    ] {
        assert!(web.contains(not_carried), "{not_carried}\n{web}");
    }

    // Every unit checks: the names are unit names, the values ones clusterd takes.
    assert_units_check(&units, "hostile.json");
}

fn expected_web() -> String {
    "web-on_giveup-----sh-----c----touch--tmp-pwned----x-.toml".into()
}

/// A symlink planted in the output directory is never written through: without --force it
/// counts as a file that exists (a dangling one too), with --force it is replaced.
#[test]
fn import_never_writes_through_a_symlink_in_the_output_directory() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("temp dir");
    let units = dir.path().join("units");
    fs::create_dir(&units).expect("units");
    let victim = dir.path().join("victim");
    fs::write(&victim, "secret").expect("victim");
    let created = dir.path().join("created");
    symlink(&victim, units.join("web.toml")).expect("symlink");
    symlink(&created, units.join("api.toml")).expect("dangling symlink");
    let file = dir.path().join("ecosystem.json");
    fs::write(
        &file,
        "{apps: [{name: 'api', script: 'api.js'}, {name: 'web', script: 'web.js'}]}",
    )
    .expect("write");

    let out = import(&file, Some(&units), &[], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("api.toml exists; nothing written (--force overwrites)"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "secret");
    assert!(!created.exists());

    let out = import(&file, Some(&units), &["--force"], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "secret");
    assert!(!created.exists());
    let mut left: Vec<String> = fs::read_dir(&units)
        .expect("units")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["api.toml", "web.toml"]);
    for name in left {
        let path = units.join(name);
        assert!(fs::symlink_metadata(&path)
            .expect("meta")
            .file_type()
            .is_file());
        assert!(fs::read_to_string(&path)
            .expect("unit")
            .contains("command = "));
    }
    assert_units_check(&units, "after --force");
}

/// Issue 18: a YAML file nested 1,000,000 deep killed clusterctl with a stack overflow.
/// YAML, JSON and JSON5 nested a million deep are an error naming the file and line.
#[test]
fn a_file_nested_a_million_deep_is_an_error_at_its_line_not_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let million = 1_000_000;
    let files = [
        (
            "deep.yml",
            format!(
                "apps:\n  - {}{}\n",
                "[".repeat(million),
                "]".repeat(million)
            ),
            "line 2: nested deeper than 128 levels",
        ),
        (
            "flow.yaml",
            format!("# flow style\n{}", "[".repeat(million)),
            "line 2, column 129: nested deeper than 128 levels",
        ),
        (
            "deep.json",
            format!(
                "{{\"apps\":\n{}{}}}",
                "[".repeat(million),
                "]".repeat(million)
            ),
            "line 2, column 128: nested deeper than 128 levels",
        ),
        (
            "deep.json5",
            format!("{{apps: {}", "{a:".repeat(million)),
            "line 1, column 389: nested deeper than 128 levels",
        ),
    ];
    for (name, text, error) in files {
        let file = dir.path().join(name);
        fs::write(&file, text).expect("write");
        let out = import(&file, None, &[], None);
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        assert!(
            stderr_of(&out).contains(&format!("{}: {error}", file.display())),
            "{name}: {}",
            stderr_of(&out)
        );
    }
}

/// A file larger than any ecosystem file (or one without end) is refused, not read into
/// memory.
#[test]
fn a_huge_or_endless_file_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let huge = dir.path().join("huge.json");
    fs::write(&huge, format!("{{\"apps\": []}}{}", " ".repeat(17 << 20))).expect("write");
    for file in [huge.as_path(), Path::new("/dev/zero")] {
        let out = import(file, None, &[], None);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr_of(&out).contains(&format!(
                "{}: larger than 16 MiB, which no ecosystem file is",
                file.display()
            )),
            "{}",
            stderr_of(&out)
        );
    }
}

/// Issue 18: 3,000 apps of one name took over 25 s to import (the renaming was quadratic).
/// They import quickly, each with a name of its own, the same names every time; and a
/// reader that closes clusterctl's output early does not crash it.
#[test]
fn three_thousand_apps_of_one_name_import_quickly_with_unique_stable_names() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut apps: Vec<serde_json::Value> = (0..3000)
        .map(|i| serde_json::json!({"name": "web", "script": format!("app{i}.js"), "cwd": "/"}))
        .collect();
    apps.insert(
        1,
        serde_json::json!({"name": "web-2", "script": "x.js", "cwd": "/"}),
    );
    let file = dir.path().join("ecosystem.json");
    fs::write(&file, serde_json::json!({ "apps": apps }).to_string()).expect("write");

    // Timed without the disk: printed (the old renaming took minutes here).
    let mut printed = Vec::new();
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let out = import(&file, None, &[], None);
        let took = started.elapsed();
        assert!(out.status.success(), "{}", stderr_of(&out));
        println!("3,001 apps imported (printed) in {took:?}");
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        printed.push(out.stdout);
    }
    assert!(
        printed[0] == printed[1],
        "two imports named the apps differently"
    );
    let text = String::from_utf8_lossy(&printed[0]);
    let names: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# ---- ")?.strip_suffix(".toml ----"))
        .collect();
    assert_eq!(names.len(), 3001);
    assert!(names.contains("web") && names.contains("web-3001"));

    let units = dir.path().join("units");
    let out = import(&file, Some(&units), &[], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let written: BTreeSet<String> = fs::read_dir(&units)
        .expect("units")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(written.len(), 3001);
    // The explicit web-2 keeps its name; the second "web" becomes web-3.
    let web_3 = fs::read_to_string(units.join("web-3.toml")).expect("web-3");
    assert!(web_3.contains("\"app1.js\""), "{web_3}");
    assert_units_check(&units, "3,001 apps");

    // Printed to a reader that is gone: no panic, the pipe's end is no error.
    let mut child = Command::new(CLUSTERCTL)
        .arg("import")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run clusterctl import");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait for clusterctl");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(!stderr_of(&out).contains("panicked"), "{}", stderr_of(&out));
}

/// An Express app as `express-generator` makes it and PM2 users start it: `bin/www` (no
/// extension, `#!/usr/bin/env node`) in cluster mode. PM2 runs it with node in cluster mode;
/// the import does the same (`node_cluster`), so two instances share the port instead of the
/// second crash-looping on EADDRINUSE. Express is npm's (target/test-npm, as node_cluster.rs).
const BIN_WWW: &str = r#"#!/usr/bin/env node
var app = require('../app');
var http = require('http');
var port = process.env.PORT || '3000';
app.set('port', port);
var server = http.createServer(app);
server.listen(port, '127.0.0.1');
server.on('error', function (error) {
  console.error('Port ' + port + ': ' + error.code);
  process.exit(1);
});
"#;

const EXPRESS_APP_JS: &str = r#"
var express = require('express');
var app = express();
app.get('/', function (req, res) { res.send(String(process.pid)); });
module.exports = app;
"#;

#[test]
fn an_express_bin_www_app_in_cluster_mode_imports_as_node_cluster_and_serves() {
    use std::os::unix::fs::PermissionsExt;
    let modules = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-npm/node_modules");
    if !available("node", runs("node", &["--version"]))
        || !available(
            "express in target/test-npm (npm install --prefix target/test-npm express@4)",
            modules.join("express").exists(),
        )
    {
        return;
    }
    let daemon = Daemon::start(&[]);
    let port = free_port();
    let app = daemon.path("app");
    fs::create_dir_all(app.join("bin")).expect("mkdir");
    fs::write(app.join("bin/www"), BIN_WWW).expect("bin/www");
    fs::set_permissions(app.join("bin/www"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::write(app.join("app.js"), EXPRESS_APP_JS).expect("app.js");
    let ecosystem = app.join("ecosystem.json");
    let apps = serde_json::json!({"apps": [{
        "name": "web", "script": "./bin/www", "exec_mode": "cluster", "instances": 2,
        "env": {"PORT": port, "NODE_PATH": modules.display().to_string()},
    }]});
    fs::write(&ecosystem, apps.to_string()).expect("ecosystem.json");
    let out = import(&ecosystem, Some(&daemon.units_dir()), &[], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = fs::read_to_string(daemon.units_dir().join("web.toml")).expect("web.toml");
    assert!(
        unit.contains("command = [\"node\", \"./bin/www\"]"),
        "{unit}"
    );
    assert!(unit.contains("node_cluster = true"), "{unit}");
    assert!(!unit.contains("Not carried over"), "{unit}");
    assert_units_check(&daemon.units_dir(), "bin/www");

    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success(),
        "{}",
        String::from_utf8_lossy(&reload.stderr)
    );
    let pids = daemon.wait_running("web", 2);
    // Both instances serve on the one port: neither died of EADDRINUSE.
    let mut served = std::collections::BTreeSet::new();
    wait_for("both instances to answer on the port", PATIENCE, || {
        use std::io::{Read, Write};
        let mut body = String::new();
        let answered = std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
                s.read_to_string(&mut body)
            })
            .is_ok();
        if answered {
            if let Some(pid) = body
                .rsplit("\r\n\r\n")
                .next()
                .and_then(|b| b.parse::<u32>().ok())
            {
                served.insert(pid);
            }
        }
        served.len() == 2
    });
    assert_eq!(
        daemon.wait_running("web", 2),
        pids,
        "an instance was restarted"
    );
    assert!(!daemon.log().contains("EADDRINUSE"), "{}", daemon.log());
}

/// `npm start` in cluster mode cannot be clustered (npm is not the server), and the import
/// says why and what to write instead (what package.json's script runs); in fork mode it
/// imports as the command it is.
#[test]
fn npm_start_in_cluster_mode_is_refused_with_what_to_write_instead() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("ecosystem.json");
    fs::write(
        &file,
        r#"{"apps": [{"name": "web", "script": "npm", "args": "start", "exec_mode": "cluster", "instances": 4,
            "node_args": "--max-old-space-size=512"}]}"#,
    )
    .expect("write");
    fs::write(
        dir.path().join("package.json"),
        r#"{"scripts": {"start": "node ./bin/www"}}"#,
    )
    .expect("package.json");
    let out = import(&file, None, &[], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("command = [\"npm\", \"start\"]"),
        "{stdout}"
    );
    assert!(!stdout.contains("node_cluster"), "{stdout}");
    assert!(
        stdout.contains("exec_mode: `npm` cannot be clustered: npm is not the server process"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cluster workers would be npm processes"),
        "{stdout}"
    );
    // What to write instead, from the app's own package.json.
    assert!(
        stdout.contains("here package.json's \"start\" runs `node ./bin/www`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("#   node_args: PM2 gives them to the node that runs the package manager"),
        "{stdout}"
    );
}

/// `stop_exit_codes` (PM2: an exit with one of these codes is not restarted, whatever
/// `autorestart` says) becomes `restart_prevent_exit_codes`: an app that exits with 3 stays
/// stopped without a crash; one that exits with 1 is restarted as PM2 restarts it.
#[test]
fn stop_exit_codes_keep_an_app_that_exits_with_them_stopped() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let app = daemon.path("app");
    fs::create_dir_all(&app).expect("mkdir");
    fs::write(
        app.join("quit.js"),
        "setTimeout(() => process.exit(Number(process.env.CODE)), 200);\n",
    )
    .expect("quit.js");
    let ecosystem = app.join("ecosystem.json");
    let apps = serde_json::json!({"apps": [
        {"name": "done", "script": "quit.js", "stop_exit_codes": [0, "3"], "env": {"CODE": 3}},
        {"name": "crashes", "script": "quit.js", "stop_exit_codes": [3], "env": {"CODE": 1},
         "restart_delay": 100},
    ]});
    fs::write(&ecosystem, apps.to_string()).expect("ecosystem.json");
    let out = import(&ecosystem, Some(&daemon.units_dir()), &[], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let unit = fs::read_to_string(daemon.units_dir().join("done.toml")).expect("done.toml");
    assert!(
        unit.contains("restart_prevent_exit_codes = [0, 3]"),
        "{unit}"
    );
    assert!(!unit.contains("Not carried over"), "{unit}");
    assert_units_check(&daemon.units_dir(), "stop_exit_codes");
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(reload.status.success(), "{}", stderr_of(&reload));
    wait_for("crashes to be restarted twice", PATIENCE, || {
        daemon.unit("crashes")["restarts"].as_u64().unwrap_or(0) >= 2
    });
    wait_for("done to stop after its exit with 3", PATIENCE, || {
        daemon
            .log()
            .contains("not restarting (exited with code 3: restart_prevent_exit_codes)")
    });
    let done = daemon.unit("done");
    assert_eq!(done["restarts"], 0, "{done}");
    assert_eq!(done["instances"][0]["state"], "stopped", "{done}");
    assert_eq!(done["gave_up"], false, "{done}");
}

/// `ignore_watch` paths and globs as PM2 (chokidar) reads them, relative to the app's
/// directory: a directory they match is not watched, a file they match is no change; a name
/// pattern matches at every depth. Seen in the watch's own counts and debug lines.
#[test]
fn ignore_watch_paths_and_globs_are_not_watched() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    let app = daemon.path("app");
    for dir in ["data/temp", "data/keep", "src/a/generated", "src/b"] {
        fs::create_dir_all(app.join(dir)).expect("mkdir");
    }
    fs::write(app.join("index.js"), "setInterval(() => {}, 1e9);\n").expect("index.js");
    let ecosystem = app.join("ecosystem.json");
    let apps = serde_json::json!({"apps": [{
        "name": "watched", "script": "index.js", "watch": true, "watch_delay": 200,
        "ignore_watch": ["data/temp", "*.log", "./src/**/generated", "[\\/\\\\]\\./"],
    }]});
    fs::write(&ecosystem, apps.to_string()).expect("ecosystem.json");
    let out = import(&ecosystem, Some(&daemon.units_dir()), &[], None);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let unit = fs::read_to_string(daemon.units_dir().join("watched.toml")).expect("unit");
    assert!(
        unit.contains(r#"watch_ignore = ["data/temp", "*.log", "./src/**/generated"]"#),
        "{unit}"
    );
    // The regular expression written as a string is listed, with what to write instead.
    assert!(
        unit.contains(
            r"#   ignore_watch: `[\\/\\\\]\\./`: watch_ignore takes name and path patterns"
        ),
        "{unit}"
    );
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(reload.status.success(), "{}", stderr_of(&reload));
    daemon.wait_running("watched", 1);
    // app, data, data/keep, src, src/a, src/b: not data/temp, not src/a/generated.
    wait_for("the tree to be watched", PATIENCE, || {
        daemon.unit("watched")["watched_directories"] == 6
    });
    fs::write(app.join("data/temp/cache.bin"), "x").expect("write");
    fs::write(app.join("src/b/debug.log"), "x").expect("write");
    fs::write(app.join("src/a/generated/x.js"), "x").expect("write");
    fs::write(app.join("src/b/app.js"), "x").expect("write");
    wait_for("the change of src/b/app.js to reload", PATIENCE, || {
        daemon
            .log()
            .contains("watched: watched files changed; reloading")
    });
    let log = daemon.log();
    assert!(log.contains("src/b/app.js changed"), "{log}");
    for ignored in ["cache.bin", "debug.log", "generated/x.js"] {
        assert!(
            !log.contains(&format!("{ignored} changed")),
            "{ignored}: {log}"
        );
    }
}
