//! A panic in one of clusterd's helper threads (logs, worker-io, control, metrics) must not
//! end the daemon, and must not end the thread either: every instance's output, channel or
//! control connection depends on it. Each thread runs its per-event work (one pipe read, one
//! command, one connection) through [`ThreadGuard::run`]: a panic there is caught, logged
//! once with what was being done, and the caller drops only what it was working on (that
//! source, follower, channel or connection); the thread and the rest of its state go on.
//!
//! This is the second line of defence: the code is written not to panic (checked slicing, no
//! `unwrap` on what a peer or the OS sends). It needs `panic = "unwind"` (Cargo.toml); under
//! `abort` nothing could be caught and any panic would end clusterd with every instance.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use log::error;

use crate::log_limit::{LogLimit, Verdict};

/// One helper thread's guard: its name for the log, and a limit on how often it logs.
#[derive(Debug)]
pub(crate) struct ThreadGuard {
    thread: &'static str,
    warnings: LogLimit,
}

impl ThreadGuard {
    pub(crate) fn new(thread: &'static str) -> Self {
        ThreadGuard {
            thread,
            warnings: LogLimit::default(),
        }
    }

    /// Runs `work`, catching a panic.
    ///
    /// `AssertUnwindSafe`: after a panic the caller throws away the object the work was on;
    /// what else the work touched is left as a partly done step would leave it, which every
    /// thread here tolerates (they hold no locks across a step and keep no invariants between
    /// two of their maps that a missing entry breaks).
    pub(crate) fn run<R>(&self, work: impl FnOnce() -> R) -> Result<R, Caught> {
        catch_unwind(AssertUnwindSafe(work)).map_err(|payload| Caught {
            message: message(payload.as_ref()).to_string(),
        })
    }

    /// Logs a caught panic: what the thread was doing, and what it drops because of it.
    pub(crate) fn report(&mut self, caught: Caught, context: &str, consequence: &str) {
        if let Verdict::Show { suppressed, last } = self.warnings.check(Instant::now()) {
            error!(
                "{} thread: a bug: panicked while {context}: {}; {consequence}, and the thread goes on{}",
                self.thread,
                caught.message,
                LogLimit::note(suppressed, last)
            );
        }
    }
}

/// A panic that [`ThreadGuard::run`] caught.
#[derive(Debug)]
pub(crate) struct Caught {
    message: String,
}

/// What a panic said, when it said it with a string.
fn message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_the_next_work_runs() {
        let mut guard = ThreadGuard::new("test");
        let caught = guard.run(|| -> u32 {
            let empty: Vec<u32> = Vec::new();
            // An index out of range, as the log thread's bug was.
            empty[usize::from(std::hint::black_box(3u8))]
        });
        let caught = caught.expect_err("a panic");
        assert!(caught.message.contains("out of bounds"), "{caught:?}");
        guard.report(caught, "testing", "nothing is dropped");
        assert_eq!(guard.run(|| 7).ok(), Some(7));
    }
}
