//! Instances that behave as badly as a program can: killed by signals nobody names, escaping
//! their process group, speaking for other instances, flooding their channels. Each test is
//! the regression test of one class of hole; the fix is named in its comment.

use crate::common;
use common::*;

/// Lost exits: the reap loop once stopped at a wait status its library could not decode
/// (real-time signals), leaving a dead pid shown as running and `stop` waiting forever. Wait
/// statuses are now decoded by clusterd itself, and draining never stops on one.
#[test]
fn an_instance_killed_by_a_real_time_signal_is_restarted_and_can_be_stopped() {
    let daemon = Daemon::start(&[("rt", "command = \"sleep 300\"\n")]);
    let old = daemon.wait_running("rt", 1)[0];
    // SIGRTMIN+1: `kill -35` on glibc.
    let signal = libc::SIGRTMIN() + 1;
    send_signal(old, signal);
    wait_for("rt to be restarted", PATIENCE, || {
        let pids = daemon.pids("rt");
        pids.len() == 1 && pids[0] != old
    });
    let unit = daemon.unit("rt");
    let last = unit["instances"][0]["last_exit"].as_str().unwrap_or("");
    assert!(
        last.contains(&format!("signal {signal}")),
        "last exit: {last:?}"
    );
    assert_eq!(unit["restarts"], 1);
    let new = daemon.pids("rt")[0];
    send_signal(new, signal);
    wait_for("rt to be restarted again", PATIENCE, || {
        let pids = daemon.pids("rt");
        pids.len() == 1 && pids[0] != new
    });
    let out = daemon.ctl(&["stop", "rt"]);
    assert!(out.status.success(), "{out:?}");
    assert!(daemon.pids("rt").is_empty());
}

