//! What every instance receives: its own process group, stdin from /dev/null, the CLUSTERD_*
//! variables, the worker channel (also as NODE_CHANNEL_FD), NOTIFY_SOCKET, and no file
//! descriptor of clusterd's beyond those.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::*;

/// Writes what the instance sees to $OUT/<instance>.json, then waits.
const PROBE: &str = r#"
import json, os, sys
fds = {}
for fd in sorted(os.listdir("/proc/self/fd")):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except OSError:
        pass
info = {
    "pid": os.getpid(), "pgid": os.getpgid(0), "uid": os.getuid(), "gid": os.getgid(),
    "cwd": os.getcwd(), "fds": fds, "stdin": os.readlink("/proc/self/fd/0"),
    "env": {k: v for k, v in os.environ.items()},
}
path = os.path.join(os.environ["OUT"], os.environ["CLUSTERD_INSTANCE"] + ".json")
with open(path + ".tmp", "w") as f:
    json.dump(info, f)
os.rename(path + ".tmp", path)
os.execvp("sleep", ["sleep", "300"])
"#;

fn probe_unit(daemon_dir: &std::path::Path, instances: u32, extra: &str) -> String {
    std::fs::write(daemon_dir.join("probe.py"), PROBE).expect("probe");
    std::fs::create_dir_all(daemon_dir.join("out")).expect("out");
    format!(
        "command = [\"python3\", \"{probe}\"]\ninstances = {instances}\nenvironment = {{ OUT = \"{out}\", GREETING = \"hello world\" }}\n{extra}\n",
        probe = toml_path(&daemon_dir.join("probe.py")),
        out = toml_path(&daemon_dir.join("out")),
    )
}

fn read_probe(daemon: &Daemon, index: u32) -> serde_json::Value {
    let path = daemon.path("out").join(format!("{index}.json"));
    wait_for("the probe to report", PATIENCE, || path.exists());
    serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json")
}

#[test]
fn every_instance_gets_its_group_its_variables_its_channel_and_nothing_else() {
    let daemon = Daemon::start(&[]);
    daemon.write_unit("probe", &probe_unit(daemon.dir.path(), 2, ""));
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    let pids = daemon.wait_running("probe", 2);

    for index in 0..2u32 {
        let seen = read_probe(&daemon, index);
        let pid = seen["pid"].as_u64().expect("pid");
        assert!(pids.contains(&(pid as u32)));
        assert_eq!(
            seen["pgid"], seen["pid"],
            "each instance leads its own process group"
        );
        assert_eq!(seen["stdin"], "/dev/null");
        let env = &seen["env"];
        assert_eq!(env["CLUSTERD_UNIT"], "probe");
        assert_eq!(env["CLUSTERD_INSTANCE"], index.to_string());
        assert_eq!(env["CLUSTERD_INSTANCES"], "2");
        assert_eq!(env["GREETING"], "hello world");
        assert_eq!(env["CLUSTERD_CHANNEL_FD"], "3");
        assert_eq!(env["NODE_CHANNEL_FD"], "3");
        assert_eq!(env["NODE_CHANNEL_SERIALIZATION_MODE"], "json");
        assert!(env["NOTIFY_SOCKET"]
            .as_str()
            .is_some_and(|s| s.ends_with(".notify")));
        assert!(env.get("LISTEN_FDS").is_none(), "no sockets, no LISTEN_FDS");
        // 0, 1, 2, the channel — and python's own fd for listing /proc/self/fd.
        let fds: BTreeMap<String, String> =
            serde_json::from_value(seen["fds"].clone()).expect("fds");
        let unexpected: Vec<_> = fds
            .iter()
            .filter(|(fd, target)| {
                !["0", "1", "2", "3"].contains(&fd.as_str()) && !target.starts_with("/proc/")
            })
            .collect();
        assert!(unexpected.is_empty(), "leaked fds: {unexpected:?}");
        assert!(fds["3"].starts_with("socket:"), "{fds:?}");
    }
}

