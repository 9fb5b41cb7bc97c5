//! The Node cluster primary fed in-process, as the supervisor is fed events: a worker's lines go
//! in through [`Primary::on_line`] (and the I/O thread's other calls), and the tests check what
//! comes out — the lines for each worker's channel with the sockets they carry, and the events
//! for the supervisor. The sockets are real (loopback, and the epoll the I/O thread would
//! use), so a hand-off is checked by the peer address of the connection it carries.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollTimeout};
use nix::sys::socket::{getpeername, getsockname, SockaddrIn};
use serde_json::{json, Value};

use super::outbox::Outbox;
use super::primary::{Whose, MAX_HANDLES_PER_UNIT};
use super::{NodeScheduling, Primary, WorkerInfo, WorkerRights};
use crate::supervisor::event::WorkerMessage;
use crate::supervisor::process_control::SpawnId;

/// What the primary wrote to one worker's channel: the line parsed back, and its socket.
struct Sent {
    to: SpawnId,
    message: Value,
    fd: Option<OwnedFd>,
}

impl Sent {
    /// The cluster message, unwrapped from a `NODE_HANDLE` if it travels with a socket.
    fn cluster(&self) -> &Value {
        if self.message["cmd"] == "NODE_HANDLE" {
            &self.message["msg"]
        } else {
            &self.message
        }
    }
}

struct Harness {
    primary: Primary,
    epoll: Epoll,
    outbox: Outbox,
    /// A socket closed here must be closed for the kernel at once: no test forks meanwhile.
    _no_fork: MutexGuard<'static, ()>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            _no_fork: crate::FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner()),
            primary: Primary::default(),
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).expect("epoll"),
            outbox: Outbox::default(),
        }
    }

    /// Workers `ids` of unit `web` start (with clusterd's rights) and say they are online.
    fn workers(scheduling: NodeScheduling, ids: &[SpawnId]) -> Harness {
        let mut h = Harness::new();
        for &id in ids {
            h.add(id, "web", scheduling);
            assert_eq!(h.say(id, online()), Whose::Internal);
        }
        assert!(h.sent().is_empty());
        h
    }

    /// Workers 1 and 2 of a round-robin unit listen on one key; the port clusterd bound.
    fn round_robin_pair() -> (Harness, u16) {
        let mut h = Harness::workers(NodeScheduling::RoundRobin, &[1, 2]);
        let port = sockname_port(&h.query(1, tcp_query(1, 0)));
        h.query(2, tcp_query(1, 0));
        (h, port)
    }

    fn add(&mut self, id: SpawnId, unit: &str, scheduling: NodeScheduling) {
        let info = WorkerInfo {
            unit: unit.to_string(),
            scheduling,
            rights: WorkerRights::default(),
        };
        self.primary.add_worker(id, info, &self.epoll);
    }

    fn say(&mut self, id: SpawnId, message: Value) -> Whose {
        self.primary
            .on_line(id, &message, &mut self.outbox, &self.epoll)
    }

    /// Everything written since the last call, in order.
    fn sent(&mut self) -> Vec<Sent> {
        self.primary
            .take_outgoing()
            .into_iter()
            .map(|(to, out)| {
                assert_eq!(out.line.last(), Some(&b'\n'), "one line each");
                let message = serde_json::from_slice(&out.line).expect("valid JSON");
                Sent {
                    to,
                    message,
                    fd: out.fd,
                }
            })
            .collect()
    }

    /// The one message written since the last call.
    fn one_sent(&mut self) -> Sent {
        let mut sent = self.sent();
        assert_eq!(
            sent.len(),
            1,
            "{:?}",
            sent.iter().map(|s| &s.message).collect::<Vec<_>>()
        );
        sent.remove(0)
    }

    fn events(&mut self) -> Vec<(SpawnId, WorkerMessage)> {
        self.primary.take_events()
    }

    /// Worker `id` asks for `query`; returns the reply (with its socket, if any).
    fn query(&mut self, id: SpawnId, query: Value) -> Sent {
        assert_eq!(self.say(id, query), Whose::Internal);
        let reply = self.one_sent();
        assert_eq!(reply.to, id);
        reply
    }

    /// Waits (at most 5 s) until a round-robin listener is readable, and tells the primary,
    /// as the I/O thread's epoll loop does.
    fn connection_arrives(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut events = [EpollEvent::empty(); 8];
        loop {
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(100u16))
                .expect("epoll_wait");
            for event in &events[..n] {
                self.primary.on_listener_ready(event.data());
            }
            if n > 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no connection reached the listener"
            );
        }
    }
}

