//! The sockets clusterd binds for a unit: `listen` addresses (checked against `balance`) and
//! `listen_options`, with their defaults.

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::unit::absolute;
use super::unit_error::{At, UnitError, UnitErrorKind};
use super::unit_file::ListenOptionsTable;
use super::values::{Balance, ByteSize, ListenAddress};

/// How the `listen` sockets are set up (`listen_options`). The TCP options apply to TCP
/// sockets only; connections accepted from a socket inherit them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// TCP_NODELAY: small writes go out at once. On by default: servers that write a
    /// response in pieces (asyncio's, uvicorn) otherwise wait ~40 ms for the client's
    /// delayed ACK on every keep-alive request, and asyncio sets it only on sockets it
    /// created itself.
    pub nodelay: bool,
    /// Connections that may wait while no instance accepts (the kernel caps it at
    /// net.core.somaxconn).
    pub backlog: u32,
    /// SO_KEEPALIVE: the kernel probes idle connections.
    pub keepalive: bool,
    /// SO_SNDBUF and SO_RCVBUF in bytes; `None`: the kernel's.
    pub send_buffer: Option<u32>,
    pub receive_buffer: Option<u32>,
    /// TCP_DEFER_ACCEPT: wake an instance only once a connection has data, waiting at most
    /// this long; `None`: off.
    pub defer_accept: Option<Duration>,
}

/// More than this is a typo (and more than any kernel accepts).
const MAX_BACKLOG: u32 = 65535;
/// The default backlog: enough for a burst while every instance restarts.
const DEFAULT_BACKLOG: u32 = 4096;
/// The longest `defer_accept`.
const MAX_DEFER_ACCEPT: Duration = Duration::from_secs(3600);

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            nodelay: true,
            backlog: DEFAULT_BACKLOG,
            keepalive: false,
            send_buffer: None,
            receive_buffer: None,
            defer_accept: None,
        }
    }
}

/// `listen`: unix paths made absolute (relative to `base_dir`); a unix address refused with
/// `balance = "reuseport"`.
pub(super) fn listen_addresses(
    addresses: Option<Vec<Spanned<ListenAddress>>>,
    balance: Balance,
    base_dir: &Path,
    at: &At,
) -> Result<Vec<ListenAddress>, UnitError> {
    let mut listen = Vec::new();
    for address in addresses.unwrap_or_default() {
        let start = address.span().start;
        listen.push(match address.into_inner() {
            // SO_REUSEPORT exists for TCP and UDP only: a second unix socket on the same
            // path would fail to bind and spend the restart budget.
            ListenAddress::Unix(_) if balance == Balance::Reuseport => {
                return Err(at(
                    start,
                    UnitErrorKind::Conflict,
                    "balance = \"reuseport\" works with tcp:// addresses only; a unix socket is always shared (use balance = \"shared\", or a separate unit)".into(),
                ))
            }
            ListenAddress::Unix(p) if p.is_relative() => {
                ListenAddress::Unix(absolute(&base_dir.join(p)))
            }
            other => other,
        });
    }
    Ok(listen)
}

/// `listen_options`, which needs `listen` addresses to apply to.
pub(super) fn listen_options(
    table: Option<Spanned<ListenOptionsTable>>,
    listen: &[ListenAddress],
    at: &At,
) -> Result<ListenOptions, UnitError> {
    match table {
        None => Ok(ListenOptions::default()),
        Some(table) if listen.is_empty() => Err(at(
            table.span().start,
            UnitErrorKind::Conflict,
            "listen_options applies to units with listen addresses (add listen = [...])".into(),
        )),
        Some(table) => options(table.into_inner(), at),
    }
}

/// The table, checked: a backlog within 1–65535, buffers the kernel can take.
fn options(table: ListenOptionsTable, at: &At) -> Result<ListenOptions, UnitError> {
    let defaults = ListenOptions::default();
    let backlog = match table.backlog {
        Some(backlog) if !(1..=MAX_BACKLOG).contains(backlog.get_ref()) => {
            return Err(at(
                backlog.span().start,
                UnitErrorKind::BadValue,
                format!(
                    "listen_options.backlog = {} is outside 1–{MAX_BACKLOG}",
                    backlog.get_ref()
                ),
            ))
        }
        Some(backlog) => backlog.into_inner(),
        None => defaults.backlog,
    };
    let buffer = |size: Option<Spanned<ByteSize>>, name: &str| -> Result<Option<u32>, UnitError> {
        match size {
            None => Ok(None),
            Some(size) => match u32::try_from(size.get_ref().0) {
                Ok(bytes) if bytes > 0 && bytes <= i32::MAX as u32 => Ok(Some(bytes)),
                _ => Err(at(
                    size.span().start,
                    UnitErrorKind::BadValue,
                    format!("listen_options.{name} must be between 1 byte and 2GiB"),
                )),
            },
        }
    };
    let defer_accept = match table.defer_accept {
        Some(wait) if wait.get_ref().0.is_zero() => None,
        Some(wait) if wait.get_ref().0 > MAX_DEFER_ACCEPT => {
            return Err(at(
                wait.span().start,
                UnitErrorKind::BadValue,
                "listen_options.defer_accept is at most 1h".into(),
            ))
        }
        Some(wait) => Some(wait.into_inner().0),
        None => None,
    };
    Ok(ListenOptions {
        nodelay: table.nodelay.unwrap_or(defaults.nodelay),
        backlog,
        keepalive: table.keepalive.unwrap_or(defaults.keepalive),
        send_buffer: buffer(table.send_buffer, "send_buffer")?,
        receive_buffer: buffer(table.receive_buffer, "receive_buffer")?,
        defer_accept,
    })
}
