//! The worker channel: a worker that announces its exit (`{"act":"suicide"}`) gets its
//! replacement at once and time to drain; garbage on the channel is ignored.

use crate::common;
use common::*;

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("clusterd-suicide-")
        .tempdir()
        .expect("scratch dir")
}

/// The first process of the unit (the one that creates `first`) announces its exit on the
/// channel, then drains until the test creates `release` (20 s at most) and exits 0. Later
/// processes just run. Every process logs `start PID`; the first also `suicide PID` and
/// `drained PID` to events.log.
const DRAINING_PY: &str = r#"
import os, sys, time
d = sys.argv[1]
pid = os.getpid()
def log(line):
    with open(os.path.join(d, "events.log"), "a") as f:
        f.write(line + "\n")
log("start %d" % pid)
try:
    os.close(os.open(os.path.join(d, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    first = True
except FileExistsError:
    first = False
if first:
    os.write(int(os.environ["CLUSTERD_CHANNEL_FD"]), b'{"act":"suicide"}\n')
    log("suicide %d" % pid)
    deadline = time.time() + 20
    while not os.path.exists(os.path.join(d, "release")) and time.time() < deadline:
        time.sleep(0.02)
    log("drained %d" % pid)
    sys.exit(0)
while True:
    time.sleep(1)
"#;

/// The same as [`DRAINING_PY`] for Node, with an unmodified `process.send()`.
const DRAINING_JS: &str = r#"
const fs = require('fs');
const path = require('path');
const dir = process.argv[2];
const log = (line) => fs.appendFileSync(path.join(dir, 'events.log'), line + '\n');
log(`start ${process.pid}`);
let first = true;
try {
  fs.closeSync(fs.openSync(path.join(dir, 'first'), 'wx'));
} catch (e) {
  first = false;
}
if (first) {
  process.send({act: 'suicide'});
  log(`suicide ${process.pid}`);
  const deadline = Date.now() + 20000;
  setInterval(() => {
    if (fs.existsSync(path.join(dir, 'release')) || Date.now() > deadline) {
      log(`drained ${process.pid}`);
      process.exit(0);
    }
  }, 20);
} else {
  setInterval(() => {}, 1000);
}
"#;

/// The first process logs `suicide PID SECONDS` (wall clock, before it sends the message),
/// announces its exit, then ignores SIGTERM and never exits.
const STUBBORN_PY: &str = r#"
import os, signal, sys, time
d = sys.argv[1]
try:
    os.close(os.open(os.path.join(d, "first"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    first = True
except FileExistsError:
    first = False
if first:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.path.join(d, "events.log"), "a") as f:
        f.write("suicide %d %.6f\n" % (os.getpid(), time.time()))
    os.write(int(os.environ["CLUSTERD_CHANNEL_FD"]), b'{"act":"suicide"}\n')
while True:
    time.sleep(1)
"#;

/// Writes garbage on the channel (malformed JSON, invalid UTF-8, an unknown act, a suicide
/// padded past 64 KiB), then `{"act":"ready"}`, then logs `start PID` and runs.
const GARBAGE_PY: &str = r#"
import os, sys, time
fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
def send(data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
send(b'not json\n')
send(b'{"act":\n')
send(b'[1,2]\n')
send(b'\xff\xfe\n')
send(b'{"act":"dance"}\n')
send(b'{"act":"suicide","pad":"' + b'x' * (70 * 1024) + b'"}\n')
send(b'{"act":"ready"}\n')
with open(os.path.join(sys.argv[1], "events.log"), "a") as f:
    f.write("start %d\n" % os.getpid())
while True:
    time.sleep(1)
"#;

fn unit_file(program: &[&str], dir: &Path, extra: &str) -> String {
    let mut words: Vec<String> = program.iter().map(|w| format!("'''{w}'''")).collect();
    words.push(format!("\"{}\"", toml_path(dir)));
    format!("command = [{}]\n{extra}", words.join(", "))
}

fn events(dir: &Path) -> Vec<String> {
    fs::read_to_string(dir.join("events.log"))
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The pid in the first `WORD PID ...` line of events.log.
fn logged_pid(dir: &Path, word: &str) -> Option<u32> {
    events(dir).iter().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(word))
            .then(|| parts.next().and_then(|p| p.parse().ok()))
            .flatten()
    })
}

fn count(dir: &Path, word: &str) -> usize {
    events(dir)
        .iter()
        .filter(|l| l.split_whitespace().next() == Some(word))
        .count()
}

fn entry_for(unit: &Value, pid: u32) -> Option<Value> {
    unit["instances"]
        .as_array()
        .and_then(|list| list.iter().find(|i| i["pid"] == pid).cloned())
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The shared story of the Python and Node draining workers.
fn the_replacement_starts_while_the_old_process_drains(d: &Daemon, dir: &Path) {
    wait_for("the first worker to announce its exit", PATIENCE, || {
        logged_pid(dir, "suicide").is_some()
    });
    let old = logged_pid(dir, "suicide").unwrap();

    let mut new = 0;
    wait_for("the replacement to run", PATIENCE, || {
        match d.pids("worker").as_slice() {
            [pid] if *pid != old => {
                new = *pid;
                true
            }
            _ => false,
        }
    });
    // The old process only leaves once the test releases it: both run at once now.
    assert!(alive(old), "the old process should still be draining");
    assert!(alive(new), "the replacement should run");
    let status = d.unit("worker");
    assert_eq!(status["restarts"], 1, "{status:#}");
    let draining = entry_for(&status, old).expect("the old process is listed while it drains");
    assert_eq!(draining["draining"], true, "{status:#}");
    // Not "running": a script mapping index → running pid finds the replacement.
    assert_eq!(draining["state"], "draining", "{status:#}");

    fs::write(dir.join("release"), "").unwrap();
    wait_for("the old process to exit on its own", PATIENCE, || {
        !alive(old)
    });
    wait_for("status to forget the old process", PATIENCE, || {
        entry_for(&d.unit("worker"), old).is_none()
    });

    // Its exit was announced: no second replacement.
    let status = d.unit("worker");
    assert_eq!(d.pids("worker"), vec![new], "{status:#}");
    assert_eq!(status["restarts"], 1, "{status:#}");
    assert_eq!(status["state"], "running", "{status:#}");
    // Python and Node take a moment to start: the replacement logs itself a little later.
    wait_for("the replacement to log its start", PATIENCE, || {
        count(dir, "start") == 2
    });
    assert!(
        events(dir).contains(&format!("drained {old}")),
        "the old process was killed instead of finishing: {:?}",
        events(dir)
    );
}

#[test]
fn a_suicide_starts_the_replacement_at_once_while_the_old_process_drains() {
    let files = scratch();
    let unit = unit_file(
        &["python3", "-c", DRAINING_PY],
        files.path(),
        "kill_timeout = \"30s\"\n",
    );
    let d = Daemon::start(&[("worker", &unit)]);
    the_replacement_starts_while_the_old_process_drains(&d, files.path());
}

#[test]
fn a_node_worker_announces_its_exit_with_an_unmodified_process_send() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let files = scratch();
    let script = files.path().join("worker.js");
    fs::write(&script, DRAINING_JS).unwrap();
    let unit = unit_file(
        &["node", &script.display().to_string()],
        files.path(),
        "kill_timeout = \"30s\"\n",
    );
    let d = Daemon::start(&[("worker", &unit)]);
    the_replacement_starts_while_the_old_process_drains(&d, files.path());
}

#[test]
fn a_worker_that_announces_its_exit_but_never_leaves_is_killed_after_kill_timeout() {
    let files = scratch();
    let unit = unit_file(
        &["python3", "-c", STUBBORN_PY],
        files.path(),
        "kill_timeout = \"1s\"\n",
    );
    let d = Daemon::start(&[("worker", &unit)]);
    wait_for("the first worker to announce its exit", PATIENCE, || {
        logged_pid(files.path(), "suicide").is_some()
    });
    let line = events(files.path()).remove(0);
    let sent_at: f64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let old = logged_pid(files.path(), "suicide").unwrap();

    wait_for(
        "the old process to be killed",
        Duration::from_secs(15),
        || !alive(old),
    );
    let elapsed = now_seconds() - sent_at;
    assert!(
        elapsed >= 0.8,
        "killed {elapsed:.3} s after it announced its exit; kill_timeout is 1 s"
    );

    let pids = d.wait_running("worker", 1);
    assert_ne!(pids, vec![old]);
    wait_for("status to forget the old process", PATIENCE, || {
        entry_for(&d.unit("worker"), old).is_none()
    });
    let status = d.unit("worker");
    assert_eq!(status["restarts"], 1, "{status:#}");
    assert_eq!(d.pids("worker"), pids, "{status:#}");
}

#[test]
fn malformed_and_oversized_channel_messages_are_ignored_and_the_instance_keeps_running() {
    let files = scratch();
    // `ready = "notify"`: the instance shows `running` only after the `ready` message that
    // follows the garbage, so by then clusterd has read (and ignored) every bad line.
    let unit = unit_file(
        &["python3", "-c", GARBAGE_PY],
        files.path(),
        "ready = \"notify\"\n",
    );
    let d = Daemon::start(&[("worker", &unit)]);
    let pids = d.wait_running("worker", 1);
    wait_for("the worker to log its start", PATIENCE, || {
        logged_pid(files.path(), "start").is_some()
    });
    assert_eq!(logged_pid(files.path(), "start"), Some(pids[0]));
    assert!(alive(pids[0]));

    let status = d.unit("worker");
    assert_eq!(
        status["restarts"], 0,
        "the padded suicide was acted upon: {status:#}"
    );
    assert_eq!(status["state"], "running", "{status:#}");
    assert_eq!(
        status["instances"].as_array().map(Vec::len),
        Some(1),
        "{status:#}"
    );
    assert_eq!(count(files.path(), "start"), 1);
}
