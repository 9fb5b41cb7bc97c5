//! `Primary`: clusterd's side of Node's cluster protocol, for every `node_cluster` worker.
//! The I/O thread feeds it the workers' internal messages, listener readiness, disconnect
//! requests and deadlines; it answers with lines to write ([`Primary::take_outgoing`]) and
//! events for the supervisor ([`Primary::take_events`]).
//!
//! What it does, as Node's `lib/internal/cluster/primary.js` does:
//! - `queryServer` → bind (or reuse) the unit's handle for the key; reply with the socket
//!   (shared mode, UDP) or with `sockname` and then hand out connections (round-robin); a
//!   request it cannot serve gets an `errno` reply, never silence;
//! - `listening` → the instance is ready (the supervisor's `WorkerMessage::Ready`);
//! - `close` → the worker no longer listens on that handle;
//! - `exitedAfterDisconnect` → ack it; the worker leaves on its own (a suicide);
//! - graceful stop → `{act:'disconnect'}`: the worker gets no more connections, closes its
//!   servers and exits; if it is still there after half its `kill_timeout`, it gets the
//!   unit's `kill_signal` (the supervisor sends SIGKILL at `kill_timeout`).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

use log::{debug, info, warn};
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::sys::socket::{accept4, SockFlag};
use serde_json::Value;

#[path = "primary_handover.rs"]
pub(crate) mod handover;

use super::listener::{Listener, Transport};
use super::message::{self, FromWorker, HandleType, ServerQuery};
use super::outbox::Outgoing;
use super::registry::{Handle, UnitHandles};
use super::worker_rights::WorkerRights;
use super::NodeScheduling;
use crate::log_limit::{LogLimit, Verdict};
use crate::printable::printable;
use crate::supervisor::event::WorkerMessage;
use crate::supervisor::process_control::SpawnId;

/// Listening sockets clusterd holds for one unit's workers at most: a Node app listens on a
/// handful; a worker that asks for more is refused rather than exhaust clusterd's fds.
pub(crate) const MAX_HANDLES_PER_UNIT: usize = 64;

/// Epoll tokens of round-robin listeners start here (worker channels use their SpawnId).
pub(crate) const LISTENER_TOKEN_BASE: u64 = 1 << 62;

/// Whose a worker's line is ([`Primary::on_line`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whose {
    /// Node's internal protocol: handled.
    Internal,
    /// The user's own message: the caller's.
    User,
}

/// What the I/O thread knows of a `node_cluster` instance.
#[derive(Debug, Clone)]
pub(crate) struct WorkerInfo {
    pub unit: String,
    pub scheduling: NodeScheduling,
    /// Its account: what it asks for is bound with these rights.
    pub rights: WorkerRights,
}

struct Worker {
    info: WorkerInfo,
    /// The seq of the next message clusterd sends it.
    seq: u64,
    /// It spoke the protocol (`online`): a disconnect request can work.
    online: bool,
    /// It reported `listening` (it is ready).
    listening: bool,
    /// It was asked to disconnect, or announced it leaves: no more connections.
    disconnecting: bool,
    /// Round-robin hand-offs without an answer yet: seq → (handle key, connection).
    in_flight: HashMap<u64, (String, OwnedFd)>,
}

impl Worker {
    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }
}

#[derive(Default)]
pub(crate) struct Primary {
    /// Each `node_cluster` unit's handles, by unit name.
    units: HashMap<String, UnitHandles>,
    workers: HashMap<SpawnId, Worker>,
    /// Epoll token → (unit, handle key) of the round-robin listeners.
    listeners: HashMap<u64, (String, String)>,
    next_token: u64,
    outgoing: Vec<(SpawnId, Outgoing)>,
    events: Vec<(SpawnId, WorkerMessage)>,
    /// Warnings about listen requests refused: a worker may repeat them as fast as it can.
    refusals: LogLimit,
    /// `daemon-reexec` waits: no new hand-off ([`Primary::hold`]).
    holding: bool,
}

impl Primary {
    pub(crate) fn is_worker(&self, id: SpawnId) -> bool {
        self.workers.contains_key(&id)
    }

    /// Lines to write, in order, per worker channel.
    pub(crate) fn take_outgoing(&mut self) -> Vec<(SpawnId, Outgoing)> {
        std::mem::take(&mut self.outgoing)
    }

    /// Events for the supervisor.
    pub(crate) fn take_events(&mut self) -> Vec<(SpawnId, WorkerMessage)> {
        std::mem::take(&mut self.events)
    }

