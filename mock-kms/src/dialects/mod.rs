//! The APIs the mock KMS speaks, one listener each, over one key store, audit log, fault engine,
//! seal and cluster:
//!
//! - [`Dialect::Native`]: kms-lab's own signed `POST /v1/<Action>` API ([`crate::api`]).
//! - [`Dialect::Aws`]: AWS KMS JSON 1.1 (`POST /`, `X-Amz-Target: TrentService.<Op>`), SigV4.
//! - [`Dialect::Gcp`]: Google Cloud KMS REST (`/v1/projects/…/cryptoKeys/{key}:encrypt`), no auth.
//! - [`Dialect::Vault`]: HashiCorp Vault Transit (`/v1/transit/…`, `X-Vault-Token`) and `/v1/sys/…`.
//! - [`Dialect::Jdcloud`]: JD Cloud KMS OpenAPI (`/v1/key/{keyId}:Encrypt`, …), `JDCLOUD2-HMAC-SHA256`.
//! - [`Dialect::Aliyun`]: Alibaba Cloud KMS RPC API (`Action=…&Version=2016-01-20`), signature v1
//!   (HMAC-SHA1) or `ACS3-HMAC-SHA256`.
//!
//! The [`Dialect`] name is part of the client-side contract (the stack starts a mock KMS in a
//! dialect); the servers are behind the `server` feature. Every dialect maps its operations to a
//! native [`crate::api::Action`], so fault profiles (`actions: [Decrypt]`) and audit counters work
//! the same under all of them; audit records also carry the dialect and its own operation name.

use serde::{Deserialize, Serialize};

#[cfg(feature = "server")]
pub(crate) mod aliyun;
#[cfg(feature = "server")]
pub(crate) mod aws;
#[cfg(feature = "server")]
pub(crate) mod call;
#[cfg(feature = "server")]
pub(crate) mod gcp;
#[cfg(feature = "server")]
pub(crate) mod jdcloud;
#[cfg(feature = "server")]
pub(crate) mod sign;
#[cfg(feature = "server")]
pub(crate) use crate::api::status;
#[cfg(feature = "server")]
pub(crate) mod vault;

/// The one table of dialects: each entry is a variant with its docs, its command-line (and serde)
/// name and the routes its module serves. A new dialect is its module plus one entry here; the
/// enum, [`Dialect::ALL`], [`Dialect::name`] and the router follow from it.
macro_rules! dialects {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal => $routes:expr; )+) => {
        /// An API the mock KMS can speak on a listener.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Dialect {
            $( $(#[doc = $doc])* #[serde(rename = $name)] $variant, )+
        }

        impl Dialect {
            /// Every dialect.
            pub const ALL: [Dialect; [$($name),+].len()] = [$(Self::$variant),+];

            /// The dialect's name, as on the command line (`native`, `aws`, `gcp`, `vault`,
            /// `jdcloud`, `aliyun`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }

        /// The API routes of a listener speaking `dialect` (without the admin API).
        #[cfg(feature = "server")]
        fn routes(dialect: Dialect) -> axum::Router<std::sync::Arc<crate::node::Node>> {
            use axum::Router;
            use axum::routing::{any, post};
            match dialect {
                $(Dialect::$variant => $routes,)+
            }
        }
    };
}

dialects! {
    /// kms-lab's own API (see [`crate::api`]).
    Native = "native" => Router::new()
        .route("/v1/{action}", post(crate::service::call).fallback(crate::service::unrouted))
        .fallback(crate::service::unrouted);
    /// AWS KMS, JSON 1.1 protocol with SigV4.
    Aws = "aws" => Router::new().route("/", post(aws::call).fallback(aws::unrouted)).fallback(aws::unrouted);
    /// Google Cloud KMS REST, without auth (k8s-cloudkms-plugin's `--integration-test` mode).
    Gcp = "gcp" => Router::new().route("/v1/{*path}", any(gcp::call)).fallback(gcp::unrouted);
    /// HashiCorp Vault's Transit secrets engine and `sys/` seal endpoints.
    Vault = "vault" => Router::new().route("/v1/{*path}", any(vault::call)).fallback(vault::unrouted);
    /// JD Cloud KMS OpenAPI as jdcloud-sdk-go v1.16.0 calls it, signed `JDCLOUD2-HMAC-SHA256`
    /// with the mock's credentials.
    Jdcloud = "jdcloud" => Router::new().route("/v1/{*path}", any(jdcloud::call)).fallback(jdcloud::call);
    /// Alibaba Cloud KMS RPC API 2016-01-20, signature v1 (HMAC-SHA1) or `ACS3-HMAC-SHA256`,
    /// with the mock's credentials.
    Aliyun = "aliyun" => Router::new().route("/", any(aliyun::call)).fallback(aliyun::call);
}

impl Default for Dialect {
    /// [`Dialect::Native`].
    fn default() -> Self {
        Self::Native
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
        let known: Vec<&str> = Dialect::ALL.iter().map(|d| d.name()).collect();
        write!(f, "unknown dialect `{}` (known: {})", self.0.escape_debug(), known.join(", "))
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
    let admin = crate::admin::routes().layer(DefaultBodyLimit::max(crate::server::MAX_BODY));
    let api = routes(dialect);
    Ok(api.merge(admin).with_state(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dialect_has_one_name_on_the_command_line_and_in_json() {
        for dialect in Dialect::ALL {
            assert_eq!(dialect.name().parse::<Dialect>(), Ok(dialect));
            assert_eq!(serde_json::to_value(dialect).unwrap(), serde_json::json!(dialect.name()));
        }
        assert_eq!(Dialect::default(), Dialect::Native);
        let unknown = "azure".parse::<Dialect>().unwrap_err().to_string();
        assert_eq!(unknown, "unknown dialect `azure` (known: native, aws, gcp, vault, jdcloud, aliyun)");
    }
}
