//! Why a lint could not run at all (exit code 2, a usage or input error): an input is
//! unreadable, too large, empty or not the kind of file its flag takes. Problems *in* a
//! readable configuration are [`crate::Finding`]s, never errors. No message quotes a value of
//! the configuration whole (see [`crate::input`]).

use std::path::PathBuf;

use crate::input::clip;

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
    #[error("invalid `{flag}` value `{}`: {hint}", clip(value))]
    Flag {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is expected.
        hint: String,
    },
    /// A path is not a regular file.
    #[error("`{path}` ({what}) is {found}, not a file")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What the file was given as.
        what: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// A file is larger than the linter reads.
    #[error("`{path}` ({what}) is larger than {} KiB, far beyond any real one; lint reads at most that: is it the right file?", limit / 1024)]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// What the file was given as.
        what: &'static str,
        /// The limit in bytes.
        limit: u64,
    },
    /// A file is not UTF-8 text.
    #[error("{file}:{line}: {what} is not UTF-8 text: is it the right file?")]
    NotText {
        /// The file.
        file: String,
        /// The line of the first invalid byte.
        line: usize,
        /// What the file was given as.
        what: &'static str,
    },
    /// The file holds no YAML document at all.
    #[error(
        "{file}: the file is empty (only blank lines or comments); expected an EncryptionConfiguration: `apiVersion: apiserver.config.k8s.io/v1`, `kind: EncryptionConfiguration`, `resources:`"
    )]
    Empty {
        /// The file.
        file: String,
    },
    /// The file holds more than one YAML document.
    #[error(
        "{file}:{line}:1: a second YAML document starts here ({count} in the file); an EncryptionConfiguration file holds exactly one: split it, or lint each document as its own file"
    )]
    MultipleDocuments {
        /// The file.
        file: String,
        /// The line of the second document's `---`.
        line: usize,
        /// How many non-empty documents the file holds.
        count: usize,
    },
    /// A file given to a flag is not the kind of file that flag takes.
    #[error("`{path}` is {found}, not {expected}: {flag} takes {expected}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// The flag or argument it was given as.
        flag: &'static str,
        /// What it looks like.
        found: String,
        /// What the flag takes.
        expected: &'static str,
    },
}

fn at_key(key: &str) -> String {
    if key.is_empty() || key == "." { String::new() } else { format!(" (at `{key}`)") }
}