/// clusterd creates children in one of three ways (`clone3` sharing its memory, `clone3`
/// copying it, `fork` then `cgroup.procs`), the first that works here; the fallbacks are
/// forced with `CLUSTERD_SPAWN_PATH`. On each: an instance starts with its sockets, LISTEN_PID,
/// group and channel, in its own cgroup; and an exec that fails says precisely why.
#[test]
fn every_spawn_path_starts_instances_in_their_cgroup_and_reports_exec_failures() {
    for path in ["clone3-vm", "clone3", "fork"] {
        let variable = format!("CLUSTERD_SPAWN_PATH={path}");
        let daemon = Daemon::start_with_env(&[], &[variable.as_str()]);
        let listen = format!("listen = [\"tcp://127.0.0.1:{}\"]", free_port());
        daemon.write_unit("probe", &probe_unit(daemon.dir.path(), 1, &listen));
        let script = daemon.path("run.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 300\n").expect("script");
        daemon.write_unit(
            "broken",
            &format!(
                "command = \"./run.sh\"\nworking_directory = \"{}\"\nrestart_limit = {{ burst = 1 }}\n",
                toml_path(daemon.dir.path())
            ),
        );
        // The broken unit's program cannot be executed: the reload says so.
        let reload = daemon.ctl(&["daemon-reload"]);
        assert!(
            !reload.status.success()
                && String::from_utf8_lossy(&reload.stderr).contains("broken: cannot execute"),
            "{path}: {reload:?}"
        );
        let pid = daemon.wait_running("probe", 1)[0];
        // Said at start-up, before the control socket answered.
        assert!(
            daemon
                .log()
                .contains(&format!("{variable}: children are created only this way")),
            "{path}"
        );
        let seen = read_probe(&daemon, 0);
        assert_eq!(seen["pid"], pid, "{path}");
        assert_eq!(seen["pgid"], pid, "{path}");
        let env = &seen["env"];
        assert_eq!(env["LISTEN_PID"], pid.to_string(), "{path}");
        assert_eq!(env["LISTEN_FDS"], "1", "{path}");
        assert_eq!(env["CLUSTERD_CHANNEL_FD"], "4", "{path}");
        assert!(env.get("CLUSTERD_SPAWN_PATH").is_none(), "{path}");
        let fds: BTreeMap<String, String> =
            serde_json::from_value(seen["fds"].clone()).expect("fds");
        assert!(
            fds["3"].starts_with("socket:") && fds["4"].starts_with("socket:"),
            "{path}: {fds:?}"
        );

        let isolation = daemon.status()["isolation"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if available(
            &format!("a cgroup clusterd can create cgroups in (it uses: {isolation})"),
            isolation.starts_with("cgroup ("),
        ) {
            let root = isolation
                .strip_prefix("cgroup (")
                .and_then(|rest| rest.strip_suffix(')'))
                .expect("the tree");
            let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
            let own = own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .expect("a cgroup2 line");
            let name = own.rsplit('/').next().expect("a name");
            let procs = std::fs::read_to_string(format!("{root}/{name}/cgroup.procs"))
                .unwrap_or_else(|e| panic!("{path}: {own} is not under {root}: {e}"));
            assert!(
                procs.lines().any(|l| l == pid.to_string()),
                "{path}: {procs}"
            );
        }

        // An exec failure is no crash: reported, retried on a backoff, never given up.
        wait_for("the broken unit to say why", PATIENCE, || {
            daemon.unit("broken")["error"].is_string()
        });
        assert_eq!(daemon.unit("broken")["gave_up"], false, "{path}");
        let status = daemon.ctl(&["status", "broken"]);
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(
            text.contains("cannot execute \"./run.sh\": Permission denied"),
            "{path}: {text}"
        );
    }
}

#[test]
fn a_descriptor_clusterd_inherited_without_cloexec_does_not_reach_instances() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("units")).expect("units");
    std::fs::write(
        dir.path().join("units/probe.toml"),
        probe_unit(dir.path(), 1, ""),
    )
    .expect("unit");
    // clusterd is started with fd 7 open and inheritable, as a careless parent might do.
    let mut clusterd = StartedByShell::start("exec 7</dev/null", dir.path());
    let path = dir.path().join("out/0.json");
    wait_for("the probe to report", PATIENCE, || path.exists());
    let seen: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert!(
        seen["fds"].get("7").is_none(),
        "fd 7 leaked: {}",
        seen["fds"]
    );
    let status = clusterd.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn user_and_group_switch_the_account_and_its_home() {
    if !have_root() {
        return;
    }
    let daemon = Daemon::start(&[]);
    // The report goes where nobody may write. The command is sh, not python3: PATH may lead
    // to an interpreter shim under /root that nobody may not run.
    let out = daemon.path("out");
    std::fs::create_dir_all(&out).expect("out");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let report = out.join("0.txt");
    daemon.write_unit(
        "probe",
        &format!(
            "command = [\"/bin/sh\", \"-c\", \"echo $(id -u) $USER $HOME $(pwd) > {}; exec sleep 300\"]\nuser = \"nobody\"\nworking_directory = \"/\"\n",
            toml_path(&report)
        ),
    );
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    daemon.wait_running("probe", 1);
    let mut seen = String::new();
    wait_for("the instance to report", PATIENCE, || {
        seen = std::fs::read_to_string(&report).unwrap_or_default();
        seen.ends_with('\n')
    });
    assert_eq!(seen, "65534 nobody /nonexistent /\n");
}

