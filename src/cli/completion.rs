//! clusterctl's shell completions: clap's script for the verbs and flags, plus unit names,
//! asked of the running clusterd (`clusterctl __complete-units`, with the line's `--socket`
//! if it has one) each time a unit is completed, as `systemctl` completes units. The bash
//! script uses only bash's builtins (`complete`, `compgen`): `source <(clusterctl completions
//! bash)` works without the bash-completion package.

use clap_complete::Shell;

/// The verbs whose positional arguments are units.
const UNIT_VERBS: &str = "status ls start stop restart reload scale kill send logs top ready";

/// The completion script for `shell`: clap's, with unit names where a unit goes.
pub fn clusterctl_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "clusterctl", &mut script);
    let text = String::from_utf8_lossy(&script).into_owned();
    match shell {
        Shell::Bash => bash(&text),
        Shell::Zsh => zsh(&text),
        Shell::Fish => fish(&text),
        _ => text,
    }
    .into_bytes()
}

/// clusterctl's command line as a user sees it: without its hidden verbs. clap_complete
/// offers a hidden subcommand like any other (fish completed `clusterctl __complete-units`
/// and `clusterctl help __complete-units`, zsh listed it among the verbs), so the scripts are
/// made from a command that has none. What completion needs is copied: the global flags, the
/// visible verbs with everything of theirs, and whether a verb is required.
fn visible_command() -> clap::Command {
    let full = super::clusterctl_args::command();
    let mut visible = clap::Command::new("clusterctl")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|v| !v.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        visible = visible.about(about.clone());
    }
    if let Some(about) = full.get_long_about() {
        visible = visible.long_about(about.clone());
    }
    visible
}

fn bash(text: &str) -> String {
    let wrapper = format!(
        r#"
# Unit names, from the running clusterd, where a verb takes a unit.
_clusterctl_units() {{
    _clusterctl "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" verb="" i
    local -a socket=()
    # The verb: the first word that is no flag nor a flag's value (bash splits `--socket=X`
    # into three words). The socket: the line's --socket, before or after the verb.
    for (( i = 1; i < COMP_CWORD; i++ )); do
        case "${{COMP_WORDS[i]}}" in
            --socket|-H|--host|--hosts-file)
                [[ "${{COMP_WORDS[i+1]}}" == "=" ]] && (( i++ ))
                (( i + 1 < COMP_CWORD )) || break
                [[ "${{COMP_WORDS[i]}}" == --socket || "${{COMP_WORDS[i-1]}}" == --socket ]] \
                    && socket=(--socket "${{COMP_WORDS[i+1]/#\~/$HOME}}")
                (( i++ )) ;;
            -*) ;;
            *) [[ -z "$verb" ]] && verb="${{COMP_WORDS[i]}}" ;;
        esac
    done
    [[ -z "$verb" || "$cur" == -* ]] && return
    case "$prev" in -n|--lines|--instance|--stream|-s|--signal|--interval|--sort|--socket|=) return ;; esac
    case " {UNIT_VERBS} " in
        *" $verb "*)
            local IFS=$'\n'
            COMPREPLY+=( $(compgen -W "$(clusterctl "${{socket[@]}}" __complete-units 2>/dev/null)" -- "$cur") )
            ;;
    esac
}}
"#
    );
    let register_old = "complete -F _clusterctl ";
    let register_new = "complete -F _clusterctl_units ";
    let (body, tail) = match text.rfind("if [[ \"${BASH_VERSINFO[0]}\"") {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    format!(
        "{body}{wrapper}\n{}",
        tail.replace(register_old, register_new)
    )
}

/// zsh's unit names: the words of the whole line (`$words` holds only the verb's, once clap's
/// script has passed the verb on) give the `--socket`.
const ZSH_UNITS: &str = r#"# Unit names, from the running clusterd (the line's --socket, if any).
(( $+functions[_clusterctl_units] )) ||
_clusterctl_units() {
    local -a units line socket
    local i
    line=(${(z)LBUFFER})
    for (( i = 1; i < ${#line}; i++ )); do
        case $line[i] in
            --socket) socket=(--socket ${(Q)line[i+1]/#\~/$HOME}) ;;
            --socket=*) socket=(--socket ${(Q)${line[i]#--socket=}/#\~/$HOME}) ;;
        esac
    done
    units=(${(f)"$(clusterctl $socket __complete-units 2>/dev/null)"})
    _describe -t units 'unit' units
}

"#;

fn zsh(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let is_unit = (line.starts_with("':unit -- ")
            || line.starts_with("'::unit -- ")
            || line.starts_with("'*::units -- "))
            && line.ends_with(":_default' \\");
        if is_unit {
            out.push_str(&line.replace(":_default' \\", ":_clusterctl_units' \\"));
        } else {
            if line.starts_with("if [ \"$funcstack[1]\" = \"_clusterctl\" ]") {
                out.push_str(ZSH_UNITS);
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// fish's unit names are asked of the clusterd on the line's `--socket`, if it has one.
const FISH_SOCKET: &str = r#"# Unit names, from the running clusterd (the line's --socket, if any).
function __fish_clusterctl_socket
    set -l tokens (commandline -opc)
    for i in (seq (count $tokens))
        switch $tokens[$i]
            case --socket
                set -q tokens[(math $i + 1)]; and printf '%s\n' --socket (string replace -r '^~' $HOME -- $tokens[(math $i + 1)])
            case '--socket=*'
                printf '%s\n' --socket (string replace -r '^~' $HOME -- (string replace -- --socket= '' $tokens[$i]))
        end
    end
end
"#;

/// Unit names after a verb that takes them: the verb as clap's script finds it (the first
/// word that is no flag nor a flag's value), so `clusterctl help status` or a flag's value
/// that happens to be a verb's name offers none.
///
/// clap's `clusterctl help VERB` completions are guarded by "no verb seen yet", a list that
/// names `help` itself, which is always seen there: fish never offered them. `help` leaves
/// the list.
fn fish(text: &str) -> String {
    const HELP_GUARD: &str =
        "complete -c clusterctl -n \"__fish_clusterctl_using_subcommand help; and not __fish_seen_subcommand_from ";
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix(HELP_GUARD) {
            Some(rest) => match rest.split_once('"') {
                Some((verbs, tail)) => {
                    let verbs = verbs.strip_suffix(" help").unwrap_or(verbs);
                    format!("{HELP_GUARD}{verbs}\"{tail}\n")
                }
                None => format!("{line}\n"),
            },
            None => format!("{line}\n"),
        })
        .collect();
    format!(
        "{text}{FISH_SOCKET}complete -c clusterctl -n \"__fish_clusterctl_using_subcommand {UNIT_VERBS}\" -f -a \"(clusterctl (__fish_clusterctl_socket) __complete-units 2>/dev/null)\" -d unit\n"
    )
}
