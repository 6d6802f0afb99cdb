//! The `mock-kms` command line, resolved into a [`MockKmsBuilder`] (or the `init` subcommand).

use std::net::SocketAddr;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::api::KeySpec;
use crate::api::faults::FaultProfile;
use crate::auth::Credential;
use crate::dialects::Dialect;
use crate::error::StartError;
use crate::server::MockKmsBuilder;

/// `mock-kms`: kms-lab's emulated remote KMS.
// No `Debug`: it holds the secret key.
#[derive(clap::Parser)]
#[command(
    name = "mock-kms",
    version,
    about = "kms-lab's emulated remote KMS: signed HTTP/JSON API, audit log, fault injection, HA and a sealed start",
    after_help = format!("The admin API (/admin/…) on the same listener is unauthenticated: for the lab only.\n\n{}", kms_lab_cli_common::EXIT_HELP)
)]
pub struct Args {
    /// A subcommand; without one the KMS serves.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The API the --listen address speaks: native (kms-lab's signed API), aws (AWS KMS JSON 1.1
    /// with SigV4: --access-key/--secret-key are the AWS credential), gcp (Cloud KMS REST, no
    /// auth), vault (Vault Transit; --vault-token is the accepted token), jdcloud (JD Cloud KMS
    /// OpenAPI, JDCLOUD2-HMAC-SHA256 with --access-key/--secret-key) or aliyun (Alibaba Cloud
    /// KMS RPC API 2016-01-20, HMAC-SHA1 signature v1 or ACS3-HMAC-SHA256, same credential).
    #[arg(long, value_name = "DIALECT", default_value = "native")]
    pub dialect: Dialect,
    /// One more listener speaking another dialect on the same node (same keys, audit log and
    /// faults), e.g. `--also vault=127.0.0.1:8201`; `DIALECT=https://ADDR` serves it over TLS
    /// with --tls-cert/--tls-key; repeat for several.
    #[arg(long = "also", value_name = "DIALECT=[https://]ADDR", value_parser = parse_also)]
    pub also: Vec<Also>,
    /// The PEM certificate chain the `--also DIALECT=https://ADDR` listeners present.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The token the vault dialect accepts in X-Vault-Token (prefer the environment variable).
    #[arg(long, value_name = "TOKEN", env = "MOCK_KMS_VAULT_TOKEN", hide_env_values = true)]
    pub vault_token: Option<Zeroizing<String>>,
    /// The vault token's lease (e.g. `90s`): it runs down this long after its first use (or its
    /// last `renew-self`) and is then refused with 403, as Vault refuses an expired token.
    /// Default: it does not run down.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    pub vault_token_ttl: Option<std::time::Duration>,
    /// The role id of the AppRole whose login (`POST /v1/auth/approle/login`) hands out the vault
    /// token; needs --vault-approle-secret-id.
    #[arg(long, value_name = "ID", requires = "vault_approle_secret_id")]
    pub vault_approle_role_id: Option<String>,
    /// The secret id of that AppRole (prefer the environment variable).
    #[arg(long, value_name = "ID", env = "MOCK_KMS_VAULT_APPROLE_SECRET_ID", hide_env_values = true, requires = "vault_approle_role_id")]
    pub vault_approle_secret_id: Option<Zeroizing<String>>,
    /// Address to listen on; with --cluster N, node i listens on port + i.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// Keep keys, the audit log and the root key (or the sealed state) in DIR across restarts.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Create this key (if missing) at start or unseal; repeat for several.
    #[arg(long = "key-id", value_name = "ID")]
    pub key_ids: Vec<String>,
    /// Spec of the keys --key-id creates.
    #[arg(long, value_enum, default_value_t = SpecArg::Aes256)]
    pub key_spec: SpecArg,
    /// Access key of the accepted credential.
    #[arg(long, value_name = "AK", env = "MOCK_KMS_ACCESS_KEY", requires = "secret_key")]
    pub access_key: Option<String>,
    /// Secret key of the accepted credential (prefer the environment variable: flags show in `ps`).
    #[arg(long, value_name = "SK", env = "MOCK_KMS_SECRET_KEY", hide_env_values = true, requires = "access_key")]
    pub secret_key: Option<Zeroizing<String>>,
    /// Seed of fault randomness, so a run repeats (default: random, logged).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Start sealed: /v1/* answers 503 Sealed until enough shares are POSTed to /admin/unseal.
    #[arg(long, requires = "data_dir")]
    pub sealed: bool,
    /// Serve N replicated nodes in this process, on consecutive ports.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "peers")]
    pub cluster: usize,
    /// This node's id in a multi-process cluster (default: the listen address).
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Peer nodes in other processes to replicate with, comma-separated (http://host:port,…).
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Secret shared by the nodes of a multi-process cluster (default: a built-in lab secret).
    #[arg(long, value_name = "SECRET", env = "MOCK_KMS_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Zeroizing<String>>,
    /// Fault profile (YAML) in force from the start.
    #[arg(long, value_name = "FILE.yaml")]
    pub faults: Option<PathBuf>,
    /// Append audit records (JSON lines) here (default: DIR/audit.jsonl with --data-dir).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Log format (logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "MOCK_KMS_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// Key specs on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpecArg {
    /// AES-256-GCM.
    Aes256,
    /// SM4-GCM.
    Sm4,
}

/// How log lines are written (shared by every kms-lab binary).
pub use kms_lab_cli_common::LogFormat;

/// `mock-kms` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a sealed data dir: a random root key split into shares, printed once to stdout.
    Init {
        /// The data dir to create (must not hold state yet).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// How many shares to make.
        #[arg(long, default_value_t = 5)]
        shares: u8,
        /// How many shares unseal.
        #[arg(long, default_value_t = 3)]
        threshold: u8,
    },
}