fn online() -> Value {
    json!({"cmd": "NODE_CLUSTER", "act": "online", "seq": 0})
}

/// A `queryServer` for TCP on 127.0.0.1 (port 0: the kernel picks one), as `listen()` sends it.
fn tcp_query(seq: u64, index: u64) -> Value {
    json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": index, "data": null,
           "address": "127.0.0.1", "port": 0, "addressType": 4, "backlog": 0, "seq": seq})
}

const KEY: &str = "127.0.0.1:0:4:undefined:0";

fn listening(seq: u64) -> Value {
    json!({"cmd": "NODE_CLUSTER", "act": "listening", "seq": seq})
}

fn reply_to_newconn(ack: u64, accepted: bool) -> Value {
    json!({"cmd": "NODE_CLUSTER", "ack": ack, "accepted": accepted, "seq": 9})
}

/// The port a round-robin reply says clusterd listens on.
fn sockname_port(reply: &Sent) -> u16 {
    let port = reply.cluster()["sockname"]["port"].as_u64();
    port.and_then(|p| u16::try_from(p).ok()).expect("a port")
}

fn port_of(fd: &OwnedFd) -> u16 {
    let address: SockaddrIn = getsockname(fd.as_raw_fd()).expect("getsockname");
    address.port()
}

/// A `newconn` to `to` whose socket is the server side of `client`'s connection; its seq.
fn assert_handed(sent: &Sent, to: SpawnId, client: &TcpStream) -> u64 {
    assert_eq!(sent.to, to, "{}", sent.message);
    assert_eq!(sent.message["type"], "net.Native");
    assert_eq!(sent.cluster()["act"], "newconn");
    assert_eq!(sent.cluster()["key"], KEY);
    let fd = sent.fd.as_ref().expect("a newconn carries its connection");
    let peer: SockaddrIn = getpeername(fd.as_raw_fd()).expect("a connected socket");
    let SocketAddr::V4(client) = client.local_addr().expect("local address") else {
        panic!("not IPv4");
    };
    assert_eq!(peer.port(), client.port(), "the connection of that client");
    sent.cluster()["seq"].as_u64().expect("a seq")
}