/// Terminal injection: `clusterctl status` printed an instance's `STATUS=` text raw, so an
/// instance could rewrite the operator's terminal. Everything shown is now escaped.
#[test]
fn an_instance_cannot_put_control_characters_on_the_operators_terminal() {
    let script = r#"
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto("STATUS=\x1b]0;pwned\x07\x1b[2J\r\u009b5m\u007ffine".encode(), os.environ["NOTIFY_SOCKET"])
time.sleep(300)
"#;
    let daemon = Daemon::start(&[]);
    let path = daemon.path("status.py");
    std::fs::write(&path, script).expect("script");
    daemon.write_unit(
        "liar",
        &format!("command = [\"python3\", \"{}\"]\n", toml_path(&path)),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("the STATUS= text to arrive", PATIENCE, || {
        daemon.unit("liar")["instances"][0]["status_text"]
            .as_str()
            .is_some_and(|t| t.ends_with("fine"))
    });
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.stdout
            .iter()
            .any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
        "raw control bytes on the terminal: {shown:?}"
    );
    assert!(!shown.contains('\u{9b}'), "{shown:?}");
    assert!(shown.contains("\\x1b]0;pwned\\x07"), "{shown}");
    assert!(shown.contains("\\u{9b}5m"), "{shown}");
    // The JSON form keeps the text (as escapes) and puts no control character on the
    // terminal either.
    let out = daemon.ctl(&["status", "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        !json.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in the JSON: {json:?}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(
        parsed["units"][0]["instances"][0]["status_text"],
        "\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{9b}5m\u{7f}fine"
    );
}

/// Floods: a worker writing JSON lines as fast as it could grew clusterd from 35 to 430 MB
/// (an unbounded event queue fed by an I/O thread that read without limit) and made status
/// take 480 ms; 2 MB of malformed lines made 120 MB of log. Each channel (and NOTIFY_SOCKET)
/// now has a budget of events in flight and is not read while it is spent, so the writer
/// blocks instead of clusterd growing; repeated warnings are limited and counted.
#[test]
fn a_flooding_worker_costs_clusterd_neither_memory_nor_answers_nor_log() {
    use std::time::{Duration, Instant};
    let flood = r#"
import os, sys
fd = int(os.environ["CLUSTERD_CHANNEL_FD"])
line = sys.argv[1].encode() + b"\n"
chunk = line * 4096
while True:
    os.write(fd, chunk)
"#;
    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let script = daemon.path("flood.py");
    std::fs::write(&script, flood).expect("script");
    let unit = |line: &str| {
        format!(
            "command = [\"python3\", \"{}\", '{line}']\n",
            toml_path(&script)
        )
    };
    daemon.write_unit("ready-flood", &unit(r#"{"act":"ready"}"#));
    daemon.write_unit("garbage-flood", &unit("this is not json"));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("ready-flood", 1);
    daemon.wait_running("garbage-flood", 1);

    // Strangers flood NOTIFY_SOCKET too (it is writable by everyone).
    let notify = std::os::unix::net::UnixDatagram::unbound().expect("socket");
    notify.set_nonblocking(true).expect("nonblocking");
    let notify_path = format!("{}.notify", daemon.socket.display());
    let rss_kib = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let until = Instant::now() + Duration::from_secs(3);
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        for _ in 0..200 {
            let _ = notify.send_to(b"READY=1", &notify_path);
        }
        let asked = Instant::now();
        let out = daemon.ctl(&["status", "calm"]);
        slowest = slowest.max(asked.elapsed());
        assert!(out.status.success(), "{out:?}");
    }
    let rss = rss_kib(daemon.pid());
    let log = daemon.log();
    eprintln!(
        "under the flood: clusterd RSS {rss} KiB, slowest status {slowest:?}, log {} bytes",
        log.len()
    );
    assert!(rss < 40 * 1024, "clusterd grew to {rss} KiB");
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    assert!(log.len() < 1024 * 1024, "{} bytes of log", log.len());
    assert!(
        log.contains("counted, not logged"),
        "{}",
        &log[..log.len().min(4000)]
    );
    // Everything else still works: a stop is answered at once.
    assert!(daemon.ctl(&["stop", "calm"]).status.success());
    assert!(daemon.ctl(&["stop", "ready-flood"]).status.success());
}

/// The pid a shell wrote to `path`, once it has.
fn read_pid(path: &std::path::Path) -> u32 {
    let mut pid = 0;
    wait_for(&format!("a pid in {}", path.display()), PATIENCE, || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        pid != 0
    });
    pid
}

/// Whether this clusterd put its instances in cgroups (it needs a writable cgroup2
/// hierarchy: root, or a delegated cgroup).
fn has_cgroups(daemon: &Daemon) -> bool {
    let status = daemon.status();
    let isolation = status["isolation"].as_str().unwrap_or("");
    available(
        &format!("a cgroup clusterd can create cgroups in (it uses: {isolation})"),
        isolation.starts_with("cgroup"),
    )
}

/// An instance that starts a process which leaves its process group (`setsid`): the
/// process keeps the instance's listening socket.
fn escaping_unit(daemon: &Daemon, port: u16) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"setsid sleep 300 & echo $! > {}; exec sleep 300\"]\nlisten = [\"tcp://127.0.0.1:{port}\"]\n",
        toml_path(&daemon.path("escaped.pid"))
    )
}

/// Escaping process trees: processes that called setsid/setpgid survived `stop` and
/// shutdown. Each instance now runs in a cgroup of its own; a stop ends with `cgroup.kill`,
/// and the instance is gone only when its cgroup is empty.
#[test]
fn a_process_that_leaves_its_group_is_still_stopped_with_its_instance() {
    let daemon = Daemon::start(&[]);
    if !has_cgroups(&daemon) {
        return;
    }
    daemon.write_unit("escape", &escaping_unit(&daemon, free_port()));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("escape", 1);
    let escaped = read_pid(&daemon.path("escaped.pid"));
    assert!(alive(escaped));
    let status = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(status.contains("instances isolated by cgroup"), "{status}");

    let out = daemon.ctl(&["stop", "escape"]);
    assert!(out.status.success(), "{out:?}");
    // `stop` answers once the cgroup is empty: nothing is left to wait for.
    assert!(!alive(escaped), "the escaped process survived the stop");

    // The same at shutdown.
    std::fs::remove_file(daemon.path("escaped.pid")).expect("rm");
    assert!(daemon.ctl(&["start", "escape"]).status.success());
    let escaped = read_pid(&daemon.path("escaped.pid"));
    let mut daemon = daemon;
    assert!(daemon.terminate().success());
    assert!(!alive(escaped), "the escaped process survived the shutdown");
}

