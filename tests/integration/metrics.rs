//! Prometheus metrics: `clusterctl metrics` and `clusterd --metrics-listen` give the same
//! families, and a real parser (the `prometheus_client` Python package; Debian's
//! python3-prometheus-client) reads them. The endpoint holds against hostile clients on real
//! sockets (slow, silent, flooding, never reading, by the thousand), and the memory-limit
//! counter counts replacements of a real instance.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A python3 that has `prometheus_client`: the one on PATH, or the system's.
fn python_with_parser() -> Option<&'static str> {
    ["python3", "/usr/bin/python3"].into_iter().find(|python| {
        Command::new(python)
            .args(["-c", "import prometheus_client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Parses `text` with prometheus_client and prints `family type sample-count` per family.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    print(family.name, family.type, len(family.samples))
"#;

fn parsed(python: &str, text: &str) -> String {
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the parser refused:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(CTL_DEADLINE))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer
}

#[test]
fn metrics_parse_with_a_real_prometheus_parser_from_clusterctl_and_http() {
    let Some(python) = python_with_parser() else {
        available(
            "the prometheus_client Python package (python3-prometheus-client)",
            false,
        );
        return;
    };
    let port = free_port();
    let daemon = Daemon::start_with_args(
        &[
            ("web", "command = \"sleep 300\"\ninstances = 2\n"),
            ("broken", "command = 42\n"),
        ],
        &["--metrics-listen", &format!("127.0.0.1:{port}")],
    );
    daemon.wait_running("web", 2);

    let out = daemon.ctl(&["metrics"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let families = parsed(python, &text);
    for family in [
        "clusterd_instance_up gauge 2",
        "clusterd_instance_restarts counter 2",
        "clusterd_instance_cpu_seconds counter 2",
        "clusterd_instance_resident_memory_bytes gauge 2",
        "clusterd_instance_start_time_seconds gauge 2",
        "clusterd_unit_restarts counter 2",
        "clusterd_unit_gave_up gauge 2",
        "clusterd_unit_give_ups counter 2",
        "clusterd_unit_invalid gauge 2",
        "process_cpu_seconds counter 1",
        "process_resident_memory_bytes gauge 1",
    ] {
        assert!(
            families.contains(family),
            "{family} missing in\n{families}\n{text}"
        );
    }
    assert!(
        text.contains("clusterd_instance_up{unit=\"web\",instance=\"1\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("clusterd_unit_invalid{unit=\"broken\"} 1\n"),
        "{text}"
    );

    let answer = http_get(port, "/metrics");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("Content-Type: text/plain; version=0.0.4"),
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    assert_eq!(parsed(python, body), families);
    assert!(http_get(port, "/").starts_with("HTTP/1.1 404"));
}

/// A scrape must be answered within this while hostile clients hang. Generous (scrapes take
/// milliseconds), yet below Prometheus's default scrape timeout of 10 s, which every scrape
/// missed before the fix: one silent connection held the server for 5 s, a slowloris for as
/// long as it trickled.
const SCRAPE_BOUND: Duration = Duration::from_secs(8);

/// clusterd serving metrics at `address`, and the address its log says it listens on.
fn with_metrics(units: &[(&str, &str)], address: &str) -> (Daemon, SocketAddr) {
    let daemon = Daemon::start_with_args(units, &["--metrics-listen", address]);
    let at = metrics_address(&daemon);
    (daemon, at)
}

/// Where clusterd's log says it serves metrics.
fn metrics_address(daemon: &Daemon) -> SocketAddr {
    let mut at = None;
    wait_for("the metrics address in clusterd's log", PATIENCE, || {
        at = daemon
            .log()
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split("/metrics").next())
            .and_then(|a| a.parse().ok());
        at.is_some()
    });
    at.expect("address")
}

/// clusterd with metrics at `address` and one unit, `web`, running.
fn serving_web(address: &str) -> (Daemon, SocketAddr) {
    let (daemon, at) = with_metrics(&[("web", "command = \"sleep 300\"\n")], address);
    daemon.wait_running("web", 1);
    (daemon, at)
}

fn connect(at: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&at, PATIENCE).expect("connect")
}

/// Sends `request` on a new connection and reads the whole answer; how long it took.
fn exchange(at: SocketAddr, request: &[u8]) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = connect(at);
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    stream.write_all(request).expect("request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

fn scrape(at: SocketAddr) -> (String, Duration) {
    exchange(at, b"GET /metrics HTTP/1.1\r\nHost: clusterd\r\n\r\n")
}

/// Scrapes `count` times while hostile clients hang; each must get the metrics within
/// [`SCRAPE_BOUND`]. Returns how long each took.
fn scrapes_answered(at: SocketAddr, count: usize, unit: &str) -> Vec<Duration> {
    (0..count)
        .map(|_| {
            let (answer, took) = scrape(at);
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(
                answer.contains(&format!(
                    "clusterd_unit_wanted_instances{{unit=\"{unit}\"}} 1"
                )),
                "{answer}"
            );
            assert!(took < SCRAPE_BOUND, "a scrape took {took:?}");
            took
        })
        .collect()
}

/// A slowloris: sends a request head one byte every `every` (never finishing it within
/// `give_up`) and returns how long after connecting clusterd ended the connection, or None.
fn trickle(
    at: SocketAddr,
    every: Duration,
    give_up: Duration,
) -> thread::JoinHandle<Option<Duration>> {
    let mut stream = connect(at);
    let started = Instant::now();
    thread::spawn(move || {
        stream.set_read_timeout(Some(every)).ok()?;
        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'));
        for byte in head {
            if started.elapsed() > give_up {
                return None;
            }
            if stream.write_all(&[*byte]).is_err() {
                return Some(started.elapsed());
            }
            let mut answer = [0u8; 256];
            match stream.read(&mut answer) {
                // Nothing yet: the next byte.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // Closed (after a 408), or reset.
                _ => return Some(started.elapsed()),
            }
        }
        None
    })
}

/// Waits until clusterd has closed `stream` (it reads EOF or an error); how long that took.
fn closed_within(mut stream: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).ok()?;
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        _ => Some(started.elapsed()),
    }
}

#[test]
fn a_scrape_is_answered_at_once_while_a_slowloris_and_silent_connections_hang() {
    let (_daemon, at) = serving_web("127.0.0.1:0");
    // The issue's two cases at once: 8 silent connections and one sending a byte every 2 s
    // (fewer than clusterd serves at once, so none of them is pushed out for the scrape).
    let silent: Vec<TcpStream> = (0..8).map(|_| connect(at)).collect();
    let slow = trickle(at, Duration::from_secs(2), Duration::from_secs(60));
    let took = scrapes_answered(at, 5, "web");
    eprintln!("scrapes with 8 silent connections and a slowloris: {took:?}");
    // Their deadline is for the whole request: a byte every 2 s does not extend it.
    let silent_closed: Vec<_> = silent
        .into_iter()
        .map(|s| closed_within(s, PATIENCE))
        .collect();
    let slow_closed = slow.join().expect("slowloris thread");
    eprintln!(
        "silent connections closed after {silent_closed:?}; the slowloris after {slow_closed:?}"
    );
    assert!(
        silent_closed.iter().all(Option::is_some),
        "a silent connection stayed open: {silent_closed:?}"
    );
    let slow_closed = slow_closed.expect("the slowloris was never cut off");
    assert!(
        slow_closed < Duration::from_secs(15),
        "the slowloris was cut off after {slow_closed:?}, not at its 5 s deadline"
    );
}

#[test]
fn scrapes_are_answered_while_more_hostile_clients_than_slots_flood_and_never_read() {
    let (daemon, at) = serving_web("127.0.0.1:0");
    // More silent connections than clusterd serves at once (16): the oldest give way.
    let silent: Vec<TcpStream> = (0..40).map(|_| connect(at)).collect();
    // Clients that ask and never read their answer.
    let deaf: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = connect(at);
            stream
                .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .expect("request");
            stream
        })
        .collect();
    // One sends a request head without end, as fast as it can: clusterd stops reading at
    // 8 KiB and closes, so the sender's writes fail long before 256 MiB.
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        let mut stream = connect(at);
        thread::spawn(move || {
            let _ = stream.set_write_timeout(Some(PATIENCE));
            let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Flood: ");
            let chunk = vec![b'a'; 64 << 10];
            let mut sent = 0usize;
            while sent < 256 << 20 && !stop.load(Ordering::Relaxed) {
                match stream.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(_) => return Some(sent),
                }
            }
            None
        })
    };
    let slow = trickle(at, Duration::from_secs(1), Duration::from_secs(60));
    let took = scrapes_answered(at, 5, "web");
    eprintln!("scrapes with 40 silent, 20 deaf, a flooding and a slow client: {took:?}");
    let flooded = flood.join().expect("flood thread");
    stop.store(true, Ordering::Relaxed);
    eprintln!("the flood was cut off after {flooded:?} bytes");
    assert!(
        flooded.is_some(),
        "clusterd went on reading a request head of 256 MiB"
    );
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let _ = slow.join();
    drop((silent, deaf));
}