/// Round-robin: one listener for the unit, bound by clusterd; each worker gets the address
/// (no socket), and each connection goes to the worker that has waited longest.
#[test]
fn round_robin_binds_once_and_hands_each_connection_to_the_longest_waiting_worker() {
    let mut h = Harness::workers(NodeScheduling::RoundRobin, &[1, 2]);
    let first = h.query(1, tcp_query(1, 0));
    let second = h.query(2, tcp_query(4, 0));
    let mut ports = Vec::new();
    for (reply, ack) in [(&first, 1), (&second, 4)] {
        assert!(reply.fd.is_none(), "round-robin passes no listening socket");
        let message = reply.cluster();
        assert_eq!(message["errno"], 0);
        assert_eq!(message["key"], KEY);
        assert_eq!(message["ack"], ack, "the reply answers the request's seq");
        assert_eq!(message["sockname"]["address"], "127.0.0.1");
        ports.push(message["sockname"]["port"].as_u64().expect("a port"));
    }
    assert_eq!(ports[0], ports[1], "one socket for the unit");
    let port = u16::try_from(ports[0]).expect("a port");
    assert_ne!(port, 0);

    // `listening` makes the instance ready, once.
    h.say(1, listening(2));
    h.say(1, listening(3));
    assert_eq!(h.events(), [(1, WorkerMessage::Listening)]);

    let a = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h.connection_arrives();
    let to_first = h.one_sent();
    let seq_a = assert_handed(&to_first, 1, &a);
    let b = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h.connection_arrives();
    let seq_b = assert_handed(&h.one_sent(), 2, &b);
    // Both are busy: a third connection waits in the backlog.
    let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h.connection_arrives();
    assert!(h.sent().is_empty());
    // Worker 1 answers: it is free again and takes the waiting one.
    h.say(1, reply_to_newconn(seq_a, true));
    let seq_c = assert_handed(&h.one_sent(), 1, &c);
    assert_ne!(
        seq_c, seq_a,
        "every message to a worker has a seq of its own"
    );
    h.say(2, reply_to_newconn(seq_b, true));
    h.say(1, reply_to_newconn(seq_c, true));
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

/// A connection a worker refuses goes to another worker; answers that are repeated, late,
/// for a hand-off never made, or for another worker's hand-off change nothing.
#[test]
fn refused_duplicate_and_stray_acks_lose_no_connection_and_hand_out_none_twice() {
    let (mut h, port) = Harness::round_robin_pair();
    let a = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h.connection_arrives();
    let seq = assert_handed(&h.one_sent(), 1, &a);
    // Worker 1 refuses it (its server was closing): worker 2, free longest, gets it.
    h.say(1, reply_to_newconn(seq, false));
    let seq_2 = assert_handed(&h.one_sent(), 2, &a);

    // The same answer again, an answer to a seq never sent, and worker 1 answering worker
    // 2's hand-off: ignored.
    h.say(1, reply_to_newconn(seq, false));
    h.say(1, reply_to_newconn(seq, true));
    h.say(2, reply_to_newconn(999, true));
    h.say(1, reply_to_newconn(seq_2, true));
    assert!(h.sent().is_empty());

    // Worker 2 dies without answering: its connection goes to worker 1 (free since it
    // refused), not lost.
    h.primary.remove_worker(2, &h.epoll);
    let seq_1 = assert_handed(&h.one_sent(), 1, &a);
    // Worker 2's answer arrives late, from a channel the primary no longer knows.
    assert_eq!(h.say(2, reply_to_newconn(seq_2, true)), Whose::User);
    h.say(1, reply_to_newconn(seq_1, true));
    h.say(1, reply_to_newconn(seq_1, true));
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

/// Shared: every worker gets the one listening socket itself (a `NODE_HANDLE`), and accepts
/// on it; UDP is shared too, as a `dgram` handle.
#[test]
fn shared_mode_passes_the_one_socket_to_every_worker() {
    let mut h = Harness::workers(NodeScheduling::Shared, &[1, 2]);
    let first = h.query(1, tcp_query(3, 0));
    let second = h.query(2, tcp_query(3, 0));
    for reply in [&first, &second] {
        assert_eq!(reply.message["cmd"], "NODE_HANDLE");
        assert_eq!(reply.message["type"], "net.Native");
        assert_eq!(reply.cluster()["errno"], 0);
        assert_eq!(reply.cluster()["ack"], 3);
        assert!(reply.cluster().get("sockname").is_none());
    }
    let (one, two) = (first.fd.expect("a socket"), second.fd.expect("a socket"));
    let inode = |fd: &OwnedFd| nix::sys::stat::fstat(fd).expect("fstat").st_ino;
    assert_eq!(inode(&one), inode(&two), "the same socket, not two");
    let port = port_of(&one);
    // It listens already (the unit's backlog): a client connects before any worker accepts.
    TcpStream::connect(("127.0.0.1", port)).expect("the shared socket listens");
    h.connection_arrives_not();

    let udp = json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": null,
                     "address": "127.0.0.1", "port": 0, "addressType": "udp4", "fd": -1,
                     "flags": 4, "seq": 5});
    let reply = h.query(1, udp);
    assert_eq!(reply.message["type"], "dgram.Native");
    assert_eq!(reply.cluster()["key"], "127.0.0.1:0:udp4:-1:0");
    assert!(reply.fd.is_some());
}

impl Harness {
    /// Shared sockets are not the primary's to watch: nothing arrives on its epoll.
    fn connection_arrives_not(&mut self) {
        let mut events = [EpollEvent::empty(); 1];
        let n = self
            .epoll
            .wait(&mut events, EpollTimeout::ZERO)
            .expect("epoll_wait");
        assert_eq!(n, 0);
    }
}

