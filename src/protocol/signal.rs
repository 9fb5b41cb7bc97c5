//! The signal `clusterctl kill --signal` names, as kill(1) takes it: a name with or without
//! `SIG`, in any case (`HUP`, `SIGhup`), a real-time one relative to its ends (`RTMIN+3`,
//! `SIGRTMAX-1`), or a number from 1 to 64 (`15`, `40`). clusterctl checks it before sending,
//! so a typo is a usage error; clusterd checks it again, as for any request.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// The highest signal number Linux has (`SIGRTMAX` on every architecture but MIPS).
const HIGHEST: i32 = 64;

/// A signal to send: one `nix` names, or a number it has none for (glibc's own 32 and 33, and
/// the real-time signals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    Named(Signal),
    Number(i32),
}

impl KillSignal {
    /// The signal's number, as sent on the wire and to `kill()`.
    pub fn number(self) -> i32 {
        match self {
            KillSignal::Named(signal) => signal as i32,
            KillSignal::Number(number) => number,
        }
    }

    fn from_number(number: i32) -> Option<KillSignal> {
        if !(1..=HIGHEST).contains(&number) {
            return None;
        }
        Some(match Signal::try_from(number) {
            Ok(signal) => KillSignal::Named(signal),
            Err(_) => KillSignal::Number(number),
        })
    }

    /// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N` (already upper case, without `SIG`).
    fn realtime(name: &str) -> Option<i32> {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        let number = if let Some(rest) = name.strip_prefix("RTMIN") {
            match rest.strip_prefix('+') {
                None if rest.is_empty() => min,
                Some(n) => min.checked_add(n.parse::<i32>().ok()?)?,
                None => return None,
            }
        } else if let Some(rest) = name.strip_prefix("RTMAX") {
            match rest.strip_prefix('-') {
                None if rest.is_empty() => max,
                Some(n) => max.checked_sub(n.parse::<i32>().ok()?)?,
                None => return None,
            }
        } else {
            return None;
        };
        (min..=max).contains(&number).then_some(number)
    }
}

impl FromStr for KillSignal {
    type Err = String;
    fn from_str(text: &str) -> Result<KillSignal, String> {
        let trimmed = text.trim();
        let upper = trimmed.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        let found = if let Ok(number) = trimmed.parse::<i32>() {
            KillSignal::from_number(number)
        } else if let Some(number) = KillSignal::realtime(name) {
            KillSignal::from_number(number)
        } else {
            Signal::from_str(&format!("SIG{name}"))
                .ok()
                .map(KillSignal::Named)
        };
        found.ok_or_else(|| {
            format!(
                "unknown signal {text:?}: give a name (TERM, SIGHUP, RTMIN+1) or a number from 1 to {HIGHEST}, as `kill -l` lists them"
            )
        })
    }
}

impl fmt::Display for KillSignal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match *self {
            KillSignal::Named(signal) => f.write_str(signal.as_str()),
            KillSignal::Number(n) if n >= libc::SIGRTMIN() => {
                write!(f, "SIGRTMIN+{} (signal {n})", n - libc::SIGRTMIN())
            }
            KillSignal::Number(n) => write!(f, "signal {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_or_without_sig_and_numbers_as_kill_takes_them() {
        for (text, number) in [
            ("15", 15),
            ("1", 1),
            ("10", 10),
            ("TERM", 15),
            ("SIGTERM", 15),
            ("sigterm", 15),
            ("hup", 1),
            ("USR1", 10),
            ("64", 64),
            ("32", 32),
            ("RTMIN", libc::SIGRTMIN()),
            ("SIGRTMIN+2", libc::SIGRTMIN() + 2),
            ("rtmax-1", libc::SIGRTMAX() - 1),
            ("RTMAX", libc::SIGRTMAX()),
        ] {
            let parsed: KillSignal = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed.number(), number, "{text}");
        }
        assert_eq!("15".parse::<KillSignal>().unwrap().to_string(), "SIGTERM");
    }

    #[test]
    fn anything_else_is_refused_with_what_to_give() {
        for text in [
            "0",
            "65",
            "-15",
            "99999999999",
            "",
            "SIG",
            "FOO",
            "RTMIN+99",
            "RTMAX-99",
            "RTMIN-1",
            "RTMIN+",
            "15x",
        ] {
            let error = text.parse::<KillSignal>().expect_err(text);
            assert!(error.contains("a number from 1 to 64"), "{text}: {error}");
        }
    }
}
