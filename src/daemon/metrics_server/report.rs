//! Gathering the metrics for `/metrics`, on a thread of its own ("metrics-report"), so that the
//! thread serving the connections never waits: it asks ([`Reporter::ask`]), goes on polling,
//! and is woken by an eventfd when the whole response is ready ([`Reporter::take`]).
//!
//! The report is the supervisor loop's answer to a status request, sent as `Event::Control`
//! like the control socket's: the loop answers on a channel of capacity one, so it never
//! waits for this thread either; if the answer takes longer than [`REPORT_DEADLINE`], the
//! scrape gets 503 and the late answer is dropped.

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::http;
use crate::daemon::signals::EventSender;
use crate::protocol::{Request, Response};
use crate::supervisor::event::Event;

/// How long the supervisor loop has to answer a status request for a scrape.
pub(super) const REPORT_DEADLINE: Duration = Duration::from_secs(5);

/// The serving thread's end of the report thread.
pub(super) struct Reporter {
    asks: Sender<()>,
    responses: Receiver<Arc<[u8]>>,
    /// Rung by the report thread once a response is in `responses`.
    bell: Arc<EventFd>,
}

impl Reporter {
    pub(super) fn start(events: EventSender) -> std::io::Result<Reporter> {
        // Capacity one each way: the serving thread asks only when no report is on its way.
        let (asks, asked) = crossbeam_channel::bounded::<()>(1);
        let (answer, responses) = crossbeam_channel::bounded(1);
        let bell = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let ring = Arc::clone(&bell);
        thread::Builder::new()
            .name("metrics-report".into())
            .spawn(move || {
                for () in asked {
                    if answer.send(response(&events)).is_err() {
                        return;
                    }
                    let _ = ring.write(1);
                }
            })?;
        Ok(Reporter {
            asks,
            responses,
            bell,
        })
    }

    /// Asks for a fresh response; false if the report thread is gone.
    pub(super) fn ask(&self) -> bool {
        !matches!(
            self.asks.try_send(()),
            Err(crossbeam_channel::TrySendError::Disconnected(()))
        )
    }

    /// The fd that becomes readable when a response is ready.
    pub(super) fn bell(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }

    /// The eventfd [`Reporter::bell`] is, for another to ring: the hand-over's asks
    /// (`handover`) ring it too, rather than cost clusterd one more descriptor.
    pub(super) fn bell_to_share(&self) -> Arc<EventFd> {
        Arc::clone(&self.bell)
    }

    /// The response asked for, if it is ready.
    pub(super) fn take(&self) -> Option<Arc<[u8]>> {
        let _ = self.bell.read();
        self.responses.try_recv().ok()
    }
}

/// The whole HTTP response to a scrape: the metrics, or 503 when the loop does not answer.
fn response(events: &EventSender) -> Arc<[u8]> {
    let bytes = match metrics(events) {
        Ok(text) => http::response("200 OK", http::EXPOSITION, "", text.as_bytes()),
        Err(e) => http::response(
            "503 Service Unavailable",
            http::TEXT,
            "",
            format!("{e}\n").as_bytes(),
        ),
    };
    bytes.into()
}

fn metrics(events: &EventSender) -> Result<String, String> {
    let (reply, answer) = crossbeam_channel::bounded(1);
    events
        .send(Event::Control {
            request: Request::Status { unit: None },
            reply,
        })
        .map_err(|_| "clusterd is shutting down".to_string())?;
    let response: Response = answer
        .recv_timeout(REPORT_DEADLINE)
        .map_err(|_| "clusterd did not answer in time".to_string())?;
    let report = response.status.ok_or("clusterd is shutting down")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Ok(crate::metrics::render(&report, now))
}
