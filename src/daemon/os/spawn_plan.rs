//! The pure half of starting a process: what it is started with — an instance's environment,
//! the layout of the fds a child is given, the credentials it switches to — decided as plain
//! values before, and apart from, the OS act in [`super::spawn`]. No system call here: every
//! function is tested without a process.

use std::os::fd::RawFd;
use std::path::Path;

use nix::unistd::{Gid, Uid};

use crate::supervisor::process_control::SpawnId;
use crate::unit::Unit;

/// The first fd passed to the child (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST_PASSED_FD: RawFd = 3;

/// Sets `key` in `env`, replacing an earlier value (a later source wins, and the variable
/// keeps one entry).
pub(crate) fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    env.retain(|(k, _)| k != key);
    env.push((key.to_string(), value.to_string()));
}

/// What one start of an instance adds to its unit's environment.
pub(crate) struct InstanceStart<'a> {
    pub unit: &'a Unit,
    pub id: SpawnId,
    pub index: u32,
    /// How many instances the unit runs now (`CLUSTERD_INSTANCES`).
    pub instances: u32,
    /// The unit's listening sockets, as clusterd holds them, in `listen` order.
    pub listen_fds: &'a [RawFd],
    /// Their names, for `LISTEN_FDNAMES`.
    pub socket_names: &'a [String],
    /// The instance's end of its worker channel, as clusterd holds it.
    pub channel: RawFd,
    /// clusterd's NOTIFY_SOCKET for instances, if it has one.
    pub notify_socket: Option<&'a Path>,
}

/// An instance's environment and the fds it is passed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InstancePlan {
    pub environment: Vec<(String, String)>,
    /// clusterd's fds to place at 3, 4, ... in the child: the listening sockets, then the
    /// worker channel.
    pub pass_fds: Vec<RawFd>,
    /// The child writes `LISTEN_PID=<its pid>` (it is passed sockets).
    pub listen_pid: bool,
    /// The child writes `WATCHDOG_PID=<its pid>` (its unit has a `watchdog`).
    pub watchdog_pid: bool,
}

impl InstancePlan {
    /// `environment` is the unit's (clusterd's own, then its user, `environment` and the
    /// selected `[environments.NAME]`); `from_files` what its environment files say, read at
    /// this start. Then what clusterd sets for every instance, which neither may override.
    pub(crate) fn new(
        mut environment: Vec<(String, String)>,
        from_files: Vec<(String, String)>,
        start: &InstanceStart,
    ) -> InstancePlan {
        let unit = start.unit;
        for (key, value) in from_files {
            set(&mut environment, &key, &value);
        }
        per_instance_variables(&mut environment, unit, start.index);
        let mut pass_fds = start.listen_fds.to_vec();
        pass_fds.push(start.channel);
        // The channel comes after the sockets.
        let channel_fd = (FIRST_PASSED_FD + start.listen_fds.len() as RawFd).to_string();
        let env = &mut environment;
        set(env, "CLUSTERD_UNIT", &unit.name);
        set(env, "CLUSTERD_INSTANCE", &start.index.to_string());
        set(env, "CLUSTERD_INSTANCES", &start.instances.to_string());
        set(env, "CLUSTERD_CHANNEL_FD", &channel_fd);
        // Node programs pick the channel up as their IPC channel: process.send() works.
        set(env, "NODE_CHANNEL_FD", &channel_fd);
        set(env, "NODE_CHANNEL_SERIALIZATION_MODE", "json");
        if let Some(path) = start.notify_socket {
            set(env, "NOTIFY_SOCKET", &path.to_string_lossy());
        }
        if unit.node_cluster.is_some() {
            // Node's cluster worker mode (`cluster.isWorker`); worker ids are unique per spawn.
            set(env, "NODE_UNIQUE_ID", &start.id.to_string());
            // PM2's instance variable.
            set(env, "NODE_APP_INSTANCE", &start.index.to_string());
        }
        let listen_pid = !start.listen_fds.is_empty();
        if listen_pid {
            set(env, "LISTEN_FDS", &start.listen_fds.len().to_string());
            set(env, "LISTEN_FDNAMES", &start.socket_names.join(":"));
        }
        // As systemd sets them for `WatchdogSec=`: sd_watchdog_enabled() and the libraries
        // built on it then ping every half of it, unchanged.
        let watchdog_pid = unit.watchdog.is_some();
        if let Some(watchdog) = unit.watchdog {
            set(
                &mut environment,
                "WATCHDOG_USEC",
                &watchdog.as_micros().to_string(),
            );
        }
        InstancePlan {
            environment,
            pass_fds,
            listen_pid,
            watchdog_pid,
        }
    }
}

