//! Config errors: each one names the file, the line and column, the dotted
//! key and what is wrong, so an admin can fix the file without guessing.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line of the offending value or key; 0 when the error is about
    /// the whole file (it could not be read).
    pub line: usize,
    /// 1-based column, counted in characters; 0 together with `line`.
    pub column: usize,
    /// Dotted path of the offending key, such as `policies[0].max_duration`;
    /// empty for syntax errors and unreadable files.
    pub key: String,
    /// A sentence naming the bad value and what is allowed.
    pub message: String,
}

impl ConfigError {
    /// An error located at byte `offset` of `text`.
    pub(crate) fn at(file: &Path, text: &str, offset: usize, key: &str, message: String) -> Self {
        let (line, column) = line_column(text, offset);
        Self { file: file.to_owned(), line, column, key: key.to_owned(), message }
    }

    /// An error about the file as a whole.
    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        Self { file: file.to_owned(), line: 0, column: 0, key: String::new(), message }
    }
}

impl fmt::Display for ConfigError {
    /// `ajar.toml:12:11: targets[1].address: "10.0.3.12" has no port; ...`,
    /// the shape compilers use, so editors can jump to the spot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a config file, in file order. Never empty when
/// returned as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Orders errors as they appear in the file, so the output reads top to
    /// bottom however the checks that found them were ordered.
    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line, e.column));
        Self(errors)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// 1-based line and character column of byte `offset` in `text`. An offset
/// past the end or inside a character is clamped to the nearest position
/// before it rather than trusted.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 6), (2, 1));
        // "é" is two bytes but one column.
        assert_eq!(line_column(text, 11), (2, 5));
        assert_eq!(line_column(text, 9), (2, 3));
        // An offset inside "é" is clamped to its start.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 10_000), (3, 1));
    }

    #[test]
    fn display_has_the_compiler_shape() {
        let e = ConfigError {
            file: PathBuf::from("ajar.toml"),
            line: 12,
            column: 11,
            key: "targets[1].address".into(),
            message: "bad".into(),
        };
        assert_eq!(e.to_string(), "ajar.toml:12:11: targets[1].address: bad");
        let whole = ConfigError::whole_file(Path::new("x.toml"), "cannot read it".into());
        assert_eq!(whole.to_string(), "x.toml: cannot read it");
        let both = ConfigErrors(vec![e, whole]);
        assert_eq!(both.to_string().lines().count(), 2);
    }
}
