//! `LogLimit`: at most a few warnings of one kind per window, then a count of what was left
//! out ("12345 more malformed messages from web[2] suppressed"), so that a program writing
//! garbage as fast as it can cannot fill clusterd's log or the disk under it.

use std::time::{Duration, Instant};

/// Warnings shown per window before the rest are only counted.
const SHOWN_PER_WINDOW: u32 = 5;
const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    window_start: Option<Instant>,
    shown: u32,
    suppressed: u64,
}

/// What to do with one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it; `suppressed` warnings of this kind were left out before it, and if `last`,
    /// the ones that follow within the window will be left out (say so).
    Show { suppressed: u64, last: bool },
    /// Leave it out (it is counted).
    Suppress,
}

impl LogLimit {
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let expired = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if expired {
            self.window_start = Some(now);
            self.shown = 0;
        }
        if self.shown < SHOWN_PER_WINDOW {
            self.shown += 1;
            Verdict::Show {
                suppressed: std::mem::take(&mut self.suppressed),
                last: self.shown == SHOWN_PER_WINDOW,
            }
        } else {
            self.suppressed += 1;
            Verdict::Suppress
        }
    }

    /// What to append to a warning this limit let through: how many were left out before it,
    /// and whether the next ones will be.
    pub(crate) fn note(suppressed: u64, last: bool) -> String {
        let mut note = String::new();
        if suppressed > 0 {
            note.push_str(&format!(" ({suppressed} more like it suppressed)"));
        }
        if last {
            note.push_str(&format!(
                " (more like it in the next {}s are counted, not logged)",
                WINDOW.as_secs()
            ));
        }
        note
    }

    /// Warnings counted and not shown yet (to be reported when the source goes away).
    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_window_then_a_count() {
        let t0 = Instant::now();
        let mut limit = LogLimit::default();
        for i in 0..5 {
            assert_eq!(
                limit.check(t0),
                Verdict::Show {
                    suppressed: 0,
                    last: i == 4
                }
            );
        }
        for _ in 0..1000 {
            assert_eq!(limit.check(t0), Verdict::Suppress);
        }
        assert_eq!(
            limit.check(t0 + WINDOW),
            Verdict::Show {
                suppressed: 1000,
                last: false
            }
        );
        limit.check(t0 + WINDOW);
        assert_eq!(limit.take_suppressed(), 0);
    }
}
