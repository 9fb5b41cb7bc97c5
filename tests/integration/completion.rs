//! Shell completion (issue 23, a PM2 habit): unit names from the running clusterd after a
//! verb that takes a unit, in bash (with and without the bash-completion package), zsh and
//! fish, each the real shell in a real terminal (tmux) with the script `clusterctl
//! completions SHELL` prints, a completed line then run; and the hidden `__complete-units`
//! helper offered by none of them.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::tmux::Tmux;
use common::*;

const SLEEPER: &str = "command = \"sleep 300\"\n";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// PATH with the clusterctl under test first.
fn path_with_clusterctl() -> String {
    let bin_dir = Path::new(CLUSTERCTL).parent().expect("a directory");
    format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// The three units every test here runs: `we` completes to `web` alone, `w` to two.
fn daemon() -> Daemon {
    let d = Daemon::start(&[("web", SLEEPER), ("worker", SLEEPER), ("api", SLEEPER)]);
    d.wait_running("web", 1);
    d
}

/// A second clusterd, with the one unit `alpha`, and its socket: reached only through a
/// `--socket` on the line (CLUSTERD_SOCKET names the first).
fn other_daemon() -> (Daemon, String) {
    let other = Daemon::start(&[("alpha", SLEEPER)]);
    other.wait_running("alpha", 1);
    let socket = other.socket.display().to_string();
    (other, socket)
}

/// The ways a line names a socket, before or after the verb (`=` as a word of its own where
/// bash splits at it).
fn lines_with_socket(socket: &str, equals: &str) -> [String; 3] {
    [
        format!("clusterctl --socket {socket} reload "),
        format!("clusterctl --socket{equals}{socket} reload "),
        format!("clusterctl reload --socket {socket} "),
    ]
}

/// How each shell is started (no rc files: nothing but what the test sets up) and the line
/// that loads clusterctl's completion into it, as a user's rc file would.
struct Shell {
    name: &'static str,
    command: &'static [&'static str],
    setup: &'static str,
}

const SHELLS: &[Shell] = &[
    Shell {
        name: "bash without bash-completion",
        command: &["bash", "--norc", "--noprofile"],
        // A marker printed only if bash-completion is absent, as it must be here.
        setup: "PS1='$ '; declare -F _init_completion >/dev/null || echo no-bash''-completion; source <(clusterctl completions bash)",
    },
    Shell {
        name: "bash with bash-completion",
        command: &["bash", "--norc", "--noprofile"],
        setup: "PS1='$ '; source /usr/share/bash-completion/bash_completion; declare -F _init_completion >/dev/null && echo with-bash''-completion; source <(clusterctl completions bash)",
    },
    Shell {
        name: "zsh",
        command: &["zsh", "-f"],
        setup: "PROMPT='$ '; autoload -Uz compinit && compinit -D -u; source <(clusterctl completions zsh); echo zsh''-ready",
    },
    Shell {
        name: "fish",
        command: &["fish", "--no-config", "--private"],
        setup: "function fish_prompt; echo -n '$ '; end; set -g fish_autosuggestion_enabled 0; clusterctl completions fish | source; echo fish''-ready",
    },
];

/// The marker `setup` prints once it is done.
fn ready_marker(shell: &Shell) -> &'static str {
    match shell.name {
        "bash without bash-completion" => "no-bash-completion",
        "bash with bash-completion" => "with-bash-completion",
        "zsh" => "zsh-ready",
        _ => "fish-ready",
    }
}

/// In each shell: `clusterctl status we<Tab><Enter>` runs `status web` (the unit's row, not
/// "unknown unit"), `clusterctl daemon-rel<Tab><Enter>` runs `daemon-reload` (verbs are
/// still completed), and `clusterctl --socket OTHER status al<Tab><Enter>` runs `status
/// alpha` on the clusterd of that socket, not of CLUSTERD_SOCKET.
#[test]
fn every_shell_completes_unit_names_from_the_running_clusterd_and_runs_the_line() {
    let programs = ["bash", "zsh", "fish", "tmux"];
    for program in programs {
        if !available(
            program,
            runs(program, &["--version"]) || runs(program, &["-V"]),
        ) {
            return;
        }
    }
    if !available(
        "bash-completion (/usr/share/bash-completion/bash_completion)",
        Path::new("/usr/share/bash-completion/bash_completion").exists(),
    ) {
        return;
    }
    let d = daemon();
    let (_other, other_socket) = other_daemon();
    let home = tempfile::tempdir().expect("a home");
    let path = path_with_clusterctl();
    let socket = format!("CLUSTERD_SOCKET={}", d.socket.display());
    let home_variable = format!("HOME={}", home.path().display());
    let path_variable = format!("PATH={path}");
    for (n, shell) in SHELLS.iter().enumerate() {
        let mut command = vec![
            "env",
            "-i",
            "TERM=xterm",
            path_variable.as_str(),
            socket.as_str(),
            home_variable.as_str(),
        ];
        command.extend_from_slice(shell.command);
        let tmux = Tmux::start(
            &format!("clusterd-completion-{}-{n}", std::process::id()),
            &command,
        );
        let name = shell.name;
        tmux.type_line(shell.setup);
        wait_for(&format!("{name} to load the completion"), PATIENCE, || {
            tmux.screen()
                .lines()
                .any(|l| l.trim_end() == ready_marker(shell))
        });

        // Types `typed`, Tab, Enter; the shell must have run `ran` (what Tab made of the
        // line), which prints a line starting with `output`.
        let complete_and_run = |typed: &str, ran: &str, output: &str| {
            tmux.keys(typed);
            tmux.keys("Tab");
            tmux.keys("Enter");
            wait_for(
                &format!("{name}: `{typed}<Tab>` to run `{ran}`"),
                PATIENCE,
                || {
                    let screen = tmux.screen();
                    screen.lines().any(|l| l.starts_with(output)) || screen.contains("unknown unit")
                },
            );
            let screen = tmux.screen();
            assert!(
                screen.contains(&format!("$ {ran}")) && !screen.contains("unknown unit"),
                "{name}:\n{screen}"
            );
        };
        complete_and_run("clusterctl status we", "clusterctl status web", "web ");
        complete_and_run(
            "clusterctl daemon-rel",
            "clusterctl daemon-reload",
            "3 unchanged",
        );
        complete_and_run(
            &format!("clusterctl --socket {other_socket} status al"),
            &format!("clusterctl --socket {other_socket} status alpha"),
            "alpha ",
        );
    }
}

