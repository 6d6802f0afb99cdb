//! kms-lab's emulated remote KMS.
//!
//! [`api`] is the wire contract (bodies, error codes, request signing) and has no server
//! dependencies: the reference plugin builds its client on it. Everything else is behind the
//! `server` feature (on by default):
//!
//! - [`server`]: [`MockKms::builder`] → [`MockKmsBuilder::start`] → a [`MockKms`] handle.
//! - [`service`] (the `/v1/*` pipeline) and [`admin`] (the unauthenticated lab API under `/admin/`),
//!   served per node by [`listener`].
//! - [`keystore`] (keys, versions, states, the CRDT merge) with [`crypto`] and the [`blob`] format;
//!   [`persist`] (the data dir); [`seal`] (sealed start, Shamir shares); [`cluster`] (replication).
//! - [`secrets`]: the secrets manager (versions, stages, deletion), values sealed under a key.
//! - [`auth`] (credentials, signatures, skew, replay), [`policy`] (access policies), [`audit`] (records, queries, counters),
//!   [`faults`] (the seeded [`FaultProfile`]).
//! - [`dialects`]: the AWS KMS, Cloud KMS, Vault Transit, JD Cloud KMS and Alibaba Cloud KMS APIs,
//!   one listener each.
//! - [`error`]: every error type. [`cli`]: the `mock-kms` flags.

pub mod api;
pub mod dialects;

#[cfg(feature = "server")]
pub mod admin;
#[cfg(feature = "server")]
pub mod audit;
#[cfg(feature = "server")]
pub mod auth;
#[cfg(feature = "server")]
pub mod blob;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod cluster;
#[cfg(feature = "server")]
pub mod crypto;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod faults;
#[cfg(feature = "server")]
pub mod keystore;
#[cfg(feature = "server")]
pub mod listener;
#[cfg(feature = "server")]
mod node;
#[cfg(feature = "server")]
pub mod persist;
#[cfg(feature = "server")]
pub mod policy;
#[cfg(feature = "server")]
pub mod seal;
#[cfg(feature = "server")]
pub mod secrets;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod service;

#[cfg(feature = "server")]
pub use api::faults::FaultProfile;
#[cfg(feature = "server")]
pub use api::{AuditQuery, AuditRecord, Credential, Outcome};
#[cfg(feature = "server")]
pub use audit::AuditLog;
#[cfg(feature = "server")]
pub use error::{FaultProfileError, KmsError, SealError, StartError};
#[cfg(feature = "server")]
pub use seal::SealStatus;
#[cfg(feature = "server")]
pub use server::{MockKms, MockKmsBuilder};
