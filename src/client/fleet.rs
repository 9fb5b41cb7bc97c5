//! Several hosts at once (`-H` repeated, a comma list, `--hosts-file`, `$CLUSTERD_HOST`): which
//! clusterds a command goes to, and asking them one after the other (stopping at the first
//! that fails, for a rolling change) or all at once.

use std::path::{Path, PathBuf};

use super::transport::{SshHost, Target};
use crate::protocol::socket_path::client_socket_path;

/// A hosts file longer than this is not a list of hosts.
const HOSTS_FILE_MAX: u64 = 1024 * 1024;

/// The clusterds to ask: the hosts named by `-H`, else by `--hosts-file`... (both add up),
/// else by `$CLUSTERD_HOST`; with none, the local socket. `socket` is the remote socket for
/// hosts, the local one otherwise.
pub fn targets(
    hosts: &[String],
    hosts_file: Option<&Path>,
    socket: Option<PathBuf>,
) -> Result<Vec<Target>, String> {
    let mut urls: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect();
    if let Some(file) = hosts_file {
        urls.extend(read_hosts_file(file)?);
        if urls.is_empty() {
            return Err(format!("{}: names no host", file.display()));
        }
    }
    if urls.is_empty() && hosts.is_empty() {
        if let Ok(env) = std::env::var("CLUSTERD_HOST") {
            urls.extend(
                env.split(',')
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty()),
            );
        }
    }
    if urls.is_empty() {
        return Ok(vec![Target::Local(client_socket_path(socket))]);
    }
    urls.iter()
        .map(|url| SshHost::parse(url, socket.clone()).map(Target::Ssh))
        .collect()
}

/// One URL a line; blank lines and `#` comments are skipped.
fn read_hosts_file(path: &Path) -> Result<Vec<String>, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HOSTS_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the hosts file {}: {e}", path.display()))?;
    if text.len() as u64 > HOSTS_FILE_MAX {
        return Err(format!(
            "the hosts file {} is larger than {HOSTS_FILE_MAX} bytes",
            path.display()
        ));
    }
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect())
}

/// Runs `ask` for every target: all at once (`parallel`), or one after the other until the
/// first that fails. The results are in the targets' order; `None` for a host that was not
/// asked because an earlier one failed.
pub fn across<T: Send, E: Send>(
    targets: &[Target],
    parallel: bool,
    ask: impl Fn(&Target) -> Result<T, E> + Sync,
) -> Vec<Option<Result<T, E>>> {
    if parallel {
        return std::thread::scope(|scope| {
            let asked: Vec<_> = targets
                .iter()
                .map(|target| scope.spawn(|| ask(target)))
                .collect();
            // A thread that panicked (it does not) counts as a host not asked.
            asked.into_iter().map(|t| t.join().ok()).collect()
        });
    }
    let mut results = Vec::with_capacity(targets.len());
    let mut failed = false;
    for target in targets {
        if failed {
            results.push(None);
            continue;
        }
        let result = ask(target);
        failed = result.is_err();
        results.push(Some(result));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_skips_comments_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "# web tier\nssh://a\n\n  ssh://b:2222  # spare\n").unwrap();
        let targets = targets(&["ssh://c".into()], Some(&file), None).unwrap();
        let names: Vec<_> = targets.iter().map(Target::name).collect();
        assert_eq!(names, ["ssh://c", "ssh://a", "ssh://b:2222"]);
    }

    #[test]
    fn a_serial_run_stops_at_the_first_failure() {
        let targets: Vec<_> = ["ssh://a", "ssh://b", "ssh://c"]
            .iter()
            .map(|u| Target::Ssh(SshHost::parse(u, None).unwrap()))
            .collect();
        let b_fails = |t: &Target| {
            if t.name() == "ssh://b" {
                Err(())
            } else {
                Ok(())
            }
        };
        let results = across(&targets, false, b_fails);
        assert!(matches!(
            results.as_slice(),
            [Some(Ok(())), Some(Err(())), None]
        ));
        let results = across(&targets, true, b_fails);
        assert!(matches!(
            results.as_slice(),
            [Some(Ok(())), Some(Err(())), Some(Ok(()))]
        ));
    }

    #[test]
    fn host_urls_that_ssh_could_misread_are_refused() {
        for bad in [
            "host",
            "ssh://",
            "ssh://-oProxyCommand=x",
            "ssh://a b",
            "ssh://h:port",
            "ssh://@h",
            "ssh://-l@h",
        ] {
            assert!(SshHost::parse(bad, None).is_err(), "{bad}");
        }
        for good in [
            "ssh://h",
            "ssh://u@h:22",
            "ssh://[::1]:2222",
            "ssh://u@10.0.0.1",
        ] {
            assert!(SshHost::parse(good, None).is_ok(), "{good}");
        }
    }
}
