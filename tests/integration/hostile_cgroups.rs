//! Instances that make cgroups of their own below the one clusterd gave them (a root
//! instance can: `mkdir $CG/sub`, `echo PID > $CG/sub/cgroup.procs`), freeze them, or make
//! thousands of them: a stop still reaches every process, answers, and leaves no cgroup
//! behind, and clusterd's shutdown still ends.

use crate::common;
use common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The instance, run as `python3 HOSTILE_PY NOTES_DIR MODE`. It finds its cgroup as any
/// program can (/proc/self/cgroup and the cgroup2 mount) and, by MODE:
/// - `sub`: forks a child that moves itself into `$CG/sub/inner`; the child notes `sigterm`
///   when it gets SIGTERM and exits; the instance, on SIGTERM, waits for the child and exits.
/// - `frozen`: the same, and then freezes `$CG/sub` (the child no longer runs).
/// - `many`: makes `$CG/wide/0..WIDE` and a chain `$CG/ddd.../ddd.../...` DEEP cgroups deep
///   (its path far longer than PATH_MAX), and a child that moves itself to the bottom of the
///   chain. (Deeper would take the kernel long: making a chain is quadratic in its depth.)
///
/// Every mode notes `ready PID` in NOTES_DIR/notes.log once it is set up.
const HOSTILE_PY: &str = r#"
import os, signal, sys, time
notes, mode = sys.argv[1], sys.argv[2]
WIDE, DEEP = 3000, 600

def note(text):
    with open(os.path.join(notes, "notes.log"), "a") as f:
        f.write(text + "\n")

def own_cgroup():
    mount = None
    for line in open("/proc/self/mountinfo"):
        before, after = line.split(" - ", 1)
        if after.split()[0] == "cgroup2":
            mount = before.split()[4]
    path = [l[3:].strip() for l in open("/proc/self/cgroup") if l.startswith("0::")][0]
    return mount + path

cg = own_cgroup()
if mode == "many":
    os.mkdir(cg + "/wide")
    for i in range(WIDE):
        os.mkdir(cg + "/wide/%d" % i)
    os.chdir(cg)
    for i in range(DEEP):
        os.mkdir("d" * 50)
        os.chdir("d" * 50)
    bottom = "cgroup.procs"
else:
    os.makedirs(cg + "/sub/inner")
    bottom = cg + "/sub/inner/cgroup.procs"

r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    def child_term(number, frame):
        note("sigterm %d" % os.getpid())
        os._exit(0)
    signal.signal(signal.SIGTERM, child_term)
    with open(bottom, "w") as f:
        f.write(str(os.getpid()))
    note("moved %d" % os.getpid())
    os.write(w, b"x")
    os.close(w)
    while True:
        time.sleep(1)

os.close(w)
os.read(r, 1)
if mode == "frozen":
    with open(cg + "/sub/cgroup.freeze", "w") as f:
        f.write("1")
    while "frozen 1" not in open(cg + "/sub/cgroup.events").read():
        time.sleep(0.01)
    note("frozen")

def term(number, frame):
    os.waitpid(child, 0)
    os._exit(0)
if mode != "many":
    signal.signal(signal.SIGTERM, term)
note("ready %d" % os.getpid())
while True:
    time.sleep(1)
"#;

/// An instance running as `nobody` (as sh: the python3 on PATH may be a shim under /root)
/// tries to make a cgroup below its own and to freeze its own, and notes what happened, then
/// `ready PID`.
const NOBODY_SH: &str = r#"
notes=$1
mount=$(awk '{ for (i = 1; i < NF; i++) if ($i == "-" && $(i + 1) == "cgroup2") { print $5; exit } }' /proc/self/mountinfo)
cg=$mount$(sed -n 's/^0:://p' /proc/self/cgroup)
mkdir "$cg/sub" 2>> "$notes/notes.log" && echo "mkdir ok" >> "$notes/notes.log"
(echo 1 > "$cg/cgroup.freeze") 2>> "$notes/notes.log" && echo "freeze ok" >> "$notes/notes.log"
echo "ready $$" >> "$notes/notes.log"
exec sleep 300
"#;

