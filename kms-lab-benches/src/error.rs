//! Everything that can go wrong while running a benchmark.

use std::path::PathBuf;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or driving a process or the stack failed.
    #[error(transparent)]
    Stack(#[from] kms_lab_stack::StackError),
    /// Provisioning kube-apiserver or etcd failed.
    #[error(transparent)]
    Provision(#[from] kms_lab_provision::ProvisionError),
    /// A plugin socket could not be reached.
    #[error("target `{target}`: {source}")]
    Connect {
        /// The target's name.
        target: String,
        /// The client error.
        #[source]
        source: kms_wire::ClientError,
    },
    /// A plugin call failed where the benchmark needs it to succeed.
    #[error("target `{target}`: {call} failed: {status}")]
    Call {
        /// The target's name.
        target: String,
        /// The call, e.g. `v2 Encrypt`.
        call: &'static str,
        /// The gRPC status.
        status: Box<tonic::Status>,
    },
    /// Calls failed during a measured segment (the figures would be meaningless).
    #[error("target `{target}`: {errors} of {calls} calls failed during `{cell}`; first error: {first}")]
    CallsFailed {
        /// The target's name.
        target: String,
        /// The cell being measured.
        cell: String,
        /// The failed calls.
        errors: u64,
        /// All calls.
        calls: u64,
        /// The first error.
        first: String,
    },
    /// A Kubernetes API call failed.
    #[error("kube-apiserver: {what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// kube-apiserver did not become ready with a provider.
    #[error("kube-apiserver with `{provider}` first was not ready within {seconds} s; failing checks: {failing}")]
    NotReady {
        /// The provider.
        provider: String,
        /// The deadline.
        seconds: u64,
        /// The failing `/readyz` checks.
        failing: String,
    },
    /// A file operation failed.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The JSON summary could not be written.
    #[error("cannot encode the JSON summary: {0}")]
    Json(#[from] serde_json::Error),
    /// A task of the load generator panicked or was cancelled.
    #[error("a load generator task did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}
