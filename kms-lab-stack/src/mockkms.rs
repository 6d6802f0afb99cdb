//! The mock remote KMS as processes of the stack: one node, or a cluster of replicating nodes
//! (one process each, so a scenario can kill one), optionally sealed, started with a key and a
//! credential, and driven through its admin API (rotate, faults, seal, audit). Besides the native
//! listener (always there: the admin API and kms-lab's own plugin), a node can speak the dialects
//! of real plugins ([`MockKmsOptions::dialects`]: AWS KMS, Cloud KMS, Vault Transit, JD Cloud
//! KMS, Alibaba Cloud KMS), one listener each; [`MockKmsCluster::dialect_endpoint`] hands a plugin its
//! URL and credentials. A dialect whose clients call over HTTPS only ([`over_tls`]: `aliyun`) is
//! served over TLS with a CA the stack generates ([`DialectEndpoint::ca_file`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mock_kms::api::admin;
use mock_kms::api::faults::FaultProfile;
use mock_kms::api::policy::{AccessPolicy, Policies};
use mock_kms::api::{AuditQuery, AuditRecord, Counters, Credential, KeyMetadata};
use mock_kms::dialects::Dialect;

use crate::error::StackError;
use crate::process::Supervised;
use crate::runtime::Launcher;
use crate::{http, ports};

/// How long the mock KMS may take to answer its health endpoint.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline of one admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the mock KMS. `Debug` leaves the secret key and the Vault token out.
#[derive(Clone)]
pub struct MockKmsOptions {
    /// The key the plugins use (created if missing).
    pub key_id: String,
    /// The credential the mock KMS accepts and the plugins sign with (access key
    /// `lab-access-key`, a random secret key by default).
    pub credential: Credential,
    /// Extra `mock-kms` flags (e.g. `--seed 7`).
    pub extra_args: Vec<String>,
    /// How many replicating nodes (processes) to run; 1 is a single KMS.
    pub nodes: usize,
    /// Start sealed (Shamir 5/3): every KMS call answers `Sealed` until 3 shares are given.
    pub sealed: bool,
    /// Dialects each node speaks besides the native one, one listener each (`aws` takes the
    /// access/secret key as its SigV4 credential, `vault` takes [`MockKmsOptions::vault_token`],
    /// `gcp` no auth). Listing `native` changes nothing.
    pub dialects: Vec<Dialect>,
    /// The token the Vault dialect accepts (random by default).
    pub vault_token: String,
    /// The role id of the AppRole whose login (`auth/approle/login`) hands out the Vault token.
    pub vault_approle_role_id: String,
    /// That AppRole's secret id (random by default).
    pub vault_approle_secret_id: String,
    /// The node whose address a plugin that takes one endpoint is given
    /// ([`DialectEndpoint::url`]; default 0). A Vault cluster's standby redirects to the active
    /// node, so a plugin given a standby keeps an address that answers when the active is lost.
    pub entry_node: usize,
}

impl MockKmsOptions {
    /// Adds a listener for `dialect` on each node, once (`native` is always served).
    pub fn serve_dialect(&mut self, dialect: Dialect) {
        if dialect != Dialect::Native && !self.dialects.contains(&dialect) {
            self.dialects.push(dialect);
        }
    }
}

impl Default for MockKmsOptions {
    fn default() -> Self {
        Self {
            key_id: "lab-key".to_owned(),
            credential: Credential::new("lab-access-key", random_hex(16)),
            extra_args: Vec::new(),
            nodes: 1,
            sealed: false,
            dialects: Vec::new(),
            vault_token: format!("s.{}", random_hex(12)),
            vault_approle_role_id: format!("kms-lab-role-{}", random_hex(4)),
            vault_approle_secret_id: random_hex(16),
            entry_node: 0,
        }
    }
}

/// Whether the stack serves `dialect` over TLS: `aliyun`, because Alibaba Cloud's SDK calls KMS
/// over HTTPS only (ack-kms-plugin forces it).
pub fn over_tls(dialect: Dialect) -> bool {
    dialect == Dialect::Aliyun
}

/// The files of the mock KMS's TLS listeners.
#[derive(Debug, Clone)]
pub struct KmsTls {
    /// The CA certificate (PEM) that signed the serving certificate: what a client trusts
    /// (`SSL_CERT_FILE` for a Go client).
    pub ca_file: PathBuf,
    /// The serving certificate (PEM).
    pub cert_file: PathBuf,
    /// Its key (PEM, mode 0600).
    pub key_file: PathBuf,
}