/// A scratch directory every user can write to (a `nobody` instance notes there too), with
/// the script in it.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("clusterd-hostile-cgroups-")
        .tempdir()
        .expect("scratch dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let script = dir.path().join("hostile.py");
    fs::write(&script, HOSTILE_PY).expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    (dir, script)
}

fn unit(script: &Path, notes: &Path, mode: &str, extra: &str) -> String {
    format!(
        "command = [\"python3\", \"{}\", \"{}\", \"{mode}\"]\n{extra}",
        toml_path(script),
        toml_path(notes)
    )
}

/// The pids noted as `WORD PID`.
fn noted(notes: &Path, word: &str) -> Vec<u32> {
    fs::read_to_string(notes.join("notes.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.strip_prefix(word)?.trim().parse().ok())
        .collect()
}

fn notes_text(notes: &Path) -> String {
    fs::read_to_string(notes.join("notes.log")).unwrap_or_default()
}

/// clusterd's cgroup tree (from status), or None (then the test is skipped, or fails in CI).
fn cgroup_root(daemon: &Daemon) -> Option<PathBuf> {
    let status = daemon.status();
    let isolation = status["isolation"].as_str().unwrap_or("").to_string();
    let root = isolation
        .strip_prefix("cgroup (")
        .and_then(|rest| rest.strip_suffix(')'))
        .map(PathBuf::from);
    available(
        &format!("a cgroup clusterd can create cgroups in (it uses: {isolation})"),
        root.is_some(),
    )
    .then_some(root)
    .flatten()
}

/// Every directory below `root`, counted without recursion (the chain may be deeper than a
/// path can name, so this counts with `find`, which walks by fd).
fn cgroups_below(root: &Path) -> usize {
    let out = std::process::Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-type", "d"])
        .output()
        .expect("run find");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn wait_ready(notes: &Path) -> (u32, u32) {
    wait_for("the instance to be set up", PATIENCE, || {
        !noted(notes, "ready").is_empty()
    });
    let instance = noted(notes, "ready")[0];
    let child = *noted(notes, "moved").first().expect("the child moved");
    (instance, child)
}

/// Stops `unit`, checks that the stop answered in time and that both processes are gone.
fn stop_and_check(daemon: &Daemon, unit: &str, pids: &[u32]) -> Duration {
    let started = Instant::now();
    let out = daemon.ctl(&["stop", unit]);
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "stop failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log()
    );
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    for &pid in pids {
        assert!(!alive(pid), "pid {pid} outlived the stop\n{}", daemon.log());
    }
    took
}

/// Shuts clusterd down: exit 0, and its cgroup tree is gone.
fn shut_down_and_check(mut daemon: Daemon, root: &Path) {
    let status = daemon.terminate();
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        !root.exists(),
        "{} is left: {} cgroup(s) below it\n{}",
        root.display(),
        cgroups_below(root),
        daemon.log()
    );
}

/// Stops that never ended: a root instance moved a process into a sub-cgroup of its own.
/// SIGTERM only reached the processes of the instance's own cgroup, the removal stopped at
/// the sub-cgroup, so `stop` never answered, the shutdown hung (a second SIGTERM too), and
/// the cgroups were left. Now the stop's signal walks the subtree, the removal goes children
/// first, and both the stop and the shutdown end.
#[test]
fn a_process_in_a_sub_cgroup_of_its_instance_is_stopped_and_no_cgroup_is_left() {
    let (dir, script) = scratch();
    let notes = dir.path();
    let d = Daemon::start(&[(
        "nest",
        &unit(&script, notes, "sub", "kill_timeout = \"30s\"\n"),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    let (instance, child) = wait_ready(notes);
    assert!(cgroups_below(&root) >= 3, "sub and sub/inner exist");

    // Far less than kill_timeout: the child got the SIGTERM itself, and ended.
    stop_and_check(&d, "nest", &[instance, child]);
    assert_eq!(
        noted(notes, "sigterm"),
        vec![child],
        "{}",
        notes_text(notes)
    );
    wait_for("every cgroup to be removed", PATIENCE, || {
        cgroups_below(&root) == 0
    });

    // Again, running at shutdown.
    fs::remove_file(notes.join("notes.log")).expect("rm notes");
    assert!(d.ctl(&["start", "nest"]).status.success());
    let (instance, child) = wait_ready(notes);
    shut_down_and_check(d, &root);
    assert!(!alive(instance) && !alive(child));
    assert_eq!(
        noted(notes, "sigterm"),
        vec![child],
        "{}",
        notes_text(notes)
    );
}

/// A frozen process (`cgroup.freeze`) gets no signal until thawed: a stop thaws the
/// instance's whole subtree after its `kill_signal` (as it sends SIGCONT to a stopped
/// process), so the frozen child gets its SIGTERM and ends gracefully, long before the
/// `kill_timeout` SIGKILL.
#[test]
fn a_stop_thaws_a_frozen_sub_cgroup_so_its_process_gets_the_sigterm() {
    let (dir, script) = scratch();
    let notes = dir.path();
    let d = Daemon::start(&[(
        "frozen",
        &unit(&script, notes, "frozen", "kill_timeout = \"30s\"\n"),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    let (instance, child) = wait_ready(notes);
    assert!(notes_text(notes).contains("frozen"));

    stop_and_check(&d, "frozen", &[instance, child]);
    assert_eq!(
        noted(notes, "sigterm"),
        vec![child],
        "{}",
        notes_text(notes)
    );
    wait_for("every cgroup to be removed", PATIENCE, || {
        cgroups_below(&root) == 0
    });
    shut_down_and_check(d, &root);
}

/// SIGKILL needs no thaw: `cgroup.kill` ends a frozen process at once (`clusterctl kill
/// --all --signal KILL`, as the SIGKILL after `kill_timeout` and a second SIGTERM do).
#[test]
fn cgroup_kill_ends_a_process_in_a_frozen_sub_cgroup() {
    let (dir, script) = scratch();
    let notes = dir.path();
    let d = Daemon::start(&[(
        "frozen",
        &unit(&script, notes, "frozen", "restart = \"never\"\n"),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    let (instance, child) = wait_ready(notes);
    let out = d.ctl(&["kill", "frozen", "--all", "--signal", "KILL"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("both processes to be gone", PATIENCE, || {
        !alive(instance) && !alive(child)
    });
    assert!(noted(notes, "sigterm").is_empty(), "{}", notes_text(notes));
    shut_down_and_check(d, &root);
}

/// Thousands of cgroups and a chain deeper than a path can name: the stop answers, the
/// removal goes on a slice at a time while clusterd keeps answering, and nothing is left.
#[test]
fn thousands_of_cgroups_and_a_deep_chain_are_removed_without_stalling_clusterd() {
    let (dir, script) = scratch();
    let notes = dir.path();
    let d = Daemon::start(&[(
        "many",
        &unit(&script, notes, "many", "kill_timeout = \"1s\"\n"),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    let (instance, child) = wait_ready(notes);
    let made = cgroups_below(&root);
    assert!(made >= 3602, "{made} cgroups");

    let took = stop_and_check(&d, "many", &[instance, child]);
    // Removed while the loop is idle, a slice at a time: status answers meanwhile.
    let removal_started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut left = made;
    while left > 0 {
        assert!(
            removal_started.elapsed() < PATIENCE,
            "{left} cgroups left after {PATIENCE:?}\n{}",
            d.log()
        );
        let asked = Instant::now();
        d.status();
        slowest = slowest.max(asked.elapsed());
        left = cgroups_below(&root);
    }
    eprintln!(
        "{made} cgroups: stop answered in {took:?}, all removed in {:?}, slowest status meanwhile {slowest:?}",
        removal_started.elapsed()
    );
    assert!(slowest < Duration::from_secs(2), "status took {slowest:?}");
    shut_down_and_check(d, &root);
}

/// clusterd does not hand an instance's cgroup to its user: an instance running as `nobody`
/// can neither make cgroups below its own nor freeze it.
#[test]
fn an_instance_running_as_nobody_cannot_make_or_freeze_cgroups() {
    if !have_root() {
        return;
    }
    let (dir, _) = scratch();
    let notes = dir.path();
    let script = notes.join("nobody.sh");
    fs::write(&script, NOBODY_SH).expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let d = Daemon::start(&[(
        "unprivileged",
        &format!(
            "command = [\"/bin/sh\", \"{}\", \"{}\"]\nuser = \"nobody\"\nworking_directory = \"/\"\n",
            toml_path(&script),
            toml_path(notes)
        ),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    wait_for("the instance to try", PATIENCE, || {
        !noted(notes, "ready").is_empty()
    });
    let text = notes_text(notes);
    assert_eq!(text.matches("Permission denied").count(), 2, "{text}");
    assert!(!text.contains(" ok"), "{text}");
    shut_down_and_check(d, &root);
}

/// A clusterd that was SIGKILLed leaves a nested instance's child running in its
/// sub-cgroup: the next clusterd on the same socket kills it and removes the whole subtree
/// before it starts anything (the rmdir of the instance's cgroup alone used to fail there).
#[test]
fn a_restarted_clusterd_clears_the_sub_cgroups_a_killed_one_left() {
    let (dir, script) = scratch();
    let notes = dir.path();
    let mut d = Daemon::start(&[(
        "nest",
        &unit(&script, notes, "sub", "kill_timeout = \"30s\"\n"),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    let (_, child) = wait_ready(notes);
    send_signal(d.pid(), libc::SIGKILL);
    d.wait_exit(PATIENCE);
    // The instance died with clusterd (PR_SET_PDEATHSIG); its child lives on in sub/inner.
    assert!(
        alive(child),
        "the child should outlive a SIGKILLed clusterd"
    );

    fs::remove_file(notes.join("notes.log")).expect("rm notes");
    d.launch();
    assert!(
        !alive(child),
        "the leftover child was not killed\n{}",
        d.log()
    );
    let (instance, new_child) = wait_ready(notes);
    // Only the new instance's cgroups are there: its own, sub, sub/inner, and a spare.
    wait_for("the old cgroups to be gone", PATIENCE, || {
        cgroups_below(&root) <= 4
    });
    assert!(
        !d.log().contains("cannot remove the leftover cgroup"),
        "{}",
        d.log()
    );
    shut_down_and_check(d, &root);
    assert!(!alive(instance) && !alive(new_child));
}

/// Instances crash-looping by the hundred keep the loop from ever being idle, and the
/// cgroups of the instances that are over piled up (their removal waited for an idle
/// moment): thousands within seconds. Past a backlog of 256 they are now removed as
/// instances are released, so the tree stays bounded.
#[test]
fn cgroups_of_crash_looping_instances_do_not_pile_up() {
    const INSTANCES: usize = 200;
    let d = Daemon::start(&[(
        "crashy",
        &format!(
            "command = [\"sh\", \"-c\", \"sleep 0.05; exit 1\"]\ninstances = {INSTANCES}\nrestart_limit = {{ burst = 1000000, interval = \"1s\" }}\n"
        ),
    )]);
    let Some(root) = cgroup_root(&d) else {
        return;
    };
    // Each instance's cgroup and its spare, the backlog, and a margin for the moment.
    let bound = 2 * INSTANCES + 256 + 100;
    let started = Instant::now();
    let mut most = 0;
    while started.elapsed() < Duration::from_secs(8) {
        let now = fs::read_dir(&root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .count()
            })
            .unwrap_or(0);
        most = most.max(now);
        std::thread::sleep(Duration::from_millis(100));
    }
    let restarts = d.unit("crashy")["restarts"].as_u64().unwrap_or(0);
    eprintln!("{restarts} restarts in 8 s; at most {most} cgroups in the tree");
    assert!(
        restarts > INSTANCES as u64,
        "the instances did not crash-loop"
    );
    assert!(most <= bound, "{most} cgroups in the tree (bound {bound})");
    shut_down_and_check(d, &root);
}
