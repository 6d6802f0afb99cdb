//! Everything that can go wrong while starting, driving or stopping the stack.

use std::path::PathBuf;

use kms_lab_provision::ProvisionError;

/// Why the stack could not start or an operation on it failed.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// A binary could not be found or built.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    /// A file or directory operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {component} (`{program}`): {source}")]
    Spawn {
        /// The component's name in the stack.
        component: String,
        /// The program.
        program: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A process exited before it became ready.
    #[error("{component} exited with {status} before it was ready ({waited_for}); last lines of {log}:\n{last_lines}")]
    ExitedBeforeReady {
        /// The component.
        component: String,
        /// What readiness meant.
        waited_for: String,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        last_lines: String,
    },
    /// A process did not become ready in time.
    #[error("{component} was not ready within {seconds} s (waited for {waited_for}); last lines of {log}:\n{last_lines}")]
    NotReady {
        /// The component.
        component: String,
        /// What readiness meant.
        waited_for: String,
        /// The deadline in seconds.
        seconds: u64,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        last_lines: String,
    },
    /// Certificates or keys could not be generated.
    #[error("cannot generate certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    /// The EncryptionConfiguration could not be written.
    #[error("cannot serialize the EncryptionConfiguration: {0}")]
    EncryptionConfig(#[from] serde_yaml::Error),
    /// A Kubernetes API call failed.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// The kubeconfig could not be used.
    #[error("cannot use the generated kubeconfig: {0}")]
    Kubeconfig(String),
    /// An etcd call failed.
    #[error("etcd call failed: {0}")]
    Etcd(String),
    /// A mock KMS admin call failed.
    #[error("mock KMS admin call failed: {0}")]
    MockKms(String),
    /// A `/metrics` scrape failed or does not parse.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A component name that is not in the stack.
    #[error("no {kind} named `{name}` in this stack (known: {known})")]
    NoSuchComponent {
        /// The kind (plugin, apiserver, …).
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names there are.
        known: String,
    },
    /// A component was asked to do what its state does not allow (start while running, …).
    #[error("cannot {verb} `{component}`: {reason}")]
    ComponentState {
        /// The verb (`start`, `restart`).
        verb: &'static str,
        /// The component, by name.
        component: String,
        /// Why not, and what to do instead.
        reason: String,
    },
    /// The container runtime failed (Docker unreachable, an image build or a container start failed).
    #[error("container runtime: {0}")]
    Container(String),
    /// One of kms-lab's own binaries is not built.
    #[error(
        "kms-lab's `{binary}` binary was not found (tried {}): build it with `cargo build -p {package}` (add `--release` for benches), or set {env_var}",
        tried.join(", ")
    )]
    OwnBinaryMissing {
        /// The file name.
        binary: &'static str,
        /// The package that builds it.
        package: &'static str,
        /// The variable that names it directly.
        env_var: &'static str,
        /// Every place looked at, in order.
        tried: Vec<String>,
    },
}

impl StackError {
    /// An [`StackError::Io`] for `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