impl KmsTls {
    /// A fresh CA and serving certificate for 127.0.0.1, written under `dir`.
    fn generate(dir: &Path) -> Result<Self, StackError> {
        let pki = crate::certs::ServingPki::generate("kms-lab mock KMS CA", "mock-kms")?;
        crate::fsutil::private_dir(dir).map_err(StackError::io(format!("create {}", dir.display())))?;
        let tls = Self { ca_file: dir.join("ca.pem"), cert_file: dir.join("tls.crt"), key_file: dir.join("tls.key") };
        std::fs::write(&tls.ca_file, &pki.ca_pem).map_err(StackError::io(format!("write {}", tls.ca_file.display())))?;
        std::fs::write(&tls.cert_file, &pki.cert_pem).map_err(StackError::io(format!("write {}", tls.cert_file.display())))?;
        crate::fsutil::write_private(&tls.key_file, pki.key_pem.as_bytes())
            .map_err(StackError::io(format!("write {}", tls.key_file.display())))?;
        Ok(tls)
    }
}

/// How a plugin authenticates to the mock KMS in one dialect.
#[derive(Clone, PartialEq, Eq)]
pub enum DialectCredentials {
    /// An access key and its secret key: the native signature, or AWS SigV4
    /// (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    AccessKey(Credential),
    /// Vault's `X-Vault-Token`.
    VaultToken(String),
    /// No auth (the Cloud KMS dialect, as k8s-cloudkms-plugin's `--integration-test` mode).
    None,
}

impl std::fmt::Debug for DialectCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AccessKey(credential) => f.debug_tuple("AccessKey").field(credential).finish(),
            Self::VaultToken(_) => f.write_str("VaultToken(<redacted>)"),
            Self::None => f.write_str("None"),
        }
    }
}

/// What a plugin needs to reach the mock KMS in one dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialectEndpoint {
    /// The dialect.
    pub dialect: Dialect,
    /// `http://127.0.0.1:PORT` (`https://` for a dialect served [`over_tls`]) of each node's
    /// listener for the dialect, in node order.
    pub urls: Vec<String>,
    /// The index in `urls` of the node a plugin that takes one endpoint is given.
    pub entry: usize,
    /// How to authenticate.
    pub credentials: DialectCredentials,
    /// The CA certificate (PEM) to trust, for a dialect served [`over_tls`].
    pub ca_file: Option<PathBuf>,
}

impl DialectEndpoint {
    /// The URL of the entry node ([`MockKmsOptions::entry_node`]: node 0 unless a scenario
    /// names another; the only one of a single-node KMS).
    pub fn url(&self) -> &str {
        self.urls.get(self.entry).unwrap_or(&self.urls[0])
    }
}

impl std::fmt::Debug for MockKmsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKmsOptions")
            .field("key_id", &self.key_id)
            .field("access_key", &self.credential.access_key)
            .field("extra_args", &self.extra_args)
            .field("nodes", &self.nodes)
            .field("sealed", &self.sealed)
            .field("dialects", &self.dialects)
            .field("entry_node", &self.entry_node)
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

/// Vault's answer to `PUT /v1/sys/unseal` (the fields a caller judges).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct VaultSealStatus {
    /// Whether the node is still sealed.
    pub sealed: bool,
    /// Shares needed (`t`).
    #[serde(rename = "t")]
    pub threshold: usize,
    /// Shares given so far towards the next unseal.
    pub progress: usize,
}