/// A graceful stop: a worker that is online gets `{act:'disconnect'}` and no more
/// connections; its `listen()` from then on fails at once (ECANCELED) instead of hanging.
#[test]
fn a_disconnected_worker_is_asked_once_and_gets_no_more_connections() {
    let (mut h, port) = Harness::round_robin_pair();
    h.primary.disconnect(1);
    let request = h.one_sent();
    assert_eq!(request.to, 1);
    assert_eq!(request.message["act"], "disconnect");
    assert!(request.fd.is_none());
    let a = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h.connection_arrives();
    assert_handed(&h.one_sent(), 2, &a);
    let refused = h.query(1, tcp_query(2, 1));
    assert_eq!(refused.cluster()["errno"], -libc::ECANCELED);
    assert_eq!(refused.cluster()["ack"], 2);

    // A worker that never said `online` does not speak the protocol: nothing is sent.
    h.add(3, "web", NodeScheduling::RoundRobin);
    h.primary.disconnect(3);
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

/// `exitedAfterDisconnect` (the app called `worker.disconnect()`): the worker is acked with
/// its own seq, the supervisor hears of a suicide (to start the replacement), and the worker
/// is not given new work.
#[test]
fn a_worker_that_leaves_on_its_own_is_acked_and_reported_as_a_suicide() {
    let (mut h, port) = Harness::round_robin_pair();
    h.say(
        1,
        json!({"cmd": "NODE_CLUSTER", "act": "exitedAfterDisconnect", "seq": 7}),
    );
    let ack = h.one_sent();
    assert_eq!((ack.to, &ack.message["ack"]), (1, &json!(7)));
    assert!(ack.message.get("act").is_none());
    assert_eq!(h.events(), [(1, WorkerMessage::Suicide)]);
    let refused = h.query(1, tcp_query(8, 1));
    assert_eq!(refused.cluster()["errno"], -libc::ECANCELED);

    // Its servers close as it goes (`close`), then its channel: the connections go to the
    // worker that stays.
    h.say(
        1,
        json!({"cmd": "NODE_CLUSTER", "act": "close", "key": KEY, "seq": 9}),
    );
    h.primary.remove_worker(1, &h.epoll);
    assert!(!h.primary.is_worker(1));
    for _ in 0..2 {
        let client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        h.connection_arrives();
        let seq = assert_handed(&h.one_sent(), 2, &client);
        h.say(2, reply_to_newconn(seq, true));
    }
}

/// What a worker may send that is not what the primary expects: every `listen()` gets an
/// answer (an errno), and nothing else is answered or reported.
#[test]
fn garbled_and_unservable_messages_get_an_errno_or_nothing_and_never_a_panic() {
    let mut h = Harness::workers(NodeScheduling::RoundRobin, &[1]);
    // The user's own messages are returned to the caller, untouched.
    for user in [
        json!("ready"),
        json!({"act": "suicide"}),
        json!({"cmd": "deploy"}),
        json!(42),
    ] {
        assert_eq!(h.say(1, user), Whose::User);
    }
    // An instance that is no Node worker has no internal messages.
    assert_eq!(h.say(77, online()), Whose::User);
    // Internal messages that make no sense are the primary's, and ignored.
    for odd in [
        json!({"cmd": "NODE_CLUSTER"}),
        json!({"cmd": "NODE_CLUSTER", "act": "reboot", "seq": 1}),
        json!({"cmd": "NODE_CLUSTER", "act": 5}),
        json!({"cmd": "NODE_SOMETHING_NEW"}),
        json!({"cmd": "NODE_CLUSTER", "act": "close", "key": "no:such:key", "seq": 2}),
        json!({"cmd": "NODE_CLUSTER", "ack": "x", "accepted": true}),
    ] {
        assert_eq!(h.say(1, odd.clone()), Whose::Internal, "{odd}");
    }
    assert!(h.sent().is_empty());

    // Listen requests that cannot be served: an errno reply with the request's seq and key.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("address").port();
    let refused = |address: Value, port: Value, address_type: Value, fd: Value| {
        json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "index": 0, "data": {"k": 1},
               "address": address, "port": port, "addressType": address_type, "fd": fd,
               "seq": "s"})
    };
    for (query, errno) in [
        (
            refused(json!("not an address"), json!(80), json!(4), json!(null)),
            libc::EINVAL,
        ),
        (
            refused(json!("127.0.0.1"), json!(70000), json!(4), json!(null)),
            libc::EINVAL,
        ),
        (
            refused(json!("127.0.0.1"), json!(0), json!(9), json!(null)),
            libc::EINVAL,
        ),
        (
            refused(json!("127.0.0.1"), json!(0), json!(4), json!(5)),
            libc::EINVAL,
        ),
        (
            refused(json!("127.0.0.1"), json!(taken_port), json!(4), json!(null)),
            libc::EADDRINUSE,
        ),
    ] {
        let reply = h.query(1, query.clone());
        assert!(reply.fd.is_none());
        let message = reply.cluster();
        assert_eq!(message["errno"], -errno, "{query}");
        assert_eq!(message["ack"], "s");
        assert_eq!(message["data"], json!({"k": 1}));
        assert!(message["key"].as_str().is_some_and(|k| k.ends_with(":0")));
    }

    // A handle the worker sends (`process.send(msg, socket)`) is acked, or its channel stalls.
    h.say(
        1,
        json!({"cmd": "NODE_HANDLE", "type": "net.Socket", "msg": {}}),
    );
    assert_eq!(h.one_sent().message, json!({"cmd": "NODE_HANDLE_ACK"}));
    // The acks of the channel level are the outbox's.
    assert_eq!(h.say(1, json!({"cmd": "NODE_HANDLE_ACK"})), Whose::Internal);
    assert_eq!(
        h.say(1, json!({"cmd": "NODE_HANDLE_NACK"})),
        Whose::Internal
    );
    assert!(h.sent().is_empty());
    assert!(h.events().is_empty());
}

