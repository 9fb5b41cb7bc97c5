//! `UnitError`: why a unit file was rejected, pointing at the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// What is wrong with a unit file, for code (and tests) that branch on it; the message says
/// it for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitErrorKind {
    /// It cannot be read, is not a regular file, is too large, or is not UTF-8.
    Unreadable,
    /// Its file name is not a valid unit name.
    BadName,
    /// It is not valid TOML.
    Syntax,
    /// A key the unit file format does not have.
    UnknownKey,
    /// `command` is missing.
    MissingKey,
    /// A value of the wrong type, or out of range.
    BadValue,
    /// Keys that do not go together (`node_cluster_stop` without `node_cluster`, ...).
    Conflict,
    /// A `user` or `group` that does not exist (or cannot be looked up).
    UnknownAccount,
}

/// Makes the error at a byte offset of the file being parsed (its path and text bound in):
/// what each section's parser is given to point at its mistakes.
pub(crate) type At<'a> = dyn Fn(usize, UnitErrorKind, String) -> UnitError + 'a;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    pub kind: UnitErrorKind,
    pub path: PathBuf,
    /// 1-based line and column of the offending text, when the error is about a part of the
    /// file rather than the whole file (unreadable, badly named).
    pub position: Option<(usize, usize)>,
    pub message: String,
    /// The text of the offending line, for [`UnitError::snippet`].
    pub line_text: Option<String>,
}

impl UnitError {
    pub fn whole_file(path: &Path, kind: UnitErrorKind, message: impl Into<String>) -> Self {
        UnitError {
            kind,
            path: path.to_path_buf(),
            position: None,
            message: message.into(),
            line_text: None,
        }
    }

    /// An error about the bytes `offset..` of `text`, the contents of `path`.
    pub fn at_offset(
        path: &Path,
        text: &str,
        offset: usize,
        kind: UnitErrorKind,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = line_and_column(text, offset);
        UnitError {
            kind,
            path: path.to_path_buf(),
            position: Some((line, column)),
            message: message.into(),
            line_text: text.lines().nth(line - 1).map(str::to_string),
        }
    }

    /// An error of serde/toml, with the kind told from what it says.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let message = error.message().trim_end().to_string();
        let kind = if message.starts_with("unknown field") {
            UnitErrorKind::UnknownKey
        } else if message.starts_with("missing field") {
            UnitErrorKind::MissingKey
        } else if toml::de::DeTable::parse(text).is_err() {
            UnitErrorKind::Syntax
        } else {
            UnitErrorKind::BadValue
        };
        match error.span() {
            Some(span) => UnitError::at_offset(path, text, span.start, kind, message),
            None => UnitError::whole_file(path, kind, message),
        }
    }
}

impl UnitError {
    /// The offending line with a caret under the column, as `clusterd --check` shows it:
    ///
    /// ```text
    ///   |
    /// 2 | kill_timeout = "18446744073709551615s"
    ///   |                ^
    /// ```
    pub fn snippet(&self) -> Option<String> {
        let (line, column) = self.position?;
        let text = self.line_text.as_ref()?;
        let number = line.to_string();
        let gutter = " ".repeat(number.len());
        // Tabs stay tabs under the caret, so that it lines up however they are shown.
        let pad: String = text
            .chars()
            .take(column.saturating_sub(1))
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        Some(format!(
            "{gutter} |\n{number} | {}\n{gutter} | {pad}^",
            crate::printable::printable(text)
        ))
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                line,
                column,
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for UnitError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let text = "a = 1\nbb = \"x\"\n";
        assert_eq!(line_and_column(text, 0), (1, 1));
        assert_eq!(line_and_column(text, 6), (2, 1));
        assert_eq!(line_and_column(text, 11), (2, 6));
    }

    #[test]
    fn the_snippet_puts_a_caret_under_the_column() {
        let text = "command = \"true\"\nkill_timeout = \"forever\"\n";
        let error = UnitError::at_offset(
            Path::new("/u/web.toml"),
            text,
            32,
            UnitErrorKind::BadValue,
            "invalid duration",
        );
        assert_eq!(error.to_string(), "/u/web.toml:2:16: invalid duration");
        assert_eq!(
            error.snippet().as_deref(),
            Some("  |\n2 | kill_timeout = \"forever\"\n  |                ^")
        );
        let whole = UnitError::whole_file(Path::new("/u/x.toml"), UnitErrorKind::Unreadable, "no");
        assert_eq!(whole.snippet(), None);
    }
}
