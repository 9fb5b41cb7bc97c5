//! The I/O thread: reads every instance's worker channel and clusterd's NOTIFY_SOCKET with one
//! epoll, and turns what arrives into [`Event`]s for the supervisor loop.
//!
//! The worker channel is one end of a Unix socketpair carrying newline-delimited JSON, the
//! framing Node uses for `process.send()` with `NODE_CHANNEL_SERIALIZATION_MODE=json`, so an
//! unmodified `process.send({act: 'suicide'})` arrives as `{"act":"suicide"}\n`. clusterd must
//! always drain the channel: a Node worker blocks when its channel is full.
//!
//! For instances of `node_cluster` units the thread is also the Node cluster primary
//! ([`crate::node_cluster`]): Node's internal messages go to the [`Primary`], which answers
//! through each channel's [`Outbox`] (non-blocking writes, EPOLLOUT when the channel is full)
//! and may watch round-robin listening sockets on the same epoll. User messages
//! (`process.send(...)`) are parsed as for every other instance.

use std::collections::HashMap;
use std::io::{ErrorKind, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Arc;
use std::thread;

use crossbeam_channel::{Receiver, Sender};
use log::{debug, warn};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::unistd::Pid;

use crate::event::{Event, NotifyMessage, WorkerMessage};
use crate::node_cluster::message::{classify, FromWorker};
use crate::node_cluster::outbox::{Flushed, Outbox};
use crate::node_cluster::primary::LISTENER_TOKEN_BASE;
use crate::node_cluster::{Primary, WorkerInfo};
use crate::printable::printable;
use crate::process_control::SpawnId;

/// A line longer than this is dropped (and logged) instead of buffered.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

const WAKE_TOKEN: u64 = u64::MAX;
const NOTIFY_TOKEN: u64 = u64::MAX - 1;

enum Command {
    /// A new instance's channel; `Some` for a Node cluster worker.
    Watch(SpawnId, OwnedFd, Option<WorkerInfo>),
    Forget(SpawnId),
    /// The instance is about to be stopped: hand it no new connections.
    Withdraw(SpawnId),
    /// The same, and ask it to close its servers and leave (`{act:'disconnect'}`).
    Disconnect(SpawnId),
    /// The unit's last Node worker was stopped: release its sockets.
    ReleaseUnit(String),
}

/// The supervisor's handle on the I/O thread.
#[derive(Clone)]
pub struct WorkerIo {
    commands: Sender<Command>,
    wake: Arc<EventFd>,
}

impl WorkerIo {
    /// Starts the thread. `notify` is clusterd's NOTIFY_SOCKET, already bound.
    pub fn start(events: Sender<Event>, notify: Option<UnixDatagram>) -> std::io::Result<WorkerIo> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let wake = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        epoll.add(
            wake.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN),
        )?;
        if let Some(socket) = &notify {
            epoll.add(
                socket.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN, NOTIFY_TOKEN),
            )?;
        }
        let (commands, command_rx) = crossbeam_channel::unbounded();
        let thread_wake = Arc::clone(&wake);
        thread::Builder::new()
            .name("worker-io".into())
            .spawn(move || {
                IoThread {
                    epoll,
                    wake: thread_wake,
                    commands: command_rx,
                    events,
                    notify,
                    channels: HashMap::new(),
                    primary: Primary::default(),
                }
                .run()
            })?;
        Ok(WorkerIo { commands, wake })
    }

    /// Starts reading clusterd's end of a new instance's worker channel; `node` makes
    /// clusterd the instance's Node cluster primary.
    pub fn watch(&self, id: SpawnId, channel: OwnedFd, node: Option<WorkerInfo>) {
        self.command(Command::Watch(id, channel, node));
    }

    /// The instance is gone: close its channel.
    pub fn forget(&self, id: SpawnId) {
        self.command(Command::Forget(id));
    }

    /// Asks a Node cluster worker to close its servers and exit (`{act:'disconnect'}`);
    /// sends `kill_signal` to `pgid` after half of `kill_timeout` if it is still there, or
    /// at once if the instance does not speak the cluster protocol.
    /// The Node cluster worker `id` is about to be stopped: hand it no new connections.
    pub fn withdraw(&self, id: SpawnId) {
        self.command(Command::Withdraw(id));
    }

    /// The Node cluster worker `id` is to close its servers and exit (`{act:'disconnect'}`);
    /// it gets no new connections from now on.
    pub fn disconnect(&self, id: SpawnId) {
        self.command(Command::Disconnect(id));
    }

    /// The unit's Node workers were all stopped: close the sockets clusterd holds for them
    /// (shortly, so that a restart finds them open).
    pub fn release_unit(&self, unit: &str) {
        self.command(Command::ReleaseUnit(unit.to_string()));
    }

    fn command(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

struct Channel {
    stream: UnixStream,
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// Inside an oversized line: drop bytes until the next newline.
    discarding: bool,
    /// What clusterd still has to write (Node cluster workers only).
    outbox: Outbox,
    /// EPOLLOUT is in the interest set: the outbox is blocked on a full channel.
    waiting_to_write: bool,
}

impl Channel {
    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            pending: Vec::new(),
            discarding: false,
            outbox: Outbox::default(),
            waiting_to_write: false,
        }
    }
}

