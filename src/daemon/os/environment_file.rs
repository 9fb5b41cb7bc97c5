//! `environment_file`: variables read from files at every start of an instance, so that
//! secrets stay out of unit files and a changed file applies at the next restart or reload —
//! systemd's `EnvironmentFile=`, in its format:
//!
//! ```text
//! # a comment; so is a line starting with ';'
//! DATABASE_URL=postgres://db/app
//! GREETING="hello world"        (quotes are removed; \" and \\ in double quotes)
//! export PORT=3000              (`export ` is allowed, as .env files have it)
//! ```

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// A larger file is a mistake (or not an environment file).
const MAX_BYTES: u64 = 1 << 20;

/// Why a file gave no variables: it is missing (fine for an optional one), or anything else.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    Missing,
    Bad(String),
}

/// The variables of the file at `path`, in order.
pub(crate) fn read(path: &Path) -> Result<Vec<(String, String)>, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO cannot hold clusterd's loop in open(); /dev/zero is refused before a read.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ReadError::Missing,
            _ => ReadError::Bad(e.to_string()),
        })?;
    let meta = file.metadata().map_err(|e| ReadError::Bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(ReadError::Bad("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::Bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ReadError::Bad(format!(
            "larger than {MAX_BYTES} bytes; not an environment file"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| ReadError::Bad("not UTF-8 text".into()))?;
    parse(&text).map_err(ReadError::Bad)
}

/// `KEY=VALUE` lines; the error names the line.
fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut variables = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: not KEY=VALUE", number + 1));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(format!(
                "line {}: {key:?} is not a variable name",
                number + 1
            ));
        }
        let value = unquote(value.trim())
            .ok_or_else(|| format!("line {}: a quote is not closed", number + 1))?;
        if value.contains('\0') {
            return Err(format!("line {}: the value holds a NUL byte", number + 1));
        }
        variables.push((key.to_string(), value));
    }
    Ok(variables)
}

/// A value without its quotes: "..." (with \" and \\ escapes) or '...' (as written).
fn unquote(value: &str) -> Option<String> {
    if let Some(rest) = value.strip_prefix('\'') {
        return rest.strip_suffix('\'').map(str::to_string);
    }
    let Some(rest) = value.strip_prefix('"') else {
        return Some(value.to_string());
    };
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return None,
            },
            '"' => return chars.as_str().trim().is_empty().then_some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        parse(text).expect("parses")
    }

    #[test]
    fn lines_comments_quotes_and_export_are_read_as_systemd_reads_them() {
        let text = "# secrets\n; another comment\n\nDATABASE_URL=postgres://db/app\n  GREETING=\"hello \\\"world\\\"\"\nexport PORT=3000\nRAW='a \\ b'\nEMPTY=\nSPACED = x y \n";
        assert_eq!(
            pairs(text),
            [
                ("DATABASE_URL", "postgres://db/app"),
                ("GREETING", "hello \"world\""),
                ("PORT", "3000"),
                ("RAW", "a \\ b"),
                ("EMPTY", ""),
                ("SPACED", "x y"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        assert_eq!(
            parse("A=1\nnonsense\n"),
            Err("line 2: not KEY=VALUE".into())
        );
        assert_eq!(
            parse("1A=x\n"),
            Err("line 1: \"1A\" is not a variable name".into())
        );
        assert_eq!(
            parse("A=\"open\n"),
            Err("line 1: a quote is not closed".into())
        );
    }

    #[test]
    fn a_missing_file_is_told_apart_from_a_bad_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(read(&dir.path().join("nope")), Err(ReadError::Missing));
        assert!(matches!(read(dir.path()), Err(ReadError::Bad(_))));
        assert!(matches!(
            read(Path::new("/dev/zero")),
            Err(ReadError::Bad(_))
        ));
    }
}
