//! Binding a TCP socket the way clusterd binds every one it listens on, for the two places
//! that do: a unit's `listen` sockets (`daemon::os::listen_sockets`) and the sockets a Node
//! cluster worker asks for (`node_cluster::listener`). A leaf: it uses std and nix only, so
//! that `node_cluster` need not reach into the daemon for it (`src/layers.rs` holds both
//! arrows so).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6,
};

/// A TCP socket bound to `address` (not listening yet), with SO_REUSEADDR, SO_REUSEPORT if
/// asked, IPV6_V6ONLY as asked for an IPv6 address, close-on-exec, and `flags` (such as
/// SOCK_NONBLOCK). Shared by `listen` units and the Node cluster primary.
pub(crate) fn bind_tcp(
    address: SocketAddr,
    reuseport: bool,
    v6only: bool,
    flags: SockFlag,
) -> Result<OwnedFd, nix::Error> {
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | flags,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    match address {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &v6only)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
    }
    Ok(fd)
}
