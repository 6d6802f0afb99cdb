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
    /// The KMS's API ([`KmsDialect`]): `native` (the default), `jdcloud` or `aliyun`. Not in the
    /// seeds' own files, which need none: the JD Cloud seed's file with `"KmsDialect": "jdcloud"`
    /// (or `--kms-dialect jdcloud`) makes this plugin a drop-in for the seed's plugin.
    #[serde(rename = "KmsDialect")]
    pub kms_dialect: Option<String>,
}

/// The keys a seed-format config file may hold, as listed in errors.
pub const SEED_KEYS: &str = "AccessKey, SecretKey, KmsEndpoint, KmsKeyId, KmsSchema, GRPCSocketPath, KmsDialect";

/// The remote KMS APIs the plugin speaks, each signed as that cloud's SDK signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KmsDialect {
    /// The mock KMS's own API (`POST /v1/<Action>`, HMAC-SHA256 headers).
    #[default]
    Native,
    /// JD Cloud KMS OpenAPI (`JDCLOUD2-HMAC-SHA256`), as the JD Cloud seed's plugin calls it.
    Jdcloud,
    /// Alibaba Cloud KMS RPC API 2016-01-20 (signature v1, HMAC-SHA1), as ack-kms-plugin calls it.
    Aliyun,
}

impl KmsDialect {
    /// The mock KMS dialect of the same name.
    pub fn dialect(self) -> mock_kms::dialects::Dialect {
        use mock_kms::dialects::Dialect;
        match self {
            Self::Native => Dialect::Native,
            Self::Jdcloud => Dialect::Jdcloud,
            Self::Aliyun => Dialect::Aliyun,
        }
    }

    /// The dialect named `name` in a config file (`KmsDialect`).
    pub fn from_seed(name: &str) -> Result<Self, ConfigError> {
        <Self as clap::ValueEnum>::from_str(name, false).map_err(|_| ConfigError::BadDialect)
    }
}

impl SeedConfig {
    /// Reads and parses a seed-format config file. Errors name the key and what it must be,
    /// never a value: the file holds the KMS credential (see [`render_json_error`]).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = Zeroizing::new(std::fs::read(path).map_err(|source| ConfigError::Unreadable { path: path.to_owned(), source })?);
        let invalid = |line, column, message| ConfigError::Invalid { path: path.to_owned(), line, column, message };
        let text = std::str::from_utf8(&text).map_err(|error| {
            let before = &text[..error.valid_up_to()];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            invalid(line, column, "the file is not UTF-8 text (is it a JSON file?)".to_owned())
        })?;
        if text.trim().is_empty() {
            return Err(invalid(1, 1, format!("the file is empty; expected a JSON object with the keys {SEED_KEYS}")));
        }
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: Self = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            invalid(inner.line(), inner.column(), render_json_error(&key, &inner))
        })?;
        deserializer.end().map_err(|error| invalid(error.line(), error.column(), render_json_error("", &error)))?;
        Ok(config)
    }
}

/// Re-renders a serde_json error on the seed file so that it names the key and what it must
/// be, and never quotes a value (serde's own `invalid type: string "…"` would print a secret).
pub fn render_json_error(key: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let message = error.to_string();
    let message = message.split(" at line ").next().unwrap_or_default();
    match error.classify() {
        // Syntax messages describe the JSON grammar, never the input's text.
        Category::Syntax | Category::Eof | Category::Io => message.to_owned(),
        Category::Data if message.starts_with("unknown field") => match unknown_key(message) {
            Some(name) => format!("unknown key `{name}`"),
            None => "an unknown key (its name is not shown: it does not look like a key)".to_owned(),
        },
        Category::Data if message.starts_with("duplicate field") || message.starts_with("missing field") => message.to_owned(),
        Category::Data if key.is_empty() || key == "." => format!("the file must hold one JSON object with the keys {SEED_KEYS}"),
        Category::Data => format!("`{key}` must be a string (the value given is not shown: this file holds credentials)"),
    }
}

/// The name in serde's ``unknown field `NAME`, expected …``, if it looks like a key (short,
/// letters, digits, `_`, `-`, `.`); anything else may be a pasted value and is not repeated.
fn unknown_key(message: &str) -> Option<&str> {
    let name = message.strip_prefix("unknown field `")?.split('`').next()?;
    let keyish = !name.is_empty() && name.len() <= 40 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    keyish.then_some(name)
}

/// The credential the plugin signs remote KMS requests with: the mock KMS API's own (`Debug`
/// never shows the secret key).
pub use mock_kms::api::Credential;