/// `instance_variable` and `increment_variable`: the index under the unit's own name for it,
/// and a number of the environment plus the index (PM2: a value that is no number counts
/// as 0). Set before clusterd's own variables, which they cannot replace.
fn per_instance_variables(env: &mut Vec<(String, String)>, unit: &Unit, index: u32) {
    if let Some(name) = &unit.instance_variable {
        set(env, name, &index.to_string());
    }
    if let Some(name) = &unit.increment_variable {
        let base = env
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.trim().parse::<i64>().ok())
            .unwrap_or(0);
        set(
            env,
            name,
            &base.saturating_add(i64::from(index)).to_string(),
        );
    }
}

/// Where each fd the child gets goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FdLayout {
    /// (clusterd's fd, the child's fd number): stdin, stdout and stderr when given, then the
    /// passed fds at 3, 4, ...
    pub placements: Vec<(RawFd, RawFd)>,
    /// The first fd number above every placement: the child moves its sources there first,
    /// and closes everything from there up at exec.
    pub floor: RawFd,
}

/// The child's fds: `stdin` at 0, `stdout` and `stderr` at 1 and 2 when given (else it keeps
/// clusterd's), `pass_fds` at 3, 4, ...
pub(crate) fn fd_layout(
    stdin: RawFd,
    stdout: Option<RawFd>,
    stderr: Option<RawFd>,
    pass_fds: &[RawFd],
) -> FdLayout {
    let mut placements = vec![(stdin, 0)];
    placements.extend(stdout.map(|fd| (fd, 1)));
    placements.extend(stderr.map(|fd| (fd, 2)));
    placements.extend(
        pass_fds
            .iter()
            .enumerate()
            .map(|(i, &fd)| (fd, FIRST_PASSED_FD + i as RawFd)),
    );
    FdLayout {
        placements,
        floor: FIRST_PASSED_FD + pass_fds.len() as RawFd,
    }
}

/// The account a child switches to before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialPlan {
    pub uid: Option<libc::uid_t>,
    pub gid: Option<libc::gid_t>,
    /// The supplementary groups to set, when they are to be replaced.
    pub groups: Option<Vec<libc::gid_t>>,
}

impl CredentialPlan {
    /// `groups` are the user's supplementary groups (empty: just `gid`). Only root may (and
    /// must, or the child keeps root's groups) replace them, and only when switching.
    pub(crate) fn new(
        uid: Option<Uid>,
        gid: Option<Gid>,
        groups: &[Gid],
        clusterd_is_root: bool,
    ) -> CredentialPlan {
        let switching = uid.is_some() || gid.is_some();
        let groups = if groups.is_empty() {
            gid.map(|g| vec![g.as_raw()]).unwrap_or_default()
        } else {
            groups.iter().map(|g| g.as_raw()).collect()
        };
        CredentialPlan {
            uid: uid.map(Uid::as_raw),
            gid: gid.map(Gid::as_raw),
            groups: (clusterd_is_root && switching).then_some(groups),
        }
    }

    /// "uid 65534, gid 65534", for an error message.
    pub(crate) fn account(&self) -> String {
        match (self.uid, self.gid) {
            (Some(uid), Some(gid)) => format!("uid {uid}, gid {gid}"),
            (Some(uid), None) => format!("uid {uid}"),
            (None, Some(gid)) => format!("gid {gid}"),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str) -> Unit {
        Unit::parse(Path::new("/etc/clusterd/web.toml"), text).expect("unit")
    }

    fn value<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        let mut found = env.iter().filter(|(k, _)| k == key);
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(found.next().is_none(), "{key} is set twice");
        first
    }

    #[test]
    fn an_instance_gets_its_variables_over_the_units_and_its_channel_after_its_sockets() {
        let web = unit("command = \"true\"\n");
        let names = vec!["tcp-127.0.0.1-80".to_string(), "unix-web.sock".to_string()];
        let start = InstanceStart {
            unit: &web,
            id: 41,
            index: 2,
            instances: 4,
            listen_fds: &[17, 18],
            socket_names: &names,
            channel: 23,
            notify_socket: Some(Path::new("/run/clusterd/notify.sock")),
        };
        let base = vec![
            ("PATH".to_string(), "/bin".to_string()),
            ("CLUSTERD_INSTANCE".to_string(), "forged".to_string()),
            ("MODE".to_string(), "unit".to_string()),
        ];
        let files = vec![
            ("MODE".to_string(), "file".to_string()),
            ("CLUSTERD_UNIT".to_string(), "forged".to_string()),
        ];
        let plan = InstancePlan::new(base, files, &start);
        let env = &plan.environment;
        assert_eq!(value(env, "PATH"), Some("/bin"));
        assert_eq!(value(env, "MODE"), Some("file"));
        assert_eq!(value(env, "CLUSTERD_UNIT"), Some("web"));
        assert_eq!(value(env, "CLUSTERD_INSTANCE"), Some("2"));
        assert_eq!(value(env, "CLUSTERD_INSTANCES"), Some("4"));
        assert_eq!(value(env, "CLUSTERD_CHANNEL_FD"), Some("5"));
        assert_eq!(value(env, "NODE_CHANNEL_FD"), Some("5"));
        assert_eq!(value(env, "NODE_CHANNEL_SERIALIZATION_MODE"), Some("json"));
        assert_eq!(
            value(env, "NOTIFY_SOCKET"),
            Some("/run/clusterd/notify.sock")
        );
        assert_eq!(value(env, "LISTEN_FDS"), Some("2"));
        assert_eq!(
            value(env, "LISTEN_FDNAMES"),
            Some("tcp-127.0.0.1-80:unix-web.sock")
        );
        assert_eq!(value(env, "NODE_UNIQUE_ID"), None);
        assert_eq!(plan.pass_fds, vec![17, 18, 23]);
        assert!(plan.listen_pid);
    }

