//! `watchdog` and `[health]`: how clusterd learns that an instance which still runs no longer
//! works. `watchdog` is pushed by the instance (`WATCHDOG=1`, `{"act":"watchdog"}`); a
//! `[health]` check is pulled by clusterd (a command, or an HTTP GET). This module owns their
//! raw form, their defaults and their checks; the supervisor acts on them
//! (`supervisor/health.rs`), the daemon runs the probes (`daemon/health_probe.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};
use super::values::{CommandLine, HumanDuration};

pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const DEFAULT_FAILURES: u32 = 3;

/// `[health]` exactly as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthTable {
    pub command: Option<Spanned<CommandLine>>,
    pub http: Option<Spanned<String>>,
    pub interval: Option<Spanned<HumanDuration>>,
    pub timeout: Option<Spanned<HumanDuration>>,
    pub failures: Option<Spanned<u32>>,
    pub start_period: Option<HumanDuration>,
}

/// A validated `[health]` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// From the end of one check to the start of the next.
    pub interval: Duration,
    /// A check still running this long fails (a command is killed).
    pub timeout: Duration,
    /// Consecutive failures before the instance is replaced.
    pub failures: u32,
    /// Failures within this time after the start do not count; `None`: checks begin once the
    /// instance is ready.
    pub start_period: Option<Duration>,
}

/// What one check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Run this; exit 0 is healthy.
    Command(Vec<String>),
    /// GET this URL (`{index}` and `{port}` still in it); 2xx is healthy.
    Http(String),
}

/// Where an HTTP check goes for one instance: the address to connect to and the request
/// target, with `{index}` and `{port}` replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub address: SocketAddr,
    /// `host[:port]` as written, for the `Host` header.
    pub host: String,
    /// The path and query, `/` at least.
    pub path: String,
}

/// `watchdog`, longer than 0 when set.
pub(super) fn watchdog(
    value: Option<Spanned<HumanDuration>>,
    at: &At,
) -> Result<Option<Duration>, UnitError> {
    match value {
        Some(d) if d.get_ref().0.is_zero() => Err(at(
            d.span().start,
            UnitErrorKind::BadValue,
            "watchdog must be longer than 0 (leave it out for no watchdog)".into(),
        )),
        other => Ok(other.map(|d| d.into_inner().0)),
    }
}

/// `[health]`: exactly one of `command` and `http`, positive durations, `failures` ≥ 1, and
/// an `http` URL clusterd can reach without a name lookup.
pub(super) fn health_check(
    table: Option<Spanned<HealthTable>>,
    at: &At,
) -> Result<Option<HealthCheck>, UnitError> {
    let Some(table) = table else {
        return Ok(None);
    };
    let start = table.span().start;
    let table = table.into_inner();
    let probe = match (table.command, table.http) {
        (Some(_), Some(http)) => {
            return Err(at(
                http.span().start,
                UnitErrorKind::Conflict,
                "[health] takes either command or http, not both".into(),
            ))
        }
        (None, None) => {
            return Err(at(
                start,
                UnitErrorKind::MissingKey,
                "[health] needs command = [...] or http = \"http://127.0.0.1:{port}/healthz\""
                    .into(),
            ))
        }
        (Some(command), None) => {
            let span = command.span().start;
            let command = command.into_inner().0;
            if command.is_empty() {
                return Err(at(
                    span,
                    UnitErrorKind::BadValue,
                    "[health] command is empty".into(),
                ));
            }
            Probe::Command(command)
        }
        (None, Some(http)) => {
            let span = http.span().start;
            let url = http.into_inner();
            if let Err(why) = http_target(&url, 0, Some(1)) {
                return Err(at(span, UnitErrorKind::BadValue, why));
            }
            Probe::Http(url)
        }
    };
    let positive =
        |value: Option<Spanned<HumanDuration>>, name: &str, default: Duration| match value {
            Some(d) if d.get_ref().0.is_zero() => Err(at(
                d.span().start,
                UnitErrorKind::BadValue,
                format!("[health] {name} must be longer than 0"),
            )),
            Some(d) => Ok(d.into_inner().0),
            None => Ok(default),
        };
    let interval = positive(table.interval, "interval", DEFAULT_INTERVAL)?;
    let timeout = positive(table.timeout, "timeout", DEFAULT_TIMEOUT)?;
    let failures = match table.failures {
        Some(f) if *f.get_ref() == 0 => {
            return Err(at(
                f.span().start,
                UnitErrorKind::BadValue,
                "[health] failures must be at least 1".into(),
            ))
        }
        Some(f) => f.into_inner(),
        None => DEFAULT_FAILURES,
    };
    Ok(Some(HealthCheck {
        probe,
        interval,
        timeout,
        failures,
        start_period: table.start_period.map(|d| d.0),
    }))
}