/// A remote KMS the plugin wraps DEKs with.
#[derive(Debug, Clone)]
pub struct RemoteKmsConfig {
    /// Base URLs (`http://host:port`), tried in order with failover.
    pub endpoints: Vec<String>,
    /// The KEK's id in the KMS.
    pub key_id: String,
    /// The KMS's API.
    pub dialect: mock_kms::dialects::Dialect,
    /// A CA bundle (PEM) to trust besides the built-in roots, for an `https` KMS behind a private
    /// CA: `SSL_CERT_FILE`, the variable Go clients (and so the cloud plugins) read.
    pub ca_file: Option<PathBuf>,
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
    #[error("config file `{path}` line {line} column {column}: {message} (known keys: {SEED_KEYS})")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line of the error.
        line: usize,
        /// The column of the error.
        column: usize,
        /// What is wrong, re-rendered from serde's error: it names the key, never a value.
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
    /// The KMS endpoint cannot be used. The value is not repeated: a credential pasted into
    /// the wrong key must not reach a terminal or a log.
    #[error("bad {source_name}: {reason} (expected host:port, or several separated by commas, or `local`)")]
    BadEndpoint {
        /// Where the endpoint came from: `--kms` or `KmsEndpoint`.
        source_name: &'static str,
        /// What is wrong, without the value.
        reason: String,
    },
    /// `KmsSchema` is neither `http` nor `https` (the value is not repeated).
    #[error("bad KmsSchema: expected `http` or `https` (the value given is not shown: this file holds credentials)")]
    BadSchema,
    /// `KmsDialect` is not one the plugin speaks (the value is not repeated).
    #[error("bad KmsDialect: expected `native`, `jdcloud` or `aliyun` (the value given is not shown: this file holds credentials)")]
    BadDialect,
    /// A flag's value is outside the range the plugin can work with.
    #[error("invalid value for {flag}: {reason}; allowed: {allowed}")]
    OutOfRange {
        /// The flag, e.g. `--kms-timeout`.
        flag: &'static str,
        /// What is wrong with the value given.
        reason: String,
        /// The allowed range.
        allowed: &'static str,
    },
}

/// Splits a seed `KmsEndpoint` (`host:port[,host:port…]`, optionally with a scheme each) into
/// base URLs. `source_name` (`--kms` or `KmsEndpoint`) names the setting in errors, which
/// describe the bad entry by position only, never by its text.
pub fn parse_endpoints(value: &str, schema: &str, source_name: &'static str) -> Result<Vec<String>, ConfigError> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let count = parts.len();
    let mut endpoints = Vec::new();
    for (index, part) in parts.into_iter().enumerate() {
        let bad = |what: &str| {
            let entry = if count == 1 { String::new() } else { format!("entry {} of {count} ", index + 1) };
            ConfigError::BadEndpoint { source_name, reason: format!("{entry}{what}") }
        };
        if part.is_empty() {
            return Err(bad("is empty"));
        }
        let (scheme, authority) = match part.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest.trim_end_matches('/')),
            Some(_) => return Err(bad("has a scheme that is not `http://` or `https://`")),
            None => (schema, part),
        };
        let (host, port) = authority.rsplit_once(':').ok_or_else(|| bad("has no `:port`"))?;
        if host.is_empty() {
            return Err(bad("has no host before `:port`"));
        }
        if !matches!(port.parse::<u16>(), Ok(1..)) {
            return Err(bad("has a port that is not a number from 1 to 65535"));
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
        let parse = |value| parse_endpoints(value, "http", "KmsEndpoint");
        assert_eq!(parse("127.0.0.1:8200").unwrap(), vec!["http://127.0.0.1:8200"]);
        assert_eq!(parse("a:1, https://b:2,c:3").unwrap(), vec!["http://a:1", "https://b:2", "http://c:3"]);
        assert!(parse("a:1,,b:2").unwrap_err().to_string().contains("entry 2 of 3 is empty"));
        assert!(parse("nohost").unwrap_err().to_string().contains("no `:port`"));
        assert!(parse("tcp://a:1").unwrap_err().to_string().contains("not `http://`"));
        assert!(parse("a:0").unwrap_err().to_string().contains("from 1 to 65535"));
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, "{\n  \"KmsEndpoint\": \"a:1\",\n  \"KmsKeyID\": \"k\"\n}").unwrap();
        let message = SeedConfig::read(&path).err().expect("unknown key is refused").to_string();
        assert!(message.contains("unknown key `KmsKeyID`") && message.contains("line 3"), "{message}");
    }

    /// A secret in the wrong place or of the wrong type is never printed back.
    #[test]
    fn errors_name_the_key_and_never_the_value() {
        const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let cases = [
            (r#"{"SecretKey": 123456789}"#.to_owned(), "`SecretKey` must be a string", "123456789"),
            (format!(r#"{{"SecretKey": ["{SECRET}"]}}"#), "`SecretKey` must be a string", SECRET),
            (format!(r#"{{"AccessKey": {{"k": "{SECRET}"}}}}"#), "`AccessKey` must be a string", SECRET),
            (format!(r#"{{"{SECRET}/+=": 1}}"#), "an unknown key", SECRET),
            (format!(r#""{SECRET}""#), "one JSON object", SECRET),
            (format!(r#"{{"KmsSchema": "http"}} "{SECRET}""#), "trailing characters", SECRET),
            (" \n".to_owned(), "the file is empty", "SecretKey\": "),
        ];
        for (text, expected, secret) in cases {
            std::fs::write(&path, &text).unwrap();
            let message = SeedConfig::read(&path).err().expect("refused").to_string();
            assert!(message.contains(expected) && !message.contains(secret), "{text}: {message}");
        }
        std::fs::write(&path, b"{\"SecretKey\": \"\xff\xfe\"}").unwrap();
        let message = SeedConfig::read(&path).err().expect("refused").to_string();
        assert!(message.contains("not UTF-8") && message.contains("line 1 column 16"), "{message}");
    }
}
