//! Who holds a TCP port, for "cannot listen on tcp://127.0.0.1:8080: Address in use (held by
//! pid 812, python3)": the listening socket's inode from /proc/net/tcp and tcp6, then the
//! process that has that inode open among /proc/PID/fd. Only what clusterd may read (as
//! another user it sees nobody's fds but its own), and bounded: a machine with a million fds
//! costs at most [`MAX_FDS`] readlinks, and a failure is simply no name.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Processes and fds looked at, at most: the answer is a courtesy, not worth a stall.
const MAX_PROCESSES: usize = 32_768;
const MAX_FDS: usize = 200_000;
/// Lines of /proc/net/tcp{,6} read, at most.
const MAX_SOCKETS: usize = 200_000;
/// TCP_LISTEN in /proc/net/tcp's `st` column.
const LISTEN: &str = "0A";

/// `pid 812, python3` for the process listening on `addr`'s port, when clusterd can see it.
pub(crate) fn holder_of(addr: SocketAddr) -> Option<String> {
    let inodes = listening_inodes(addr.port());
    if inodes.is_empty() {
        return None;
    }
    let mut fds = 0;
    let processes = std::fs::read_dir("/proc").ok()?;
    for entry in processes.take(MAX_PROCESSES).flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(open) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in open.flatten() {
            fds += 1;
            if fds > MAX_FDS {
                return None;
            }
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let inode = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                let comm = comm.trim();
                return Some(if comm.is_empty() {
                    format!("pid {pid}")
                } else {
                    format!("pid {pid}, {comm}")
                });
            }
        }
    }
    None
}

/// The inodes of the sockets listening on `port`, IPv4 and IPv6.
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(
            text.lines()
                .skip(1)
                .take(MAX_SOCKETS)
                .filter_map(|line| listening_inode(line, port)),
        );
    }
    inodes
}

/// One row of /proc/net/tcp: `sl local_address rem_address st ... uid timeout inode`.
fn listening_inode(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = fields.get(1)?;
    let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    if local_port != port || *fields.get(3)? != LISTEN {
        return None;
    }
    fields.get(9)?.parse().ok().filter(|&inode| inode != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_row_gives_its_inode_and_others_none() {
        let row = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listening_inode(row, 8080), Some(123456));
        assert_eq!(listening_inode(row, 8081), None);
        let established = row.replacen(" 0A ", " 01 ", 1);
        assert_eq!(listening_inode(&established, 8080), None);
        assert_eq!(listening_inode("garbage", 8080), None);
    }

    #[test]
    fn the_holder_of_a_port_this_process_listens_on_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = holder_of(addr).expect("our own socket is visible");
        assert!(
            holder.starts_with(&format!("pid {}", std::process::id())),
            "{holder}"
        );
    }
}
