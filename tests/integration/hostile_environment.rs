//! An unlucky or hostile environment: absurd values in unit files, files that are not files,
//! peers that never answer, clients that hold connections, pipes closed under clusterctl, no
//! file descriptors left. Each test is the regression test of one class of hole; the fix is
//! named in its comment.

use crate::common;
use common::*;

use std::process::Command;

/// Duration overflow: `kill_timeout = "18446744073709551615s"` passed `--check` and then made
/// `now + d` panic in the daemon. Durations are now bounded at parse time (the same parser for
/// `--check` and the daemon), and every deadline is computed without overflow.
#[test]
fn an_absurd_duration_is_an_error_with_its_position_and_never_reaches_the_daemon() {
    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let calm = daemon.wait_running("calm", 1);
    daemon.write_unit(
        "huge",
        "command = \"sleep 300\"\nkill_timeout = \"18446744073709551615s\"\n",
    );
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(daemon.units_dir())
        .output()
        .expect("clusterd --check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("huge.toml:2:16"), "{stderr}");
    assert!(stderr.contains("too long"), "{stderr}");

    let reload = daemon.ctl(&["daemon-reload"]);
    assert_eq!(reload.status.code(), Some(1), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stderr).contains("too long"));
    assert_eq!(daemon.unit("huge")["state"], "invalid");
    // The daemon is alive and nothing else was touched.
    assert_eq!(daemon.pids("calm"), calm);
    // The longest accepted duration works end to end (stop does not wait for it: the
    // instance leaves on SIGTERM).
    daemon.write_unit(
        "huge",
        "command = \"sleep 300\"\nkill_timeout = \"3650days\"\nready_timeout = \"3650days\"\nrestart_limit = { interval = \"3650days\" }\n",
    );
    assert!(daemon.ctl(&["daemon-reload"]).status.success());
    daemon.wait_running("huge", 1);
    assert!(daemon.ctl(&["stop", "huge"]).status.success());
    assert_eq!(daemon.pids("calm"), calm);
}

