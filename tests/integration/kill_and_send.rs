//! `clusterctl kill` and `clusterctl send`: a signal to instances as the user asks (gunicorn's
//! documented `kill -HUP` reload, under clusterd), and a message a Node app receives with
//! `process.on('message')`.

use crate::common;

use std::fs;

use common::http_load::get;
use common::*;

/// A Node app that writes every message it receives, as JSON, to received.log.
const LISTENER_JS: &str = r#"
const fs = require('fs');
process.on('message', (message) => {
  fs.appendFileSync('received.log', JSON.stringify(message) + '\n');
});
fs.writeFileSync('up-' + process.env.CLUSTERD_INSTANCE, '');
setInterval(() => {}, 1000);
"#;

#[test]
fn send_reaches_a_node_app_as_its_message_event() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    fs::write(daemon.path("app.js"), LISTENER_JS).expect("write app.js");
    daemon.write_unit(
        "web",
        &format!(
            "command = [\"node\", \"{}\"]\ninstances = 2\n",
            toml_path(&daemon.path("app.js"))
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("both instances to listen for messages", PATIENCE, || {
        daemon.path("up-0").exists() && daemon.path("up-1").exists()
    });
    let out = daemon.ctl(&["send", "web", r#"{"topic": "reload-config", "n": 1}"#]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Text that is not JSON goes as a string: PM2's 'shutdown' message.
    let out = daemon.ctl(&["send", "web", "--instance", "1", "shutdown"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Sorted, as the lines are compared sorted: the instances write in any order.
    let expected = [
        r#""shutdown""#,
        r#"{"topic":"reload-config","n":1}"#,
        r#"{"topic":"reload-config","n":1}"#,
    ];
    wait_for("the messages to arrive", PATIENCE, || {
        let text = fs::read_to_string(daemon.path("received.log")).unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        lines == expected
    });
    // An instance that does not run: an error, exit 1.
    let out = daemon.ctl(&["send", "web", "--instance", "5", "{}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance 5 is not running"));
}

/// gunicorn's docs reload its workers with `kill -HUP <master>`; under clusterd that is
/// `clusterctl kill api --signal HUP`: new workers, the same master, no restart.
#[test]
fn kill_hup_makes_gunicorn_replace_its_workers_without_a_restart() {
    if !available(
        "gunicorn (Debian package gunicorn)",
        runs("gunicorn", &["--version"]),
    ) {
        return;
    }
    let daemon = Daemon::start(&[]);
    fs::write(
        daemon.path("app.py"),
        "import os\ndef app(environ, start_response):\n    body = b'%d\\n' % os.getpid()\n    start_response('200 OK', [('Content-Length', str(len(body)))])\n    return [body]\n",
    )
    .expect("write app.py");
    let port = free_port();
    daemon.write_unit(
        "api",
        &format!("command = \"gunicorn app:app\"\nlisten = [\"tcp://127.0.0.1:{port}\"]\n"),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let master = daemon.wait_running("api", 1);
    let mut worker = 0;
    wait_for("gunicorn to answer", PATIENCE, || {
        worker = get(port).unwrap_or(0);
        worker != 0
    });
    let out = daemon.ctl(&["kill", "api", "--signal", "HUP"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("a new gunicorn worker to answer", PATIENCE, || {
        get(port).is_ok_and(|pid| pid != worker)
    });
    assert_eq!(
        daemon.wait_running("api", 1),
        master,
        "the instance was restarted"
    );
    assert_eq!(daemon.unit("api")["restarts"], 0);
}

/// PM2's `shutdown_with_message`: the app shuts down when it receives `'shutdown'`, and
/// ignores SIGTERM (so only the message can have stopped it in time).
const SHUTDOWN_JS: &str = r#"
const fs = require('fs');
process.on('SIGTERM', () => {});
process.on('message', (message) => {
  if (message === 'shutdown') {
    fs.writeFileSync('got-shutdown', '');
    process.exit(0);
  }
});
fs.writeFileSync('up', '');
setInterval(() => {}, 1000);
"#;

#[test]
fn stop_message_stops_a_node_app_the_way_pm2_shutdown_with_message_does() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    fs::write(daemon.path("app.js"), SHUTDOWN_JS).expect("write app.js");
    daemon.write_unit(
        "web",
        &format!(
            "command = [\"node\", \"{}\"]\nstop_message = \"shutdown\"\nkill_timeout = \"20s\"\n",
            toml_path(&daemon.path("app.js"))
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("the app to listen for messages", PATIENCE, || {
        daemon.path("up").exists()
    });
    let started = std::time::Instant::now();
    let out = daemon.ctl(&["stop", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(daemon.path("got-shutdown").exists());
    // Well before kill_signal (10 s) or SIGKILL (20 s) would have come.
    assert!(started.elapsed() < std::time::Duration::from_secs(9));
    // The log thread writes clusterd's events a moment after they happen.
    wait_for("the log to say how it was stopped", PATIENCE, || {
        fs::read_to_string(daemon.log_dir().join("web.log"))
            .is_ok_and(|log| log.contains("(the message \"shutdown\")"))
    });
}

/// Records each signal it gets, by number, in got.log; traps 1, 10, 12, 15 and three
/// real-time signals.
const TRAPS_PY: &str = r#"
import os, signal, time
def record(number, frame):
    with open('got.log', 'a') as f:
        f.write('%d\n' % number)
for number in [1, 10, 12, 15, signal.SIGRTMIN, signal.SIGRTMIN + 2, signal.SIGRTMAX - 1]:
    signal.signal(number, record)
open('up', 'w').close()
while True:
    time.sleep(1)
"#;

/// Issue 18: `clusterctl kill --signal 15` (a number, as `kill -15` takes it) was refused.
/// Numbers from 1 to 64 (real-time signals too) and names with or without SIG are taken;
/// anything else is a usage error that says what to give, and nothing is signalled.
#[test]
fn kill_takes_signal_numbers_and_real_time_signals_as_kill_does() {
    if !available("python3", runs("python3", &["--version"])) {
        return;
    }
    let daemon = Daemon::start(&[]);
    fs::write(daemon.path("traps.py"), TRAPS_PY).expect("write traps.py");
    daemon.write_unit(
        "traps",
        &format!(
            "command = [\"python3\", \"{}\"]\n",
            toml_path(&daemon.path("traps.py"))
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let pid = daemon.wait_running("traps", 1)[0];
    wait_for("the traps to be set", PATIENCE, || {
        daemon.path("up").exists()
    });
    // SIGRTMIN is 34 under glibc: RTMIN+2 is 36, RTMAX-1 is 63.
    let mut expected = Vec::new();
    for (given, number, all) in [
        ("15", 15, false),
        ("1", 1, false),
        ("10", 10, true),
        ("sigusr2", 12, false),
        ("TERM", 15, false),
        ("34", 34, false),
        ("RTMIN+2", 36, true),
        ("SIGRTMAX-1", 63, false),
    ] {
        let mut args = vec!["kill", "traps", "--signal", given];
        if all {
            args.push("--all");
        }
        let out = daemon.ctl(&args);
        assert!(
            out.status.success(),
            "{given}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        expected.push(number.to_string());
        // One at a time: signals of one kind that are pending at once are delivered once.
        wait_for(&format!("signal {given} to arrive"), PATIENCE, || {
            fs::read_to_string(daemon.path("got.log"))
                .unwrap_or_default()
                .lines()
                .collect::<Vec<_>>()
                == expected
        });
    }
    for given in ["0", "65", "-15", "SIGNOPE", "RTMIN+99"] {
        let out = daemon.ctl(&["kill", "traps", "--signal", given]);
        assert_eq!(out.status.code(), Some(2), "{given}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("unknown signal") || given == "-15",
            "{given}: {stderr}"
        );
    }
    // The same instance, never restarted, and nothing more signalled.
    assert_eq!(daemon.pids("traps"), [pid]);
    assert_eq!(
        fs::read_to_string(daemon.path("got.log"))
            .unwrap_or_default()
            .lines()
            .count(),
        expected.len()
    );
}
