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
}

impl UnitError {
    pub fn whole_file(path: &Path, message: impl Into<String>) -> Self {
        UnitError {
            path: path.to_path_buf(),
            position: None,
            message: message.into(),
        }
    }

    /// An error about the bytes `offset..` of `text`, the contents of `path`.
    pub fn at_offset(path: &Path, text: &str, offset: usize, message: impl Into<String>) -> Self {
        UnitError {
            path: path.to_path_buf(),
            position: Some(line_and_column(text, offset)),
            message: message.into(),
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
}