/// clusterctl panicked when its reader went away (`clusterctl status --json | head -c 10`):
/// a closed pipe now ends it quietly with success, like `ls | head`.
#[test]
fn clusterctl_exits_quietly_when_its_reader_goes_away() {
    let units: Vec<(String, String)> = (0..40)
        .map(|i| (format!("u{i:02}"), "command = \"sleep 300\"\n".to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = units
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let daemon = Daemon::start(&refs);
    daemon.wait_running("u39", 1);
    for args in ["status --json", "status"] {
        // The reader closes at once, so clusterctl writes into a closed pipe.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{ctl}' --socket '{sock}' {args} | head -c 10 >/dev/null",
                ctl = CLUSTERCTL,
                sock = daemon.socket.display(),
            ))
            .output()
            .expect("sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
        assert!(stderr.is_empty(), "{args}: {stderr}");
    }
    // The exit status itself, without a shell in between.
    let mut child = Command::new(CLUSTERCTL)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("clusterctl");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Requests with unknown fields were accepted by some verbs (`daemon-reload`): every request
/// is now checked against its own fields, and the answer is an error.
#[test]
fn a_request_with_a_field_it_does_not_have_is_refused_with_an_error() {
    use std::io::{BufRead, BufReader, Write};
    let daemon = Daemon::start(&[]);
    for request in [
        r#"{"version":1,"command":"daemon-reload","force":true}"#,
        r#"{"version":1,"command":"status","unit":null,"all":true}"#,
    ] {
        let mut stream = std::os::unix::net::UnixStream::connect(&daemon.socket).expect("connect");
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("send");
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .expect("answer");
        let answer: serde_json::Value = serde_json::from_str(&answer).expect("json");
        assert_eq!(answer["ok"], false, "{request} -> {answer}");
        assert!(
            answer["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown field")),
            "{answer}"
        );
    }
}

/// Blocking calls on the supervisor thread: unit files were read with a plain `read` (a FIFO
/// named `x.toml` hung the daemon, `/dev/zero` was read up to 2 GB), and the stale-socket
/// check did a blocking `connect()` (a peer with a full backlog froze status and
/// daemon-reload) and took any error for "stale" (so it deleted datagram sockets such as
/// `/dev/log`). Unit files are now regular files of bounded size, opened without blocking;
/// socket files are probed with a non-blocking connect and removed only on ECONNREFUSED.
#[test]
fn files_that_are_not_unit_files_and_peers_that_never_answer_cannot_block_clusterd() {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let calm = daemon.wait_running("calm", 1);
    let units = daemon.units_dir();
    nix::unistd::mkfifo(&units.join("fifo.toml"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    std::os::unix::fs::symlink("/dev/zero", units.join("zero.toml")).expect("symlink");

    // A listener that never accepts, its backlog full.
    let full = daemon.path("full.sock");
    let listener = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .expect("socket");
    let address = nix::sys::socket::UnixAddr::new(&full).expect("address");
    nix::sys::socket::bind(listener.as_raw_fd(), &address).expect("bind");
    nix::sys::socket::listen(
        &listener,
        nix::sys::socket::Backlog::new(0).expect("backlog"),
    )
    .expect("listen");
    let mut queued = Vec::new();
    loop {
        let client = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        match nix::sys::socket::connect(client.as_raw_fd(), &address) {
            Ok(()) => queued.push(client),
            Err(_) => break,
        }
        assert!(queued.len() < 1000, "the backlog never filled");
    }
    // A datagram socket, like /dev/log.
    let log = daemon.path("log");
    let _log = std::os::unix::net::UnixDatagram::bind(&log).expect("datagram");
    daemon.write_unit(
        "busy",
        &format!(
            "command = \"sleep 300\"\nlisten = [\"unix:{}\"]\n",
            toml_path(&full)
        ),
    );
    daemon.write_unit(
        "syslog",
        &format!(
            "command = \"sleep 300\"\nlisten = [\"unix:{}\"]\n",
            toml_path(&log)
        ),
    );

    let started = Instant::now();
    let reload = daemon.ctl(&["daemon-reload"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "daemon-reload took {took:?}");
    let answer = String::from_utf8_lossy(&reload.stderr);
    assert!(answer.contains("fifo.toml"), "{answer}");
    assert!(answer.contains("zero.toml"), "{answer}");
    for name in ["fifo", "zero"] {
        let error = daemon.unit(name)["error"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert!(error.contains("not a regular file"), "{name}: {error}");
    }
    for name in ["busy", "syslog"] {
        wait_for(&format!("{name} to fail"), PATIENCE, || {
            daemon.unit(name)["state"] == "failed"
        });
    }
    assert!(log.exists(), "the datagram socket was deleted");
    assert!(full.exists(), "the busy socket was deleted");
    assert_eq!(daemon.pids("calm"), calm);

    // --check reads the same way and does not hang either.
    std::fs::remove_file(units.join("busy.toml")).expect("rm");
    std::fs::remove_file(units.join("syslog.toml")).expect("rm");
    let check = Command::new(CLUSTERD)
        .args(["--check", "--units"])
        .arg(&units)
        .output()
        .expect("--check");
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("fifo.toml") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// Slow clients: 50 control connections that each sent one byte held 50 threads forever.
/// A request must now arrive whole within 5 s, at most 64 connections are served at once,
/// and one more is refused with an error at once.
#[test]
fn slow_clients_are_cut_off_and_cannot_take_every_connection() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    let daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    daemon.wait_running("calm", 1);
    let threads = |pid: u32| -> usize {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let idle_threads = threads(daemon.pid());
    let connect_slowly = |count: usize| -> Vec<UnixStream> {
        (0..count)
            .map(|_| {
                let mut s = UnixStream::connect(&daemon.socket).expect("connect");
                s.write_all(b"{").expect("one byte");
                s
            })
            .collect()
    };

    let slow = connect_slowly(50);
    let started = Instant::now();
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "status with 50 slow clients: {out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "status took {:?}",
        started.elapsed()
    );
    assert!(threads(daemon.pid()) <= idle_threads + 51);
    // Each slow client is answered with an error and cut off at its deadline.
    for mut s in slow {
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let mut answer = String::new();
        s.read_to_string(&mut answer).expect("answer");
        assert!(answer.contains("did not arrive within"), "{answer}");
    }
    wait_for("the connection threads to end", PATIENCE, || {
        threads(daemon.pid()) <= idle_threads
    });

    // More than the limit: the ones beyond it are refused at once.
    let many = connect_slowly(70);
    let mut refused = 0;
    for mut s in many {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        if answer.contains("connections already") {
            refused += 1;
        }
    }
    assert!(refused >= 6, "{refused} refused");
}

/// fd exhaustion: at the fd limit the control socket's accept loop spun at 100 % CPU and
/// stopped answering, and each failed spawn was retried at once, burning the unit's whole
/// restart budget in milliseconds. Now the control socket keeps a reserve fd to answer with,
/// and a start that fails for lack of resources is retried after a growing delay, outside the
/// budget.
#[test]
fn at_its_fd_limit_clusterd_still_answers_does_not_spin_and_does_not_give_up() {
    use std::time::Duration;
    let cpu_ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split(' ').collect())
            .unwrap_or_default();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
        fields
            .get(11)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
    };
    let daemon = Daemon::start_with_fd_limit(
        &[(
            "many",
            "command = \"sleep 300\"\ninstances = 60\nrestart_limit = { burst = 3 }\n",
        )],
        Some(120),
    );
    wait_for("the fd limit to be hit", PATIENCE, || {
        daemon.log().contains("out of system resources")
    });
    let running = daemon.pids("many").len();
    assert!(running > 10 && running < 60, "{running} running");

    // Not spinning: well under half a CPU over two seconds (ticks are 10 ms).
    let before = cpu_ticks(daemon.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(daemon.pid()) - before;
    assert!(used < 100, "clusterd used {used} ticks of CPU in 2 s");

    // Still answering, and the unit has not given up.
    for _ in 0..5 {
        let unit = daemon.unit("many");
        assert_eq!(unit["gave_up"], false, "{unit}");
        assert_eq!(unit["restarts"], 0, "{unit}");
    }
    // Room again: new instances start as usual.
    let out = daemon.ctl(&["scale", "many", "5"]);
    assert!(out.status.success(), "{out:?}");
    let count = (running - 2).to_string();
    let out = daemon.ctl(&["scale", "many", &count]);
    assert!(out.status.success(), "{out:?}");
    daemon.wait_running("many", running - 2);
    assert_eq!(daemon.unit("many")["restarts"], 0);
}

/// A small deterministic generator (xorshift64*): the same seed gives the same files, so a
/// failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// One unit file of ordinary and hostile values, keys in any order, sometimes cut short or
/// with garbage bytes; half of the files are valid. The commands it can run are harmless and
/// the instance counts small.
fn hostile_unit_file(random: &mut Random) -> Vec<u8> {
    // (key, valid values, hostile values)
    type Choices<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);
    let keys: &[Choices] = &[
        (
            "command",
            &[
                "\"sleep 30\"",
                "\"true\"",
                "\"false\"",
                "[\"sh\", \"-c\", \"exit 3\"]",
                "\"no-such-program\"",
            ],
            &[
                "\"\"",
                "[]",
                "[1, 2]",
                "\"sh -c 'unterminated\"",
                "42",
                "\"sleep\\u0000 30\"",
            ],
        ),
        (
            "instances",
            &["0", "1", "2", "3"],
            &[
                "-1",
                "4097",
                "99999999999999999999",
                "2.5",
                "\"two\"",
                "true",
            ],
        ),
        (
            "restart",
            &["\"always\"", "\"on-failure\"", "\"never\""],
            &["\"sometimes\"", "1"],
        ),
        (
            "restart_limit",
            &[
                "{ burst = 1, interval = \"1s\" }",
                "{ burst = 0 }",
                "{ interval = \"3650days\" }",
            ],
            &[
                "{ burst = -1 }",
                "{ interval = \"0s\" }",
                "{ interval = \"18446744073709551615s\" }",
                "{ burst = 4294967296 }",
                "{ bust = 1 }",
                "\"10/1m\"",
            ],
        ),
        (
            "kill_signal",
            &["\"SIGTERM\"", "\"kill\"", "\"int\""],
            &["\"SIGRTMIN+3\"", "\"SIGNOPE\"", "9", "\"\""],
        ),
        (
            "kill_timeout",
            &["\"100ms\"", "\"0s\"", "\"3650days\""],
            &[
                "\"3651days\"",
                "\"18446744073709551615s\"",
                "\"-1s\"",
                "\"soon\"",
                "5",
            ],
        ),
        (
            "ready",
            &["\"started\"", "\"notify\""],
            &["\"eventually\"", "false"],
        ),
        (
            "ready_timeout",
            &["\"1s\"", "\"0s\"", "\"1y\""],
            &["\"99999999999999999999ms\"", "\"11y\""],
        ),
        (
            "listen",
            &[
                "[\"tcp://127.0.0.1:0\"]",
                "[\"unix:fuzz.sock\"]",
                "[\"tcp://[::1]:0\", \"tcp://127.0.0.1:0\"]",
            ],
            &[
                "[\"tcp://localhost:80\"]",
                "[\"udp://127.0.0.1:1\"]",
                "[\"unix:\"]",
                "\"tcp://127.0.0.1:0\"",
                "[\"tcp://127.0.0.1:99999\"]",
            ],
        ),
        ("balance", &["\"shared\"", "\"reuseport\""], &["\"random\""]),
        (
            "environment",
            &["{ A = \"1\" }", "{ PATH = \"/nowhere\" }"],
            &[
                "{ \"\" = \"x\" }",
                "{ \"A=B\" = \"x\" }",
                "{ A = { B = \"c\" } }",
                "[\"A=1\"]",
            ],
        ),
        (
            "working_directory",
            &["\"/\"", "\"/no/such/dir\"", "\"relative\""],
            &["1"],
        ),
        (
            "user",
            &["\"nobody\"", "\"root\"", "\"65534\""],
            &["\"no-such-user\"", "\"4294967295\"", "\"\""],
        ),
        ("group", &["\"nogroup\"", "\"0\""], &["\"no-such-group\""]),
        ("node_cluster", &["false"], &["\"fair\"", "1"]),
        (
            "on_giveup",
            &["\"true\"", "[\"sh\", \"-c\", \"exit 0\"]"],
            &["\"\""],
        ),
        ("description", &["\"fuzz\"", "\"\\u001b[2J\""], &["1"]),
        ("no_such_key", &[], &["1"]),
    ];
    let hostile_file = random.below(2) == 0;
    let mut text = String::new();
    for (key, valid, hostile) in keys {
        let present = *key == "command" || random.below(3) != 0;
        let hostile_value = hostile_file && random.below(4) == 0;
        if !present || (!hostile_value && valid.is_empty()) {
            continue;
        }
        let value = if hostile_value {
            random.pick(hostile)
        } else {
            random.pick(valid)
        };
        text.push_str(&format!("{key} = {value}\n"));
    }
    let mut bytes = text.into_bytes();
    if hostile_file {
        match random.below(4) {
            0 => bytes.truncate(random.below(bytes.len() + 1)),
            1 => {
                let at = random.below(bytes.len() + 1);
                let garbage: Vec<u8> = (0..random.below(16)).map(|_| random.next() as u8).collect();
                bytes.splice(at..at, garbage);
            }
            2 => bytes.extend_from_slice(b"[restart_limit]\nburst = 1\n[[x]]\n"),
            _ => {}
        }
    }
    bytes
}

/// The unit-file fuzzing of `--check`, carried to the daemon itself: random hostile unit
/// files applied by daemon-reload, round after round, with instances starting and stopping
/// between them. clusterd must answer every request and never panic or exit.
#[test]
fn a_daemon_fed_random_unit_files_through_daemon_reload_never_falls_over() {
    let mut daemon = Daemon::start(&[("calm", "command = \"sleep 300\"\n")]);
    let calm = daemon.wait_running("calm", 1);
    // Another seed explores other files: CLUSTERD_FUZZ_SEED=n cargo test daemon_fed
    let seed: u64 = std::env::var("CLUSTERD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c1a5_7e4d_0001);
    let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let units = daemon.units_dir();
    let mut outcomes = [0usize; 2];
    for round in 0..300 {
        for slot in 0..3 {
            let path = units.join(format!("fuzz{slot}.toml"));
            match random.below(5) {
                0 => {
                    let _ = std::fs::remove_file(&path);
                }
                1 => {}
                _ => std::fs::write(&path, hostile_unit_file(&mut random)).expect("write"),
            }
        }
        let reload = daemon.ctl(&["daemon-reload"]);
        assert!(
            matches!(reload.status.code(), Some(0 | 1)),
            "round {round}: daemon-reload {reload:?}\n{}",
            daemon.log()
        );
        outcomes[usize::from(reload.status.code() == Some(1))] += 1;
        let status = daemon.ctl(&["status", "--json"]);
        assert!(status.status.success(), "round {round}: {status:?}");
    }
    assert_eq!(daemon.pids("calm"), calm, "an unrelated unit was touched");
    let log = daemon.log();
    // The files were not all rejected: valid ones ran instances, some of them crashing.
    let started = log.matches("]: started, pid").count();
    eprintln!(
        "daemon-reload accepted {} and refused {} times; {started} instances started",
        outcomes[0], outcomes[1]
    );
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    assert!(started > 10, "{started} instances started");
    assert!(!log.contains("panicked"), "{log}");
    assert!(daemon.terminate().success(), "{}", daemon.log());
}