struct IoThread {
    epoll: Epoll,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    events: Sender<Event>,
    notify: Option<UnixDatagram>,
    channels: HashMap<SpawnId, Channel>,
    /// The Node cluster primary of every `node_cluster` instance.
    primary: Primary,
}

impl IoThread {
    fn run(mut self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        loop {
            let count = match self.epoll.wait(&mut ready, EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    log::error!("worker I/O thread: epoll_wait failed: {e}");
                    return;
                }
            };
            for event in &ready[..count] {
                match event.data() {
                    WAKE_TOKEN => {
                        let _ = self.wake.read();
                        if !self.apply_commands() {
                            return;
                        }
                    }
                    NOTIFY_TOKEN => self.read_notify(),
                    token if token >= LISTENER_TOKEN_BASE => {
                        self.primary.on_listener_ready(token);
                        self.deliver();
                    }
                    id => {
                        let flags = event.events();
                        if flags.contains(EpollFlags::EPOLLOUT) {
                            self.flush(id);
                        }
                        if flags.intersects(
                            EpollFlags::EPOLLIN
                                | EpollFlags::EPOLLRDHUP
                                | EpollFlags::EPOLLHUP
                                | EpollFlags::EPOLLERR,
                        ) {
                            self.read_channel(id);
                        }
                    }
                }
            }
            self.deliver();
        }
    }

    /// Passes what the primary produced on: lines to their channels, events to the
    /// supervisor.
    fn deliver(&mut self) {
        let mut touched = Vec::new();
        for (id, message) in self.primary.take_outgoing() {
            if let Some(channel) = self.channels.get_mut(&id) {
                channel.outbox.push(message);
                if !touched.contains(&id) {
                    touched.push(id);
                }
            }
        }
        for id in touched {
            self.flush(id);
        }
        for (id, message) in self.primary.take_events() {
            let _ = self.events.send(Event::Worker { id, message });
        }
    }

    /// Writes what the channel takes; waits for EPOLLOUT when it is full.
    fn flush(&mut self, id: SpawnId) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let result = channel.outbox.flush(channel.stream.as_fd());
        let want_write = result == Flushed::Blocked;
        if want_write != channel.waiting_to_write {
            let mut interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
            if want_write {
                interest |= EpollFlags::EPOLLOUT;
            }
            let mut event = EpollEvent::new(interest, id);
            if self
                .epoll
                .modify(channel.stream.as_fd(), &mut event)
                .is_ok()
            {
                channel.waiting_to_write = want_write;
            }
        }
        // A broken channel is seen by the reader as EOF/error and closed there.
    }

    /// Returns false when the supervisor has gone away.
    fn apply_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Watch(id, fd, node)) => {
                    let stream = UnixStream::from(fd);
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let interest = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
                    if let Err(e) = self
                        .epoll
                        .add(stream.as_fd(), EpollEvent::new(interest, id))
                    {
                        warn!("cannot watch a worker channel: {e}");
                        continue;
                    }
                    self.channels.insert(id, Channel::new(stream));
                    if let Some(info) = node {
                        self.primary.add_worker(id, info, &self.epoll);
                    }
                }
                Ok(Command::Forget(id)) => self.close(id),
                Ok(Command::Withdraw(id)) => {
                    self.primary.withdraw(id);
                    self.deliver();
                }
                Ok(Command::Disconnect(id)) => {
                    self.primary.disconnect(id);
                    self.deliver();
                }
                Ok(Command::ReleaseUnit(unit)) => self.primary.release_unit(&unit, &self.epoll),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn close(&mut self, id: SpawnId) {
        if let Some(channel) = self.channels.remove(&id) {
            let _ = self.epoll.delete(channel.stream.as_fd());
        }
        if self.primary.is_worker(id) {
            self.primary.remove_worker(id, &self.epoll);
            self.deliver();
        }
    }

    fn read_channel(&mut self, id: SpawnId) {
        let Some(channel) = self.channels.get_mut(&id) else {
            return;
        };
        let mut buffer = [0u8; 16 * 1024];
        let mut lines = Vec::new();
        let mut closed = false;
        loop {
            match channel.stream.read(&mut buffer) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => split_lines(channel, &buffer[..n], &mut lines, id),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let node_worker = self.primary.is_worker(id);
        for line in lines {
            let parsed = parse_line(&line, id);
            let internal = match &parsed {
                Some(value) if node_worker => classify(value),
                _ => None,
            };
            match internal {
                Some(FromWorker::HandleAck) => {
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel.outbox.on_handle_ack();
                    }
                    self.flush(id);
                }
                Some(FromWorker::HandleNack) => {
                    if let Some(channel) = self.channels.get_mut(&id) {
                        channel.outbox.on_handle_nack();
                    }
                    self.flush(id);
                }
                Some(message) => {
                    self.primary.on_message(id, message, &self.epoll);
                    self.deliver();
                }
                None => {
                    if let Some(message) = parsed.map(|value| user_message(&value, &line)) {
                        let _ = self.events.send(Event::Worker { id, message });
                    }
                }
            }
        }
        if closed {
            // The instance (and everything that inherited the channel) closed it; its exit is
            // seen through waitpid, so nothing else to report.
            self.close(id);
        }
    }

    fn read_notify(&mut self) {
        let Some(socket) = &self.notify else { return };
        loop {
            let mut buffer = [0u8; 4096];
            let mut cmsg =
                nix::cmsg_space!(nix::sys::socket::UnixCredentials, [std::os::fd::RawFd; 8]);
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let received = recvmsg::<UnixAddr>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let message = match received {
                Ok(m) => m,
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    warn!("NOTIFY_SOCKET: receive failed: {e}");
                    return;
                }
            };
            let mut sender = None;
            // Fds passed along (systemd-notify's BARRIER=1 pipe) are kept open until the
            // sender has been identified: the sender waits for them to close, so it is
            // still alive while its process group is looked up.
            let mut passed: Vec<OwnedFd> = Vec::new();
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::ScmCredentials(creds) => {
                            sender = Some(Pid::from_raw(creds.pid()));
                        }
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                // SAFETY: the kernel just gave us these fds; nobody else owns them.
                                passed.push(unsafe {
                                    <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            let length = message.bytes;
            let truncated = message.flags.contains(MsgFlags::MSG_TRUNC);
            let Some(pid) = sender else {
                debug!("NOTIFY_SOCKET: datagram without credentials ignored");
                continue;
            };
            if truncated {
                warn!("NOTIFY_SOCKET: datagram from pid {pid} too long; ignored");
                continue;
            }
            let text = String::from_utf8_lossy(&buffer[..length]).into_owned();
            let pgid = nix::unistd::getpgid(Some(pid)).ok();
            drop(passed);
            let parsed = NotifyMessage::parse(&text);
            if parsed == NotifyMessage::default() {
                // BARRIER=1, WATCHDOG=1, ...: nothing clusterd acts on.
                debug!("NOTIFY_SOCKET: nothing to act on from pid {pid}: {text:?}");
                continue;
            }
            let _ = self.events.send(Event::Notify {
                pid,
                pgid,
                message: parsed,
            });
        }
    }
}

