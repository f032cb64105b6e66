//! Problems in a TOML file (a config, a grant file, fixtures), each located by line
//! and column and named by key, so that every one is reported at once.

use std::fmt;
use std::ops::Range;

/// Why a TOML file (a config, fixtures) could not be used: unreadable, or every
/// problem in it, located.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{}", render(.path, .problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

/// Reads the `what` (e.g. "config") at `path` and parses it with `parse`.
pub fn load<T>(
    what: &'static str,
    path: &std::path::Path,
    parse: impl FnOnce(&str) -> Result<T, Vec<Problem>>,
) -> Result<T, FileError> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
        what,
        path: shown(),
        source,
    })?;
    parse(&text).map_err(|problems| FileError::Invalid {
        path: shown(),
        problems,
    })
}

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

pub(crate) fn render(path: &str, problems: &[Problem]) -> String {
    let mut out = format!("{} problem(s) in {path}:", problems.len());
    for p in problems {
        out.push_str(&format!(
            "\n  {path}:{}:{}: {}: {}",
            p.line, p.column, p.key, p.message
        ));
    }
    out
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.key, self.message
        )
    }
}

/// Collects problems with their positions in the source text.
pub(crate) struct Problems<'a> {
    pub(crate) source: &'a str,
    pub(crate) list: Vec<Problem>,
}

impl Problems<'_> {
    /// Every problem in file order, or none.
    pub(crate) fn finish(mut self) -> Result<(), Vec<Problem>> {
        if self.list.is_empty() {
            return Ok(());
        }
        self.list.sort_by_key(|p| (p.line, p.column));
        Err(self.list)
    }

    pub(crate) fn add(
        &mut self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl fmt::Display,
    ) {
        let (line, column) = position(self.source, span.start);
        self.list.push(Problem {
            line,
            column,
            key: key.into(),
            message: message.to_string(),
        });
    }
}

/// 1-based line and column of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Parses TOML into `T`, a syntax or schema error as one located problem.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(source: &str) -> Result<T, Vec<Problem>> {
    toml::from_str(source).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| position(source, s.start));
        vec![Problem {
            line,
            column,
            key: "(syntax)".to_owned(),
            message: e.message().to_owned(),
        }]
    })
}
