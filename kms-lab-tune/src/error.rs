//! Why a tune run failed.

/// A tune run failed.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// An output file the user named is not one `tune` writes (left unchanged), or could not be
    /// replaced.
    #[error(transparent)]
    Output(#[from] kms_lab_cli_common::files::FileError),
    /// A profile does not parse.
    #[error("profile `{name}` is not a mock KMS fault profile: {message}")]
    Profile {
        /// The profile.
        name: String,
        /// The parse or validation error.
        message: String,
    },
    /// A `--profile` is neither built in nor a file.
    #[error("unknown profile `{spec}` (built in: {known}; or give a YAML file path)")]
    UnknownProfile {
        /// What was given.
        spec: String,
        /// The built-in names.
        known: String,
    },
    /// A calibration file does not parse.
    #[error("calibration `{path}` is not readable: {message} (write one with `kms-lab tune --calibrate FILE`)")]
    Calibration {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// An argument is out of range.
    #[error("invalid `{flag}`: {message}")]
    Argument {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
    /// File I/O failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The real stack failed.
    #[error(transparent)]
    Stack(#[from] kms_lab_stack::StackError),
    /// Ctrl-C or SIGTERM stopped the run (every process was stopped, every file removed).
    #[error("interrupted: every process was stopped and the work files removed")]
    Interrupted,
    /// A step of the real run failed.
    #[error("real run: {0}")]
    Real(String),
    /// Drawing the plot failed.
    #[error("cannot draw {path}: {message}")]
    Plot {
        /// The file.
        path: String,
        /// The drawing error.
        message: String,
    },
}
