//! Where clusterd's own log lines go: standard error, written straight away — except on the
//! supervisor loop's thread while it reacts to events, where lines are held back and written
//! when the loop is about to wait again. A crashed instance's replacement is forked before
//! the line that says it crashed is written: writing to a terminal or a pipe to journald takes
//! tens of microseconds, which a restart should not wait for. Order is kept: the loop's lines
//! come out in the order it logged them.

use std::cell::RefCell;
use std::io::{self, Write};

thread_local! {
    /// Lines the loop logged since it last flushed; `None` on threads that write at once.
    static HELD: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The log target clusterd's logger writes to (`env_logger::Target::Pipe`).
pub struct LogOutput;

impl Write for LogOutput {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let held = HELD.with(|held| match held.borrow_mut().as_mut() {
            Some(lines) => {
                lines.extend_from_slice(bytes);
                true
            }
            None => false,
        });
        if !held {
            io::stderr().lock().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// From now on, this thread's log lines wait for [`write_held`] — until the guard returned
/// is dropped, which writes them and stops holding.
pub(crate) fn hold_on_this_thread() -> Holding {
    HELD.with(|held| {
        held.borrow_mut().get_or_insert_with(Vec::new);
    });
    // A panic must not take the lines that explain it with it.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        write_held();
        previous(info);
    }));
    Holding(())
}

/// Holding log lines on this thread; see [`hold_on_this_thread`].
pub(crate) struct Holding(());

impl Drop for Holding {
    fn drop(&mut self) {
        write_held();
        HELD.with(|held| held.borrow_mut().take());
    }
}

/// Writes the lines this thread held back.
pub(crate) fn write_held() {
    HELD.with(|held| {
        if let Some(lines) = held.borrow_mut().as_mut() {
            if !lines.is_empty() {
                // Nothing sensible to do if standard error is gone.
                let _ = io::stderr().lock().write_all(lines);
                lines.clear();
            }
        }
    });
}