/// One node of the mock KMS.
#[derive(Debug)]
pub struct MockKmsNode {
    /// The process (`None` while stopped).
    pub process: Option<Supervised>,
    /// Its port on 127.0.0.1 (kept across restarts): the native API and the admin API.
    pub port: u16,
    /// The port of each other dialect's listener (kept across restarts).
    pub dialect_ports: BTreeMap<Dialect, u16>,
    /// Its state directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

/// A running mock KMS (one or more nodes).
#[derive(Debug)]
pub struct MockKmsCluster {
    binary: PathBuf,
    launcher: Launcher,
    /// The nodes, in endpoint order.
    pub nodes: Vec<MockKmsNode>,
    /// How it was started.
    pub options: MockKmsOptions,
    /// The unseal shares printed by `mock-kms init` (empty unless sealed).
    shares: Vec<String>,
    cluster_secret: String,
    /// The TLS files, when a dialect is served [`over_tls`].
    pub tls: Option<KmsTls>,
}

impl MockKmsCluster {
    /// Starts the nodes with their state under `data_root` (node *i* in `node-i/` when there are
    /// several) and logs in `log_dir`, and waits until each answers `/admin/health`.
    pub async fn start(
        launcher: &Launcher,
        binary: &Path,
        data_root: &Path,
        log_dir: &Path,
        options: MockKmsOptions,
    ) -> Result<Self, StackError> {
        let count = options.nodes.max(1);
        let mut nodes = Vec::with_capacity(count);
        for index in 0..count {
            let (data_dir, log) = if count == 1 {
                (data_root.to_owned(), log_dir.join("mock-kms.log"))
            } else {
                (data_root.join(format!("node-{index}")), log_dir.join(format!("mock-kms-{index}.log")))
            };
            std::fs::create_dir_all(&data_dir).map_err(StackError::io(format!("create {}", data_dir.display())))?;
            let mut dialect_ports = BTreeMap::new();
            for dialect in options.dialects.iter().filter(|d| **d != Dialect::Native) {
                dialect_ports.insert(*dialect, ports::free_port()?);
            }
            nodes.push(MockKmsNode { process: None, port: ports::free_port()?, dialect_ports, data_dir, log });
        }
        let mut kms = Self {
            binary: binary.to_owned(),
            launcher: launcher.clone(),
            nodes,
            options,
            shares: Vec::new(),
            cluster_secret: random_hex(16),
            tls: None,
        };
        if kms.options.dialects.iter().any(|d| over_tls(*d)) {
            kms.tls = Some(KmsTls::generate(&data_root.join("tls"))?);
        }
        if kms.options.sealed {
            kms.initialise_sealed()?;
        }
        for index in 0..count {
            kms.start_node(index).await?;
        }
        Ok(kms)
    }

