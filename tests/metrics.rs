//! Prometheus metrics: `clusterctl metrics` and `clusterd --metrics-listen` give the same
//! families, and a real parser (the `prometheus_client` Python package; Debian's
//! python3-prometheus-client) reads them.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

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
