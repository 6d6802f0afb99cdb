//! kms-lab's reference KMS plugin.
//!
//! It serves `v2.KeyManagementService` and `v1beta1.KeyManagementService` on one Unix socket
//! and wraps the DEKs (or seeds) kube-apiserver sends with a key-encryption key (KEK): a local
//! one for development and tests, or a key in a remote KMS.
//!
//! The binary (`kms-plugin`) only parses flags and wires signals; everything else is here so
//! tests and the lab can run a plugin in process:
//! [`config`] → [`kek`] → [`health`] + [`service`] → [`server`], with [`socket`] and [`metrics`].

pub mod cli;
pub mod config;
pub mod exit;
pub mod health;
pub mod kek;
pub mod metrics;
pub mod server;
pub mod service;
pub mod socket;

pub use config::{ApiSelection, ConfigError, PluginConfig};
pub use kek::{Kek, KekError};
pub use server::{Plugin, ServeError, serve};

/// The runtime name the plugin reports in the v1beta1 `VersionResponse`.
pub const RUNTIME_NAME: &str = "kms-lab-plugin";
/// The plugin's version (semver), reported as `runtime_version`.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");
