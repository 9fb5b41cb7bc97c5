//! `UnitError`: why a unit file was rejected, pointing at the file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitError {
    pub path: PathBuf,
    /// 1-based line and column of the offending text, when the error is about a part of the
    /// file rather than the whole file (unreadable, badly named).
    pub position: Option<(usize, usize)>,
    pub message: String,
    /// The text of the offending line, for [`UnitError::snippet`].
    pub line_text: Option<String>,
}

impl UnitError {
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        UnitError {
            path: path.to_path_buf(),
            position: None,
            message: message.into(),
            line_text: None,
        }
    }

    /// An error about the bytes `offset..` of `text`, the contents of `path`.
    pub fn at_offset(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        let (line, column) = line_and_column(text, offset);
        UnitError {
            path: path.to_path_buf(),
            position: Some((line, column)),
            message: message.into(),
            line_text: text.lines().nth(line - 1).map(str::to_string),
        }
    }

    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let message = error.message().trim_end().to_string();
        match error.span() {
            Some(span) => UnitError::at_offset(path, text, span.start, message),
            None => UnitError::whole_file(path, message),
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
        let error = UnitError::at_offset(Path::new("/u/web.toml"), text, 32, "invalid duration");
        assert_eq!(error.to_string(), "/u/web.toml:2:16: invalid duration");
        assert_eq!(
            error.snippet().as_deref(),
            Some("  |\n2 | kill_timeout = \"forever\"\n  |                ^")
        );
        assert_eq!(
            UnitError::whole_file(Path::new("/u/x.toml"), "no").snippet(),
            None
        );
    }
}
