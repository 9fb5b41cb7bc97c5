//! Logs: every line an instance writes reaches its unit's file once and in order, rotation
//! loses and splits nothing, the last words of a crash are kept, `clusterctl logs` shows
//! history and follows, `reopen-logs` works with an external logrotate, console mode prefixes
//! lines, a full disk stalls only the writer and loses nothing, and journal mode reaches the
//! real systemd-journald.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn log_text(daemon: &Daemon, unit: &str) -> String {
    fs::read_to_string(daemon.log_dir().join(format!("{unit}.log"))).unwrap_or_default()
}

/// The rotated files of `unit`, oldest first.
fn rotated(daemon: &Daemon, unit: &str) -> Vec<PathBuf> {
    let prefix = format!("{unit}.log.");
    daemon
        .log_files(unit)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
        })
        .collect()
}

/// The body of each line (what follows `| `), grouped by "label stream".
fn bodies(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_source: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let Some((head, body)) = line.split_once(" | ") else {
            panic!("a line without a separator: {line:?}");
        };
        let fields: Vec<&str> = head.split(' ').collect();
        let source = fields[fields.len() - 2..].join(" ");
        by_source.entry(source).or_default().push(body.to_string());
    }
    by_source
}

/// Writes `count` numbered lines to stdout and to stderr, interleaved, then waits.
const NUMBERED: &str = r#"
import os, sys
count = int(sys.argv[1])
me = os.environ["CLUSTERD_INSTANCE"]
for i in range(count):
    sys.stdout.write(f"{me} out {i}\n")
    sys.stderr.write(f"{me} err {i}\n")
sys.stdout.flush()
sys.stderr.flush()
print("done", flush=True)
import time
time.sleep(300)
"#;

#[test]
fn every_line_of_two_instances_and_both_streams_is_in_the_file_once_and_in_order() {
    let count = 100_000;
    let files = tempfile::tempdir().expect("tmp");
    fs::write(files.path().join("numbered.py"), NUMBERED).expect("script");
    let unit = format!(
        "command = [\"python3\", \"{}\", \"{count}\"]\ninstances = 2\n",
        toml_path(&files.path().join("numbered.py"))
    );
    let daemon = Daemon::start(&[("web", &unit)]);
    wait_for("both instances to finish writing", PATIENCE * 4, || {
        let text = log_text(&daemon, "web");
        text.matches("| done\n").count() == 2
    });
    let text = log_text(&daemon, "web");
    let by_source = bodies(&text);
    for instance in 0..2 {
        for stream in ["out", "err"] {
            let key = format!("web[{instance}] {stream}");
            let lines = &by_source[&key];
            let numbers: Vec<usize> = lines
                .iter()
                .filter(|l| *l != "done")
                .map(|l| {
                    let (who, rest) = l.split_once(' ').expect("numbered");
                    assert_eq!(who, instance.to_string(), "{key}: {l}");
                    let (s, n) = rest.split_once(' ').expect("numbered");
                    assert_eq!(s, stream, "{key}: {l}");
                    n.parse().expect("number")
                })
                .collect();
            assert_eq!(numbers.len(), count, "{key}");
            assert!(
                numbers.iter().enumerate().all(|(i, &n)| i == n),
                "{key}: out of order or duplicated"
            );
        }
    }
    // Every line carries an RFC 3339 timestamp with microseconds.
    let first = text.lines().next().expect("a line");
    assert_eq!(&first[4..5], "-");
    assert_eq!(&first[26..28], "Z ");
}

/// Numbered lines of about 100 bytes, `count` of them, then "done".
const FILLER: &str = r#"
import sys
count = int(sys.argv[1])
pad = "x" * 80
for i in range(count):
    sys.stdout.write(f"{i:08d} {pad}\n")
print("done", flush=True)
import time
time.sleep(300)
"#;

