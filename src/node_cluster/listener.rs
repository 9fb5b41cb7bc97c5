//! Binding the socket a worker's `queryServer` asks for, the way Node's primary would
//! (`net._createServerHandle`, `dgram._createSocketHandle`): TCP on an IPv4 or IPv6 address
//! (no address: dual-stack `::`, else `0.0.0.0`), a Unix socket path, or UDP. Errors are
//! negative errno values, which is what a worker expects in the reply's `errno`.
//!
//! Unlike Node's primary, clusterd listens on stream sockets itself, at once: the socket
//! belongs to the unit and keeps its backlog while no worker is alive.
//!
//! Everything is done with the worker's rights ([`WorkerRights`]): a socket path is bound,
//! chmod-ed and finally removed under the worker's file-system identity, a port below 1024
//! needs a worker that runs as root, and a file that already exists at a socket path is
//! `EADDRINUSE`, as with Node's own primary: clusterd never removes what it did not create.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag,
    SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, UnixAddr,
};
use serde_json::{json, Value};

use super::message::ServerQuery;
use super::worker_rights::WorkerRights;
use crate::net_bind;

/// libuv's `UV_TCP_IPV6ONLY` / `UV_UDP_IPV6ONLY`.
const IPV6ONLY_FLAG: i64 = 1;
/// libuv's `UV_UDP_REUSEADDR`.
const UDP_REUSEADDR_FLAG: i64 = 4;
/// Connections that may wait while no worker accepts. A shared-mode worker calls `listen()`
/// again with its own backlog (511 by default).
const MIN_BACKLOG: i32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Tcp,
    Unix,
    Udp,
}

/// A bound socket owned by clusterd.
pub(crate) struct Listener {
    pub socket: OwnedFd,
    pub transport: Transport,
    /// The socket file a Unix listener created, removed (with the rights it was created
    /// with) when the listener is dropped.
    unix_path: Option<(PathBuf, WorkerRights)>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((path, rights)) = self.unix_path.take() {
            let _ = rights.as_worker(|| std::fs::remove_file(path));
        }
    }
}

impl Listener {
    /// Binds (and, for streams, listens on) what `query` asks for, with `rights`.
    pub(crate) fn bind(query: &ServerQuery, rights: &WorkerRights) -> Result<Listener, Errno> {
        if query.fd_number().is_some() {
            // The fd is a number in the worker's fd table, not clusterd's.
            return Err(Errno::EINVAL);
        }
        if let Some(udp) = query.udp_type() {
            return bind_udp(query, udp == "udp6", rights);
        }
        match query.address_type_number() {
            Some(-1) => bind_unix(query, rights),
            Some(4) | Some(6) => bind_tcp(query, rights),
            _ => Err(Errno::EINVAL),
        }
    }

    /// The socket file of a Unix listener (`daemon-reexec` hands it over).
    pub(crate) fn unix_path(&self) -> Option<&std::path::Path> {
        self.unix_path.as_ref().map(|(path, _)| path.as_path())
    }

    /// A listener of the old image after `daemon-reexec`.
    pub(crate) fn adopted(
        socket: OwnedFd,
        transport: Transport,
        unix_path: Option<(PathBuf, WorkerRights)>,
    ) -> Listener {
        Listener {
            socket,
            transport,
            unix_path,
        }
    }

    /// `{address, family, port}` as a worker's `getsockname()` reports it, for the
    /// round-robin reply (TCP only: Node's pipe handles have no getsockname).
    pub(crate) fn sockname(&self) -> Option<Value> {
        if self.transport != Transport::Tcp {
            return None;
        }
        let addr: SockaddrStorage = getsockname(self.socket.as_raw_fd()).ok()?;
        if let Some(v4) = addr.as_sockaddr_in() {
            let ip = v4.ip();
            return Some(json!({"address": ip.to_string(), "family": "IPv4", "port": v4.port()}));
        }
        let v6 = addr.as_sockaddr_in6()?;
        Some(json!({"address": v6.ip().to_string(), "family": "IPv6", "port": v6.port()}))
    }
}

fn backlog(query: &ServerQuery) -> Backlog {
    let wanted = i32::try_from(query.backlog).unwrap_or(i32::MAX);
    Backlog::new(wanted.max(MIN_BACKLOG)).unwrap_or(Backlog::MAXCONN)
}