/// A worker may not hold more than [`MAX_HANDLES_PER_UNIT`] sockets open in clusterd: the
/// next is refused with EMFILE; a key it has already is still served.
#[test]
fn a_unit_holds_at_most_max_handles_listening_sockets() {
    let mut h = Harness::workers(NodeScheduling::Shared, &[1]);
    for index in 0..MAX_HANDLES_PER_UNIT {
        let reply = h.query(1, tcp_query(1, index as u64));
        assert_eq!(reply.cluster()["errno"], 0);
    }
    let refused = h.query(1, tcp_query(2, MAX_HANDLES_PER_UNIT as u64));
    assert_eq!(refused.cluster()["errno"], -libc::EMFILE);
    let again = h.query(1, tcp_query(3, 0));
    assert_eq!(again.cluster()["errno"], 0);
}

/// The unit's sockets outlive its workers (restarts queue in the backlog) and close only when
/// the unit is released with no worker left, or when a serving unit no longer listens there.
#[test]
fn sockets_stay_while_workers_come_and_go_and_close_when_the_unit_is_released() {
    let mut h = Harness::workers(NodeScheduling::Shared, &[1, 2]);
    let port = port_of(&h.query(1, tcp_query(1, 0)).fd.expect("a socket"));
    h.query(2, tcp_query(1, 0));
    h.say(1, listening(2));
    h.say(2, listening(2));
    // Worker 1 closes its server, worker 2 still listens: the socket stays.
    h.say(
        1,
        json!({"cmd": "NODE_CLUSTER", "act": "close", "key": KEY, "seq": 3}),
    );
    TcpStream::connect(("127.0.0.1", port)).expect("still listening");
    // Every worker gone (a restart of the whole unit): still listening.
    h.primary.remove_worker(1, &h.epoll);
    h.primary.remove_worker(2, &h.epoll);
    TcpStream::connect(("127.0.0.1", port)).expect("kept across the restart");
    // Released while a new worker runs: kept; released with none left: closed.
    h.add(3, "web", NodeScheduling::Shared);
    h.primary.release_unit("web", &h.epoll);
    TcpStream::connect(("127.0.0.1", port)).expect("kept while a worker runs");
    h.primary.remove_worker(3, &h.epoll);
    h.primary.release_unit("web", &h.epoll);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "closed");

    // A serving unit whose workers all closed a key closes it.
    drop(h);
    let mut h = Harness::workers(NodeScheduling::Shared, &[1]);
    let port = port_of(&h.query(1, tcp_query(1, 0)).fd.expect("a socket"));
    h.say(1, listening(2));
    h.say(
        1,
        json!({"cmd": "NODE_CLUSTER", "act": "close", "key": KEY, "seq": 3}),
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "closed");
}

/// A reload that changes `node_cluster`'s mode closes the old mode's sockets: the new
/// workers bind in the new mode.
#[test]
fn a_new_scheduling_mode_closes_the_old_modes_sockets() {
    let mut h = Harness::workers(NodeScheduling::RoundRobin, &[1]);
    let port = sockname_port(&h.query(1, tcp_query(1, 0)));
    h.add(2, "web", NodeScheduling::Shared);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "closed");
    let shared = h.query(2, tcp_query(1, 0));
    assert_eq!(shared.message["cmd"], "NODE_HANDLE");
    assert!(shared.fd.is_some());
}