/// The target of `url` for instance `index` whose environment has `PORT` = `port`. Only
/// `http://` to an IP address or `localhost`: a check never waits for a name lookup.
pub fn http_target(url: &str, index: u32, port: Option<u16>) -> Result<HttpTarget, String> {
    let mut url = url.replace("{index}", &index.to_string());
    if url.contains("{port}") {
        let Some(port) = port else {
            return Err("the URL uses {port} but the instance has no PORT in its environment (or not a port number)".into());
        };
        url = url.replace("{port}", &port.to_string());
    }
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!(
            "[health] http must be an http:// URL (no https: checks stay on this host): {url:?}"
        )
    })?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "[health] http: the path holds spaces or control characters: {url:?}"
        ));
    }
    let bad = || {
        format!("[health] http must name an IP address or localhost, with a port if not 80 (\"http://127.0.0.1:8080/healthz\"): {url:?}")
    };
    let (host, port_text) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().map_err(|_| bad())?
    };
    let port = match port_text {
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad)?,
        None => 80,
    };
    Ok(HttpTarget {
        address: SocketAddr::new(ip, port),
        host: authority.to_string(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_targets_substitute_index_and_port_and_refuse_names() {
        let t = http_target("http://127.0.0.1:{port}/healthz?i={index}", 3, Some(8003)).unwrap();
        assert_eq!(t.address, "127.0.0.1:8003".parse().unwrap());
        assert_eq!(t.path, "/healthz?i=3");
        assert_eq!(t.host, "127.0.0.1:8003");
        let t = http_target("http://localhost", 0, None).unwrap();
        assert_eq!(t.address, "127.0.0.1:80".parse().unwrap());
        assert_eq!(t.path, "/");
        let t = http_target("http://[::1]:9000/x", 0, None).unwrap();
        assert_eq!(t.address, "[::1]:9000".parse().unwrap());
        assert!(http_target("http://example.com/", 0, None).is_err());
        assert!(http_target("https://127.0.0.1/", 0, None).is_err());
        assert!(http_target("http://127.0.0.1:{port}/", 0, None).is_err());
        assert!(http_target("http://127.0.0.1:0/", 0, None).is_err());
        assert!(http_target("http://127.0.0.1/a b", 0, None).is_err());
        assert!(http_target("http://127.0.0.1/a\r\nX: y", 0, None).is_err());
    }

    #[test]
    fn health_sections_are_checked_with_their_place_in_the_file() {
        use crate::unit::Unit;
        let parse = |text: &str| Unit::parse(std::path::Path::new("/u/web.toml"), text);
        let unit =
            parse("command = \"x\"\nwatchdog = \"5s\"\n[health]\ncommand = [\"true\"]\n").unwrap();
        assert_eq!(unit.watchdog, Some(Duration::from_secs(5)));
        let check = unit.health.unwrap();
        assert_eq!(
            (
                check.interval,
                check.timeout,
                check.failures,
                check.start_period
            ),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, DEFAULT_FAILURES, None)
        );
        for (text, says) in [
            ("watchdog = \"0s\"\n", "watchdog must be longer than 0"),
            ("[health]\ninterval = \"1s\"\n", "needs command"),
            (
                "[health]\ncommand = \"true\"\nhttp = \"http://127.0.0.1/\"\n",
                "not both",
            ),
            ("[health]\ncommand = []\n", "empty"),
            ("[health]\ncommand = \"true\"\nfailures = 0\n", "at least 1"),
            (
                "[health]\ncommand = \"true\"\ntimeout = \"0s\"\n",
                "timeout must be longer than 0",
            ),
            (
                "[health]\nhttp = \"http://db.internal/\"\n",
                "IP address or localhost",
            ),
            ("[health]\ncommand = \"true\"\nprobe = 1\n", "unknown field"),
        ] {
            let error = parse(&format!("command = \"x\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