    /// PM2's `increment_var` and `instance_var`: PORT = 3000 is 3002 for instance 2, and the
    /// index is also under the name asked for.
    #[test]
    fn increment_and_instance_variables_count_with_the_index() {
        let web = unit(
            "command = \"true\"\ninstance_variable = \"INSTANCE_ID\"\nincrement_variable = \"PORT\"\n",
        );
        let start = InstanceStart {
            unit: &web,
            id: 9,
            index: 2,
            instances: 4,
            listen_fds: &[],
            socket_names: &[],
            channel: 30,
            notify_socket: None,
        };
        let base = vec![("PORT".to_string(), "3000".to_string())];
        let plan = InstancePlan::new(base, Vec::new(), &start);
        assert_eq!(value(&plan.environment, "PORT"), Some("3002"));
        assert_eq!(value(&plan.environment, "INSTANCE_ID"), Some("2"));
        // Unset (or not a number): from 0, as PM2 counts.
        let plan = InstancePlan::new(Vec::new(), Vec::new(), &start);
        assert_eq!(value(&plan.environment, "PORT"), Some("2"));
        assert!(Unit::parse(
            Path::new("/etc/clusterd/web.toml"),
            "command = \"true\"\nincrement_variable = \"A=B\"\n"
        )
        .is_err());
    }

    #[test]
    fn without_sockets_the_channel_is_fd_3_and_no_listen_variables_are_set() {
        let node = unit("command = \"node app.js\"\nnode_cluster = true\n");
        let start = InstanceStart {
            unit: &node,
            id: 7,
            index: 0,
            instances: 1,
            listen_fds: &[],
            socket_names: &[],
            channel: 30,
            notify_socket: None,
        };
        let plan = InstancePlan::new(Vec::new(), Vec::new(), &start);
        let env = &plan.environment;
        assert_eq!(value(env, "CLUSTERD_CHANNEL_FD"), Some("3"));
        assert_eq!(value(env, "LISTEN_FDS"), None);
        assert_eq!(value(env, "LISTEN_FDNAMES"), None);
        assert_eq!(value(env, "NOTIFY_SOCKET"), None);
        assert_eq!(value(env, "NODE_UNIQUE_ID"), Some("7"));
        assert_eq!(value(env, "NODE_APP_INSTANCE"), Some("0"));
        assert_eq!(plan.pass_fds, vec![30]);
        assert!(!plan.listen_pid);
    }

    #[test]
    fn fds_go_to_0_1_2_then_3_up_and_the_floor_is_above_them() {
        let layout = fd_layout(9, Some(10), Some(11), &[20, 21]);
        assert_eq!(
            layout.placements,
            vec![(9, 0), (10, 1), (11, 2), (20, 3), (21, 4)]
        );
        assert_eq!(layout.floor, 5);
        // Output clusterd's own: only stdin is placed, and the floor is 3.
        let layout = fd_layout(9, None, None, &[]);
        assert_eq!(layout.placements, vec![(9, 0)]);
        assert_eq!(layout.floor, FIRST_PASSED_FD);
    }

    #[test]
    fn only_root_switching_accounts_replaces_the_groups() {
        let (uid, gid) = (Some(Uid::from_raw(65534)), Some(Gid::from_raw(65534)));
        let plan = CredentialPlan::new(uid, gid, &[], true);
        assert_eq!(plan.groups, Some(vec![65534]));
        assert_eq!(plan.account(), "uid 65534, gid 65534");
        let groups = [Gid::from_raw(100), Gid::from_raw(27)];
        let plan = CredentialPlan::new(uid, gid, &groups, true);
        assert_eq!(plan.groups, Some(vec![100, 27]));
        // Not root: setgroups would fail; the child keeps its groups.
        assert_eq!(CredentialPlan::new(uid, gid, &groups, false).groups, None);
        // No switch: nothing to replace.
        let plan = CredentialPlan::new(None, None, &groups, true);
        assert_eq!(plan.groups, None);
        assert_eq!(plan.account(), "");
        assert_eq!(
            CredentialPlan::new(None, gid, &[], true).account(),
            "gid 65534"
        );
    }
}
