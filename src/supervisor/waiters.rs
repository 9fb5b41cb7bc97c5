//! `Waiters`: the clusterctl requests parked with a unit until it reaches a condition — all of
//! its instances gone (`stop`), or all ready (`start`, `restart`, `scale`) — so that a verb
//! answers when the work is done, like systemctl, and the supervisor never blocks to wait.

use crossbeam_channel::Sender;

use crate::protocol::Response;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitCondition {
    /// No process of the unit is left.
    AllGone,
    /// Every wanted index has a ready process and nothing is left above `wanted`.
    AllReady,
}

struct Waiter {
    reply: Sender<Response>,
    until: WaitCondition,
    /// The success message.
    message: String,
}

#[derive(Default)]
pub(super) struct Waiters(Vec<Waiter>);

impl Waiters {
    pub(super) fn push(&mut self, reply: Sender<Response>, until: WaitCondition, message: String) {
        self.0.push(Waiter {
            reply,
            until,
            message,
        });
    }

    /// Answers, with their success message, the waiters whose condition `holds`.
    pub(super) fn answer_met(&mut self, holds: impl Fn(WaitCondition) -> bool) {
        self.0.retain(|waiter| {
            if holds(waiter.until) {
                let _ = waiter.reply.send(Response::done(waiter.message.clone()));
                false
            } else {
                true
            }
        });
    }

    /// Answers the waiters for `until` with `text` instead of their success message: their
    /// condition will not be met soon, and that is no failure (a unit waiting for another).
    pub(super) fn answer_with(&mut self, until: WaitCondition, text: &str) {
        self.answer_all(until, Response::done(text));
    }

    /// Answers the waiters for `until` with `error`: their condition will not be met.
    pub(super) fn fail(&mut self, until: WaitCondition, error: &str) {
        self.answer_all(until, Response::failed(error));
    }

    fn answer_all(&mut self, until: WaitCondition, response: Response) {
        self.0.retain(|waiter| {
            if waiter.until == until {
                let _ = waiter.reply.send(response.clone());
                false
            } else {
                true
            }
        });
    }
}