    /// `mock-kms init` in node 0's data dir; every other node gets a copy of its `seal.json`.
    fn initialise_sealed(&mut self) -> Result<(), StackError> {
        let first = &self.nodes[0].data_dir;
        let output = std::process::Command::new(&self.binary)
            .args(["init", "--data-dir", &first.display().to_string(), "--shares", "5", "--threshold", "3"])
            .output()
            .map_err(|source| StackError::Spawn { component: "mock-kms init".into(), program: self.binary.clone(), source })?;
        if !output.status.success() {
            return Err(StackError::MockKms(format!("`mock-kms init` failed: {}", String::from_utf8_lossy(&output.stderr).trim())));
        }
        self.shares = String::from_utf8_lossy(&output.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        let seal = first.join("seal.json");
        for node in &self.nodes[1..] {
            let copy = node.data_dir.join("seal.json");
            std::fs::copy(&seal, &copy).map_err(StackError::io(format!("copy {} to {}", seal.display(), copy.display())))?;
        }
        Ok(())
    }

    fn node(&self, index: usize) -> Result<&MockKmsNode, StackError> {
        self.nodes.get(index).ok_or_else(|| StackError::NoSuchComponent {
            kind: "mock KMS node",
            name: format!("mock-kms-{index}"),
            known: (0..self.nodes.len()).map(|i| format!("mock-kms-{i}")).collect::<Vec<_>>().join(", "),
        })
    }

    /// (Re)starts node `index` on its port and data dir, and waits until `/admin/health` answers.
    pub async fn start_node(&mut self, index: usize) -> Result<(), StackError> {
        let node = self.node(index)?;
        if node.process.is_some() {
            return Ok(());
        }
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{}", node.port),
            "--data-dir".to_owned(),
            node.data_dir.display().to_string(),
            "--key-id".to_owned(),
            self.options.key_id.clone(),
            "--access-key".to_owned(),
            self.options.credential.access_key.clone(),
        ];
        if self.options.sealed {
            args.push("--sealed".to_owned());
        }
        if self.nodes.len() > 1 {
            let peers: Vec<String> = self.nodes.iter().map(|n| format!("http://127.0.0.1:{}", n.port)).collect();
            args.extend(["--node-id".to_owned(), format!("node-{index}"), "--peers".to_owned(), peers.join(",")]);
        }
        for (dialect, port) in &node.dialect_ports {
            let scheme = if over_tls(*dialect) { "https://" } else { "" };
            args.extend(["--also".to_owned(), format!("{dialect}={scheme}127.0.0.1:{port}")]);
        }
        if let Some(tls) = &self.tls {
            args.extend(["--tls-cert".to_owned(), tls.cert_file.display().to_string()]);
            args.extend(["--tls-key".to_owned(), tls.key_file.display().to_string()]);
        }
        args.extend(["--vault-approle-role-id".to_owned(), self.options.vault_approle_role_id.clone()]);
        args.extend(self.options.extra_args.iter().cloned());
        // Secrets go through the environment, not argv, so `ps` does not show them.
        let env = [
            ("MOCK_KMS_SECRET_KEY".to_owned(), self.options.credential.secret_key.to_string()),
            ("MOCK_KMS_CLUSTER_SECRET".to_owned(), self.cluster_secret.clone()),
            ("MOCK_KMS_VAULT_TOKEN".to_owned(), self.options.vault_token.clone()),
            ("MOCK_KMS_VAULT_APPROLE_SECRET_ID".to_owned(), self.options.vault_approle_secret_id.clone()),
        ];
        let name = if self.nodes.len() == 1 { "mock-kms".to_owned() } else { format!("mock-kms-{index}") };
        let mut process = self.launcher.spawn(&name, &self.binary, &args, &node.log, &env).await?;
        let port = node.port;
        process
            .wait_ready(&format!("GET http://127.0.0.1:{port}/admin/health to answer"), READY_DEADLINE, || async move {
                http::get(port, "/admin/health", Duration::from_secs(1)).await.is_some()
            })
            .await?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    /// Stops node `index` gracefully.
    pub async fn stop_node(&mut self, index: usize, grace: Duration) -> Result<(), StackError> {
        self.node(index)?;
        if let Some(process) = self.nodes[index].process.take() {
            process.stop(grace).await;
        }
        Ok(())
    }

    /// Kills node `index` with SIGKILL, as a crash would.
    pub async fn kill_node(&mut self, index: usize) -> Result<(), StackError> {
        self.node(index)?;
        if let Some(process) = self.nodes[index].process.take() {
            process.kill().await;
        }
        Ok(())
    }

    /// Stops every node.
    pub async fn stop_all(&mut self, grace: Duration) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.take() {
                process.stop(grace).await;
            }
        }
    }

    /// The port of node 0 (the only one of a single-node KMS).
    pub fn port(&self) -> u16 {
        self.nodes[0].port
    }

