//! HTTP on loopback for the tests: one GET, and a load loop that counts what a reload or a
//! crash cost its clients.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One HTTP GET; returns the pid that answered.
pub(crate) fn get(port: u16) -> std::io::Result<u32> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Connection: close, or a keep-alive server would leave the read waiting.
    stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("bad answer: {answer:?}")));
    }
    answer
        .rsplit("\r\n\r\n")
        .next()
        .and_then(|body| body.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no pid in answer"))
}

/// Requests sent by a background load loop, by outcome.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    pub(crate) ok: usize,
    pub(crate) refused: usize,
    pub(crate) failed: Vec<String>,
}

impl LoadReport {
    /// Requests were answered, and none was refused or failed.
    pub(crate) fn assert_every_request_served(&self) {
        assert!(self.ok > 0, "{self:?}");
        assert_eq!(self.refused, 0, "{self:?}");
        assert!(self.failed.is_empty(), "{self:?}");
    }
}

/// Sends requests one after another until stopped (bounded by `limit` in any case).
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<LoadReport>>,
}

impl Load {
    pub(crate) fn start(port: u16, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut report = LoadReport::default();
            let end = Instant::now() + limit;
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                match get(port) {
                    Ok(_) => report.ok += 1,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => report.refused += 1,
                    Err(e) => report.failed.push(e.to_string()),
                }
            }
            report
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    pub(crate) fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .map(|h| h.join().expect("load thread"))
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
