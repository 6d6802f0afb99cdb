//! Everything that can go wrong in inspect, migrate and enable.

use std::path::PathBuf;

/// Why an operation could not run. Never carries a stored value or key material.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// Reading etcd failed.
    #[error(transparent)]
    Etcd(#[from] kms_lab_stack::StackError),
    /// A file could not be read or written.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The EncryptionConfiguration file does not parse.
    #[error("`{path}` is not an EncryptionConfiguration: {reason} (check it with `kms-lab lint {path}`)")]
    Config {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        reason: String,
    },
    /// A provider named on the command line is not `KIND` or `KIND:NAME`.
    #[error("unknown provider `{0}`: expected identity, aescbc, aesgcm, secretbox, kms-v1 or kms-v2, optionally followed by `:NAME`")]
    UnknownProvider(String),
    /// A resource named on the command line is not served by the cluster.
    #[error("the cluster serves no resource `{0}`: name it as `secrets`, `configmaps` or `PLURAL.GROUP` (e.g. `widgets.example.com`)")]
    UnknownResource(String),
    /// An API call failed for good (not one object: the list itself).
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A file the user named is not one this command writes (left unchanged), or could not be
    /// replaced.
    #[error(transparent)]
    Output(#[from] kms_lab_cli_common::files::FileError),
    /// The checkpoint file belongs to another migration.
    #[error("checkpoint `{path}` {reason}; remove it to start over")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest could not be serialized.
    #[error("cannot write {what} as YAML: {source}")]
    Yaml {
        /// Which file.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// An API request could not be built (a name the URL cannot hold).
    #[error("cannot build the request: {0}")]
    Request(String),
    /// The cluster serves no StorageVersionMigration API.
    #[error(
        "the cluster serves no storagemigration.k8s.io API: it is on by default from Kubernetes v1.37; on v1.35–v1.36 start \
         kube-apiserver with --feature-gates=StorageVersionMigrator=true --runtime-config=storagemigration.k8s.io/v1beta1=true \
         (and kube-controller-manager with the same feature gate); older clusters: use the rewrite (`--via rewrite`)"
    )]
    SvmUnavailable,
    /// A StorageVersionMigration ended with the condition `Failed`.
    #[error("StorageVersionMigration `{name}` of {resource} failed: {message} (see `kubectl get storageversionmigration {name} -o yaml`)")]
    SvmFailed {
        /// The migration's name.
        name: String,
        /// The resource it migrates.
        resource: String,
        /// The `Failed` condition's reason and message.
        message: String,
    },
    /// A StorageVersionMigration was not done in time.
    #[error(
        "StorageVersionMigration `{name}` of {resource} did not succeed within {seconds} s (last state: {state}); is \
         kube-controller-manager running with the storage-version-migrator-controller and the garbage-collector-controller? \
         Its log says why it waits (`kubectl get storageversionmigration {name} -o yaml`)"
    )]
    SvmTimeout {
        /// The migration's name.
        name: String,
        /// The resource it migrates.
        resource: String,
        /// The deadline.
        seconds: u64,
        /// Its last state.
        state: String,
    },
    /// A plugin `enable` knows nothing about.
    #[error("unknown plugin `{0}`: known plugins are {known}", known = crate::enable::KNOWN_PLUGINS.join(", "))]
    UnknownPlugin(String),
}

impl OpsError {
    pub(crate) fn io(what: &'static str, path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io { what, path, source }
    }
}
