//! clusterctl's shell completions: clap's script for the verbs and flags, plus unit names,
//! asked of the running clusterd (`clusterctl __complete-units`) each time a unit is
//! completed, as `systemctl` completes units. The bash script uses only bash's builtins
//! (`complete`, `compgen`): `source <(clusterctl completions bash)` works without the
//! bash-completion package.

use clap_complete::Shell;

/// The verbs whose positional arguments are units.
const UNIT_VERBS: &str = "status ls start stop restart reload scale kill send logs top ready";

/// The completion script for `shell`: clap's, with unit names where a unit goes.
pub fn clusterctl_script(shell: Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut super::clusterctl_args::command(),
        "clusterctl",
        &mut script,
    );
    let text = String::from_utf8_lossy(&script).into_owned();
    match shell {
        Shell::Bash => bash(&text),
        Shell::Zsh => zsh(&text),
        Shell::Fish => fish(&text),
        _ => text,
    }
    .into_bytes()
}

fn bash(text: &str) -> String {
    let wrapper = format!(
        r#"
# Unit names, from the running clusterd, where a verb takes a unit.
_clusterctl_units() {{
    _clusterctl "$@"
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}" verb="" i
    for (( i = 1; i < COMP_CWORD; i++ )); do
        case "${{COMP_WORDS[i]}}" in
            --socket) (( i++ )) ;;
            -*) ;;
            *) verb="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    [[ -z "$verb" || "$cur" == -* ]] && return
    case "$prev" in -n|--lines|--instance|--stream|-s|--signal|--interval|--sort|--socket) return ;; esac
    case " {UNIT_VERBS} " in
        *" $verb "*)
            local IFS=$'\n'
            COMPREPLY+=( $(compgen -W "$(clusterctl __complete-units 2>/dev/null)" -- "$cur") )
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
                out.push_str(
                    "# Unit names, from the running clusterd.\n(( $+functions[_clusterctl_units] )) ||\n_clusterctl_units() {\n    local -a units\n    units=(${(f)\"$(clusterctl __complete-units 2>/dev/null)\"})\n    _describe -t units 'unit' units\n}\n\n",
                );
            }
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn fish(text: &str) -> String {
    format!(
        "{text}# Unit names, from the running clusterd.\ncomplete -c clusterctl -n \"__fish_seen_subcommand_from {UNIT_VERBS}\" -f -a \"(clusterctl __complete-units 2>/dev/null)\"\n"
    )
}
