//! kms-lab's secret sync controller (`kms-secret-sync`): secrets kept in the mock KMS's secrets
//! manager, kept as Kubernetes Secrets, in the shape of ack-secret-manager.
//!
//! - [`crd`]: ack-secret-manager's `alibabacloud.com/v1alpha1` types (`ExternalSecret`,
//!   `SecretStore`) and the CRDs generated from them; [`reference`]: their Markdown reference.
//! - [`decide`]: the reconcile decisions as pure functions; [`controller`]: the
//!   `kube::runtime::Controller` that carries them out; [`metrics`]: its Prometheus metrics.
//! - [`store`]: the client of the secrets manager's signed native API.
//! - [`rbac`]: the least-privilege ServiceAccount, Role and bindings the controller runs with.
//! - [`lab`]: helpers for tests and scenario steps (install the CRDs, run the controller in
//!   process with its own token, write remote secrets, wait for a Secret or a condition).
//! - [`ack`]: what the real ack-secret-manager needs to run beside it on the lab's apiserver.
//! - [`error`]: every error type.

pub mod ack;
pub mod controller;
pub mod crd;
pub mod decide;
pub mod error;
pub mod lab;
pub mod metrics;
pub mod rbac;
pub mod reference;
pub mod store;

pub use controller::{ControllerConfig, run};
pub use error::{Error, LabError, StoreError};
pub use store::{StoreClient, StoreCredential};
