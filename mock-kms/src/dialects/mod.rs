//! The APIs the mock KMS speaks, one listener each, over one key store, audit log, fault engine,
//! seal and cluster:
//!
//! - [`Dialect::Native`]: kms-lab's own signed `POST /v1/<Action>` API ([`crate::api`]).
//! - [`Dialect::Aws`]: AWS KMS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`), SigV4.
//! - [`Dialect::Gcp`]: Google Cloud KMS REST (`/v1/projects/…/cryptoKeys/{key}:encrypt`), no auth.
//! - [`Dialect::Vault`]: HashiCorp Vault Transit (`/v1/transit/…`, `X-Vault-Token`) and `/v1/sys/…`.
//!
//! The [`Dialect`] name is part of the client-side contract (the stack starts a mock KMS in a
//! dialect); the servers are behind the `server` feature. Every dialect maps its operations to a
//! native [`crate::api::Action`], so fault profiles (`actions: [Decrypt]`) and audit counters work
//! the same under all of them; audit records also carry the dialect and its own operation name.

use serde::{Deserialize, Serialize};

#[cfg(feature = "server")]
pub(crate) mod aws;
#[cfg(feature = "server")]
pub(crate) mod call;
#[cfg(feature = "server")]
pub(crate) mod gcp;
#[cfg(feature = "server")]
pub(crate) mod vault;

/// An API the mock KMS can speak on a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// kms-lab's own API (see [`crate::api`]).
    #[default]
    Native,
    /// AWS KMS, JSON 1.1 protocol with SigV4.
    Aws,
    /// Google Cloud KMS REST, without auth (k8s-cloudkms-plugin's `--integration-test` mode).
    Gcp,
    /// HashiCorp Vault's Transit secrets engine and `sys/` seal endpoints.
    Vault,
}

impl Dialect {
    /// Every dialect.
    pub const ALL: [Dialect; 4] = [Self::Native, Self::Aws, Self::Gcp, Self::Vault];

    /// The dialect's name, as on the command line (`native`, `aws`, `gcp`, `vault`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Vault => "vault",
        }
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A dialect name that is not one of [`Dialect::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownDialect(pub String);

impl std::fmt::Display for UnknownDialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown dialect `{}` (known: native, aws, gcp, vault)", self.0.escape_debug())
    }
}

impl std::error::Error for UnknownDialect {}

impl std::str::FromStr for Dialect {
    type Err = UnknownDialect;

    /// Parses a dialect name; the error lists every dialect.
    fn from_str(name: &str) -> Result<Self, UnknownDialect> {
        Self::ALL.into_iter().find(|d| d.name() == name).ok_or_else(|| UnknownDialect(name.to_owned()))
    }
}

/// The routes of a listener speaking `dialect` (the admin API is on every listener).
#[cfg(feature = "server")]
pub(crate) fn router(dialect: Dialect, node: std::sync::Arc<crate::node::Node>) -> Result<axum::Router, crate::error::StartError> {
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    let admin = crate::admin::routes().layer(DefaultBodyLimit::max(crate::server::MAX_BODY));
    // Each dialect answers requests no route takes in its own error shape (`unrouted`).
    let api = match dialect {
        Dialect::Native => axum::Router::new()
            .route("/v1/{action}", post(crate::service::call).fallback(crate::service::unrouted))
            .fallback(crate::service::unrouted),
        Dialect::Aws => axum::Router::new().route("/", post(aws::call).fallback(aws::unrouted)).fallback(aws::unrouted),
        Dialect::Gcp => axum::Router::new().route("/v1/{*path}", axum::routing::any(gcp::call)).fallback(gcp::unrouted),
        Dialect::Vault => axum::Router::new().route("/v1/{*path}", axum::routing::any(vault::call)).fallback(vault::unrouted),
    };
    Ok(api.merge(admin).with_state(node))
}