/// One `--also` listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Also {
    /// The dialect it speaks.
    pub dialect: Dialect,
    /// Its address.
    pub addr: SocketAddr,
    /// Whether it serves TLS (`DIALECT=https://ADDR`).
    pub tls: bool,
}

/// `--vault-token-ttl`: a duration of at least one second (`90s`, `2m`).
fn parse_ttl(value: &str) -> Result<std::time::Duration, String> {
    let ttl = humantime::parse_duration(value).map_err(|e| format!("`{value}` is not a duration ({e}): write e.g. 90s or 2m"))?;
    if ttl.as_secs() == 0 {
        return Err(format!("`{value}` is under a second: a Vault token's TTL is whole seconds"));
    }
    Ok(ttl)
}

fn parse_also(value: &str) -> Result<Also, String> {
    let (dialect, addr) = value.split_once('=').ok_or_else(|| format!("`{value}` is not DIALECT=ADDR (e.g. vault=127.0.0.1:8201)"))?;
    let dialect: Dialect = dialect.parse().map_err(|e: crate::dialects::UnknownDialect| e.to_string())?;
    let (addr, tls) = match addr.strip_prefix("https://") {
        Some(addr) => (addr, true),
        None => (addr, false),
    };
    let addr =
        addr.parse().map_err(|_| format!("`{addr}` is not an address HOST:PORT (e.g. 127.0.0.1:8201, or https://127.0.0.1:8201)"))?;
    Ok(Also { dialect, addr, tls })
}