/// The cgroups under clusterd's tree, by name.
fn cgroups_under(daemon: &Daemon) -> Vec<String> {
    let status = daemon.status();
    let isolation = status["isolation"].as_str().unwrap_or("");
    let root = isolation
        .strip_prefix("cgroup (")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a cgroup tree: {isolation}"));
    let mut names: Vec<String> = std::fs::read_dir(root)
        .expect("the cgroup tree")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A restart starts its instance in a cgroup made ready beforehand (one spare per instance
/// slot); scaling down and removing the unit take the spares away, so nothing piles up.
#[test]
fn the_cgroups_made_ready_for_restarts_are_used_and_never_pile_up() {
    let daemon = Daemon::start(&[("web", "command = \"sleep 300\"\ninstances = 3\n")]);
    if !has_cgroups(&daemon) {
        return;
    }
    daemon.wait_running("web", 3);
    // Each slot: its instance's cgroup and the spare for its next start.
    wait_for("three spares", PATIENCE, || {
        cgroups_under(&daemon).len() == 6
    });
    for _ in 0..5 {
        let victim = daemon.pids("web")[0];
        send_signal(victim, libc::SIGKILL);
        wait_for("the replacement", PATIENCE, || {
            let pids = daemon.pids("web");
            pids.len() == 3 && !pids.contains(&victim)
        });
    }
    wait_for("one cgroup and one spare per slot", PATIENCE, || {
        cgroups_under(&daemon).len() == 6
    });
    let out = daemon.ctl(&["scale", "web", "1"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "the spares of the scaled-away slots to go",
        PATIENCE,
        || {
            let names = cgroups_under(&daemon);
            names.len() == 2 && names.iter().all(|n| n.starts_with("web.0."))
        },
    );
    daemon.remove_unit("web");
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    wait_for("every cgroup of the removed unit to go", PATIENCE, || {
        cgroups_under(&daemon).is_empty()
    });
}

/// When clusterd itself was SIGKILLed, every grandchild survived holding the unit's listening
/// socket, and the next clusterd failed with EADDRINUSE. It now kills what a previous clusterd
/// left in its cgroups before it binds anything.
#[test]
fn a_restarted_clusterd_clears_what_a_killed_one_left_before_binding_its_ports() {
    let mut daemon = Daemon::start(&[]);
    if !has_cgroups(&daemon) {
        return;
    }
    let port = free_port();
    daemon.write_unit("escape", &escaping_unit(&daemon, port));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("escape", 1);
    let escaped = read_pid(&daemon.path("escaped.pid"));

    send_signal(daemon.pid(), libc::SIGKILL);
    daemon.wait_exit(PATIENCE);
    // The escapee outlived clusterd (PDEATHSIG reaches only direct children) and holds the
    // port.
    assert!(alive(escaped));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());

    daemon.launch();
    let pids = daemon.wait_running("escape", 1);
    let unit = daemon.unit("escape");
    assert_eq!(unit["state"], "running", "{unit}");
    assert!(!alive(escaped), "the leftover was not killed");
    assert!(daemon.log().contains("left by a previous clusterd"));
    assert!(!pids.contains(&escaped));
}

/// Without cgroups (`--isolation process-group`, or where clusterd cannot create them),
/// clusterd says so in status and still stops what stays in the instance's process group.
#[test]
fn process_group_isolation_is_shown_in_status() {
    let daemon = Daemon::start_with_args(
        &[("calm", "command = \"sleep 300\"\n")],
        &["--isolation", "process-group"],
    );
    daemon.wait_running("calm", 1);
    let status = daemon.status();
    let isolation = status["isolation"].as_str().unwrap_or("");
    assert!(isolation.starts_with("process-group"), "{status}");
    assert!(daemon.ctl(&["stop", "calm"]).status.success());
}

/// What the attacker does: try to move itself and a child into the victim's process group,
/// then have the child tell NOTIFY_SOCKET that "it" is ready, with a status text. Perl, not
/// Python: it is in every Debian (perl-base), at a path uid 65534 may execute.
const ATTACKER: &str = r#"
use Socket;
my $victim = $ENV{VICTIM};
my $out = $ENV{OUT};
sub report { my ($name, $text) = @_; open(my $f, ">", "$out/$name.tmp") or die; print $f $text; close $f; rename("$out/$name.tmp", "$out/$name"); }
report("self", setpgrp(0, $victim) ? "joined" : "refused: $!");
my $child = fork();
if ($child == 0) {
    my $joined = setpgrp(0, $victim) ? "joined" : "refused: $!";
    socket(my $s, PF_UNIX, SOCK_DGRAM, 0) or die;
    my $addr = pack_sockaddr_un($ENV{NOTIFY_SOCKET});
    for (1..20) { send($s, "READY=1\nSTATUS=pwned", 0, $addr); }
    report("child", $joined);
    sleep 300;
    exit 0;
}
sleep 300;
"#;

/// Trust boundaries: instances shared clusterd's session, so a `user = "nobody"` instance
/// could move a child into a root instance's process group and send READY=1 / STOPPING=1 as
/// that instance. Every instance now leads a session of its own (a process may join a group
/// only within its own session) and, with cgroups, is identified by its cgroup.
fn an_unprivileged_instance_cannot_speak_for_another(isolation: &str) {
    if !have_root() {
        return;
    }
    let daemon = Daemon::start_with_args(
        &[(
            "victim",
            "command = \"sleep 300\"\nready = \"notify\"\nready_timeout = \"1h\"\n",
        )],
        &["--isolation", isolation],
    );
    wait_for("the victim to start", PATIENCE, || {
        daemon.unit("victim")["instances"][0]["pid"].is_u64()
    });
    let victim = daemon.unit("victim")["instances"][0]["pid"]
        .as_u64()
        .expect("pid");
    let out = daemon.path("out");
    std::fs::create_dir(&out).expect("out");
    std::fs::write(daemon.path("attacker.pl"), ATTACKER).expect("script");
    // uid 65534 must reach the script and write its reports.
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(daemon.dir.path(), 0o755);
    mode(&out, 0o777);
    daemon.write_unit(
        "attacker",
        &format!(
            "command = [\"/usr/bin/perl\", \"{script}\"]\nuser = \"nobody\"\nworking_directory = \"/\"\nenvironment = {{ VICTIM = \"{victim}\", OUT = \"{out}\" }}\n",
            script = toml_path(&daemon.path("attacker.pl")),
            out = toml_path(&out),
        ),
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("attacker", 1);
    let report = |name: &str| {
        let path = out.join(name);
        wait_for(&format!("the attacker's {name} report"), PATIENCE, || {
            path.exists()
        });
        std::fs::read_to_string(&path).expect("report")
    };
    assert!(report("self").starts_with("refused"), "{}", report("self"));
    assert!(
        report("child").starts_with("refused"),
        "{}",
        report("child")
    );
    // The datagrams have been handled once a status (queued behind them) comes back; the
    // attacker's own status shows the text, the victim's does not.
    wait_for("the attacker's own status text", PATIENCE, || {
        daemon.unit("attacker")["instances"][0]["status_text"] == "pwned"
    });
    let unit = daemon.unit("victim");
    let instance = &unit["instances"][0];
    assert_eq!(instance["pid"], victim, "{unit}");
    assert_eq!(
        instance["state"], "starting",
        "the victim was made ready: {unit}"
    );
    assert!(instance["status_text"].is_null(), "{unit}");
    assert_eq!(unit["restarts"], 0, "{unit}");
}

#[test]
fn an_unprivileged_instance_cannot_speak_for_another_with_cgroups() {
    an_unprivileged_instance_cannot_speak_for_another("cgroup");
}

#[test]
fn an_unprivileged_instance_cannot_speak_for_another_with_process_groups() {
    an_unprivileged_instance_cannot_speak_for_another("process-group");
}

/// A Node worker that asks its cluster primary (clusterd) for what it may not have, and
/// reports what each `listen()` gave it.
const GREEDY_NODE_APP: &str = r#"
const net = require('net');
const fs = require('fs');
const results = {};
const tries = [
  ['root_only_dir', {path: process.env.ROOT_ONLY + '/app.sock'}],
  ['existing_file', {path: process.env.EXISTING}],
  ['privileged_port', {port: Number(process.env.LOW_PORT), host: '127.0.0.1'}],
];
let pending = tries.length + 1;
function done() {
  if (--pending === 0) {
    fs.writeFileSync(process.env.OUT + '/r.tmp', JSON.stringify(results));
    fs.renameSync(process.env.OUT + '/r.tmp', process.env.OUT + '/' + process.env.NAME + '.json');
  }
}
for (const [name, options] of tries) {
  const server = net.createServer();
  server.on('error', e => { results[name] = e.code; done(); });
  server.listen(options, () => { results[name] = 'listening'; done(); });
}
let ok = 0, failed = 0, left = 100;
const many = () => { if (--left === 0) { results.many = {ok, failed}; done(); } };
for (let i = 0; i < 100; i++) {
  const server = net.createServer();
  server.on('error', () => { failed++; many(); });
  server.listen(0, '127.0.0.1', () => { ok++; many(); });
}
setInterval(() => {}, 1000);
"#;

/// The Node cluster primary acted with clusterd's rights: a `nobody` worker's `listen()` made
/// root create a socket in a root-only directory, unlink a socket file that was not its own,
/// bind a privileged port, and open sockets without limit. Binds are now done with the
/// worker's file-system identity, ports below 1024 need a root worker, existing files are
/// EADDRINUSE, and a unit gets at most 64 listening sockets.
#[test]
fn a_node_worker_gets_nothing_from_the_primary_that_its_own_rights_would_not_give_it() {
    if !have_root()
        || !available(
            "/usr/bin/node",
            std::path::Path::new("/usr/bin/node").exists(),
        )
    {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let daemon = Daemon::start(&[]);
    let mode = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(daemon.dir.path(), 0o755);
    let out = daemon.path("out");
    std::fs::create_dir(&out).expect("out");
    mode(&out, 0o777);
    let root_only = daemon.path("root-only");
    std::fs::create_dir(&root_only).expect("dir");
    mode(&root_only, 0o700);
    let existing = daemon.path("existing.sock");
    drop(std::os::unix::net::UnixListener::bind(&existing).expect("bind"));
    std::fs::write(daemon.path("app.js"), GREEDY_NODE_APP).expect("app");
    let low_port = (600..1000u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below 1024");
    let unit = |name: &str, user: &str| {
        format!(
            "command = [\"/usr/bin/node\", \"{app}\"]\nnode_cluster = true\n{user}working_directory = \"/\"\nenvironment = {{ OUT = \"{out}\", NAME = \"{name}\", ROOT_ONLY = \"{root_only}\", EXISTING = \"{existing}\", LOW_PORT = \"{low_port}\" }}\n",
            app = toml_path(&daemon.path("app.js")),
            out = toml_path(&out),
            root_only = toml_path(&root_only),
            existing = toml_path(&existing),
        )
    };
    daemon.write_unit("greedy", &unit("greedy", "user = \"nobody\"\n"));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let results = |name: &str| -> serde_json::Value {
        let path = out.join(format!("{name}.json"));
        wait_for(&format!("{name}'s results"), PATIENCE, || path.exists());
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json")
    };
    let greedy = results("greedy");
    assert_eq!(greedy["root_only_dir"], "EACCES", "{greedy}");
    assert!(!root_only.join("app.sock").exists());
    assert_eq!(greedy["existing_file"], "EADDRINUSE", "{greedy}");
    assert!(
        existing.exists(),
        "a socket file that was not the worker's was removed"
    );
    assert_eq!(greedy["privileged_port"], "EACCES", "{greedy}");
    let ok = greedy["many"]["ok"].as_u64().unwrap_or(0);
    assert!(ok > 0 && ok <= 64, "{greedy}");
    assert!(
        greedy["many"]["failed"].as_u64().unwrap_or(0) >= 36,
        "{greedy}"
    );
    let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
        .expect("fds")
        .count();
    assert!(fds < 150, "clusterd holds {fds} fds");

    // The I/O thread is root again for a worker that runs as root.
    daemon.write_unit("trusted", &unit("trusted", ""));
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    let trusted = results("trusted");
    assert_eq!(trusted["root_only_dir"], "listening", "{trusted}");
    assert_eq!(trusted["privileged_port"], "listening", "{trusted}");
}
