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

const VERB_SEE_ALSO: &str =
    ".SH \"SEE ALSO\"\n\\fBclusterctl\\fR(1) for examples and the exit status\n";

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
        let mut page = man_page(verb.clone(), "1");
        // Its examples and exit codes are clusterctl(1)'s, for every verb.
        page.extend_from_slice(VERB_SEE_ALSO.as_bytes());
        files.insert(man.join(format!("{name}.1")), page);
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

/// What roff's writer puts first on every page (clap_mangen's part renderers included).
const AQ_PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// clap_mangen's page, but what `after_long_help` holds under headings of its own: each of
/// its paragraphs that starts with `Heading:` (`Examples:`, `Exit status:`, `Signals:`)
/// becomes a section (`.SH "EXIT STATUS"`) shown as `--help` shows it, line for line, where
/// clap_mangen would put them all in one section named EXTRA and fill the lines together.
fn man_page(command: clap::Command, section: &str) -> Vec<u8> {
    let man = |command: clap::Command| {
        clap_mangen::Man::new(command)
            .section(section)
            .manual("clusterd manual")
            .source(format!("clusterd {VERSION}"))
    };
    let page_of = man(command.clone());
    // Each part rendered alone starts with roff's definition of `\*(Aq` (the apostrophe):
    // the page has it once, at the top.
    let mut page = AQ_PREAMBLE.as_bytes().to_vec();
    let render = |page: &mut Vec<u8>, part: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| {
        let mut text = Vec::new();
        part(&mut text).expect("render a man page");
        page.extend_from_slice(text.strip_prefix(AQ_PREAMBLE.as_bytes()).unwrap_or(&text));
    };
    render(&mut page, &|w| page_of.render_title(w));
    render(&mut page, &|w| page_of.render_name_section(w));
    render(&mut page, &|w| page_of.render_synopsis_section(w));
    render(&mut page, &|w| page_of.render_description_section(w));
    if command.get_arguments().any(|a| !a.is_hide_set()) {
        render(&mut page, &|w| page_of.render_options_section(w));
    }
    if command.get_subcommands().any(|c| !c.is_hide_set()) {
        render(&mut page, &|w| page_of.render_subcommands_section(w));
    }
    let extra = command
        .get_after_long_help()
        .or_else(|| command.get_after_help())
        .map(|text| text.to_string())
        .unwrap_or_default();
    for paragraph in extra.split("\n\n").filter(|p| !p.trim().is_empty()) {
        let (heading, body) = paragraph.split_once('\n').unwrap_or((paragraph, ""));
        let heading = heading
            .strip_suffix(':')
            .unwrap_or_else(|| panic!("after_long_help: {heading:?} is no `Heading:`"));
        // clap_mangen's escaping of each line, without its EXTRA heading.
        let mut escaped = Vec::new();
        man(clap::Command::new("text").after_long_help(body.to_string()))
            .render_extra_section(&mut escaped)
            .expect("render a man page");
        let escaped = String::from_utf8(escaped).expect("roff is UTF-8");
        let lines = escaped
            .strip_prefix(AQ_PREAMBLE)
            .unwrap_or(&escaped)
            .strip_prefix(".SH EXTRA\n")
            .expect("clap_mangen's EXTRA heading");
        page.extend_from_slice(
            format!(".SH \"{}\"\n.nf\n{lines}.fi\n", heading.to_uppercase()).as_bytes(),
        );
    }
    if command
        .get_version()
        .or(command.get_long_version())
        .is_some()
    {
        render(&mut page, &|w| page_of.render_version_section(w));
    }
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

/// clap_mangen put `--help`'s examples and exit codes into one section named EXTRA, their
/// lines filled into one paragraph: each is a section of its own (EXAMPLES, EXIT STATUS, and
/// SIGNALS for clusterd), its lines kept as they are, and every verb's page points to them.
#[test]
fn the_man_pages_have_examples_and_exit_status_under_headings_of_their_own() {
    let files = rendered();
    let page = |name: &str| {
        String::from_utf8(files[&Path::new("packaging/man").join(name)].clone()).unwrap()
    };
    for (name, sections) in [
        ("clusterctl.1", &["EXAMPLES", "EXIT STATUS"][..]),
        ("clusterd.8", &["EXAMPLES", "EXIT STATUS", "SIGNALS"][..]),
    ] {
        let text = page(name);
        assert!(!text.contains(".SH EXTRA"), "{name}:\n{text}");
        for section in sections {
            let at = text
                .find(&format!(".SH \"{section}\"\n.nf\n"))
                .unwrap_or_else(|| panic!("{name} has no {section} section:\n{text}"));
            assert!(text[at..].contains("\n.fi\n"), "{name}: {section} unclosed");
        }
    }
    assert!(page("clusterctl.1").contains("clusterctl daemon\\-reload "));
    for verb in clusterd::cli::clusterctl_args::command().get_subcommands() {
        if verb.is_hide_set() {
            continue;
        }
        let text = page(&format!("clusterctl-{}.1", verb.get_name()));
        assert!(
            text.contains("\\fBclusterctl\\fR(1) for examples and the exit status"),
            "{}",
            verb.get_name()
        );
    }
}