#[test]
fn rotation_under_load_keeps_the_newest_files_within_size_and_splits_no_line() {
    let files = tempfile::tempdir().expect("tmp");
    fs::write(files.path().join("filler.py"), FILLER).expect("script");
    let count = 60_000; // ~8 MiB with the prefixes
    let unit = format!(
        "command = [\"python3\", \"{}\", \"{count}\"]\n[log]\nmax_size = \"1MiB\"\nkeep = 3\n",
        toml_path(&files.path().join("filler.py"))
    );
    let daemon = Daemon::start(&[("fill", &unit)]);
    wait_for("the writer to finish", PATIENCE * 4, || {
        log_text(&daemon, "fill").contains("| done\n")
    });
    let old = rotated(&daemon, "fill");
    assert_eq!(old.len(), 3, "{old:?}");
    let mut all = String::new();
    for path in old
        .iter()
        .chain(std::iter::once(&daemon.log_dir().join("fill.log")))
    {
        let text = fs::read_to_string(path).expect("log file");
        assert!(text.len() <= 1 << 20, "{path:?} holds {} bytes", text.len());
        assert!(text.ends_with('\n'), "{path:?} ends mid-line");
        all.push_str(&text);
    }
    // The kept lines are the newest, whole, consecutive, up to the last.
    let numbers: Vec<u64> = bodies(&all)["fill[0] out"]
        .iter()
        .filter(|l| *l != "done")
        .map(|l| {
            assert_eq!(l.len(), 8 + 1 + 80, "a split line: {l:?}");
            l[..8].parse().expect("number")
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "a gap");
    assert_eq!(numbers.last(), Some(&(count - 1)));
    assert!(numbers.len() > 20_000, "only {} lines kept", numbers.len());
}

#[test]
fn the_last_words_of_a_crashing_instance_come_before_its_exit() {
    let daemon = Daemon::start(&[(
        "crashy",
        "command = [\"sh\", \"-c\", \"echo 'last words'; echo 'no newline at the end' | tr -d '\\\\n'; exit 7\"]\nrestart = \"never\"\n",
    )]);
    wait_for("the exit in the log", PATIENCE, || {
        log_text(&daemon, "crashy").contains("exited with code 7")
    });
    let text = log_text(&daemon, "crashy");
    let words = text.find("crashy[0] out | last words").expect(&text);
    let tail = text
        .find("crashy[0] out | no newline at the end")
        .expect(&text);
    let exit = text.find("crashy[0] clusterd | pid").expect(&text);
    let started = text.find("crashy[0] clusterd | started").expect(&text);
    assert!(started < words && words < tail && tail < exit, "{text}");
}

/// `clusterctl logs UNIT --lines 0 --follow`, its stdout piped.
fn follow_new_lines(daemon: &Daemon, unit: &str) -> KillOnDrop {
    KillOnDrop(
        Command::new(CLUSTERCTL)
            .args(["--socket"])
            .arg(daemon.path("ctl.sock"))
            .args(["logs", unit, "--lines", "0", "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("clusterctl logs -f"),
    )
}

/// A unit that prints `hello N` each time the file `go` appears in its directory (removed
/// before the line is printed, so that a test that makes the next `go` once it sees the
/// line never has it removed unseen).
fn on_demand_unit(dir: &Path) -> String {
    format!(
        "command = [\"sh\", \"-c\", \"n=0; while true; do if [ -f go ]; then rm go; n=$((n+1)); echo hello $n; fi; sleep 0.02; done\"]\nworking_directory = \"{}\"\n",
        toml_path(dir)
    )
}

#[test]
fn logs_shows_the_last_lines_and_follow_sees_new_ones() {
    let files = tempfile::tempdir().expect("tmp");
    let daemon = Daemon::start(&[("talk", &on_demand_unit(files.path()))]);
    daemon.wait_running("talk", 1);
    for n in 1..=3 {
        fs::write(files.path().join("go"), "").expect("go");
        let deadline = std::time::Instant::now() + PATIENCE;
        while !log_text(&daemon, "talk").contains(&format!("| hello {n}\n")) {
            assert!(
                std::time::Instant::now() < deadline,
                "no hello {n} in\n{}\nclusterd:\n{}",
                log_text(&daemon, "talk"),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let out = daemon.ctl(&["logs", "talk", "--lines", "2", "--stream", "out"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.contains("| hello 2") && text.contains("| hello 3"),
        "{text}"
    );

    let mut follower = follow_new_lines(&daemon, "talk");
    let seen = collect_stdout(&mut follower.0);
    // Give the follower time to attach, then make a line; poll until it arrives.
    wait_for("the follower to attach", PATIENCE, || {
        follower.0.try_wait().ok().flatten().is_none()
    });
    let mut n = 3;
    wait_for("a new line at the follower", PATIENCE, || {
        n += 1;
        fs::write(files.path().join("go"), "").expect("go");
        std::thread::sleep(Duration::from_millis(100));
        String::from_utf8_lossy(&seen.lock().expect("lock")).contains("| hello")
    });
    let got = String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    assert!(
        !got.contains("hello 3\n"),
        "history beyond --lines 0: {got}"
    );
}

/// Writes 40 000 numbered lines of one length as fast as it can each time `go` appears in
/// its directory, then `done N`.
const FLOOD_ON_DEMAND: &str = r#"
import os, sys, time
n = 0
while True:
    if os.path.exists("go"):
        os.remove("go")
        n += 1
        out = sys.stdout
        for i in range(40000):
            out.write(f"flood {n} line {i:08}\n")
        out.write(f"done {n}\n")
        out.flush()
    time.sleep(0.01)
"#;

#[test]
fn a_follower_of_a_flood_gets_the_files_lines_whole_and_in_order() {
    let files = tempfile::tempdir().expect("tmp");
    fs::write(files.path().join("flood.py"), FLOOD_ON_DEMAND).expect("script");
    let unit = format!(
        "command = [\"python3\", \"flood.py\"]\nworking_directory = \"{}\"\n",
        toml_path(files.path())
    );
    let daemon = Daemon::start(&[("flood", &unit)]);
    daemon.wait_running("flood", 1);
    let mut follower = follow_new_lines(&daemon, "flood");
    let seen = collect_stdout(&mut follower.0);
    // Floods until one reaches the follower (the first may come before it is attached).
    let mut n = 0;
    wait_for("a flood's last line at the follower", PATIENCE, || {
        n += 1;
        fs::write(files.path().join("go"), "").expect("go");
        let done = format!("| done {n}\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let file = log_text(&daemon, "flood");
            if file.contains(&done) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        String::from_utf8_lossy(&seen.lock().expect("lock")).contains(&done)
    });
    let got = String::from_utf8_lossy(&seen.lock().expect("lock")).into_owned();
    let file = log_text(&daemon, "flood");
    let file_lines: Vec<&str> = file.lines().collect();
    // Each line the follower got is the file's next line, but for the lines it was told it
    // missed (`[clusterctl: N lines skipped]` after the ones before them).
    let mut got_lines = got.lines().filter(|l| !l.is_empty());
    let first = got_lines.next().expect("lines at the follower");
    let mut at = file_lines
        .iter()
        .position(|l| *l == first)
        .unwrap_or_else(|| panic!("{first:?} is not in the file"))
        + 1;
    let mut skipped_total = 0;
    for line in got_lines {
        if let Some(count) = line
            .strip_prefix("[clusterctl: ")
            .and_then(|rest| rest.strip_suffix(" lines skipped]"))
        {
            let count: usize = count.parse().expect("a count");
            skipped_total += count;
            at += count;
            continue;
        }
        assert_eq!(
            file_lines.get(at),
            Some(&line),
            "the follower's line differs from the file's line {at}"
        );
        at += 1;
    }
    assert!(
        got.ends_with(&format!("| done {n}\n")),
        "the follower's last line is not the flood's last: {:?}",
        got.lines().last()
    );
    eprintln!("follower: {skipped_total} lines skipped of a flood of 40 000");
}

#[test]
fn reopen_logs_follows_an_external_rename() {
    let files = tempfile::tempdir().expect("tmp");
    let daemon = Daemon::start(&[("talk", &on_demand_unit(files.path()))]);
    daemon.wait_running("talk", 1);
    fs::write(files.path().join("go"), "").expect("go");
    wait_for("hello 1", PATIENCE, || {
        log_text(&daemon, "talk").contains("| hello 1\n")
    });
    let current = daemon.log_dir().join("talk.log");
    let moved = daemon.log_dir().join("talk.log.moved");
    fs::rename(&current, &moved).expect("rename, as logrotate does");
    let out = daemon.ctl(&["reopen-logs"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("the new file", PATIENCE, || current.exists());
    fs::write(files.path().join("go"), "").expect("go");
    wait_for("hello 2 in the new file", PATIENCE, || {
        log_text(&daemon, "talk").contains("| hello 2\n")
    });
    let old = fs::read_to_string(&moved).expect("moved file");
    assert!(
        old.contains("| hello 1\n") && !old.contains("hello 2"),
        "{old}"
    );
}

#[test]
fn console_mode_prefixes_each_line_with_its_instance() {
    let daemon = Daemon::start_with_args(
        &[(
            "web",
            "command = [\"sh\", \"-c\", \"echo hello console; echo to stderr >&2; sleep 300\"]\ninstances = 2\n",
        )],
        &["--log-default", "console"],
    );
    wait_for("the prefixed lines", PATIENCE, || {
        let log = daemon.log();
        log.contains("web[0] | hello console\n")
            && log.contains("web[1] | hello console\n")
            && log.contains("web[1] | to stderr\n")
    });
    assert!(!daemon.log_dir().join("web.log").exists());
    assert_eq!(daemon.unit("web")["log"], "console");
}

#[test]
fn a_full_disk_stalls_only_the_writer_and_loses_nothing() {
    if !have_root() {
        return;
    }
    let files = tempfile::tempdir().expect("tmp");
    let small = files.path().join("small");
    fs::create_dir(&small).expect("dir");
    let mounted = Command::new("mount")
        // mode: a tmpfs root is 1777 by default, and clusterd refuses a log directory
        // others can write.
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    if !available("a tmpfs mount (mount -t tmpfs)", mounted) {
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(small.clone());
    fs::write(files.path().join("filler.py"), FILLER).expect("script");
    let count = 3_000; // ~330 KiB with prefixes: five times the disk
    let unit = format!(
        "command = [\"python3\", \"{}\", \"{count}\"]\n",
        toml_path(&files.path().join("filler.py"))
    );
    let daemon = Daemon::start_with_args(
        &[("fill", &unit), ("calm", "command = \"sleep 300\"\n")],
        &["--log-dir", &small.display().to_string()],
    );
    let pid = daemon.wait_running("fill", 1)[0];
    wait_for("status to report the full disk", PATIENCE, || {
        daemon.unit("fill")["log_problem"]
            .as_str()
            .is_some_and(|p| p.contains("No space left"))
    });
    // clusterd answers, kills nothing, restarts nothing.
    assert_eq!(daemon.pids("fill"), vec![pid]);
    assert_eq!(daemon.unit("fill")["restarts"], 0);
    assert!(daemon.log().contains("cannot write its log"));

    // Room again: everything that waited is written, nothing lost.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=8m"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    assert!(grown, "remount");
    wait_for("the writer's last line", PATIENCE * 2, || {
        fs::read_to_string(small.join("fill.log")).is_ok_and(|t| t.contains("| done\n"))
    });
    let text = fs::read_to_string(small.join("fill.log")).expect("log");
    let numbers: Vec<u64> = bodies(&text)["fill[0] out"]
        .iter()
        .filter(|l| *l != "done")
        .map(|l| l[..8].parse().expect("number"))
        .collect();
    assert_eq!(numbers.len(), count as usize);
    assert!(numbers.iter().enumerate().all(|(i, &n)| i as u64 == n));
    wait_for("the problem to clear", PATIENCE, || {
        daemon.unit("fill")["log_problem"].is_null()
    });
}

/// systemd-journald, started for the test if none runs (it runs without systemd as PID 1
/// when started as root), stopped afterwards.
struct Journald(Option<Child>);

impl Journald {
    fn start() -> Option<Journald> {
        if journald_listens() {
            return Some(Journald(None));
        }
        spawn_journald().map(|child| Journald(Some(child)))
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn journal_mode_hands_the_output_to_journald() {
    if !have_root() {
        return;
    }
    // Dropped last: no other test starts or kills a journald meanwhile.
    let _journald = system_journald();
    let journald = Journald::start();
    if !available("systemd-journald (the systemd package)", journald.is_some()) {
        return;
    }
    let identifier = format!("clusterd-test-{}", std::process::id());
    let unit = "command = [\"sh\", \"-c\", \"echo to the journal $CLUSTERD_INSTANCE; echo an error >&2; sleep 300\"]\n[log]\nto = \"journal\"\n";
    let daemon = Daemon::start(&[(&identifier, unit)]);
    daemon.wait_running(&identifier, 1);
    let read = |priority: &str| {
        Command::new("journalctl")
            .args(["-t", &identifier, "-o", "cat", "--no-pager", "-p", priority])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    wait_for("both lines in the journal", PATIENCE, || {
        let all = read("debug");
        all.contains("to the journal 0") && all.contains("an error")
    });
    // stderr is at priority err, stdout below it.
    let errors = read("err");
    assert!(
        errors.contains("an error") && !errors.contains("to the journal"),
        "{errors}"
    );
    assert!(!daemon.log_dir().join(format!("{identifier}.log")).exists());
    let out = daemon.ctl(&["logs", &identifier]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("journalctl -t"));
    drop(daemon);
    drop(journald);
}

/// Writes a 10 MB line, binary garbage with NUL bytes and invalid UTF-8, then a last line
/// without a newline, then waits.
const GARBAGE: &str = r#"
import os, sys, time
out = sys.stdout.buffer
out.write(b"A" * (10 * 1024 * 1024) + b"\n")
out.write(b"bin \x00\xff\xfe\x1b[31m \xc3\x28 end\n")
out.write(b"tail without newline")
out.flush()
time.sleep(300)
"#;

#[test]
fn huge_lines_and_binary_garbage_are_split_or_kept_faithfully() {
    let files = tempfile::tempdir().expect("tmp");
    fs::write(files.path().join("garbage.py"), GARBAGE).expect("script");
    let unit = format!(
        "command = [\"python3\", \"{}\"]\n",
        toml_path(&files.path().join("garbage.py"))
    );
    let daemon = Daemon::start(&[("junk", &unit), ("calm", "command = \"sleep 300\"\n")]);
    let path = daemon.log_dir().join("junk.log");
    wait_for(
        "the tail, written after a second without its newline",
        PATIENCE,
        || fs::read(&path).is_ok_and(|b| b.windows(20).any(|w| w == b"tail without newline")),
    );
    let bytes = fs::read(&path).expect("log");
    // 10 MiB in 64 KiB pieces: 159 marked as continued, the last one whole.
    let pieces = bytes
        .split(|&b| b == b'\n')
        .filter(|l| l.ends_with(b"AAAA"))
        .collect::<Vec<_>>();
    assert_eq!(pieces.len(), 160);
    let continued = pieces
        .iter()
        .filter(|l| l.windows(9).any(|w| w == b"] out + A"))
        .count();
    assert_eq!(continued, 159);
    let a_bytes: usize = pieces
        .iter()
        .map(|l| l.iter().rev().take_while(|&&b| b == b'A').count())
        .sum();
    assert_eq!(a_bytes, 10 * 1024 * 1024);
    // The bytes exactly as written, NUL and invalid UTF-8 included.
    let garbage: &[u8] = b"| bin \x00\xff\xfe\x1b[31m \xc3\x28 end\n";
    assert!(bytes.windows(garbage.len()).any(|w| w == garbage));
    // clusterd is fine, and so is the other unit.
    assert_eq!(daemon.unit("calm")["state"], "running");
    let out = daemon.ctl(&["logs", "junk", "--lines", "1"]);
    assert!(out.status.success(), "{out:?}");
}

/// A Node program that, told to stop, writes 5 000 numbered lines on its way out.
const NODE_GOODBYE: &str = r#"
process.on("SIGTERM", () => {
  let out = "";
  for (let i = 0; i < 5000; i++) out += `bye ${i}\n`;
  process.stdout.write(out, () => process.exit(0));
});
setInterval(() => {}, 1000);
// Only once the handler is in place: the test stops clusterd when it sees this.
process.stdout.write("up\n");
"#;

#[test]
fn a_shutdown_keeps_what_instances_write_on_their_way_out() {
    if !available("node", runs("node", &["--version"])) {
        return;
    }
    let files = tempfile::tempdir().expect("tmp");
    fs::write(files.path().join("goodbye.js"), NODE_GOODBYE).expect("script");
    let unit = format!(
        "command = [\"node\", \"{}\"]\ninstances = 2\n",
        toml_path(&files.path().join("goodbye.js"))
    );
    let mut daemon = Daemon::start(&[("bye", &unit)]);
    wait_for("both instances up", PATIENCE, || {
        log_text(&daemon, "bye").matches("| up\n").count() == 2
    });
    assert!(daemon.terminate().success(), "{}", daemon.log());
    // clusterd has exited: everything is in the file already.
    let text = log_text(&daemon, "bye");
    let by_source = bodies(&text);
    for instance in 0..2 {
        let lines: Vec<&String> = by_source[&format!("bye[{instance}] out")]
            .iter()
            .filter(|l| l.starts_with("bye "))
            .collect();
        assert_eq!(
            lines.len(),
            5000,
            "bye[{instance}]\n{text}\n{}",
            daemon.log()
        );
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| **l == format!("bye {i}")));
        let last_words = text
            .rfind(&format!("bye[{instance}] out | bye 4999"))
            .expect("last");
        let exit = text
            .find(&format!("bye[{instance}] clusterd | pid"))
            .expect(&text);
        assert!(last_words < exit, "the exit before the last words\n{text}");
    }
}

/// Writes `mib` MiB of numbered 100-byte lines in 1 MiB writes, 10 ms apart, then "done".
const BURST: &str = r#"
import sys, time
mib = int(sys.argv[1])
pad = "x" * 90
n = 0
for _ in range(mib):
    chunk = "".join(f"{n + i:08d} {pad}\n" for i in range(10485))
    n += 10485
    sys.stdout.write(chunk)
    sys.stdout.flush()
    time.sleep(0.01)
print("done", flush=True)
time.sleep(300)
"#;

/// Bytes of disk a file holds (`st_blocks`), and its length.
fn held_and_len(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).map_or((0, 0), |m| (m.blocks() * 512, m.len()))
}

/// A file holds no more disk than its length (in 4 KiB blocks), beyond an extent-tree block
/// or two.
fn holds_only_its_length(path: &Path) -> bool {
    let (held, len) = held_and_len(path);
    held <= len.div_ceil(4096) * 4096 + 8192
}

#[test]
fn a_burst_reserves_disk_ahead_on_ext4_and_gives_back_what_it_did_not_write() {
    let files = tempfile::tempdir().expect("tmp");
    let script = files.path().join("burst.py");
    fs::write(&script, BURST).expect("script");
    let unit = [
        format!(
            "command = [\"python3\", \"{}\", \"13\"]",
            toml_path(&script)
        ),
        "restart = \"never\"\n[log]\nmax_size = \"4MiB\"\nkeep = 5\n".to_string(),
    ]
    .join("\n");
    let mut daemon = Daemon::start(&[("burst", &unit)]);
    let current = daemon.log_dir().join("burst.log");
    let mut reserved = false;
    wait_for("the burst to be written", PATIENCE * 4, || {
        reserved |= !holds_only_its_length(&current);
        log_text(&daemon, "burst").contains("| done\n")
    });
    reserved |= !holds_only_its_length(&current);
    let ext4 = nix::sys::statfs::statfs(&daemon.log_dir())
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC);
    assert_eq!(
        reserved, ext4,
        "blocks reserved ahead of the burst's writes: {reserved}, on ext4: {ext4}"
    );
    // A rotated file gave back what it had reserved beyond its last line.
    let old = rotated(&daemon, "burst");
    assert_eq!(old.len(), 4, "{old:?}");
    for path in &old {
        assert!(
            holds_only_its_length(path),
            "{path:?}: {:?} (held, length)",
            held_and_len(path)
        );
    }
    // So does the current file when clusterd exits, with every line in it.
    assert!(daemon.terminate().success(), "{}", daemon.log());
    assert!(
        holds_only_its_length(&current),
        "{current:?}: {:?} (held, length)",
        held_and_len(&current)
    );
    let mut all = String::new();
    for path in old.iter().chain(std::iter::once(&current)) {
        all.push_str(&fs::read_to_string(path).expect("log file"));
    }
    let numbers: Vec<u64> = bodies(&all)["burst[0] out"]
        .iter()
        .filter(|l| *l != "done")
        .map(|l| l[..8].parse().expect("number"))
        .collect();
    assert_eq!(numbers.first(), Some(&0));
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "a gap");
    assert_eq!(numbers.last(), Some(&(13 * 10485 - 1)));
}