    /// The URLs and credentials a plugin uses to reach this KMS in `dialect`; an error names the
    /// dialects it was started with when `dialect` is not one of them.
    pub fn dialect_endpoint(&self, dialect: Dialect) -> Result<DialectEndpoint, StackError> {
        let urls = self
            .nodes
            .iter()
            .map(|n| if dialect == Dialect::Native { Some(n.port) } else { n.dialect_ports.get(&dialect).copied() })
            .map(|port| port.map(|p| format!("{}://127.0.0.1:{p}", if over_tls(dialect) { "https" } else { "http" })))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                let started: Vec<String> =
                    std::iter::once("native".to_owned()).chain(self.nodes[0].dialect_ports.keys().map(|d| d.to_string())).collect();
                StackError::MockKms(format!(
                    "the mock KMS speaks {} but not `{dialect}`: add it to MockKmsOptions::dialects",
                    started.join(", ")
                ))
            })?;
        let access_key = || DialectCredentials::AccessKey(self.options.credential.clone());
        let credentials = match dialect {
            Dialect::Native | Dialect::Aws | Dialect::Jdcloud | Dialect::Aliyun => access_key(),
            Dialect::Vault => DialectCredentials::VaultToken(self.options.vault_token.clone()),
            Dialect::Gcp => DialectCredentials::None,
        };
        let ca_file = self.tls.as_ref().filter(|_| over_tls(dialect)).map(|tls| tls.ca_file.clone());
        let entry = self.options.entry_node.min(urls.len().saturating_sub(1));
        Ok(DialectEndpoint { dialect, urls, entry, credentials, ca_file })
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(|n| n.process.as_ref()).filter_map(Supervised::pid).collect()
    }

    /// The seed-format plugin config (`-f config.json`) for this KMS: every node as an endpoint.
    pub fn plugin_config(&self) -> serde_json::Value {
        let endpoints: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        serde_json::json!({
            "AccessKey": self.options.credential.access_key,
            "SecretKey": self.options.credential.secret_key.as_str(),
            "KmsEndpoint": endpoints.join(","),
            "KmsKeyId": self.options.key_id,
            "KmsSchema": "http",
        })
    }

    /// An admin call on the first running node (or node 0).
    async fn admin(&self, method: &str, path: &str, content_type: &str, body: &str) -> Result<String, StackError> {
        let index = self.nodes.iter().position(|n| n.process.is_some()).unwrap_or(0);
        self.admin_on(index, method, path, content_type, body).await
    }

    /// An admin call on node `index`.
    async fn admin_on(&self, index: usize, method: &str, path: &str, content_type: &str, body: &str) -> Result<String, StackError> {
        let port = self.node(index)?.port;
        match http::request(port, method, path, content_type, body, ADMIN_TIMEOUT).await {
            Some((status, text)) if (200..300).contains(&status) => Ok(text),
            Some((status, text)) => {
                Err(StackError::MockKms(format!("{method} {path} on mock-kms-{index} answered {status}: {}", text.trim())))
            }
            None => Err(StackError::MockKms(format!("{method} {path}: no answer from mock-kms-{index} on 127.0.0.1:{port}"))),
        }
    }

    /// Clears every fault on node `node`, or on every node when `None`.
    pub async fn clear_faults(&self, node: Option<usize>) -> Result<(), StackError> {
        for index in self.node_indices(node)? {
            self.admin_on(index, "DELETE", "/admin/faults", "application/json", "").await?;
        }
        Ok(())
    }

    fn node_indices(&self, node: Option<usize>) -> Result<Vec<usize>, StackError> {
        match node {
            Some(index) => self.node(index).map(|_| vec![index]),
            None => Ok((0..self.nodes.len()).collect()),
        }
    }

    /// Gives unseal shares `shares` (indices into those `mock-kms init` printed) to every running
    /// node; returns the last seal status answer.
    pub async fn unseal(&self, shares: std::ops::Range<usize>) -> Result<admin::SealStatus, StackError> {
        if self.shares.len() < shares.end {
            return Err(StackError::MockKms(format!(
                "share {} asked for, but only {} unseal shares exist (was the KMS started sealed?)",
                shares.end,
                self.shares.len()
            )));
        }
        let mut last = None;
        for index in (0..self.nodes.len()).filter(|i| self.nodes[*i].process.is_some()) {
            for share in &self.shares[shares.clone()] {
                let request = admin::UnsealRequest { share: Some(share.clone()), reset: false };
                let body =
                    serde_json::to_string(&request).map_err(|e| StackError::MockKms(format!("cannot encode an unseal request: {e}")))?;
                let text = self.admin_on(index, "POST", admin::path::UNSEAL, "application/json", &body).await?;
                last =
                    Some(serde_json::from_str(&text).map_err(|e| {
                        StackError::MockKms(format!("{} answered a body that is not a seal status: {e}", admin::path::UNSEAL))
                    })?);
            }
        }
        last.ok_or_else(|| StackError::MockKms("no mock KMS node is running to unseal".into()))
    }

    /// Gives unseal shares `shares` to every running node through the Vault dialect, as an
    /// operator does (`PUT /v1/sys/unseal {"key": SHARE}` on each node's Vault listener: a Vault
    /// node is unsealed on its own); returns each running node's answer, in node order.
    pub async fn vault_unseal(&self, shares: std::ops::Range<usize>) -> Result<Vec<(usize, VaultSealStatus)>, StackError> {
        if self.shares.len() < shares.end {
            return Err(StackError::MockKms(format!(
                "share {} asked for, but only {} unseal shares exist (was the KMS started sealed?)",
                shares.end,
                self.shares.len()
            )));
        }
        let mut answers = Vec::new();
        for index in (0..self.nodes.len()).filter(|i| self.nodes[*i].process.is_some()) {
            let port = self.vault_port(index)?;
            let mut last = None;
            for share in &self.shares[shares.clone()] {
                let body = serde_json::json!({ "key": share }).to_string();
                let answer = http::request(port, "PUT", "/v1/sys/unseal", "application/json", &body, ADMIN_TIMEOUT).await;
                let text = match answer {
                    Some((200, text)) => text,
                    Some((status, text)) => {
                        return Err(StackError::MockKms(format!(
                            "PUT /v1/sys/unseal on mock-kms-{index} answered {status}: {}",
                            text.trim()
                        )));
                    }
                    None => {
                        return Err(StackError::MockKms(format!(
                            "PUT /v1/sys/unseal: no answer from mock-kms-{index} on 127.0.0.1:{port}"
                        )));
                    }
                };
                last = Some(serde_json::from_str::<VaultSealStatus>(&text).map_err(|e| {
                    StackError::MockKms(format!(
                        "PUT /v1/sys/unseal on mock-kms-{index} answered a body that is not Vault's seal status: {e}"
                    ))
                })?);
            }
            if let Some(status) = last {
                answers.push((index, status));
            }
        }
        if answers.is_empty() {
            return Err(StackError::MockKms("no mock KMS node is running to unseal".into()));
        }
        Ok(answers)
    }

    /// `GET /v1/sys/health` on node `index`'s Vault listener: the status code (200 active, 429
    /// standby, 503 sealed, as Vault answers), `None` when the node does not answer.
    pub async fn vault_health(&self, index: usize) -> Result<Option<u16>, StackError> {
        let port = self.vault_port(index)?;
        Ok(http::get(port, "/v1/sys/health", Duration::from_secs(2)).await.map(|(status, _)| status))
    }

    fn vault_port(&self, index: usize) -> Result<u16, StackError> {
        self.node(index)?.dialect_ports.get(&Dialect::Vault).copied().ok_or_else(|| {
            StackError::MockKms(format!("mock-kms-{index} does not speak the Vault dialect (its plugin under test names another dialect)"))
        })
    }
}

