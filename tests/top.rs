//! `clusterctl top` in a real terminal (tmux): it shows the busiest instances first, quits on
//! `q` and leaves the terminal as it found it; with stdout not a terminal it prints one frame.

mod common;

use std::process::Command;

use common::*;

/// A tmux session of its own, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(name: &str) -> Tmux {
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "120",
                "-y",
                "20",
                "sh",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux new-session");
        Tmux(name.to_string())
    }

    fn type_line(&self, line: &str) {
        let ok = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, line, "Enter"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "tmux send-keys");
    }

    fn keys(&self, keys: &str) {
        let _ = Command::new("tmux")
            .args(["send-keys", "-t", &self.0, keys])
            .status();
    }

    fn screen(&self) -> String {
        Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[test]
fn top_shows_the_busiest_first_quits_on_q_and_restores_the_terminal() {
    if !available("tmux", runs("tmux", &["-V"])) {
        return;
    }
    let daemon = Daemon::start(&[
        (
            "busy",
            "command = [\"sh\", \"-c\", \"while :; do :; done\"]\n",
        ),
        ("idle", "command = \"sleep 300\"\n"),
    ]);
    daemon.wait_running("busy", 1);
    daemon.wait_running("idle", 1);
    let tmux = Tmux::start(&format!("clusterd-top-{}", std::process::id()));
    tmux.type_line(&format!(
        "{CLUSTERCTL} --socket {} top --interval 200ms",
        daemon.path("ctl.sock").display()
    ));
    wait_for(
        "a frame with both instances, busiest first",
        PATIENCE,
        || {
            let screen = tmux.screen();
            match (screen.find("busy[0]"), screen.find("idle[0]")) {
                (Some(busy), Some(idle)) => busy < idle && screen.contains("q to quit"),
                _ => false,
            }
        },
    );
    tmux.keys("q");
    // Back at the shell, with the terminal as it was: canonical mode and echo on.
    tmux.type_line(
        "stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | sort | tr '\\n' ' '; echo END",
    );
    wait_for("stty's answer", PATIENCE, || {
        tmux.screen().contains("echo icanon END")
    });
    assert!(!tmux.screen().contains("q to quit"), "{}", tmux.screen());

    // Not a terminal: one frame.
    let out = daemon.ctl(&["top", "--sort", "mem"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("INSTANCE") && text.contains("idle[0]"),
        "{text}"
    );
}

/// Issue 18: when clusterd went away under `top`, its error was written on the alternate
/// screen and vanished with it; top exited and the operator saw nothing. Now the error is
/// printed once the terminal is back, and the exit code says clusterd is not reachable (3).
#[test]
fn top_says_why_it_ended_after_leaving_the_alternate_screen() {
    if !available("tmux", runs("tmux", &["-V"])) {
        return;
    }
    // No units: nothing is left behind when clusterd is killed.
    let mut daemon = Daemon::start(&[]);
    let tmux = Tmux::start(&format!("clusterd-top-gone-{}", std::process::id()));
    tmux.type_line(&format!(
        "{CLUSTERCTL} --socket {} top --interval 200ms; echo \"top exited with $?\"",
        daemon.path("ctl.sock").display()
    ));
    wait_for("a frame", PATIENCE, || tmux.screen().contains("q to quit"));
    send_signal(daemon.pid(), libc::SIGKILL);
    daemon.wait_exit(PATIENCE);
    wait_for("top to exit and say why", PATIENCE, || {
        let screen = tmux.screen();
        screen.contains("top exited with 3") && screen.contains("cannot connect to clusterd")
    });
    assert!(!tmux.screen().contains("q to quit"), "{}", tmux.screen());
}
