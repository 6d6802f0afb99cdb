//! The `kms-plugin` command line, resolved into a [`PluginConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{self, ApiSelection, ConfigError, Credential, KekConfig, PluginConfig, RemoteKmsConfig, SeedConfig};

/// `kms-plugin`: the kms-lab reference KMS plugin.
#[derive(Debug, clap::Parser)]
#[command(
    name = "kms-plugin",
    version,
    about = "kms-lab's reference KMS plugin (KMS v2 and v1beta1 on one Unix socket)",
    after_help = kms_lab_cli_common::EXIT_HELP
)]
pub struct Args {
    /// A subcommand; without one the plugin serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Seed-format JSON config (AccessKey, SecretKey, KmsEndpoint, KmsKeyId, KmsSchema, GRPCSocketPath).
    #[arg(short = 'f', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The Unix socket to serve on (overrides GRPCSocketPath).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// `local` for an in-process KEK, or the remote KMS `host:port[,host:port…]` (overrides KmsEndpoint).
    #[arg(long, value_name = "local|ENDPOINT")]
    pub kms: Option<String>,
    /// The KEK's id in the remote KMS (overrides KmsKeyId).
    #[arg(long, value_name = "ID")]
    pub kms_key_id: Option<String>,
    /// The remote KMS's API (overrides KmsDialect; default native). An https KmsEndpoint is
    /// trusted through the built-in (Mozilla) roots plus the CA bundle in SSL_CERT_FILE, as Go clients take it.
    #[arg(long, value_enum, value_name = "DIALECT")]
    pub kms_dialect: Option<config::KmsDialect>,
    /// With `--kms local`: keep the KEK in this file (created if missing; one base64 key per line, last is current).
    #[arg(long, value_name = "FILE")]
    pub kek_file: Option<PathBuf>,
    /// Which plugin APIs to serve.
    #[arg(long, value_enum, default_value_t = ApiSelection::Both)]
    pub api: ApiSelection,
    /// How long a successful KEK round trip keeps Status healthy before the next probe (0s to 1h; 0s probes on every Status).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = health_ttl)]
    pub health_ttl: Duration,
    /// Deadline of one call to the remote KMS (10ms to 60s; keep it under the apiserver's KMS timeout, 3s by default).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = kms_timeout)]
    pub kms_timeout: Duration,
    /// Retries of a retryable remote KMS failure (with backoff, across endpoints; 0 to 10).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=10))]
    pub kms_retries: u32,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "KMS_PLUGIN_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How log lines are written (shared by every kms-lab binary).
pub use kms_lab_cli_common::LogFormat;

/// `kms-plugin` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Append a new random KEK version to a key file; a running plugin picks it up on SIGHUP.
    RotateKek {
        /// The key file the plugin was started with (`--kek-file`).
        #[arg(long, value_name = "FILE")]
        kek_file: PathBuf,
    },
}

/// A duration flag's value within `min..=max`, or an error that gives the allowed range.
fn duration_in(text: &str, min: Duration, max: Duration, range: &str) -> Result<Duration, String> {
    let value =
        humantime::parse_duration(text).map_err(|error| format!("{error}; expected a duration such as `2s` or `500ms` ({range})"))?;
    if value < min || value > max {
        return Err(format!("out of range: allowed {range}"));
    }
    Ok(value)
}

fn kms_timeout(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::from_millis(10), Duration::from_secs(60), "10ms to 60s")
}

fn health_ttl(text: &str) -> Result<Duration, String> {
    duration_in(text, Duration::ZERO, Duration::from_secs(3600), "0s to 1h")
}

impl Args {
    /// Resolves flags and the optional config file into a [`PluginConfig`]; flags win.
    pub fn resolve(&self) -> Result<PluginConfig, ConfigError> {
        let seed = match &self.config {
            Some(path) => SeedConfig::read(path)?,
            None => SeedConfig::default(),
        };
        let socket = self
            .socket
            .clone()
            .or(seed.grpc_socket_path)
            .ok_or(ConfigError::Missing { what: "socket path", hint: "pass --socket PATH, or set GRPCSocketPath in the config file" })?;
        let kms_source = if self.kms.is_some() { "--kms" } else { "KmsEndpoint" };
        let kms = self.kms.clone().or(seed.kms_endpoint).ok_or(ConfigError::Missing {
            what: "KMS",
            hint: "pass --kms local for an in-process KEK, or --kms host:port (KmsEndpoint in the config file) for a remote KMS",
        })?;
        let kek = if kms == "local" {
            KekConfig::Local { kek_file: self.kek_file.clone() }
        } else {
            if self.kek_file.is_some() {
                return Err(ConfigError::Missing {
                    what: "--kms local",
                    hint: "--kek-file only applies to an in-process KEK; drop it or pass --kms local",
                });
            }
            let schema = seed.kms_schema.unwrap_or_else(|| "http".to_owned());
            if schema != "http" && schema != "https" {
                return Err(ConfigError::BadSchema);
            }
            let missing_credential = ConfigError::Missing {
                what: "AccessKey/SecretKey",
                hint: "a remote KMS needs a credential: set AccessKey and SecretKey in the config file (-f config.json)",
            };
            let dialect = match (self.kms_dialect, seed.kms_dialect.as_deref()) {
                (Some(flag), _) => flag,
                (None, Some(name)) => config::KmsDialect::from_seed(name)?,
                (None, None) => config::KmsDialect::Native,
            };
            RemoteKmsConfig {
                endpoints: config::parse_endpoints(&kms, &schema, kms_source)?,
                dialect: dialect.dialect(),
                ca_file: std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
                key_id: self
                    .kms_key_id
                    .clone()
                    .or(seed.kms_key_id)
                    .ok_or(ConfigError::Missing { what: "KmsKeyId", hint: "pass --kms-key-id ID, or set KmsKeyId in the config file" })?,
                credential: match (seed.access_key, seed.secret_key) {
                    (Some(access_key), Some(secret_key)) if !access_key.is_empty() && !secret_key.is_empty() => {
                        Credential { access_key, secret_key }
                    }
                    _ => return Err(missing_credential),
                },
                call_timeout: self.kms_timeout,
                max_retries: self.kms_retries,
            }
            .into()
        };
        Ok(PluginConfig { socket, api: self.api, kek, health_ttl: self.health_ttl, metrics_addr: self.metrics_addr })
    }
}

