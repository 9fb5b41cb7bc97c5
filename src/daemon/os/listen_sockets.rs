//! `UnitSockets`: the listening sockets clusterd binds for a unit's `listen` addresses and
//! passes to its instances as fds 3, 4, ... (the systemd socket-activation protocol).
//!
//! The sockets belong to the unit, not to an instance: clusterd keeps its own copy open while
//! instances crash, restart, reload and scale, so a connection that arrives while no instance
//! is accepting waits in the backlog instead of being refused. With `balance = "reuseport"`
//! every instance index gets its own SO_REUSEPORT socket, kept across that index's restarts.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};

use crate::net_bind::bind_tcp;
use crate::unit::{Balance, ListenAddress, ListenOptions, Unit};

#[derive(Default)]
pub(crate) struct UnitSockets {
    /// `balance = "shared"`: one socket per address, given to every instance.
    shared: Vec<OwnedFd>,
    /// `balance = "reuseport"`: per instance index, one socket per address.
    per_index: BTreeMap<u32, Vec<OwnedFd>>,
    /// Unix socket files this unit created, removed when the sockets close.
    unix_paths: Vec<PathBuf>,
}

impl UnitSockets {
    /// Binds the unit's shared sockets (nothing for `reuseport`, whose sockets are bound per
    /// index by [`UnitSockets::fds_for`]).
    pub(crate) fn open(unit: &Unit) -> Result<UnitSockets, String> {
        let mut sockets = UnitSockets::default();
        if unit.balance == Balance::Shared {
            for address in &unit.listen {
                let fd = bind_listener(
                    address,
                    &unit.listen_options,
                    false,
                    &mut sockets.unix_paths,
                )
                .map_err(|e| format!("{}: cannot listen on {address}: {e}", unit.name))?;
                sockets.shared.push(fd);
            }
        }
        Ok(sockets)
    }

    pub(crate) fn is_open(&self) -> bool {
        !self.shared.is_empty() || !self.per_index.is_empty()
    }

    /// The fds instance `index` receives, binding its reuseport sockets on first use.
    pub(crate) fn fds_for(&mut self, unit: &Unit, index: u32) -> Result<Vec<RawFd>, String> {
        if unit.listen.is_empty() {
            return Ok(Vec::new());
        }
        match unit.balance {
            Balance::Shared => Ok(self.shared.iter().map(AsRawFd::as_raw_fd).collect()),
            Balance::Reuseport => {
                if !self.per_index.contains_key(&index) {
                    let mut fds = Vec::new();
                    for address in &unit.listen {
                        let fd = bind_listener(
                            address,
                            &unit.listen_options,
                            true,
                            &mut self.unix_paths,
                        )
                        .map_err(|e| format!("{}: cannot listen on {address}: {e}", unit.name))?;
                        fds.push(fd);
                    }
                    self.per_index.insert(index, fds);
                }
                Ok(self.per_index[&index]
                    .iter()
                    .map(AsRawFd::as_raw_fd)
                    .collect())
            }
        }
    }

    /// `LISTEN_FDNAMES`: the address of each fd, so a program can tell them apart.
    pub(crate) fn names(unit: &Unit) -> Vec<String> {
        unit.listen
            .iter()
            .map(|address| match address {
                ListenAddress::Tcp(addr) => {
                    format!("tcp-{}-{}", addr.ip(), addr.port()).replace(':', ".")
                }
                ListenAddress::Unix(path) => format!(
                    "unix-{}",
                    path.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                ),
            })
            .collect()
    }

    /// Closes the reuseport sockets of indexes at and above `wanted` (scale-down). Their queued
    /// connections are reset unless `net.ipv4.tcp_migrate_req = 1`.
    pub(crate) fn close_from_index(&mut self, wanted: u32) {
        self.per_index.retain(|&index, _| index < wanted);
    }

    /// The fds and unix socket files, for `daemon-reexec` (the sockets stay open, owned by
    /// this value until the exec).
    pub(crate) fn held(&self) -> HeldSockets {
        HeldSockets {
            shared: self.shared.iter().map(AsRawFd::as_raw_fd).collect(),
            per_index: self
                .per_index
                .iter()
                .map(|(index, fds)| (*index, fds.iter().map(AsRawFd::as_raw_fd).collect()))
                .collect(),
            unix_paths: self.unix_paths.clone(),
        }
    }

