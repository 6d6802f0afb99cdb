//! Why a lint could not run at all (exit code 3): the input is unreadable. Problems *in* a
//! readable configuration are [`crate::Finding`]s, never errors.

use std::path::PathBuf;

/// The input could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    /// A file could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML of the expected shape.
    #[error("{file}:{line}:{column}: {message}{}", at_key(key))]
    Yaml {
        /// The file (as given).
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The path to the bad key, e.g. `resources[0].providers[1].kms.cachesize`.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A command-line value is malformed.
    #[error("invalid `{flag}` value `{value}`: {hint}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is expected.
        hint: String,
    },
}

fn at_key(key: &str) -> String {
    if key.is_empty() || key == "." { String::new() } else { format!(" (at `{key}`)") }
}
