//! clusterd as the primary of Node's cluster module, so that unmodified Node programs that
//! call `server.listen(3000)` share the port across a unit's instances (units with
//! `node_cluster = true`), as they do under `pm2 -i N`.
//!
//! Node's cluster protocol is newline-delimited JSON on the worker channel (`NODE_CHANNEL_FD`)
//! plus SCM_RIGHTS for sockets. A worker (an instance started with `NODE_UNIQUE_ID`) asks the
//! primary for every server it listens on (`queryServer`); the primary binds the socket once
//! per unit and either sends it to each worker (`shared`) or accepts the connections itself
//! and hands each to the worker that has waited longest (`round-robin`, Node's default).
//! The daemon's I/O thread (`daemon::worker_io`) owns every channel and drives this module;
//! nothing here depends on the daemon (`src/layers.rs`).
//!
//! One concept per file:
//! - [`message`]: parsing what workers send, building what the primary sends;
//! - [`outbox`]: a channel's outgoing queue — non-blocking writes, SCM_RIGHTS, one handle in
//!   flight until `NODE_HANDLE_ACK`;
//! - [`listener`]: binding the socket a `queryServer` asks for (TCP v4/v6, Unix, UDP);
//! - [`round_robin`]: which worker gets the next connection;
//! - [`registry`]: a unit's listening handles, keyed like Node's primary keys them;
//! - [`worker_rights`]: doing a worker's binds with the worker's rights, not clusterd's;
//! - [`primary`]: the state machine that ties them together, fed in-process by its tests
//!   (`primary_tests.rs`).

pub(crate) mod listener;
pub(crate) mod liveness;
pub(crate) mod message;
pub(crate) mod outbox;
pub(crate) mod primary;
#[cfg(test)]
mod primary_tests;
pub(crate) mod registry;
pub(crate) mod round_robin;
pub(crate) mod worker_rights;

pub(crate) use crate::unit::NodeScheduling;
pub(crate) use primary::{Primary, WorkerInfo};
pub(crate) use worker_rights::WorkerRights;