/// clap_complete offers a hidden verb like any other: fish completed `clusterctl
/// __complete-units`, and `clusterctl help __complete-units`. fish's own completion engine
/// (`complete -C`) lists every verb and no hidden one, after `clusterctl` and after
/// `clusterctl help`; and no shell's script names the helper but to call it.
#[test]
fn no_shell_offers_the_hidden_complete_units_helper() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let script =
            String::from_utf8(clusterd::cli::completion::clusterctl_script(shell)).unwrap();
        let mentions: Vec<&str> = script
            .lines()
            .filter(|l| l.contains("__complete-units") || l.contains("complete__subcmd__units"))
            .collect();
        assert_eq!(mentions.len(), 1, "{shell}: {mentions:#?}");
        assert!(
            mentions[0].contains("__complete-units 2>/dev/null"),
            "{shell}: {mentions:?}"
        );
    }
    if !available("fish", runs("fish", &["--version"])) {
        return;
    }
    let d = daemon();
    let offered = |line: &str| {
        let out = Command::new("fish")
            .args(["--no-config", "--private", "-c"])
            .arg(format!(
                "clusterctl completions fish | source; complete -C '{line}'"
            ))
            .env("PATH", path_with_clusterctl())
            .env("CLUSTERD_SOCKET", &d.socket)
            .output()
            .expect("run fish");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    // `clusterctl help ` offered nothing in fish (clap's guard named `help` itself).
    for line in ["clusterctl ", "clusterctl help "] {
        let words = offered(line);
        assert!(
            words.iter().any(|w| w == "daemon-reload"),
            "{line}: {words:?}"
        );
        assert!(words.iter().any(|w| w == "status"), "{line}: {words:?}");
        assert!(
            !words.iter().any(|w| w.starts_with("__")),
            "{line}: {words:?}"
        );
    }
    // Unit names where a unit goes, and only there.
    let words = offered("clusterctl reload w");
    assert_eq!(words, ["web", "worker"], "{words:?}");
    let words = offered("clusterctl help st");
    assert!(!words.iter().any(|w| w == "web"), "{words:?}");
    // The line's --socket, in either form, before or after the verb, wins over CLUSTERD_SOCKET.
    let (_other, socket) = other_daemon();
    for line in lines_with_socket(&socket, "=") {
        let words = offered(&line);
        assert_eq!(words, ["alpha"], "{line}: {words:?}");
    }
}

/// The bash script's own function, called as bash's completion calls it, with the words of a
/// line: `clusterctl reload w` offers the running clusterd's `web` and `worker`, in a bash
/// without the bash-completion package (--norc: nothing but the script); a flag's value is no
/// verb; the hidden helper is never offered; a `--socket` on the line is the clusterd asked.
#[test]
fn bash_completes_unit_names_from_the_running_clusterd_without_bash_completion() {
    let d = daemon();
    let complete = |line: &str| {
        let script = format!(
            r#"source <(clusterctl completions bash)
COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<<"$COMP_LINE"; [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
_clusterctl_units clusterctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
        );
        let out = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-c", &script])
            .env("PATH", path_with_clusterctl())
            .env("CLUSTERD_SOCKET", &d.socket)
            .output()
            .expect("run bash");
        let offered: Vec<String> = stdout(&out)
            .lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        (offered, stderr(&out))
    };
    let (offered, errors) = complete("clusterctl reload w");
    assert!(offered.contains(&"web".to_string()), "{offered:?} {errors}");
    assert!(
        offered.contains(&"worker".to_string()),
        "{offered:?} {errors}"
    );
    assert!(!offered.contains(&"api".to_string()), "{offered:?}");
    // The verbs are still completed, and a verb without units offers none.
    let (offered, errors) = complete("clusterctl re");
    assert!(
        offered.contains(&"reload".to_string()),
        "{offered:?} {errors}"
    );
    let (offered, _) = complete("clusterctl daemon-reload ");
    assert!(!offered.contains(&"web".to_string()), "{offered:?}");
    let (offered, errors) = complete("clusterctl -H ssh://example.org reload w");
    assert!(offered.contains(&"web".to_string()), "{offered:?} {errors}");
    let (offered, _) = complete("clusterctl __");
    assert!(offered.is_empty(), "{offered:?}");
    // The line's --socket, in either form (bash splits `--socket=X` at the `=`), before or
    // after the verb, wins over CLUSTERD_SOCKET.
    let (_other, socket) = other_daemon();
    for line in lines_with_socket(&socket, " = ") {
        let (offered, errors) = complete(&line);
        // clap's own part offers the flags too.
        let units: Vec<&String> = offered.iter().filter(|w| !w.starts_with('-')).collect();
        assert_eq!(units, ["alpha"], "{line}: {offered:?} {errors}");
    }
    // While the socket's path itself is typed, no unit is offered.
    let (offered, _) = complete("clusterctl reload --socket ");
    assert!(!offered.contains(&"web".to_string()), "{offered:?}");
}