    /// The sockets [`UnitSockets::held`] described, in the new image: `take` turns each fd
    /// number into the socket (after checking it is one).
    pub(crate) fn from_held(
        held: HeldSockets,
        mut take: impl FnMut(RawFd) -> Result<OwnedFd, String>,
    ) -> Result<UnitSockets, String> {
        let mut sockets = UnitSockets::default();
        sockets.unix_paths = held.unix_paths;
        for fd in held.shared {
            sockets.shared.push(take(fd)?);
        }
        for (index, fds) in held.per_index {
            let fds = fds.into_iter().map(&mut take).collect::<Result<_, _>>()?;
            sockets.per_index.insert(index, fds);
        }
        Ok(sockets)
    }

    /// Closes every socket and removes the unix socket files.
    pub(crate) fn close_all(&mut self) {
        self.shared.clear();
        self.per_index.clear();
        for path in self.unix_paths.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A unit's sockets as fd numbers, in the `daemon-reexec` state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldSockets {
    pub shared: Vec<RawFd>,
    pub per_index: Vec<(u32, Vec<RawFd>)>,
    pub unix_paths: Vec<PathBuf>,
}

impl HeldSockets {
    pub(crate) fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.shared
            .iter()
            .chain(self.per_index.iter().flat_map(|(_, fds)| fds.iter()))
            .copied()
    }
}

impl Drop for UnitSockets {
    fn drop(&mut self) {
        self.close_all();
    }
}

fn bind_listener(
    address: &ListenAddress,
    options: &ListenOptions,
    reuseport: bool,
    unix_paths: &mut Vec<PathBuf>,
) -> Result<OwnedFd, String> {
    let errno = |what: &str, e: nix::Error| format!("{what}: {}", e.desc());
    let fd = match address {
        // `[::]` means IPv6 only, so that `0.0.0.0` can be listed beside it.
        ListenAddress::Tcp(addr) => {
            let fd = bind_tcp(*addr, reuseport, true, SockFlag::empty()).map_err(|e| {
                match (e == nix::errno::Errno::EADDRINUSE)
                    .then(|| super::port_holder::holder_of(*addr))
                    .flatten()
                {
                    Some(holder) => format!("{} (held by {holder})", e.desc()),
                    None => e.desc().to_string(),
                }
            })?;
            set_tcp_options(&fd, options)?;
            fd
        }
        ListenAddress::Unix(path) => {
            crate::daemon::os::unix_socket_file::clear_stale(path)?;
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| errno("socket", e))?;
            let addr = UnixAddr::new(path.as_path()).map_err(|e| errno("address", e))?;
            bind(fd.as_raw_fd(), &addr).map_err(|e| e.desc().to_string())?;
            unix_paths.push(path.clone());
            fd
        }
    };
    if let Some(bytes) = options.send_buffer {
        setsockopt(&fd, sockopt::SndBuf, &(bytes as usize)).map_err(|e| errno("SO_SNDBUF", e))?;
    }
    if let Some(bytes) = options.receive_buffer {
        setsockopt(&fd, sockopt::RcvBuf, &(bytes as usize)).map_err(|e| errno("SO_RCVBUF", e))?;
    }
    let backlog = i32::try_from(options.backlog)
        .ok()
        .and_then(|b| Backlog::new(b).ok())
        .unwrap_or(Backlog::MAXCONN);
    listen(&fd, backlog).map_err(|e| errno("listen", e))?;
    Ok(fd)
}

/// `listen_options` that exist for TCP only. Accepted connections inherit TCP_NODELAY and
/// SO_KEEPALIVE from the listening socket.
fn set_tcp_options(fd: &OwnedFd, options: &ListenOptions) -> Result<(), String> {
    let errno = |what: &str, e: nix::Error| format!("{what}: {}", e.desc());
    setsockopt(fd, sockopt::TcpNoDelay, &options.nodelay).map_err(|e| errno("TCP_NODELAY", e))?;
    if options.keepalive {
        setsockopt(fd, sockopt::KeepAlive, &true).map_err(|e| errno("SO_KEEPALIVE", e))?;
    }
    if let Some(wait) = options.defer_accept {
        // Whole seconds, at least one.
        let seconds = libc::c_int::try_from(wait.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads an int from a valid local for the given length.
        let result = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if result != 0 {
            return Err(format!(
                "TCP_DEFER_ACCEPT: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}