/// Appends `bytes` to the channel's pending line and collects every complete line.
fn split_lines(channel: &mut Channel, mut bytes: &[u8], out: &mut Vec<Vec<u8>>, id: SpawnId) {
    while !bytes.is_empty() {
        match bytes.iter().position(|&b| b == b'\n') {
            Some(end) => {
                if channel.discarding {
                    channel.discarding = false;
                } else {
                    channel.pending.extend_from_slice(&bytes[..end]);
                    if channel.pending.len() > MAX_MESSAGE_BYTES {
                        warn!("worker channel {id}: dropped a message longer than {MAX_MESSAGE_BYTES} bytes");
                    } else {
                        out.push(std::mem::take(&mut channel.pending));
                    }
                }
                channel.pending.clear();
                bytes = &bytes[end + 1..];
            }
            None => {
                if !channel.discarding {
                    channel.pending.extend_from_slice(bytes);
                    if channel.pending.len() > MAX_MESSAGE_BYTES {
                        warn!("worker channel {id}: dropped a message longer than {MAX_MESSAGE_BYTES} bytes");
                        channel.pending = Vec::new();
                        channel.discarding = true;
                    }
                }
                return;
            }
        }
    }
}

/// One JSON line from a worker. Malformed lines are logged and ignored.
pub fn parse_message(line: &[u8], id: SpawnId) -> Option<WorkerMessage> {
    parse_line(line, id).map(|value| user_message(&value, line))
}