/// Threads that open connections to `at` as fast as they can, each sending `request` (if
/// any) and never reading, the latest 50 per thread kept open; they stop when dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Flood {
    fn start(at: SocketAddr, threads: usize, request: &'static [u8]) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(mut stream) = TcpStream::connect_timeout(&at, PATIENCE) {
                            let _ = stream.write_all(request);
                            held.push_back(stream);
                            if held.len() > 50 {
                                held.pop_front();
                            }
                        }
                    }
                })
            })
            .collect();
        Flood { stop, threads }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[test]
fn scrapes_are_answered_while_threads_flood_whole_requests_and_never_read() {
    let (_daemon, at) = serving_web("127.0.0.1:0");
    // Eight threads open connections as fast as they can, each sending a whole GET and
    // never reading, for as long as the scrapes take.
    let flood = Flood::start(at, 8, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    // A scrape every 100 ms: every one is answered (before, about one in 24 was closed
    // unanswered to make room for a flooder's connection; then, under load, one waiting for
    // a slow report was, for the flood's newcomers: now they wait in the listen queue).
    let took: Vec<Duration> = (0..40)
        .map(|_| {
            thread::sleep(Duration::from_millis(100));
            scrapes_answered(at, 1, "web")[0]
        })
        .collect();
    drop(flood);
    eprintln!(
        "40 scrapes under a flood of whole requests: slowest {:?}",
        took.iter().max()
    );
}

#[test]
fn a_scrape_whose_request_comes_late_is_answered_while_silent_newcomers_flood() {
    let (_daemon, at) = serving_web("127.0.0.1:0");
    // Four threads connect as fast as they can and send nothing: every newcomer needs a
    // slot. A scraper on a loaded machine may connect, then be scheduled out before it
    // writes: it must not lose its connection to the newcomers meanwhile (before, each
    // newcomer took the slot of the oldest connection still sending: the scraper's; then,
    // under load, of the newest: again the scraper's, just accepted. Now the kernel holds a
    // connection until its request comes, TCP_DEFER_ACCEPT).
    let flood = Flood::start(at, 4, b"");
    let answers: Vec<String> = (0..5)
        .map(|_| {
            let mut stream = connect(at);
            stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
            thread::sleep(Duration::from_millis(300));
            let mut answer = Vec::new();
            if stream
                .write_all(b"GET /metrics HTTP/1.1\r\nHost: clusterd\r\n\r\n")
                .is_ok()
            {
                let _ = stream.read_to_end(&mut answer);
            }
            String::from_utf8_lossy(&answer).into_owned()
        })
        .collect();
    drop(flood);
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    }
}