/// The typed admin client ([`mock_kms::api::admin`]): requests and answers are the mock KMS's own
/// types, so no caller picks fields out of JSON by name.
impl MockKmsCluster {
    async fn admin_typed<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: &str) -> Result<T, StackError> {
        let text = self.admin(method, path, "application/json", body).await?;
        serde_json::from_str(&text)
            .map_err(|e| StackError::MockKms(format!("{method} {path} answered a body that is not the expected JSON: {e}")))
    }

    fn key_path_metadata(answer: admin::KeyMetadataAnswer) -> KeyMetadata {
        answer.key_metadata
    }

    /// Audit records with a sequence number above `since_seq` (`GET /admin/audit`), typed.
    pub async fn audit_records(&self, since_seq: u64) -> Result<Vec<AuditRecord>, StackError> {
        self.audit_query(&AuditQuery { since_seq: Some(since_seq), ..Default::default() }).await
    }

    /// The audit records matching `query`, oldest first.
    pub async fn audit_query(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StackError> {
        let path = format!("{}?{}", admin::path::AUDIT, query.to_query());
        let text = self.admin("GET", &path, "application/json", "").await?;
        mock_kms::api::parse_audit_lines(&text).map_err(|problem| StackError::MockKms(format!("GET {path}: {problem}")))
    }

    /// Adds a key version and makes it current; the key after the change.
    pub async fn rotate_key(&self) -> Result<KeyMetadata, StackError> {
        self.admin_typed("POST", &admin::path::rotate(&self.options.key_id), "").await.map(Self::key_path_metadata)
    }

    /// Makes an existing (enabled) version current again, a rollback A→B→A.
    pub async fn set_current(&self, version_id: &str) -> Result<KeyMetadata, StackError> {
        let body = serde_json::to_string(&admin::SetCurrentRequest { version_id: version_id.to_owned() })
            .map_err(|e| StackError::MockKms(format!("cannot encode the set-current request: {e}")))?;
        self.admin_typed("POST", &admin::path::current(&self.options.key_id), &body).await.map(Self::key_path_metadata)
    }

    /// Disables one version of the key as KMS state (replicated; `clear_faults` does not undo it):
    /// Decrypt with it answers `KeyNotEnabled`.
    pub async fn disable_version(&self, version_id: &str) -> Result<KeyMetadata, StackError> {
        self.admin_typed("POST", &admin::path::disable_version(&self.options.key_id, version_id), "").await.map(Self::key_path_metadata)
    }

    /// Destroys one version of the key (its material wiped, disabled for good; replicated):
    /// every Decrypt with it answers `KeyNotEnabled` from now on, and it cannot be enabled.
    pub async fn destroy_version(&self, version_id: &str) -> Result<KeyMetadata, StackError> {
        self.admin_typed("POST", &admin::path::destroy_version(&self.options.key_id, version_id), "").await.map(Self::key_path_metadata)
    }

    /// Enables a version [`MockKmsCluster::disable_version`] disabled.
    pub async fn enable_version(&self, version_id: &str) -> Result<KeyMetadata, StackError> {
        self.admin_typed("POST", &admin::path::enable_version(&self.options.key_id, version_id), "").await.map(Self::key_path_metadata)
    }

    /// The plugins' key as the KMS describes it (`GET /admin/keys`).
    pub async fn describe_key(&self) -> Result<KeyMetadata, StackError> {
        let keys: admin::Keys = self.admin_typed("GET", admin::path::KEYS, "").await?;
        let known = keys.keys.iter().map(|k| format!("`{}`", k.key_id)).collect::<Vec<_>>().join(", ");
        keys.keys
            .into_iter()
            .find(|k| k.key_id == self.options.key_id)
            .ok_or_else(|| StackError::MockKms(format!("the mock KMS has no key `{}` (it has {known})", self.options.key_id)))
    }

    /// Counters of KMS calls since start on the first running node.
    pub async fn counters(&self) -> Result<Counters, StackError> {
        self.admin_typed("GET", admin::path::COUNTERS, "").await
    }

    /// The seal status of the first running node.
    pub async fn seal_status(&self) -> Result<admin::SealStatus, StackError> {
        self.admin_typed("GET", admin::path::SEAL_STATUS, "").await
    }

    /// Replaces the accepted credentials of every running node with `credentials`
    /// (`PUT /admin/credentials`; keep the plugins' own, [`MockKmsOptions::credential`], among
    /// them to keep them working).
    pub async fn set_credentials(&self, credentials: &[Credential]) -> Result<admin::AccessKeys, StackError> {
        let body = serde_json::to_string(credentials).map_err(|e| StackError::MockKms(format!("cannot encode the credentials: {e}")))?;
        self.on_running_nodes("PUT", admin::path::CREDENTIALS, &body).await
    }

    /// Sets the access policy of `access_key` (an allow-list of actions on resources) on every
    /// running node; a call it does not allow answers 403 `Forbidden` and is audited.
    pub async fn set_policy(&self, access_key: &str, policy: &AccessPolicy) -> Result<Policies, StackError> {
        let body = serde_json::to_string(policy).map_err(|e| StackError::MockKms(format!("cannot encode the access policy: {e}")))?;
        self.on_running_nodes("PUT", &admin::path::policy(access_key), &body).await
    }

    /// Removes the access policy of `access_key` on every running node (it may call everything again).
    pub async fn remove_policy(&self, access_key: &str) -> Result<Policies, StackError> {
        self.on_running_nodes("DELETE", &admin::path::policy(access_key), "").await
    }

    /// The same admin call on every running node (per-process state: credentials, policies); the last answer.
    async fn on_running_nodes<T: serde::de::DeserializeOwned>(&self, method: &str, path: &str, body: &str) -> Result<T, StackError> {
        let mut last = None;
        for index in (0..self.nodes.len()).filter(|i| self.nodes[*i].process.is_some()) {
            last = Some(self.admin_on(index, method, path, "application/json", body).await?);
        }
        let text = last.ok_or_else(|| StackError::MockKms(format!("{method} {path}: no mock KMS node is running")))?;
        serde_json::from_str(&text)
            .map_err(|e| StackError::MockKms(format!("{method} {path} answered a body that is not the expected JSON: {e}")))
    }

    /// Puts a typed fault profile in force on node `node`, or on every node when `None`.
    pub async fn set_faults(&self, node: Option<usize>, profile: &FaultProfile) -> Result<(), StackError> {
        let body = serde_json::to_string(profile).map_err(|e| StackError::MockKms(format!("cannot encode the fault profile: {e}")))?;
        for index in self.node_indices(node)? {
            self.admin_on(index, "PUT", admin::path::FAULTS, "application/json", &body).await?;
        }
        Ok(())
    }
}
