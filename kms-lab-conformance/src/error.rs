//! Why the suite could not run (check failures are not errors: they are in the report).

use std::path::PathBuf;

/// Why a conformance run could not start or its report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// `--only` or `--skip` names a check that does not exist.
    #[error("unknown check id `{id}` (known for {api}: {known})")]
    UnknownCheck {
        /// The id given.
        id: String,
        /// The API being checked.
        api: crate::Api,
        /// The valid ids, comma-separated.
        known: String,
    },
    /// `--only`/`--skip` left nothing to run.
    #[error("no check selected: --only/--skip removed every {0} check")]
    NothingSelected(crate::Api),
    /// The plugin socket could not be reached.
    #[error(transparent)]
    Connect(#[from] kms_wire::ClientError),
    /// The plugin answers `Unimplemented` to the API asked for.
    #[error(
        "the plugin at `{endpoint}` does not serve KMS {api} (its first call answered Unimplemented); {}",
        match other { Some(other) => format!("it serves KMS {other}: run with --api {other}"), None => "it serves neither KMS v2 nor v1beta1: is this a KMS plugin's socket?".to_owned() }
    )]
    ApiNotServed {
        /// The socket.
        endpoint: String,
        /// The API asked for.
        api: crate::Api,
        /// The API it serves instead, if any.
        other: Option<crate::Api>,
    },
    /// A `--report` file cannot be written: checked before the run, so no run is wasted.
    #[error("--report `{path}`: {problem}")]
    ReportPath {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
    },
    /// Ctrl-C: what finished was printed and the partial reports written.
    #[error("interrupted: {finished} of {selected} check(s) finished (printed above, and in the --report files)")]
    Interrupted {
        /// Checks that finished.
        finished: usize,
        /// Checks selected.
        selected: usize,
    },
    /// `--report` is not `junit=FILE` or `json=FILE`.
    #[error("bad --report `{0}`: expected junit=FILE or json=FILE")]
    ReportSpec(String),
    /// The report file could not be written.
    #[error("cannot write the report to `{path}`: {error}")]
    WriteReport {
        /// The file.
        path: PathBuf,
        /// Why.
        error: kms_lab_cli_common::files::FileError,
    },
}
