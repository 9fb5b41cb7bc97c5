//! clusterd.unit(5), the unit-file reference, as a man page rendered from the same key
//! table that checks unit files ([`crate::unit::keys::KEYS`]).

use crate::unit::keys::KEYS;

/// The page's roff source.
pub fn render(version: &str) -> String {
    let mut page = String::new();
    page.push_str(&format!(
        ".TH CLUSTERD.UNIT 5 \"\" \"clusterd {version}\" \"File Formats\"\n"
    ));
    page.push_str(".SH NAME\nclusterd.unit \\- clusterd unit file format\n");
    page.push_str(".SH SYNOPSIS\n\\fIDIR\\fR/\\fIUNIT\\fR.toml\n");
    page.push_str(".SH DESCRIPTION\n");
    page.push_str(&paragraphs(&[
        "A unit file is a TOML file in the units directory given to clusterd (\\fB--units\\fR; \
         /etc/clusterd for the packaged service). Each file is one unit, named after the \
         file's stem: web.toml is the unit web. Files that do not end in .toml are ignored, \
         so web.toml.example stays inert.",
        "clusterd keeps \\fBinstances\\fR copies of \\fBcommand\\fR running: it restarts an \
         instance that exits, within \\fBrestart_limit\\fR, and gives up (and runs \
         \\fBon_giveup\\fR) when the limit is reached. \\fBclusterd --check --units DIR\\fR \
         validates every file and names the line and column of each error; a file that does \
         not parse at \\fBclusterctl daemon-reload\\fR leaves its unit running as before.",
    ]));
    page.push_str(".SH KEYS\n");
    for key in KEYS {
        page.push_str(&format!(
            ".TP\n\\fB{}\\fR = \\fI{}\\fR\n{}\n.br\nDefault: {}.\n",
            escape(key.name),
            roff(key.value),
            sentence(&roff(&without_links(key.meaning))),
            roff(key.default)
        ));
    }
    page.push_str(".SH EXAMPLE\n.nf\n");
    for line in EXAMPLE.lines() {
        page.push_str(&escape(line));
        page.push('\n');
    }
    page.push_str(".fi\n");
    page.push_str(".SH WHAT AN INSTANCE RECEIVES\n");
    page.push_str(&paragraphs(&[
        "CLUSTERD_UNIT, CLUSTERD_INSTANCE (its index) and the unit's \\fBenvironment\\fR; with \
         \\fBlisten\\fR, the sockets from fd 3 on with LISTEN_FDS, LISTEN_PID and \
         LISTEN_FDNAMES (systemd's socket-activation protocol); NOTIFY_SOCKET for sd_notify \
         readiness (\\fBready = \"notify\"\\fR); a worker channel on fd CLUSTERD_CHANNEL_FD for \
         JSON messages such as {\"act\":\"suicide\"}, which replaces the instance before it \
         exits.",
    ]));
    page.push_str(
        ".SH SEE ALSO\n\\fBclusterd\\fR(8), \\fBclusterctl\\fR(1), \\fBsystemd.socket\\fR(5), \
         \\fBsd_notify\\fR(3)\n.PP\nThe full reference with examples: \
         /usr/share/doc/clusterd/unit-files.md, or docs/unit-files.md in the source.\n",
    );
    page
}

const EXAMPLE: &str = r#"# /etc/clusterd/api.toml: four copies of a Node server on one port;
# server.js serves with server.listen({ fd: 3 })
description = "the API"
command = ["node", "/srv/api/server.js"]
instances = 4
listen = ["tcp://127.0.0.1:8000"]
restart_limit = { burst = 5, interval = "1m" }
memory_max = "512MiB"
on_giveup = ["logger", "-p", "user.crit", "api gave up"]"#;

fn paragraphs(texts: &[&str]) -> String {
    texts.iter().map(|t| format!(".PP\n{t}\n")).collect()
}

/// The table's Markdown as roff: `code` in bold, **strong** in bold.
fn roff(markdown: &str) -> String {
    let mut out = String::new();
    let mut bold = false;
    let text = escape(markdown).replace("**", "`");
    for c in text.chars() {
        if c == '`' {
            out.push_str(if bold { "\\fR" } else { "\\fB" });
            bold = !bold;
        } else {
            out.push(c);
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    out
}

/// Backslashes, and a line that would start with a control character.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}")
    } else {
        text
    }
}

/// A full stop at the end (the start stays as it is: it may be a name, like `clusterd`).
fn sentence(text: &str) -> String {
    let mut out = text.to_string();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// Markdown links as their text alone: ` ([logs.md](logs.md))` goes, since a man page
/// cannot follow it; `[text](target)` elsewhere keeps `text`.
fn without_links(markdown: &str) -> String {
    let mut out = String::new();
    let mut rest = markdown;
    while let Some(open) = rest.find('[') {
        let (before, from_open) = rest.split_at(open);
        let Some(close) = from_open.find(']') else {
            break;
        };
        let text = &from_open[1..close];
        let after = &from_open[close + 1..];
        // Not a link (`web[3]`): keep it as it is.
        let Some((_target, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) else {
            out.push_str(before);
            out.push_str(&from_open[..=close]);
            rest = after;
            continue;
        };
        if let (Some(outer), Some(inner_tail)) = (before.strip_suffix(" ("), tail.strip_prefix(')'))
        {
            // ` ([text](target))`: a reference to another page, dropped.
            out.push_str(outer);
            rest = inner_tail;
        } else {
            out.push_str(before);
            out.push_str(text);
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_to_other_pages_go_and_other_links_keep_their_text() {
        assert_eq!(
            without_links("as after a suicide ([monitoring.md](monitoring.md#memory-limit))"),
            "as after a suicide"
        );
        assert_eq!(
            without_links("(ready once listening) see [the docs](x.md) now"),
            "(ready once listening) see the docs now"
        );
        assert_eq!(
            without_links("name, web[3]; to defaults ([logs.md](logs.md))."),
            "name, web[3]; to defaults."
        );
    }
}