/// Parses one line as JSON; `None` (logged) when it is empty or malformed.
fn parse_line(line: &[u8], id: SpawnId) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(
                "worker channel {id}: ignoring a malformed message ({e}): {}",
                shorten(text)
            );
            None
        }
    }
}

/// What a user message (`process.send(...)`) means to the supervisor.
fn user_message(value: &serde_json::Value, line: &[u8]) -> WorkerMessage {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let act = value
        .get("act")
        .and_then(|a| a.as_str())
        .or_else(|| value.as_str());
    match act {
        Some("suicide") => WorkerMessage::Suicide,
        Some("ready") => WorkerMessage::Ready,
        _ => WorkerMessage::Unknown(shorten(text)),
    }
}

/// At most 200 bytes of a worker's text, with control characters escaped: it goes into
/// clusterd's log, which may be a terminal.
fn shorten(text: &str) -> String {
    const MAX: usize = 200;
    let mut end = text.len().min(MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let shown = printable(&text[..end]);
    if end < text.len() {
        format!("{shown}…")
    } else {
        shown.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Channel {
        let (a, _b) = UnixStream::pair().unwrap();
        Channel::new(a)
    }

    fn split(c: &mut Channel, bytes: &[u8], out: &mut Vec<WorkerMessage>) {
        let mut lines = Vec::new();
        split_lines(c, bytes, &mut lines, 1);
        out.extend(lines.iter().filter_map(|l| parse_message(l, 1)));
    }

    #[test]
    fn messages_are_parsed_line_by_line_across_reads() {
        let mut c = channel();
        let mut out = Vec::new();
        split(&mut c, b"{\"act\":\"sui", &mut out);
        assert!(out.is_empty());
        split(
            &mut c,
            b"cide\"}\n\"ready\"\n{\"act\":\"ready\"}\nnot json\n",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                WorkerMessage::Suicide,
                WorkerMessage::Ready,
                WorkerMessage::Ready
            ]
        );
    }

    #[test]
    fn oversized_lines_are_dropped_and_the_next_one_is_read() {
        let mut c = channel();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_MESSAGE_BYTES + 10];
        split(&mut c, &big, &mut out);
        split(&mut c, b"xxxx\n{\"act\":\"suicide\"}\n", &mut out);
        assert_eq!(out, vec![WorkerMessage::Suicide]);
    }

    #[test]
    fn unknown_acts_are_kept_for_the_log() {
        assert!(matches!(
            parse_message(br#"{"act":"dance"}"#, 1),
            Some(WorkerMessage::Unknown(_))
        ));
        assert_eq!(parse_message(b"[1,2", 1), None);
    }
}