fn stream_socket(family: AddressFamily) -> Result<OwnedFd, Errno> {
    socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

/// The port a query asks for, if the worker may bind it.
fn permitted_port(query: &ServerQuery, rights: &WorkerRights) -> Result<u16, Errno> {
    let port = u16::try_from(query.port_number().unwrap_or(0)).map_err(|_| Errno::EINVAL)?;
    if rights.may_bind_port(port) {
        Ok(port)
    } else {
        Err(Errno::EACCES)
    }
}

fn bind_tcp(query: &ServerQuery, rights: &WorkerRights) -> Result<Listener, Errno> {
    let port = permitted_port(query, rights)?;
    let v6only = query.flags & IPV6ONLY_FLAG != 0;
    let socket = match query.address_string() {
        // Like Node: try dual-stack `::` first, then `0.0.0.0`.
        None => bind_tcp_at(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            v6only,
        )
        .or_else(|_| {
            bind_tcp_at(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
                false,
            )
        })?,
        Some(address) => {
            let ip: IpAddr = address.parse().map_err(|_| Errno::EINVAL)?;
            bind_tcp_at(SocketAddr::new(ip, port), v6only)?
        }
    };
    listen(&socket, backlog(query))?;
    Ok(Listener {
        socket,
        transport: Transport::Tcp,
        unix_path: None,
    })
}

fn bind_tcp_at(address: SocketAddr, v6only: bool) -> Result<OwnedFd, Errno> {
    net_bind::bind_tcp(address, false, v6only, SockFlag::SOCK_NONBLOCK)
}

fn bind_unix(query: &ServerQuery, rights: &WorkerRights) -> Result<Listener, Errno> {
    let path = PathBuf::from(query.address_string().ok_or(Errno::EINVAL)?);
    // Whatever is there (a stale socket, someone else's, /dev/log) stays: EADDRINUSE, as
    // bind itself would say and as Node's primary answers.
    if std::fs::symlink_metadata(&path).is_ok() {
        return Err(Errno::EADDRINUSE);
    }
    let socket = stream_socket(AddressFamily::Unix)?;
    let address = UnixAddr::new(path.as_path())?;
    rights.as_worker(|| bind(socket.as_raw_fd(), &address))??;
    let listener = Listener {
        socket,
        transport: Transport::Unix,
        unix_path: Some((path.clone(), rights.clone())),
    };
    if query.readable_all || query.writable_all {
        let mut mode = 0o600;
        if query.readable_all {
            mode |= 0o044;
        }
        if query.writable_all {
            mode |= 0o022;
        }
        // As the worker: the path may have been swapped for a link to a file of root's.
        let _ = rights
            .as_worker(|| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)));
    }
    listen(&listener.socket, backlog(query))?;
    Ok(listener)
}

fn bind_udp(query: &ServerQuery, v6: bool, rights: &WorkerRights) -> Result<Listener, Errno> {
    let port = permitted_port(query, rights)?;
    let ip: IpAddr = match query.address_string() {
        Some(address) => address.parse().map_err(|_| Errno::EINVAL)?,
        None if v6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let socket = socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    if query.flags & UDP_REUSEADDR_FLAG != 0 {
        setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    }
    match SocketAddr::new(ip, port) {
        SocketAddr::V4(v4) => bind(socket.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            setsockopt(
                &socket,
                sockopt::Ipv6V6Only,
                &(query.flags & IPV6ONLY_FLAG != 0),
            )?;
            bind(socket.as_raw_fd(), &SockaddrIn6::from(v6))?
        }
    }
    Ok(Listener {
        socket,
        transport: Transport::Udp,
        unix_path: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> WorkerRights {
        WorkerRights::default()
    }

    fn query(address: Value, port: i64, address_type: Value) -> ServerQuery {
        ServerQuery {
            seq: json!(1),
            index: Some(json!(0)),
            address: Some(address),
            port: Some(json!(port)),
            address_type: Some(address_type),
            fd: None,
            flags: 0,
            backlog: 0,
            data: Value::Null,
            readable_all: false,
            writable_all: false,
        }
    }

    #[test]
    fn port_zero_on_loopback_reports_the_port_the_kernel_chose() {
        let listener = Listener::bind(&query(json!("127.0.0.1"), 0, json!(4)), &root()).unwrap();
        let name = listener.sockname().unwrap();
        assert_eq!(name["address"], "127.0.0.1");
        assert_eq!(name["family"], "IPv4");
        assert!(name["port"].as_u64().unwrap() > 0);
        // The same port again is in use.
        let port = name["port"].as_i64().unwrap();
        assert_eq!(
            Listener::bind(&query(json!("127.0.0.1"), port, json!(4)), &root()).err(),
            Some(Errno::EADDRINUSE)
        );
    }

    #[test]
    fn unix_sockets_are_bound_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let q = query(json!(path.to_str().unwrap()), -1, json!(-1));
        let listener = Listener::bind(&q, &root()).unwrap();
        assert!(path.exists());
        assert_eq!(listener.sockname(), None);
        drop(listener);
        assert!(!path.exists());
        // Something already there is never removed, stale or not.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert_eq!(Listener::bind(&q, &root()).err(), Some(Errno::EADDRINUSE));
        assert!(path.exists());
    }

    #[test]
    fn udp_and_bad_queries() {
        let listener =
            Listener::bind(&query(json!("127.0.0.1"), 0, json!("udp4")), &root()).unwrap();
        assert_eq!(listener.transport, Transport::Udp);
        let mut q = query(Value::Null, 0, Value::Null);
        q.fd = Some(json!(3));
        assert_eq!(Listener::bind(&q, &root()).err(), Some(Errno::EINVAL));
        assert_eq!(
            Listener::bind(&query(json!("localhost"), 0, json!(4)), &root()).err(),
            Some(Errno::EINVAL)
        );
    }
}