impl Args {
    /// The builder these flags describe (reading the fault profile file if given).
    pub fn builder(&self) -> Result<MockKmsBuilder, StartError> {
        let mut builder = MockKmsBuilder::default()
            .listen(self.listen)
            .dialect(self.dialect)
            .sealed(self.sealed)
            .cluster_size(self.cluster)
            .peers(self.peers.iter().cloned());
        for also in &self.also {
            builder = if also.tls {
                builder.extra_tls_listener(also.dialect, also.addr)
            } else {
                builder.extra_listener(also.dialect, also.addr)
            };
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let read = |path: &PathBuf| {
                std::fs::read(path)
                    .map_err(|e| StartError::Config(format!("cannot read {} ({e}): give a readable PEM file", path.display())))
            };
            builder = builder.tls_identity(read(cert)?, read(key)?);
        }
        if let Some(token) = &self.vault_token {
            builder = builder.vault_token(token.as_str());
        }
        if let Some(ttl) = self.vault_token_ttl {
            builder = builder.vault_token_ttl(ttl);
        }
        if let (Some(role_id), Some(secret_id)) = (&self.vault_approle_role_id, &self.vault_approle_secret_id) {
            builder = builder.vault_approle(role_id.as_str(), secret_id.as_str());
        }
        if let Some(dir) = &self.data_dir {
            builder = builder.data_dir(dir);
        }
        let spec = match self.key_spec {
            SpecArg::Aes256 => KeySpec::Aes256,
            SpecArg::Sm4 => KeySpec::Sm4,
        };
        for key_id in &self.key_ids {
            builder = builder.key_with_spec(key_id, spec);
        }
        if let (Some(access_key), Some(secret_key)) = (&self.access_key, &self.secret_key) {
            if access_key.is_empty() || secret_key.is_empty() {
                return Err(StartError::Config("--access-key and --secret-key must not be empty".into()));
            }
            builder = builder.credential(Credential { access_key: access_key.clone(), secret_key: secret_key.clone() });
        }
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        if let Some(node_id) = &self.node_id {
            builder = builder.node_id(node_id);
        }
        if let Some(secret) = &self.cluster_secret {
            builder = builder.cluster_secret(secret.as_bytes());
        }
        if let Some(path) = &self.faults {
            builder = builder.faults(FaultProfile::from_file(path).map_err(|e| StartError::Config(format!("--faults: {e}")))?);
        }
        if let Some(path) = &self.audit_log {
            builder = builder.audit_log(path);
        }
        Ok(builder)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from([&["mock-kms"], args].concat())
    }

    #[test]
    fn the_scripted_command_line_parses() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:9000",
            "--data-dir",
            "/tmp/x",
            "--key-id",
            "lab-key",
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
        ])
        .unwrap();
        assert_eq!(args.listen.port(), 9000);
        assert_eq!(args.key_ids, ["lab-key"]);
        args.builder().unwrap();
        let aws = parse(&["--dialect", "aws", "--listen", "127.0.0.1:9001", "--access-key", "AK", "--secret-key", "SK", "--key-id", "K"])
            .unwrap();
        assert_eq!(aws.dialect, Dialect::Aws);
        let both = parse(&["--dialect", "aws", "--also", "native=127.0.0.1:9002", "--vault-token", "t"]).unwrap();
        assert_eq!(both.also, [Also { dialect: Dialect::Native, addr: "127.0.0.1:9002".parse().unwrap(), tls: false }]);
        let tls = parse(&["--also", "aliyun=https://127.0.0.1:9003", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(tls.also, [Also { dialect: Dialect::Aliyun, addr: "127.0.0.1:9003".parse().unwrap(), tls: true }]);
        let peers = parse(&["--node-id", "a", "--peers", "http://127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(peers.peers.len(), 2);
        let lease = parse(&["--vault-token", "t", "--vault-token-ttl", "2m"]).unwrap();
        assert_eq!(lease.vault_token_ttl, Some(std::time::Duration::from_secs(120)));
    }

    #[test]
    fn conflicting_or_incomplete_flags_are_usage_errors() {
        for bad in [
            vec!["--cluster", "3", "--peers", "http://h:1"],
            vec!["--access-key", "AK"],
            vec!["--sealed"],
            vec!["--listen", "nowhere"],
            vec!["--dialect", "azure"],
            vec!["--also", "vault"],
            vec!["--vault-token-ttl", "0s"],
            vec!["--vault-token-ttl", "soon"],
            vec!["--vault-approle-role-id", "r"],
        ] {
            let error = parse(&bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
        let faults = parse(&["--faults", "/nonexistent.yaml"]).unwrap().builder().unwrap_err().to_string();
        assert!(faults.contains("--faults") && faults.contains("/nonexistent.yaml"), "{faults}");
    }
}