impl From<RemoteKmsConfig> for KekConfig {
    fn from(remote: RemoteKmsConfig) -> Self {
        KekConfig::Remote(remote)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from([&["kms-plugin"], extra].concat())
    }

    #[test]
    fn socket_and_kms_are_required_with_a_hint() {
        let message = args(&["--kms", "local"]).resolve().unwrap_err().to_string();
        assert!(message.contains("--socket PATH"), "{message}");
        let message = args(&["--socket", "/tmp/x.sock"]).resolve().unwrap_err().to_string();
        assert!(message.contains("--kms local"), "{message}");
    }

    #[test]
    fn out_of_range_flags_are_usage_errors_naming_the_range() {
        for (flag, value, range) in [
            ("--kms-timeout", "0", "10ms to 60s"),
            ("--kms-timeout", "2h", "10ms to 60s"),
            ("--health-ttl", "2d", "0s to 1h"),
            ("--kms-retries", "1000", "0..=10"),
        ] {
            let error = Args::try_parse_from(["kms-plugin", flag, value]).expect_err(flag);
            assert_eq!(error.exit_code(), 2, "{flag} {value}");
            assert!(error.to_string().contains(range), "{flag} {value}: {error}");
        }
        assert!(Args::try_parse_from(["kms-plugin", "--kms-timeout", "soon"]).unwrap_err().to_string().contains("expected a duration"));
        assert!(Args::try_parse_from(["kms-plugin", "--health-ttl", "0s", "--kms-timeout", "10ms"]).is_ok());
    }

    #[test]
    fn local_kms_needs_nothing_else() {
        let config = args(&["--socket", "/tmp/x.sock", "--kms", "local"]).resolve().unwrap();
        assert!(matches!(config.kek, KekConfig::Local { kek_file: None }));
        assert_eq!(config.api, ApiSelection::Both);
    }

    #[test]
    fn seed_file_gives_a_remote_kms_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"AccessKey":"AK","SecretKey":"SK","KmsEndpoint":"127.0.0.1:1,127.0.0.1:2","KmsKeyId":"lab-key","KmsSchema":"http","GRPCSocketPath":"/tmp/seed.sock"}"#,
        )
        .unwrap();
        let config = args(&["-f", path.to_str().unwrap(), "--socket", "/tmp/flag.sock"]).resolve().unwrap();
        assert_eq!(config.socket, PathBuf::from("/tmp/flag.sock"));
        let KekConfig::Remote(remote) = config.kek else { panic!("expected a remote KEK") };
        assert_eq!(remote.endpoints, vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(remote.key_id, "lab-key");
        assert_eq!(remote.dialect, mock_kms::dialects::Dialect::Native);
        assert!(!format!("{:?}", remote.credential).contains("SK"));
    }

    #[test]
    fn the_dialect_comes_from_the_seed_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let seed = r#"{"AccessKey":"AK","SecretKey":"SK","KmsEndpoint":"127.0.0.1:1","KmsKeyId":"k","KmsSchema":"https","GRPCSocketPath":"/tmp/s.sock""#;
        std::fs::write(&path, format!("{seed},\"KmsDialect\":\"jdcloud\"}}")).unwrap();
        let remote = |extra: &[&str]| {
            let config = args(&[&["-f", path.to_str().unwrap()], extra].concat()).resolve();
            config.map(|c| match c.kek {
                KekConfig::Remote(remote) => (remote.dialect, remote.endpoints),
                KekConfig::Local { .. } => panic!("expected a remote KEK"),
            })
        };
        assert_eq!(remote(&[]).unwrap(), (mock_kms::dialects::Dialect::Jdcloud, vec!["https://127.0.0.1:1".to_owned()]));
        assert_eq!(remote(&["--kms-dialect", "aliyun"]).unwrap().0, mock_kms::dialects::Dialect::Aliyun);
        std::fs::write(&path, format!("{seed},\"KmsDialect\":\"SECRET-azure\"}}")).unwrap();
        let message = remote(&[]).unwrap_err().to_string();
        assert!(message.contains("KmsDialect") && message.contains("jdcloud") && !message.contains("SECRET"), "{message}");
    }

    #[test]
    fn remote_kms_without_credentials_says_which_keys() {
        let message = args(&["--socket", "/tmp/x.sock", "--kms", "127.0.0.1:1", "--kms-key-id", "k"]).resolve().unwrap_err().to_string();
        assert!(message.contains("AccessKey and SecretKey"), "{message}");
    }
}