/// Raises this test process's soft descriptor limit to its hard one (it opens a thousand).
/// Process-wide, for every test of the one binary from then on: it only gives room (the
/// other tests need theirs while this one holds a thousand), and no test depends on the
/// limit it inherits (the ones about limits set theirs: `start_with_fd_limit`, `ulimit`).
fn raise_own_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a valid local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The sockets among them: what connections cost clusterd (its idle work may open other
/// descriptors meanwhile, such as the cgroup of the next start).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_thousand_connections_take_no_more_than_sixteen_descriptors_of_clusterd() {
    raise_own_fd_limit();
    let (daemon, at) = serving_web("127.0.0.1:0");
    let before = open_sockets(daemon.pid());
    let mut held = Vec::new();
    let mut most = 0;
    let started = Instant::now();
    for _ in 0..1000 {
        // A connection the listen queue did not take in time is the kernel's business; the
        // ones that are taken must not grow clusterd.
        if let Ok(mut stream) = TcpStream::connect_timeout(&at, Duration::from_secs(2)) {
            // A first byte, so that the kernel hands it to clusterd at once (it holds a
            // silent one for a second, TCP_DEFER_ACCEPT).
            let _ = stream.write_all(b"G");
            held.push(stream);
        }
        most = most.max(open_sockets(daemon.pid()));
    }
    let connecting = started.elapsed();
    let took = scrapes_answered(at, 3, "web");
    most = most.max(open_sockets(daemon.pid()));
    eprintln!(
        "{} of 1000 connections made in {connecting:?}; clusterd's sockets {before} before, at most {most}; scrapes {took:?}",
        held.len()
    );
    // 16 connections, and one more for a moment while the oldest makes room.
    assert!(
        most <= before + 17,
        "clusterd went from {before} to {most} sockets"
    );
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn near_its_descriptor_limit_clusterd_answers_status_and_scrapes_while_connections_pile_up() {
    const LIMIT: u64 = 64;
    // Instances take clusterd close to the limit (a few descriptors each).
    let daemon = Daemon::start_with_fd_limit_and_args(
        &[
            ("web", "command = \"sleep 300\"\n"),
            ("crowd", "command = \"sleep 300\"\ninstances = 4\n"),
        ],
        LIMIT,
        &["--metrics-listen", "127.0.0.1:0"],
    );
    daemon.wait_running("crowd", 4);
    let at = metrics_address(&daemon);
    let before = open_fds(daemon.pid());
    let mut held = Vec::new();
    let mut most = 0;
    for _ in 0..100 {
        if let Ok(mut stream) = TcpStream::connect_timeout(&at, Duration::from_secs(2)) {
            // A first byte, so that the kernel hands it to clusterd at once (it holds a
            // silent one for a second, TCP_DEFER_ACCEPT).
            let _ = stream.write_all(b"G");
            held.push(stream);
        }
        most = most.max(open_fds(daemon.pid()));
    }
    let out = daemon.ctl(&["status"]);
    assert!(out.status.success(), "{out:?}\n{}", daemon.log());
    let took = scrapes_answered(at, 3, "web");
    most = most.max(open_fds(daemon.pid()));
    eprintln!(
        "limit {LIMIT}: {before} descriptors before, at most {most} with {} connections; scrapes {took:?}",
        held.len()
    );
    // Connections never take one of the last 16 descriptors for themselves: at most one for
    // the moment it takes to close another, and a few that clusterd's idle work may open
    // meanwhile (the cgroups of the next starts). Before the fix, 59 of 64.
    assert!(most as u64 <= LIMIT - 16 + 4, "{most} descriptors open");
}

#[test]
fn only_a_get_of_the_metrics_path_is_answered_with_metrics() {
    let (_daemon, at) = serving_web("127.0.0.1:0");
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Huge: ".to_vec();
    // One byte over the cap, all of which clusterd reads: its answer is not lost to a reset.
    huge.resize(8 * 1024 + 1, b'a');
    for (request, status) in [
        (&b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"[..], "HTTP/1.1 200 OK"),
        (
            b"POST /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            b"HEAD /metrics HTTP/1.1\r\n\r\n",
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        (
            b"GET /metrics/../../etc/shadow HTTP/1.1\r\n\r\n",
            "HTTP/1.1 404 Not Found",
        ),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "HTTP/1.1 400 Bad Request",
        ),
        (&huge, "HTTP/1.1 431 Request Header Fields Too Large"),
    ] {
        let (answer, _) = exchange(at, request);
        assert!(
            answer.starts_with(&format!("{status}\r\n")),
            "{:?} got {answer:?}",
            String::from_utf8_lossy(request)
        );
        if status != "HTTP/1.1 200 OK" {
            assert!(!answer.contains("clusterd_"), "{answer}");
        }
    }
}

#[test]
fn the_address_may_be_a_host_name_and_port_0_is_logged_as_the_port_chosen() {
    let (_daemon, at) = serving_web("localhost:0");
    assert!(at.ip().is_loopback() && at.port() != 0, "{at}");
    scrapes_answered(at, 1, "web");

    // Wrong addresses are refused as wrong flags, at once and without a name look-up.
    for (address, says) in [
        ("localhost", "HOST:PORT"),
        ("localhost:http-alt", "HOST:PORT"),
        ("127.0.0.1:70000", "HOST:PORT"),
    ] {
        let out = Command::new(CLUSTERD)
            .args(["--units", "/nonexistent", "--metrics-listen", address])
            .output()
            .expect("clusterd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{address}: {stderr}");
        assert!(stderr.contains(says), "{address}: {stderr}");
    }
}

/// Takes 200 MiB in its first three runs (counted in `runs`), not in the fourth; says it is
/// ready only after a second, so that a replacement over the limit is checked several times
/// before it can itself be replaced.
const HOG: &str = r#"
import os, socket, time
runs = int(open("runs").read()) + 1 if os.path.exists("runs") else 1
with open("runs.tmp", "w") as f:
    f.write(str(runs))
os.rename("runs.tmp", "runs")
if runs <= 3:
    hoard = bytearray(200 << 20)
    hoard[::4096] = b"x" * len(hoard[::4096])
time.sleep(1)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(os.environ["NOTIFY_SOCKET"])
s.send(b"READY=1")
while True:
    time.sleep(1)
"#;

#[test]
fn memory_limit_replacements_count_replacements_not_checks() {
    let files = tempfile::tempdir().expect("tmp");
    std::fs::write(files.path().join("hog.py"), HOG).expect("script");
    let unit = format!(
        "command = [\"python3\", \"hog.py\"]\nworking_directory = \"{}\"\nready = \"notify\"\nmemory_max = \"100MiB\"\nmemory_check_interval = \"100ms\"\nrestart_limit = {{ burst = 100, interval = \"1m\" }}\n",
        toml_path(files.path())
    );
    let (daemon, at) = with_metrics(&[("hog", &unit)], "127.0.0.1:0");
    let runs = || std::fs::read_to_string(files.path().join("runs")).unwrap_or_default();
    // The fourth run is small; once it is the only instance and ready, nothing else happens.
    wait_for("the fourth run to serve alone", PATIENCE, || {
        let unit = daemon.unit("hog");
        let instances = unit["instances"].as_array().cloned().unwrap_or_default();
        runs() == "4" && instances.len() == 1 && instances[0]["state"] == "running"
    });
    let (answer, _) = scrape(at);
    assert!(
        answer.contains("clusterd_unit_memory_limit_replacements_total{unit=\"hog\"} 3\n"),
        "three replacements happened:\n{answer}\n{}",
        daemon.log()
    );
    assert_eq!(daemon.unit("hog")["memory_replacements"], 3);
}
