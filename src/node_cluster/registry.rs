//! `UnitHandles`: the listening sockets clusterd holds for one `node_cluster` unit, keyed like
//! Node's primary keys them (`${address}:${port}:${addressType}:${fd}:${index}`), so that the
//! workers that listen on the same thing share one socket.
//!
//! The handles belong to the unit, not to a worker: they stay open (and keep accepting into
//! their backlog) while the unit has no live worker, so clients wait for the replacement
//! instead of getting ECONNREFUSED. A handle closes when the unit's sockets are released
//! (stopped or removed), or when its last worker left it while other workers of the unit
//! serve without it (the program now listens elsewhere).

use std::collections::HashMap;

use serde_json::Value;

use super::listener::{Listener, Transport};
use super::round_robin::RoundRobin;
use super::NodeScheduling;

pub(crate) struct Handle {
    pub listener: Listener,
    /// The first non-null `data` a worker sent for this key (TLS ticket keys), echoed to
    /// every worker: an HTTPS worker crashes on `data: null`.
    pub data: Value,
    /// True when clusterd accepts and hands out connections; false when it sends the socket
    /// itself (shared mode, and always for UDP).
    pub round_robin: bool,
    /// Who listens on it, and (round-robin) who is free.
    pub workers: RoundRobin,
    /// The epoll token of a round-robin listener.
    pub token: Option<u64>,
}

impl Handle {
    pub(crate) fn new(listener: Listener, scheduling: NodeScheduling) -> Handle {
        let round_robin =
            scheduling == NodeScheduling::RoundRobin && listener.transport != Transport::Udp;
        Handle {
            listener,
            data: Value::Null,
            round_robin,
            workers: RoundRobin::default(),
            token: None,
        }
    }
}

pub(crate) struct UnitHandles {
    pub scheduling: NodeScheduling,
    pub handles: HashMap<String, Handle>,
}

impl UnitHandles {
    pub(crate) fn new(scheduling: NodeScheduling) -> UnitHandles {
        UnitHandles {
            scheduling,
            handles: HashMap::new(),
        }
    }
}
