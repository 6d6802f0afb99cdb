//! kms-lab on a real cluster, proven in the lab first: [`inspect`] counts what etcd holds under
//! each encryption provider (read-only, envelope headers only), [`migrate`] rewrites objects
//! through the API so the first provider re-encrypts them, [`enable`] writes the files that turn
//! a KMS plugin on for a kubeadm-style control plane, [`recover`] finds the objects a lost KEK left
//! undecryptable and deletes exactly those with upstream's unsafe delete, [`svm`] migrates through
//! StorageVersionMigration objects instead. The `kms-lab` binary parses and dispatches;
//! the scenarios call the same functions.

pub mod enable;
pub mod error;
pub mod inspect;
pub mod migrate;
pub mod recover;
pub mod resource;
pub mod svm;

pub use error::OpsError;
pub use inspect::{InspectOptions, InspectReport, ProviderRef};
pub use migrate::{MigrateOptions, MigrateReport};
pub use resource::Resource;