#[test]
fn a_missing_working_directory_is_a_failed_start_with_the_reason() {
    let daemon = Daemon::start(&[(
        "lost",
        "command = \"sleep 300\"\nworking_directory = \"/no/such/dir\"\nrestart_limit = { burst = 1 }\n",
    )]);
    // An exec failure: reported and retried on a backoff, never given up.
    wait_for("the unit to say why", PATIENCE, || {
        daemon.unit("lost")["error"].is_string()
    });
    assert_eq!(daemon.unit("lost")["gave_up"], false);
    let status = daemon.ctl(&["status", "lost"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("cannot change to its working directory")
            && text.contains("No such file or directory"),
        "{text}"
    );
}

/// An instance starts with every signal at its default disposition and none blocked, whatever
/// clusterd itself catches or ignores (SIGPIPE, SIGCHLD, SIGTERM, ...).
#[test]
fn an_instance_starts_with_no_signal_ignored_caught_or_blocked() {
    let daemon = Daemon::start(&[("plain", "command = [\"sleep\", \"300\"]\n")]);
    let pid = daemon.wait_running("plain", 1)[0];
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    for field in ["SigBlk", "SigIgn", "SigCgt"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        let mask = line.split_whitespace().nth(1).unwrap_or("");
        assert!(mask.chars().all(|c| c == '0'), "{line}");
    }
}

/// clusterd raises its own soft limit on open files to the hard one (each instance costs it
/// three descriptors); its instances get the limit clusterd was started with.
#[test]
fn instances_keep_the_fd_limit_clusterd_was_started_with() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("units")).expect("units");
    std::fs::write(
        dir.path().join("units/plain.toml"),
        "command = [\"sleep\", \"300\"]\n",
    )
    .expect("unit");
    let clusterd = StartedByShell::start("ulimit -Sn 512 && ulimit -Hn 4096", dir.path());
    let socket = clusterd.socket.clone();
    let soft_limit = |pid: u32| -> Option<u64> {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse().ok()
    };
    let instance = || -> Option<u32> {
        let request = clusterd::protocol::Request::Status { unit: None };
        let response =
            clusterd::client::connection::send_request_within(&socket, request, CTL_DEADLINE)
                .ok()?;
        let pid = response.status?.units.first()?.instances.first()?.pid?;
        Some(pid)
    };
    wait_for("the instance to run", PATIENCE, || instance().is_some());
    let pid = instance().expect("instance");
    assert_eq!(
        soft_limit(clusterd.child.id()),
        Some(4096),
        "clusterd's own soft limit"
    );
    assert_eq!(soft_limit(pid), Some(512), "the instance's soft limit");
}

/// clusterd started by `sh -c "SETUP; exec clusterd ..."` on `dir`/units (for what the test
/// harness cannot set up: an inherited fd, a soft limit below the hard one); stopped and
/// reaped when dropped.
struct StartedByShell {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl StartedByShell {
    fn start(setup: &str, dir: &std::path::Path) -> StartedByShell {
        let socket = dir.join("ctl.sock");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{setup} && exec {CLUSTERD} --units {} --socket {} --log-dir {}",
                dir.join("units").display(),
                socket.display(),
                dir.join("logs").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clusterd");
        StartedByShell { child, socket }
    }

    /// SIGTERM, then its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        send_signal(self.child.id(), libc::SIGTERM);
        self.child.wait().expect("wait")
    }
}

