//! The man pages and shell completions in `packaging/` are generated from the definitions the
//! binaries use (clap for the command lines, the key table for unit files), and committed so
//! that `cargo deb` packages them as they are. This test renders them again and fails if a
//! file differs; `CLUSTERD_REGENERATE=1 cargo test --test integration generated_files::`
//! rewrites them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use clap_complete::Shell;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const CLUSTERD_SEE_ALSO: &str =
    ".SH \"SEE ALSO\"\n\\fBclusterctl\\fR(1), \\fBclusterd.unit\\fR(5), \
\\fBsystemd.service\\fR(5)\n.PP\n/usr/share/doc/clusterd/ has the full documentation: \
install.md, unit\\-files.md, logs.md, monitoring.md, cluster\\-mode.md.\n";

const CLUSTERCTL_SEE_ALSO: &str =
    ".SH \"SEE ALSO\"\n\\fBclusterd\\fR(8), \\fBclusterd.unit\\fR(5)\n";

/// Every generated file: its path under the repository, its content.
fn rendered() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let man = Path::new("packaging/man");
    let clusterd = clusterd::cli::clusterd_args::command();
    let mut page = man_page(clusterd.clone(), "8");
    page.extend_from_slice(CLUSTERD_SEE_ALSO.as_bytes());
    files.insert(man.join("clusterd.8"), page);

    // clusterctl(1), and a page per verb (clusterctl-status(1), ...) with its flags.
    let mut clusterctl = clusterd::cli::clusterctl_args::command().disable_help_subcommand(true);
    clusterctl.build();
    let mut page = man_page(clusterctl.clone(), "1");
    page.extend_from_slice(CLUSTERCTL_SEE_ALSO.as_bytes());
    files.insert(man.join("clusterctl.1"), page);
    for verb in clusterctl.get_subcommands().filter(|v| !v.is_hide_set()) {
        let name = verb
            .get_display_name()
            .unwrap_or(verb.get_name())
            .to_string();
        files.insert(man.join(format!("{name}.1")), man_page(verb.clone(), "1"));
    }
    files.insert(
        man.join("clusterd.unit.5"),
        clusterd::cli::unit_man_page::render(VERSION).into_bytes(),
    );

    let completions = Path::new("packaging/completions");
    let mut clusterd = clusterd;
    for (shell, suffix, prefix) in [
        (Shell::Bash, ".bash", ""),
        (Shell::Zsh, "", "_"),
        (Shell::Fish, ".fish", ""),
    ] {
        // clusterctl's: what `clusterctl completions SHELL` prints, unit names included.
        files.insert(
            completions.join(format!("{prefix}clusterctl{suffix}")),
            clusterd::cli::completion::clusterctl_script(shell),
        );
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut clusterd, "clusterd", &mut script);
        files.insert(
            completions.join(format!("{prefix}clusterd{suffix}")),
            script,
        );
    }
    files
}

fn man_page(command: clap::Command, section: &str) -> Vec<u8> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section(section)
        .manual("clusterd manual")
        .source(format!("clusterd {VERSION}"))
        .render(&mut page)
        .expect("render a man page");
    page
}

#[test]
fn the_man_pages_and_completions_in_packaging_are_generated_from_the_definitions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regenerate = std::env::var_os("CLUSTERD_REGENERATE").is_some_and(|v| !v.is_empty());
    let files = rendered();
    let mut stale = Vec::new();
    for (path, content) in &files {
        let full = root.join(path);
        if fs::read(&full).ok().as_ref() == Some(content) {
            continue;
        }
        if regenerate {
            fs::create_dir_all(full.parent().expect("a directory")).expect("create directory");
            fs::write(&full, content).expect("write a generated file");
        } else {
            stale.push(path.display().to_string());
        }
    }
    // Nothing else in those directories: a page of a verb that is gone goes too.
    for dir in ["packaging/man", "packaging/completions"] {
        for entry in fs::read_dir(root.join(dir)).into_iter().flatten().flatten() {
            let path = Path::new(dir).join(entry.file_name());
            if !files.contains_key(&path) {
                if regenerate {
                    fs::remove_file(entry.path()).expect("remove a stale file");
                } else {
                    stale.push(format!("{} (no longer generated)", path.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated files differ from the definitions: {stale:?}\n\
         run `CLUSTERD_REGENERATE=1 cargo test --test integration generated_files::` and commit the result"
    );
}

/// clusterd.unit(5) documents exactly the keys the parser accepts (the parser's table is
/// checked against serde's unit form in the library's own tests).
#[test]
fn the_unit_man_page_names_every_key_the_parser_accepts_and_no_other() {
    let page = clusterd::cli::unit_man_page::render(VERSION);
    let documented: Vec<String> = page
        .lines()
        .filter_map(|line| {
            line.strip_prefix("\\fB")?
                .split_once("\\fR = ")
                .map(|(k, _)| k)
        })
        .map(|key| key.replace("\\-", "-"))
        .collect();
    let accepted: Vec<String> = clusterd::unit::keys::KEYS
        .iter()
        .map(|key| key.name.to_string())
        .collect();
    assert_eq!(documented, accepted);
}
