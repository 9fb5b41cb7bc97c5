//! The Node cluster primary across `daemon-reexec`: what it holds, written down with its fds
//! by number ([`HeldPrimary`]), and taken back by the new image.
//!
//! Written only once the primary has settled ([`Primary::settled`]): it hands out no new
//! connection while the re-exec waits ([`Primary::hold`]), and every hand-off in flight has
//! been answered, so no worker waits for an answer the new image would not know of. What is
//! left is plain: each unit's listening sockets (their members, who is free, the accepted
//! connections that wait for a worker) and each worker's sequence number and flags.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Primary, LISTENER_TOKEN_BASE};
use crate::node_cluster::listener::{Listener, Transport};
use crate::node_cluster::registry::{Handle, UnitHandles};
use crate::node_cluster::round_robin::RoundRobin;
use crate::supervisor::process_control::SpawnId;
use crate::unit::NodeScheduling;

/// The primary, as the `daemon-reexec` state holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldPrimary {
    pub units: Vec<HeldUnit>,
    pub workers: Vec<HeldWorker>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldUnit {
    pub name: String,
    pub round_robin: bool,
    pub handles: Vec<HeldHandle>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldHandle {
    pub key: String,
    pub fd: RawFd,
    /// `tcp`, `unix` or `udp`.
    pub transport: String,
    /// The socket file a Unix listener created (removed when the handle closes).
    pub unix_path: Option<PathBuf>,
    pub data: Value,
    pub round_robin: bool,
    pub members: Vec<SpawnId>,
    pub free: Vec<SpawnId>,
    /// Accepted connections waiting for a free worker.
    pub pending: Vec<RawFd>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldWorker {
    pub id: SpawnId,
    pub seq: u64,
    pub online: bool,
    pub listening: bool,
    pub disconnecting: bool,
}

impl HeldPrimary {
    /// Every fd it names.
    pub(crate) fn fds(&self) -> Vec<RawFd> {
        let handles = self.units.iter().flat_map(|u| &u.handles);
        handles
            .flat_map(|h| std::iter::once(h.fd).chain(h.pending.iter().copied()))
            .collect()
    }

    /// The workers it names.
    pub(crate) fn worker_ids(&self) -> impl Iterator<Item = SpawnId> + '_ {
        let members = self
            .units
            .iter()
            .flat_map(|u| &u.handles)
            .flat_map(|h| h.members.iter().chain(&h.free).copied());
        self.workers.iter().map(|w| w.id).chain(members)
    }
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp",
        Transport::Unix => "unix",
        Transport::Udp => "udp",
    }
}

impl Primary {
    /// `daemon-reexec` is waiting: no new hand-off (connections wait in the backlog).
    pub(crate) fn hold(&mut self) {
        self.holding = true;
    }

    /// The re-exec did not happen: hand out again what waits.
    pub(crate) fn release(&mut self) {
        self.holding = false;
        let waiting: Vec<(String, String)> = self.listeners.values().cloned().collect();
        for (unit, key) in waiting {
            self.dispatch(&unit, &key);
        }
    }

    /// No hand-off waits for a worker's answer.
    pub(crate) fn settled(&self) -> bool {
        self.workers.values().all(|w| w.in_flight.is_empty())
    }

    /// What it holds, by fd number (the fds stay open, owned here, until the exec). Called
    /// once [`Primary::settled`].
    pub(crate) fn held(&self) -> HeldPrimary {
        let units = self
            .units
            .iter()
            .map(|(name, unit)| HeldUnit {
                name: name.clone(),
                round_robin: unit.scheduling == NodeScheduling::RoundRobin,
                handles: unit
                    .handles
                    .iter()
                    .map(|(key, handle)| {
                        let (members, free, pending) = handle.workers.held();
                        HeldHandle {
                            key: key.clone(),
                            fd: handle.listener.socket.as_raw_fd(),
                            transport: transport_name(handle.listener.transport).into(),
                            unix_path: handle.listener.unix_path().map(PathBuf::from),
                            data: handle.data.clone(),
                            round_robin: handle.round_robin,
                            members,
                            free,
                            pending,
                        }
                    })
                    .collect(),
            })
            .collect();
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| HeldWorker {
                id: *id,
                seq: w.seq,
                online: w.online,
                listening: w.listening,
                disconnecting: w.disconnecting,
            })
            .collect();
        HeldPrimary { units, workers }
    }

    /// The new image's side of [`Primary::held`], once its workers were added (as the
    /// instances' channels were watched again): `fds` holds every fd `held` names, checked.
    /// Round-robin listeners are watched again, and what waits is handed out.
    pub(crate) fn adopt(
        &mut self,
        held: HeldPrimary,
        fds: &mut HashMap<RawFd, OwnedFd>,
        epoll: &Epoll,
    ) {
        for saved in held.workers {
            if let Some(worker) = self.workers.get_mut(&saved.id) {
                worker.seq = saved.seq;
                worker.online = saved.online;
                worker.listening = saved.listening;
                worker.disconnecting = saved.disconnecting;
            }
        }
        let mut dispatch = Vec::new();
        for unit in held.units {
            let scheduling = if unit.round_robin {
                NodeScheduling::RoundRobin
            } else {
                NodeScheduling::Shared
            };
            let rights = self
                .workers
                .values()
                .find(|w| w.info.unit == unit.name)
                .map(|w| w.info.rights.clone());
            let mut registry = UnitHandles::new(scheduling);
            for saved in unit.handles {
                let Some(socket) = fds.remove(&saved.fd) else {
                    continue;
                };
                let transport = match saved.transport.as_str() {
                    "unix" => Transport::Unix,
                    "udp" => Transport::Udp,
                    _ => Transport::Tcp,
                };
                let unix_path = saved.unix_path.zip(rights.clone());
                let pending = saved.pending.iter().filter_map(|fd| fds.remove(fd));
                let workers = RoundRobin::restored(saved.members, saved.free, pending.collect());
                let mut handle = Handle {
                    listener: Listener::adopted(socket, transport, unix_path),
                    data: saved.data,
                    round_robin: saved.round_robin,
                    workers,
                    token: None,
                };
                if handle.round_robin {
                    let token = LISTENER_TOKEN_BASE + self.next_token;
                    let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
                    if epoll
                        .add(
                            handle.listener.socket.as_fd(),
                            EpollEvent::new(interest, token),
                        )
                        .is_ok()
                    {
                        self.next_token += 1;
                        self.listeners
                            .insert(token, (unit.name.clone(), saved.key.clone()));
                        handle.token = Some(token);
                        dispatch.push((unit.name.clone(), saved.key.clone()));
                    }
                }
                registry.handles.insert(saved.key, handle);
            }
            self.units.insert(unit.name, registry);
        }
        for (unit, key) in dispatch {
            self.dispatch(&unit, &key);
        }
    }
}