impl Drop for StartedByShell {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// `environment_file`: read at every start (a changed file applies at the next restart), a
/// file's variables win over `environment`, a `-` file may be missing, and a missing file
/// without `-` is a failed start that says which file.
#[test]
fn environment_files_are_read_at_every_start() {
    let daemon = Daemon::start(&[]);
    std::fs::write(
        daemon.path("web.env"),
        "# secrets\nDATABASE_URL=postgres://db/app\nGREETING=\"from the file\"\n",
    )
    .expect("write the env file");
    let unit = probe_unit(
        daemon.dir.path(),
        1,
        &format!(
            "environment_file = [\"{}\", \"-/no/such/optional.env\"]",
            toml_path(&daemon.path("web.env"))
        ),
    );
    daemon.write_unit("web", &unit);
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    let env = read_probe(&daemon, 0)["env"].clone();
    assert_eq!(env["DATABASE_URL"], "postgres://db/app");
    assert_eq!(
        env["GREETING"], "from the file",
        "the file wins over environment"
    );

    // Changed, then the instance restarted: the new value.
    std::fs::write(daemon.path("web.env"), "DATABASE_URL=postgres://db2/app\n").expect("rewrite");
    std::fs::remove_file(daemon.path("out").join("0.json")).expect("remove the old report");
    assert!(daemon.ctl(&["restart", "web"]).status.success());
    let env = read_probe(&daemon, 0)["env"].clone();
    assert_eq!(env["DATABASE_URL"], "postgres://db2/app");
    assert_eq!(env["GREETING"], "hello world");

    // A required file that is missing: a failed start, with the file named.
    daemon.write_unit(
        "lost",
        "command = \"sleep 300\"\nenvironment_file = \"/no/such/web.env\"\nrestart_limit = { burst = 1 }\n",
    );
    let _ = daemon.ctl(&["daemon-reload"]);
    wait_for("the unit to give up", PATIENCE, || {
        daemon.unit("lost")["gave_up"] == true
    });
    let status = daemon.ctl(&["status", "lost"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(
            "cannot read its environment_file /no/such/web.env: No such file or directory"
        ),
        "{text}"
    );
}

/// `clusterd --environment NAME` adds each unit's `[environments.NAME]` over its
/// `environment`; without the flag the table is not used; a name no unit has is warned about.
#[test]
fn the_environment_clusterd_runs_in_selects_each_units_table() {
    let production = "[environments.production]\nGREETING = \"hello production\"\nWORKERS = 8";
    for (args, greeting) in [
        (&["--environment", "production"][..], "hello production"),
        (&[][..], "hello world"),
    ] {
        let daemon = Daemon::start_with_args(&[], args);
        daemon.write_unit("web", &probe_unit(daemon.dir.path(), 1, production));
        // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
        let reload = daemon.ctl(&["daemon-reload"]);
        assert!(
            reload.status.success()
                || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
            "{reload:?}"
        );
        let env = read_probe(&daemon, 0)["env"].clone();
        assert_eq!(env["GREETING"], greeting, "{args:?}");
        assert_eq!(env["OUT"], daemon.path("out").display().to_string());
        if !args.is_empty() {
            assert_eq!(env["WORKERS"], "8");
        }
    }
    let daemon = Daemon::start_with_args(
        &[("web", "command = \"sleep 300\"\n")],
        &["--environment", "prodution"],
    );
    assert!(
        daemon
            .log()
            .contains("no unit has an [environments.prodution] table"),
        "{}",
        daemon.log()
    );
}

/// A child shares clusterd's fd table and keeps only the fds below a few low slots where its
/// own were put (src/daemon/os/low_fds.rs), rather than copying every instance's fds and
/// closing them at exec. Started while clusterd holds hundreds of fds (a crowd of instances,
/// each with its channel and log pipes), an instance still gets its stdio, its socket and
/// its channel, at their numbers, and nothing else.
#[test]
fn an_instance_started_among_many_gets_its_own_fds_and_nothing_else() {
    let daemon = Daemon::start(&[]);
    daemon.write_unit("crowd", "command = [\"sleep\", \"300\"]\ninstances = 100\n");
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    daemon.wait_running("crowd", 100);
    let listen = format!("listen = [\"tcp://127.0.0.1:{}\"]", free_port());
    daemon.write_unit("probe", &probe_unit(daemon.dir.path(), 2, &listen));
    // A new unit that fails at once fails daemon-reload, naming it (issue 23): answered.
    let reload = daemon.ctl(&["daemon-reload"]);
    assert!(
        reload.status.success()
            || String::from_utf8_lossy(&reload.stderr).contains("failed to start"),
        "{reload:?}"
    );
    daemon.wait_running("probe", 2);
    for index in 0..2u32 {
        let seen = read_probe(&daemon, index);
        let fds: BTreeMap<String, String> =
            serde_json::from_value(seen["fds"].clone()).expect("fds");
        let unexpected: Vec<_> = fds
            .iter()
            .filter(|(fd, target)| {
                !["0", "1", "2", "3", "4"].contains(&fd.as_str()) && !target.starts_with("/proc/")
            })
            .collect();
        assert!(unexpected.is_empty(), "leaked fds: {unexpected:?}");
        assert_eq!(seen["stdin"], "/dev/null");
        assert!(fds["1"].starts_with("pipe:"), "{fds:?}");
        assert!(fds["3"].starts_with("socket:"), "{fds:?}");
        assert!(fds["4"].starts_with("socket:"), "{fds:?}");
        assert_eq!(seen["env"]["LISTEN_FDS"], "1");
        assert_eq!(seen["env"]["CLUSTERD_CHANNEL_FD"], "4");
    }
}
