//! The signal thread: SIGCHLD, SIGTERM, SIGINT and SIGHUP become [`Event::Signal`]s on the
//! supervisor's channel. Signals of one kind may coalesce; the supervisor copes (it drains
//! `waitpid` on every SIGCHLD).

use std::thread;

use crossbeam_channel::Sender;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::supervisor::event::Event;

/// Installs the handlers (at once, so no SIGCHLD is missed) and starts forwarding.
pub(crate) fn forward_signals(events: Sender<Event>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
