//! `clusterctl dial-stdio`: copies stdin to the local control socket and the socket to
//! stdout, as `docker system dial-stdio` does, so that `ssh HOST clusterctl dial-stdio` is a
//! connection to that host's clusterd. One thread, one bounded buffer, poll(2) on both sides:
//! it ends when the socket closes or stdout's reader goes away; when stdin ends, the socket is
//! half-closed and the answer still comes through.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Bridges until one side is done; `Err` says what failed.
pub fn bridge(socket: &mut UnixStream) -> Result<(), String> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut stdin_open = true;
    let mut out = stdout.lock();
    loop {
        let (stdin_ready, socket_ready, stdout_gone) = {
            let mut fds = vec![
                PollFd::new(socket.as_fd(), PollFlags::POLLIN),
                // No events asked: POLLERR/POLLHUP say stdout's reader (sshd) is gone.
                PollFd::new(stdout.as_fd(), PollFlags::empty()),
            ];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            let ready = |fd: Option<&PollFd>| {
                fd.and_then(PollFd::revents).is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            let gone = fds
                .get(1)
                .and_then(PollFd::revents)
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR));
            (ready(fds.get(2)), ready(fds.first()), gone)
        };
        if stdout_gone {
            return Ok(());
        }
        if socket_ready {
            let n = match socket.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("cannot read from clusterd: {e}")),
            };
            let chunk = buffer.get(..n).unwrap_or_default();
            match out.write_all(chunk).and_then(|()| out.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(format!("cannot write to stdout: {e}")),
            }
        }
        if stdin_ready {
            // Unbuffered: what poll saw is what is read.
            let n = match nix::unistd::read(stdin.as_fd(), &mut buffer) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("cannot read stdin: {e}")),
            };
            if n == 0 {
                // The request is all sent: clusterd may still be answering.
                stdin_open = false;
                let _ = socket.shutdown(Shutdown::Write);
                continue;
            }
            if let Err(e) = socket.write_all(buffer.get(..n).unwrap_or_default()) {
                return Err(format!("cannot write to clusterd: {e}"));
            }
        }
    }
}
