//! `clusterd --metrics-listen ADDR`: Prometheus scrapes `GET /metrics` here. A thread of its
//! own serves one connection at a time (a scraper connects every few seconds): it asks the
//! supervisor loop for a status report, as the control socket does, and renders it with
//! [`crate::metrics`]. Only `GET /metrics` is served; a client must send its request within
//! 5 s and take the answer within 5 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};

use crate::daemon::signals::EventSender;
use crate::daemon::thread_guard::ThreadGuard;
use crate::protocol::{Request, Response};
use crate::supervisor::event::Event;

const DEADLINE: Duration = Duration::from_secs(5);
/// A request head longer than this is refused.
const MAX_HEAD: usize = 8 * 1024;

/// Binds `address` and serves `/metrics` on a thread of its own.
pub(crate) fn serve(address: SocketAddr, events: EventSender) -> Result<(), String> {
    let listener = TcpListener::bind(address)
        .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
    info!("metrics at http://{address}/metrics");
    thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let mut guard = ThreadGuard::new("metrics");
            for stream in listener.incoming() {
                match stream {
                    // A panic costs only that scrape (see thread_guard).
                    Ok(stream) => {
                        if let Err(caught) = guard.run(|| answer(stream, &events)) {
                            guard.report(caught, "answering a scrape", "that connection is closed");
                        }
                    }
                    Err(e) => {
                        warn!("metrics: accept failed: {e}");
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

fn answer(mut stream: TcpStream, events: &EventSender) {
    let _ = stream.set_read_timeout(Some(DEADLINE));
    let _ = stream.set_write_timeout(Some(DEADLINE));
    let Some(head) = read_head(&mut stream) else {
        return;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/metrics") => match status_report(events) {
            Ok(text) => ("200 OK", text),
            Err(e) => ("503 Service Unavailable", format!("{e}\n")),
        },
        ("GET", _) => ("404 Not Found", "only /metrics is here\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

/// The request line and headers, up to the blank line.
fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buffer).ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn status_report(events: &EventSender) -> Result<String, String> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    events
        .send(Event::Control {
            request: Request::Status { unit: None },
            reply,
        })
        .map_err(|_| "clusterd is shutting down".to_string())?;
    let response: Response = answer
        .recv_timeout(DEADLINE)
        .map_err(|_| "clusterd did not answer".to_string())?;
    let report = response.status.ok_or("no status")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(crate::metrics::render(&report, now))
}
