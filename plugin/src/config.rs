//! The plugin's configuration: the seed-format JSON file (`-f config.json`) plus the flags that
//! override it, resolved into one [`PluginConfig`] or one clear [`ConfigError`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

/// Which KMS plugin APIs the socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiSelection {
    /// Only `v2.KeyManagementService`.
    V2,
    /// Only `v1beta1.KeyManagementService`.
    V1beta1,
    /// Both, on the same socket.
    Both,
}

impl ApiSelection {
    /// Whether the v2 service is served.
    pub fn v2(self) -> bool {
        matches!(self, Self::V2 | Self::Both)
    }

    /// Whether the v1beta1 service is served.
    pub fn v1beta1(self) -> bool {
        matches!(self, Self::V1beta1 | Self::Both)
    }
}

/// The seed-format JSON file a cloud KMS plugin reads (`-f config.json`).
// No `Debug`: it holds the secret key.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConfig {
    /// The access key of the KMS credential.
    #[serde(rename = "AccessKey")]
    pub access_key: Option<String>,
    /// The secret key of the KMS credential.
    #[serde(rename = "SecretKey")]
    pub secret_key: Option<Zeroizing<String>>,
    /// `host:port` of the KMS, or several separated by commas (tried in order, with failover).
    #[serde(rename = "KmsEndpoint")]
    pub kms_endpoint: Option<String>,
    /// The id of the KEK in the KMS.
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: Option<String>,
    /// `http` or `https`.
    #[serde(rename = "KmsSchema")]
    pub kms_schema: Option<String>,
    /// Where to listen.
    #[serde(rename = "GRPCSocketPath")]
    pub grpc_socket_path: Option<PathBuf>,
}

impl SeedConfig {
    /// Reads and parses a seed-format config file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable { path: path.to_owned(), source })?;
        serde_json::from_str(&text).map_err(|error| ConfigError::Invalid {
            path: path.to_owned(),
            line: error.line(),
            column: error.column(),
            message: error.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
        })
    }
}

/// The credential the plugin signs remote KMS requests with.
#[derive(Clone)]
pub struct Credential {
    /// The access key (an identifier, not secret).
    pub access_key: String,
    /// The secret key (never logged).
    pub secret_key: Zeroizing<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential").field("access_key", &self.access_key).field("secret_key", &"<redacted>").finish()
    }
}

/// A remote KMS the plugin wraps DEKs with.
#[derive(Debug, Clone)]
pub struct RemoteKmsConfig {
    /// Base URLs (`http://host:port`), tried in order with failover.
    pub endpoints: Vec<String>,
    /// The KEK's id in the KMS.
    pub key_id: String,
    /// The credential.
    pub credential: Credential,
    /// The deadline of one HTTP call to the KMS.
    pub call_timeout: Duration,
    /// How many times a retryable failure is retried (across endpoints).
    pub max_retries: u32,
}

/// Where the KEK lives.
#[derive(Debug, Clone)]
pub enum KekConfig {
    /// An in-process KEK: random at start, or read from (and created in) a key file.
    Local {
        /// The key file (one base64 key per line, the last one current).
        kek_file: Option<PathBuf>,
    },
    /// A key in a remote KMS.
    Remote(RemoteKmsConfig),
}

/// Everything the plugin needs to run.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The Unix socket to serve on.
    pub socket: PathBuf,
    /// Which APIs to serve.
    pub api: ApiSelection,
    /// Where the KEK lives.
    pub kek: KekConfig,
    /// How long a KEK round trip keeps `Status` healthy before it is probed again.
    pub health_ttl: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
}

/// Why the configuration cannot be used. Each message names the key or flag and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file `{path}`: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid seed-format JSON.
    #[error(
        "config file `{path}` line {line} column {column}: {message} (known keys: AccessKey, SecretKey, KmsEndpoint, KmsKeyId, KmsSchema, GRPCSocketPath)"
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the error.
        line: usize,
        /// The column of the error.
        column: usize,
        /// What serde said.
        message: String,
    },
    /// A setting the chosen mode needs is missing.
    #[error("missing {what}: {hint}")]
    Missing {
        /// The key or flag.
        what: &'static str,
        /// How to give it.
        hint: &'static str,
    },
    /// The KMS endpoint cannot be used.
    #[error("bad KMS endpoint `{value}`: {reason} (expected host:port, or several separated by commas, or `local`)")]
    BadEndpoint {
        /// The endpoint as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `KmsSchema` is neither `http` nor `https`.
    #[error("bad KmsSchema `{0}`: expected `http` or `https`")]
    BadSchema(String),
}

/// Splits a seed `KmsEndpoint` (`host:port[,host:port…]`, optionally with a scheme each) into base URLs.
pub fn parse_endpoints(value: &str, schema: &str) -> Result<Vec<String>, ConfigError> {
    let bad = |reason: &str| ConfigError::BadEndpoint { value: value.to_owned(), reason: reason.to_owned() };
    let mut endpoints = Vec::new();
    for part in value.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad("an endpoint in the list is empty"));
        }
        let (scheme, authority) = match part.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest.trim_end_matches('/')),
            Some((other, _)) => return Err(bad(&format!("scheme `{other}` is not http or https"))),
            None => (schema, part),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad(&format!("`{authority}` has no :port")))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad(&format!("`{authority}` is not host:port with a port from 1 to 65535")));
        }
        endpoints.push(format!("{scheme}://{authority}"));
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_lists_and_schemes() {
        assert_eq!(parse_endpoints("127.0.0.1:8200", "http").unwrap(), vec!["http://127.0.0.1:8200"]);
        assert_eq!(parse_endpoints("a:1, https://b:2,c:3", "http").unwrap(), vec!["http://a:1", "https://b:2", "http://c:3"]);
        assert!(parse_endpoints("a:1,,b:2", "http").unwrap_err().to_string().contains("empty"));
        assert!(parse_endpoints("nohost", "http").unwrap_err().to_string().contains("no :port"));
        assert!(parse_endpoints("tcp://a:1", "http").unwrap_err().to_string().contains("`tcp`"));
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{\n  \"KmsEndpoint\": \"a:1\",\n  \"KmsKeyID\": \"k\"\n}").unwrap();
        let message = SeedConfig::read(&path).err().expect("unknown key is refused").to_string();
        assert!(message.contains("unknown field `KmsKeyID`") && message.contains("line 3"), "{message}");
    }
}