    /// A new instance of a `node_cluster` unit: its channel is watched from now on.
    pub(crate) fn add_worker(&mut self, id: SpawnId, info: WorkerInfo, epoll: &Epoll) {
        let stale = self
            .units
            .get(&info.unit)
            .is_some_and(|u| u.scheduling != info.scheduling);
        if stale {
            info!(
                "{}: node_cluster scheduling is now {}; closing the sockets of the old mode",
                info.unit, info.scheduling
            );
            self.close_unit(&info.unit.clone(), epoll);
        }
        self.units
            .entry(info.unit.clone())
            .or_insert_with(|| UnitHandles::new(info.scheduling));
        self.workers.insert(
            id,
            Worker {
                info,
                seq: 0,
                online: false,
                listening: false,
                disconnecting: false,
                in_flight: HashMap::new(),
            },
        );
    }

    /// The worker's channel closed or its process exited. Connections handed to it that it
    /// never answered go to other workers; the unit's sockets stay open.
    pub(crate) fn remove_worker(&mut self, id: SpawnId, epoll: &Epoll) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        let unit = worker.info.unit;
        let Some(registry) = self.units.get_mut(&unit) else {
            return;
        };
        for (_, (key, connection)) in worker.in_flight {
            if let Some(handle) = registry.handles.get_mut(&key) {
                handle.workers.requeue(connection);
            }
        }
        let keys: Vec<String> = registry.handles.keys().cloned().collect();
        for handle in registry.handles.values_mut() {
            handle.workers.remove_member(id);
        }
        for key in keys {
            if !self.close_if_abandoned(&unit, &key, epoll) {
                self.dispatch(&unit, &key);
            }
        }
    }

    /// A line from worker `id`'s channel, parsed as JSON. Node's internal messages are the
    /// primary's: the channel-level `NODE_HANDLE_ACK`/`NACK` go to the channel's `outbox`, the
    /// cluster protocol to [`Primary::on_message`]. Anything else is the user's
    /// (`process.send`) and is returned untouched. Afterwards the caller flushes the outbox
    /// and delivers what the primary produced.
    pub(crate) fn on_line(
        &mut self,
        id: SpawnId,
        line: &Value,
        outbox: &mut super::outbox::Outbox,
        epoll: &Epoll,
    ) -> Whose {
        if !self.is_worker(id) {
            return Whose::User;
        }
        match message::classify(line) {
            None => Whose::User,
            Some(FromWorker::HandleAck) => {
                outbox.on_handle_ack();
                Whose::Internal
            }
            Some(FromWorker::HandleNack) => {
                if outbox.on_handle_nack() {
                    // Its event loop answered the liveness check (`watchdog`).
                    self.events.push((id, WorkerMessage::Watchdog));
                }
                Whose::Internal
            }
            Some(message) => {
                self.on_message(id, message, epoll);
                Whose::Internal
            }
        }
    }

    /// One internal message from worker `id` (the channel-level `NODE_HANDLE_ACK`/`NACK` are
    /// the outbox's business and do not come here).
    fn on_message(&mut self, id: SpawnId, message: FromWorker, epoll: &Epoll) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        match message {
            FromWorker::Online => worker.online = true,
            FromWorker::QueryServer(query) => self.query_server(id, *query, epoll),
            FromWorker::Listening => {
                if !worker.listening {
                    worker.listening = true;
                    self.events.push((id, WorkerMessage::Listening));
                }
            }
            FromWorker::Close { key } => {
                let unit = worker.info.unit.clone();
                if let Some(handle) = self.handle_mut(&unit, &key) {
                    handle.workers.remove_member(id);
                    self.close_if_abandoned(&unit, &key, epoll);
                }
            }
            FromWorker::ExitedAfterDisconnect { seq } => {
                worker.disconnecting = true;
                let reply = message::ack(&seq, worker.next_seq());
                self.send(id, &reply, None);
                self.events.push((id, WorkerMessage::Suicide));
            }
            FromWorker::ConnectionReply { ack, accepted } => {
                let Some((key, connection)) = worker.in_flight.remove(&ack) else {
                    debug!("node cluster worker {id}: answer to an unknown hand-off {ack}");
                    return;
                };
                let disconnecting = worker.disconnecting;
                let unit = worker.info.unit.clone();
                if let Some(handle) = self.handle_mut(&unit, &key) {
                    if accepted {
                        drop(connection);
                    } else {
                        handle.workers.requeue(connection);
                    }
                    if !disconnecting {
                        handle.workers.set_free(id);
                    }
                }
                self.dispatch(&unit, &key);
            }
            FromWorker::HandleSent => {
                // Not a cluster message, but the worker's channel stalls until it is acked.
                self.send(id, &message::handle_ack(), None);
            }
            FromWorker::HandleAck | FromWorker::HandleNack => {}
            FromWorker::Other(what) => {
                debug!("node cluster worker {id}: ignoring internal message {what}")
            }
        }
    }

    fn query_server(&mut self, id: SpawnId, query: ServerQuery, epoll: &Epoll) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let key = query.key();
        let unit = worker.info.unit.clone();
        if worker.disconnecting {
            // Node's primary ignores it; a reply makes the worker's listen() fail instead of
            // hanging until it is killed.
            self.reply_error(id, &query, &key, Errno::ECANCELED);
            return;
        }
        let Some(registry) = self.units.get_mut(&unit) else {
            self.reply_error(id, &query, &key, Errno::EINVAL);
            return;
        };
        let scheduling = registry.scheduling;
        if !registry.handles.contains_key(&key) {
            if registry.handles.len() >= MAX_HANDLES_PER_UNIT {
                if let Verdict::Show { suppressed, last } = self.refusals.check(Instant::now()) {
                    warn!("{unit}: a worker asked for more than {MAX_HANDLES_PER_UNIT} listening sockets; refused (EMFILE){}", LogLimit::note(suppressed, last));
                }
                self.reply_error(id, &query, &key, Errno::EMFILE);
                return;
            }
            let listener = match Listener::bind(&query, &worker.info.rights) {
                Ok(listener) => listener,
                Err(errno) => {
                    if let Verdict::Show { suppressed, last } = self.refusals.check(Instant::now())
                    {
                        let note = LogLimit::note(suppressed, last);
                        if query.fd_number().is_some() {
                            warn!("{unit}: a worker asked to listen on its fd {}; node_cluster cannot share a worker's own fd (use listen({{fd, exclusive: true}})){note}", query.fd_number().unwrap_or(-1));
                        } else {
                            warn!(
                                "{unit}: cannot listen for a Node worker on {}: {errno}{note}",
                                printable(&key),
                            );
                        }
                    }
                    self.reply_error(id, &query, &key, errno);
                    return;
                }
            };
            let mut handle = Handle::new(listener, scheduling);
            if handle.round_robin {
                let token = LISTENER_TOKEN_BASE + self.next_token;
                let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
                if let Err(e) = epoll.add(
                    handle.listener.socket.as_fd(),
                    EpollEvent::new(interest, token),
                ) {
                    warn!(
                        "{unit}: cannot watch the listening socket {}: {e}",
                        printable(&key)
                    );
                    self.reply_error(id, &query, &key, e);
                    return;
                }
                self.next_token += 1;
                self.listeners.insert(token, (unit.clone(), key.clone()));
                handle.token = Some(token);
            }
            info!(
                "{unit}: listening for Node workers on {} ({})",
                printable(&query.describe()),
                if handle.round_robin {
                    "round-robin"
                } else {
                    "shared"
                }
            );
            registry.handles.insert(key.clone(), handle);
        }
        let Some(handle) = registry.handles.get_mut(&key) else {
            return;
        };
        if handle.data.is_null() {
            handle.data = query.data.clone();
        }
        handle.workers.add_member(id);
        let seq = worker.next_seq();
        if handle.round_robin {
            let reply = message::query_reply(
                0,
                &key,
                &query.seq,
                &handle.data,
                handle.listener.sockname(),
                seq,
            );
            handle.workers.set_free(id);
            self.send(id, &reply, None);
            self.dispatch(&unit, &key);
        } else {
            let kind = if handle.listener.transport == Transport::Udp {
                HandleType::Dgram
            } else {
                HandleType::Net
            };
            match handle.listener.socket.try_clone() {
                Ok(copy) => {
                    let reply = message::query_reply(0, &key, &query.seq, &handle.data, None, seq);
                    self.send(id, &message::with_handle(reply, kind), Some(copy));
                }
                Err(e) => {
                    warn!(
                        "{unit}: cannot pass the socket {}: {e}",
                        printable(&query.describe())
                    );
                    handle.workers.remove_member(id);
                    let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EMFILE));
                    self.reply_error(id, &query, &key, errno);
                }
            }
        }
    }

    /// `{errno: -E, key, ack, data}` without a socket: the worker's listen() fails with E.
    fn reply_error(&mut self, id: SpawnId, query: &ServerQuery, key: &str, errno: Errno) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        let reply = message::query_reply(
            -(errno as i32),
            key,
            &query.seq,
            &query.data,
            None,
            worker.next_seq(),
        );
        self.send(id, &reply, None);
    }

    fn send(&mut self, id: SpawnId, message: &Value, fd: Option<OwnedFd>) {
        self.outgoing.push((
            id,
            Outgoing {
                line: message::to_line(message),
                fd,
                charge: None,
            },
        ));
    }

    fn handle_mut(&mut self, unit: &str, key: &str) -> Option<&mut Handle> {
        self.units.get_mut(unit)?.handles.get_mut(key)
    }

    /// A round-robin listening socket is readable.
    pub(crate) fn on_listener_ready(&mut self, token: u64) {
        if let Some((unit, key)) = self.listeners.get(&token).cloned() {
            self.dispatch(&unit, &key);
        }
    }

    /// Hands out connections while a worker is free and one is waiting.
    fn dispatch(&mut self, unit: &str, key: &str) {
        loop {
            let Some(handle) = self
                .units
                .get_mut(unit)
                .and_then(|u| u.handles.get_mut(key))
            else {
                return;
            };
            if !handle.round_robin || self.holding {
                return;
            }
            let listening = handle.listener.socket.as_raw_fd();
            let mut accept = || accept_connection(listening);
            let Some((id, connection)) = handle.workers.next(&mut accept) else {
                return;
            };
            let Some(worker) = self.workers.get_mut(&id) else {
                handle.workers.remove_member(id);
                handle.workers.requeue(connection);
                continue;
            };
            let copy = match connection.try_clone() {
                Ok(copy) => copy,
                Err(e) => {
                    warn!("{unit}: dropping a connection: cannot pass it to a worker: {e}");
                    handle.workers.set_free(id);
                    return;
                }
            };
            let seq = worker.next_seq();
            worker.in_flight.insert(seq, (key.to_string(), connection));
            let line = message::to_line(&message::new_connection(key, seq));
            self.outgoing.push((
                id,
                Outgoing {
                    line,
                    fd: Some(copy),
                    charge: None,
                },
            ));
        }
    }

    /// Closes a handle nobody listens on any more while other workers of the unit serve
    /// (the program listens elsewhere now). With no serving worker it stays open: the
    /// replacements will want it. Returns true if it was closed.
    fn close_if_abandoned(&mut self, unit: &str, key: &str, epoll: &Epoll) -> bool {
        let Some(registry) = self.units.get_mut(unit) else {
            return false;
        };
        if registry
            .handles
            .get(key)
            .is_none_or(|h| h.workers.has_members())
        {
            return false;
        }
        let serving = self
            .workers
            .values()
            .any(|w| w.info.unit == unit && w.listening && !w.disconnecting);
        if !serving {
            return false;
        }
        if let Some(handle) = registry.handles.remove(key) {
            info!(
                "{unit}: no Node worker listens on {} any more; closing it",
                printable(key)
            );
            self.forget_listener(&handle, epoll);
        }
        true
    }

    fn forget_listener(&mut self, handle: &Handle, epoll: &Epoll) {
        if let Some(token) = handle.token {
            let _ = epoll.delete(handle.listener.socket.as_fd());
            self.listeners.remove(&token);
        }
    }

    fn close_unit(&mut self, unit: &str, epoll: &Epoll) {
        if let Some(registry) = self.units.remove(unit) {
            for handle in registry.handles.values() {
                self.forget_listener(handle, epoll);
            }
            if !registry.handles.is_empty() {
                info!("{unit}: closed the sockets of its Node workers");
            }
        }
    }

    /// The supervisor is about to stop worker `id` (it sends `kill_signal` itself): hand it
    /// no more connections. Hand-offs already in flight are answered by the worker; one it
    /// refuses goes to another worker.
    pub(crate) fn withdraw(&mut self, id: SpawnId) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        worker.disconnecting = true;
        let unit = worker.info.unit.clone();
        // Like Node's removeHandlesForWorker: no more connections for it.
        if let Some(registry) = self.units.get_mut(&unit) {
            for handle in registry.handles.values_mut() {
                handle.workers.remove_member(id);
            }
        }
    }

    /// The supervisor stops worker `id`, whose app does not handle `kill_signal`: ask it to
    /// disconnect — it closes its servers, lets the requests in progress finish and exits, as
    /// with Node's `worker.disconnect()`. The supervisor sends `kill_signal` if it is still
    /// there after half its `kill_timeout`.
    pub(crate) fn disconnect(&mut self, id: SpawnId) {
        self.withdraw(id);
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if worker.online {
            let request = message::disconnect(worker.next_seq());
            self.send(id, &request, None);
        }
    }

    /// The unit is stopped for good (stopped by hand, removed, or clusterd is exiting): close
    /// its sockets. The supervisor says so only once every worker of the unit is gone, and
    /// never between the stop and the start of a `restart`, which keeps them open.
    pub(crate) fn release_unit(&mut self, unit: &str, epoll: &Epoll) {
        if self.units.contains_key(unit) && !self.workers.values().any(|w| w.info.unit == unit) {
            self.close_unit(unit, epoll);
        }
    }
}

/// One pending connection of a non-blocking listening socket, if any.
fn accept_connection(listening: RawFd) -> Option<OwnedFd> {
    loop {
        match accept4(listening, SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 just returned this fd; nothing else owns it.
            Ok(fd) => return Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(Errno::EAGAIN) => return None,
            Err(e) => {
                warn!("accepting a connection for Node workers failed: {e}");
                return None;
            }
        }
    }
}
