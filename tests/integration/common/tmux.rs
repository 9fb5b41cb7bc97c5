//! A real terminal for tests: a tmux session (`clusterctl top`, shell completion).

use std::process::Command;

/// A tmux session of its own, on a tmux server of its own (`-L`, a socket named after the
/// session): tests in the one test binary start and end sessions at the same time, and the
/// last session's end takes a shared server down under another test's feet. Killed when
/// dropped.
pub(crate) struct Tmux(String);

impl Tmux {
    /// A 120x20 terminal running `command` (`sh`, or a shell with its flags).
    pub(crate) fn start(name: &str, command: &[&str]) -> Tmux {
        let ok = Command::new("tmux")
            .args(["-L", name])
            .args(["new-session", "-d", "-s", name, "-x", "120", "-y", "20"])
            .args(command)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session");
        Tmux(name.to_string())
    }

    pub(crate) fn type_line(&self, line: &str) {
        let ok = Command::new("tmux")
            .args(["-L", &self.0])
            .args(["send-keys", "-t", &self.0, line, "Enter"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux send-keys");
    }

    pub(crate) fn keys(&self, keys: &str) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0])
            .args(["send-keys", "-t", &self.0, keys])
            .status();
    }

    pub(crate) fn screen(&self) -> String {
        Command::new("tmux")
            .args(["-L", &self.0])
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0])
            .arg("kill-server")
            .status();
    }
}
