//! Starting the mock KMS in process: [`MockKms::builder`] → [`MockKmsBuilder::start`] → a
//! [`MockKms`] handle with the addresses, the admin operations as methods, and `shutdown`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mock_kms::{Credential, MockKms};
//! let kms = MockKms::builder().key("lab-key").credential(Credential::new("AK", "SK")).seed(7).start().await?;
//! println!("KMS at {}", kms.url());
//! kms.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rand::RngCore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::api::Counters;
use crate::api::faults::FaultProfile;
use crate::api::{KeyMetadata, KeySpec};
use crate::audit::{AuditLog, DEFAULT_CAPACITY};
use crate::auth::{Authenticator, Credential};
use crate::cluster::{self, Replicator};
use crate::crypto::SealingKey;
use crate::dialects::Dialect;
use crate::error::{FaultProfileError, KmsError, PersistError, SealError, StartError};
use crate::faults::Faults;
use crate::keystore::Snapshot;
use crate::node::{Node, NodeParts, Shared};
use crate::persist::{self, AUDIT_FILE, STATE_FILE, StateFile};
use crate::seal::{SealStatus, Unsealer};

/// The largest request body accepted (a 6 KiB plaintext in base64 plus context fits easily).
pub const MAX_BODY: usize = 64 * 1024;
/// The most nodes one process serves.
pub const MAX_CLUSTER_SIZE: usize = 64;

/// Settings for [`MockKmsBuilder::start`]; every one has a default.
pub struct MockKmsBuilder {
    listen: SocketAddr,
    listeners: Vec<std::net::TcpListener>,
    data_dir: Option<PathBuf>,
    keys: Vec<(String, KeySpec)>,
    credentials: Vec<Credential>,
    policies: Vec<(String, crate::api::policy::AccessPolicy)>,
    seed: Option<u64>,
    sealed: bool,
    cluster_size: usize,
    node_id: Option<String>,
    peers: Vec<String>,
    cluster_secret: Option<Zeroizing<Vec<u8>>>,
    faults: FaultProfile,
    audit_log: Option<PathBuf>,
    audit_capacity: usize,
    dialect: Dialect,
    /// Each extra listener: its dialect, address and whether it serves TLS.
    extra_listeners: Vec<(Dialect, SocketAddr, bool)>,
    vault_token: Option<Zeroizing<String>>,
    /// The lease of the Vault token (`None`: it does not run down).
    vault_token_ttl: Option<std::time::Duration>,
    /// The AppRole (role id, secret id) whose login hands out the Vault token.
    vault_approle: Option<(String, Zeroizing<String>)>,
    /// The PEM certificate chain and key of the TLS listeners.
    tls_identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
}

impl std::fmt::Debug for MockKmsBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKmsBuilder")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("keys", &self.keys)
            .field("credentials", &self.credentials)
            .field("seed", &self.seed)
            .field("sealed", &self.sealed)
            .field("cluster_size", &self.cluster_size)
            .field("node_id", &self.node_id)
            .field("peers", &self.peers)
            .field("dialect", &self.dialect)
            .field("extra_listeners", &self.extra_listeners)
            .finish_non_exhaustive()
    }
}

impl Default for MockKmsBuilder {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listeners: Vec::new(),
            data_dir: None,
            keys: Vec::new(),
            credentials: Vec::new(),
            policies: Vec::new(),
            seed: None,
            sealed: false,
            cluster_size: 1,
            node_id: None,
            peers: Vec::new(),
            cluster_secret: None,
            faults: FaultProfile::default(),
            audit_log: None,
            audit_capacity: DEFAULT_CAPACITY,
            dialect: Dialect::Native,
            extra_listeners: Vec::new(),
            vault_token: None,
            vault_token_ttl: None,
            vault_approle: None,
            tls_identity: None,
        }
    }
}

impl MockKmsBuilder {
    /// The address to listen on (default `127.0.0.1:0`, an ephemeral port). With a cluster of N,
    /// node i listens on port + i (or on its own ephemeral port when the port is 0).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serves on an already bound listener (call once per node); useful to know every peer's
    /// address before any node starts. Overrides [`MockKmsBuilder::listen`].
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Keeps keys and versions in `dir` across restarts (and the audit log, the dev-mode root key
    /// or the sealed state). Without it everything is in memory.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// A key to create (AES-256) at start, or at unseal, if it does not exist.
    pub fn key(self, key_id: impl Into<String>) -> Self {
        self.key_with_spec(key_id, KeySpec::Aes256)
    }

    /// A key to create with `spec` at start, or at unseal, if it does not exist.
    pub fn key_with_spec(mut self, key_id: impl Into<String>, spec: KeySpec) -> Self {
        self.keys.push((key_id.into(), spec));
        self
    }

    /// A credential to accept (may be called several times).
    pub fn credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    /// An access policy for `access_key` (an allow-list; keys without one may call everything).
    pub fn policy(mut self, access_key: impl Into<String>, policy: crate::api::policy::AccessPolicy) -> Self {
        self.policies.push((access_key.into(), policy));
        self
    }

    /// The seed of fault randomness (default: random, logged at start).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sealed start: needs a data dir initialised with [`crate::seal::init`] (`mock-kms init`).
    pub fn sealed(mut self, sealed: bool) -> Self {
        self.sealed = sealed;
        self
    }

    /// Serve N nodes in this process, replicating to each other (default 1).
    pub fn cluster_size(mut self, nodes: usize) -> Self {
        self.cluster_size = nodes;
        self
    }

    /// This node's id (for separate processes; default: the listen address when there are peers,
    /// else `node-0`; in a cluster of N, `ID-0` … `ID-(N-1)`).
    pub fn node_id(mut self, node_id: impl Into<String>) -> Self {
        self.node_id = Some(node_id.into());
        self
    }

    /// Peer nodes in other processes (`http://host:port`) to replicate with.
    pub fn peers(mut self, peers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.peers.extend(peers.into_iter().map(Into::into));
        self
    }

    /// The secret every node of a cluster shares (default: a built-in lab secret; random for an
    /// in-process cluster).
    pub fn cluster_secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.cluster_secret = Some(Zeroizing::new(secret.as_ref().to_vec()));
        self
    }

    /// Faults in force from the start (on every node).
    pub fn faults(mut self, profile: FaultProfile) -> Self {
        self.faults = profile;
        self
    }

    /// Append audit records to this file (default: `<data dir>/audit.jsonl` with a data dir).
    pub fn audit_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }

    /// How many audit records to keep in memory (default 100 000).
    pub fn audit_capacity(mut self, records: usize) -> Self {
        self.audit_capacity = records;
        self
    }

    /// The API the main listener speaks (default [`Dialect::Native`]).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// One more listener on every node, speaking `dialect` at `addr` (with a cluster of N, node i
    /// listens on port + i, or on an ephemeral port when the port is 0).
    pub fn extra_listener(mut self, dialect: Dialect, addr: SocketAddr) -> Self {
        self.extra_listeners.push((dialect, addr, false));
        self
    }

    /// Like [`MockKmsBuilder::extra_listener`], over TLS with the [`MockKmsBuilder::tls_identity`]
    /// (e.g. `aliyun`: Alibaba Cloud's SDKs and ack-kms-plugin call KMS over HTTPS only).
    pub fn extra_tls_listener(mut self, dialect: Dialect, addr: SocketAddr) -> Self {
        self.extra_listeners.push((dialect, addr, true));
        self
    }

    /// The PEM certificate chain and private key the TLS listeners present.
    pub fn tls_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls_identity = Some((cert_pem.into(), Zeroizing::new(key_pem.into())));
        self
    }

    /// The token the Vault dialect accepts in `X-Vault-Token`.
    pub fn vault_token(mut self, token: impl Into<String>) -> Self {
        self.vault_token = Some(Zeroizing::new(token.into()));
        self
    }

    /// The lease of the Vault token: it runs down this long after its first use on a process
    /// (or its last renewal) and is then refused, as Vault refuses an expired token.
    pub fn vault_token_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.vault_token_ttl = Some(ttl);
        self
    }

    /// The AppRole whose login (`POST /v1/auth/approle/login {"role_id", "secret_id"}`) hands
    /// out the Vault token with a fresh lease.
    pub fn vault_approle(mut self, role_id: impl Into<String>, secret_id: impl Into<String>) -> Self {
        self.vault_approle = Some((role_id.into(), Zeroizing::new(secret_id.into())));
        self
    }

    fn check(&self) -> Result<(), StartError> {
        if self.cluster_size == 0 || self.cluster_size > MAX_CLUSTER_SIZE {
            return Err(StartError::Config(format!("--cluster {} is out of range: use 1 to {MAX_CLUSTER_SIZE}", self.cluster_size)));
        }
        if self.cluster_size > 1 && !self.peers.is_empty() {
            return Err(StartError::Config(
                "--cluster N serves every node in this process and --peers is for nodes in separate processes: use one or the other".into(),
            ));
        }
        if !self.listeners.is_empty() && self.listeners.len() != self.cluster_size {
            return Err(StartError::Config(format!(
                "{} listeners given for a cluster of {}: give one per node",
                self.listeners.len(),
                self.cluster_size
            )));
        }
        if self.sealed && self.data_dir.is_none() {
            return Err(StartError::Config("--sealed needs --data-dir DIR, initialised first with `mock-kms init --data-dir DIR`".into()));
        }
        if let Some(id) = &self.node_id
            && (id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(StartError::Config("--node-id must be 1 to 64 characters without spaces".into()));
        }
        if self.tls_identity.is_none()
            && let Some((dialect, addr, _)) = self.extra_listeners.iter().find(|(_, _, tls)| *tls)
        {
            return Err(StartError::Config(format!(
                "`--also {dialect}=https://{addr}` serves TLS: give its certificate and key with --tls-cert FILE --tls-key FILE (PEM)"
            )));
        }
        for (key_id, _) in &self.keys {
            crate::keystore::validate_key_id(key_id).map_err(|e| StartError::Config(format!("--key-id `{key_id}`: {e}")))?;
        }
        Ok(())
    }

    fn node_ids(&self, addrs: &[SocketAddr]) -> Vec<String> {
        match (&self.node_id, self.cluster_size) {
            (Some(id), 1) => vec![id.clone()],
            (Some(id), n) => (0..n).map(|i| format!("{id}-{i}")).collect(),
            (None, 1) if !self.peers.is_empty() => vec![addrs[0].to_string()],
            (None, n) => (0..n).map(|i| format!("node-{i}")).collect(),
        }
    }

    async fn bind(&mut self) -> Result<Vec<TcpListener>, StartError> {
        if !self.listeners.is_empty() {
            let mut bound = Vec::new();
            for listener in std::mem::take(&mut self.listeners) {
                let addr = listener.local_addr().unwrap_or(self.listen);
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(listener))
                    .map_err(|source| StartError::Bind { addr, source })?;
                bound.push(listener);
            }
            return Ok(bound);
        }
        let mut bound = Vec::new();
        for i in 0..self.cluster_size {
            let mut addr = self.listen;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + i).map_err(|_| {
                    StartError::Config(format!("--listen port {} + {} nodes runs past port 65535", addr.port(), self.cluster_size))
                })?;
                addr.set_port(port);
            }
            bound.push(TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?);
        }
        Ok(bound)
    }

    /// Binds, opens the data dir and starts every node. Returns once every node serves (or, for a
    /// sealed start, waits for unseal shares).
    pub async fn start(mut self) -> Result<MockKms, StartError> {
        self.check()?;
        let peers = self.peers.iter().map(|p| cluster::parse_peer(p)).collect::<Result<Vec<_>, _>>()?;

        // The root key: from the data dir (dev mode), from unseal shares (sealed), or random.
        let (unsealer, root) = match &self.data_dir {
            Some(dir) => {
                persist::ensure_dir(dir)?;
                match (Unsealer::load(dir)?, self.sealed) {
                    (Some(unsealer), true) => (Some(unsealer), None),
                    (Some(_), false) => {
                        return Err(StartError::Config(format!(
                            "data dir `{}` was initialised for a sealed start (it holds seal.json): add --sealed",
                            dir.display()
                        )));
                    }
                    (None, true) => {
                        return Err(StartError::Config(format!(
                            "--sealed needs a data dir initialised first: run `mock-kms init --data-dir {}`",
                            dir.display()
                        )));
                    }
                    (None, false) => (None, Some(persist::load_or_create_root_key(dir)?)),
                }
            }
            None => (None, Some(SealingKey::random())),
        };

        let audit_path = self.audit_log.clone().or_else(|| self.data_dir.as_ref().map(|d| d.join(AUDIT_FILE)));
        let audit = match &audit_path {
            Some(path) => {
                AuditLog::with_file(path, self.audit_capacity).map_err(|source| StartError::AuditLog { path: path.clone(), source })?
            }
            None => AuditLog::in_memory(self.audit_capacity),
        };
        let seed = self.seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64());
        if self.seed.is_none() {
            tracing::info!(seed, "fault randomness seeded at random: pass --seed {seed} to repeat this run");
        }

        let listeners = self.bind().await?;
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap_or(self.listen)).collect();
        let ids = self.node_ids(&addrs);
        let secret: Zeroizing<Vec<u8>> = match (&self.cluster_secret, self.cluster_size) {
            (Some(secret), _) => secret.clone(),
            (None, n) if n > 1 => Zeroizing::new(crate::crypto::random_bytes(32).to_vec()),
            (None, _) => {
                if !peers.is_empty() {
                    tracing::warn!("replicating with the built-in lab cluster secret; pass --cluster-secret to set your own");
                }
                Zeroizing::new(cluster::DEFAULT_CLUSTER_SECRET.as_bytes().to_vec())
            }
        };

        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            auth: Authenticator::new(std::mem::take(&mut self.credentials)),
            policies: Default::default(),
            audit,
            unsealer,
            root: OnceLock::new(),
            nodes: OnceLock::new(),
            ensure_keys: self.keys.clone(),
            shutdown,
            unseal_lock: tokio::sync::Mutex::new(()),
            aws: Default::default(),
            vault_token: self.vault_token.take(),
            vault: crate::dialects::vault::VaultState::new(self.vault_token_ttl, self.vault_approle.take()),
        });
        for (access_key, policy) in std::mem::take(&mut self.policies) {
            shared
                .policies
                .set(&access_key, policy)
                .map_err(|problem| StartError::Config(format!("policy of `{access_key}`: {problem}")))?;
        }
        if shared.auth.access_keys().is_empty() {
            tracing::warn!("no credential given: every call fails with InvalidAccessKeyId until PUT /admin/credentials");
        }

        let mut nodes = Vec::new();
        for (index, (addr, id)) in addrs.iter().zip(&ids).enumerate() {
            let url = format!("http://{addr}");
            let node_peers: Vec<String> = if self.cluster_size > 1 {
                addrs.iter().filter(|a| *a != addr).map(|a| format!("http://{a}")).collect()
            } else {
                peers.iter().filter(|p| **p != url).cloned().collect()
            };
            let replicator = (!node_peers.is_empty()).then(|| Replicator::new(id, node_peers, &secret));
            let (state_file, pending) = match &self.data_dir {
                Some(dir) => {
                    let (file, pending) = node_state(dir, self.cluster_size, index)?;
                    (Some(file), pending)
                }
                None => (None, None),
            };
            let faults = Faults::new(seed, index as u64);
            faults.set(self.faults.clone())?;
            // In a multi-process cluster `--peers` lists every node (itself included) in one
            // order on every node: its place there is its rank; one missing from its own list
            // ranks after them.
            let rank =
                if self.cluster_size > 1 || peers.is_empty() { index } else { peers.iter().position(|p| *p == url).unwrap_or(peers.len()) };
            let parts = NodeParts { index, rank, id: id.clone(), addr: *addr, faults, replicator, state_file, pending };
            nodes.push(Arc::new(Node::new(parts, shared.clone())));
        }
        let _ = shared.nodes.set(nodes.iter().map(Arc::downgrade).collect());
        if let Some(root) = &root {
            for node in &nodes {
                node.check_pending(root)?;
            }
        }

        let tls = match &self.tls_identity {
            Some((cert, key)) => {
                Some(crate::listener::tls_acceptor(cert, key).map_err(|e| StartError::Config(format!("--tls-cert/--tls-key: {e}")))?)
            }
            None => None,
        };
        let mut tasks = Vec::new();
        let mut extra_addrs = Vec::new();
        for (index, (node, listener)) in nodes.iter().zip(listeners).enumerate() {
            if self.dialect == Dialect::Vault {
                node.vault_ha.set_api_addr(node.url());
            }
            let app = crate::dialects::router(self.dialect, node.clone())?;
            tasks.push(tokio::spawn(crate::listener::serve(node.clone(), listener, app, None)));
            for (dialect, addr, over_tls) in &self.extra_listeners {
                let mut addr = *addr;
                if addr.port() != 0 {
                    addr.set_port(u16::try_from(usize::from(addr.port()) + index).map_err(|_| {
                        StartError::Config(format!("listen port {} + {} nodes runs past port 65535", addr.port(), self.cluster_size))
                    })?);
                }
                let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                tracing::info!(node = %node.id, dialect = %dialect, addr = %bound, tls = over_tls, "listening");
                extra_addrs.push((index, *dialect, bound));
                if *dialect == Dialect::Vault {
                    node.vault_ha.set_api_addr(format!("{}://{bound}", if *over_tls { "https" } else { "http" }));
                }
                let app = crate::dialects::router(*dialect, node.clone())?;
                let tls = if *over_tls { tls.clone() } else { None };
                tasks.push(tokio::spawn(crate::listener::serve(node.clone(), listener, app, tls)));
            }
        }
        if let Some(root) = root {
            let _ = shared.root.set(root.clone());
            // One after the other, so later nodes pull what earlier ones created instead of
            // creating their own versions of the keys to ensure.
            for node in &nodes {
                node.open(&root).await;
            }
        } else {
            tracing::info!("sealed: POST unseal shares to /admin/unseal");
        }
        Ok(MockKms { shared, nodes, tasks, seed, dialect: self.dialect, extra_addrs })
    }
}

/// The state file of node `index` and the snapshot to start from: its own file's, or for node 0
/// the other layout's (a data dir moving between one node and `--cluster N` keeps its keys).
fn node_state(dir: &Path, cluster_size: usize, index: usize) -> Result<(StateFile, Option<Snapshot>), PersistError> {
    let single = || StateFile::new(dir.join(STATE_FILE));
    let clustered = |i: usize| -> Result<StateFile, PersistError> {
        let node_dir = dir.join(format!("node-{i}"));
        persist::ensure_dir(&node_dir)?;
        Ok(StateFile::new(node_dir.join(STATE_FILE)))
    };
    let own = if cluster_size == 1 { single() } else { clustered(index)? };
    if let Some(snapshot) = own.load()? {
        return Ok((own, Some(snapshot)));
    }
    if index == 0 {
        let other = if cluster_size == 1 { StateFile::new(dir.join("node-0").join(STATE_FILE)) } else { single() };
        if let Some(snapshot) = other.load()? {
            tracing::info!(from = %other.path().display(), to = %own.path().display(), "starting from the key state of the other data dir layout");
            return Ok((own, Some(snapshot)));
        }
    }
    Ok((own, None))
}

/// A running mock KMS (one node, or a cluster of nodes in this process). Dropping it stops the
/// nodes without waiting; [`MockKms::shutdown`] waits for in-flight calls and flushes the audit log.
pub struct MockKms {
    shared: Arc<Shared>,
    nodes: Vec<Arc<Node>>,
    tasks: Vec<JoinHandle<()>>,
    seed: u64,
    dialect: Dialect,
    /// (node index, dialect, address) of every extra listener.
    extra_addrs: Vec<(usize, Dialect, SocketAddr)>,
}

impl std::fmt::Debug for MockKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockKms").field("addrs", &self.addrs()).field("node_ids", &self.node_ids()).field("seed", &self.seed).finish()
    }
}

impl MockKms {
    /// Settings for a new mock KMS.
    pub fn builder() -> MockKmsBuilder {
        MockKmsBuilder::default()
    }

    fn node(&self, index: usize) -> Result<&Arc<Node>, FaultProfileError> {
        self.nodes.get(index).ok_or_else(|| FaultProfileError::Invalid {
            field: "node",
            problem: format!("{index} is out of range: there are {} nodes", self.nodes.len()),
        })
    }

    /// The first node's address.
    pub fn addr(&self) -> SocketAddr {
        self.nodes[0].addr
    }

    /// Every node's address, by node index.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The first node's URL, `http://ADDR`.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node's URL, by node index.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }

    /// Every node's id, by node index.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The dialect of the main listeners ([`MockKms::addrs`]).
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Node `node`'s listener for `dialect` (the main one or an extra one), if it has one.
    pub fn dialect_addr(&self, node: usize, dialect: Dialect) -> Option<SocketAddr> {
        if dialect == self.dialect {
            return self.nodes.get(node).map(|n| n.addr);
        }
        self.extra_addrs.iter().find(|(i, d, _)| *i == node && *d == dialect).map(|(_, _, a)| *a)
    }

    /// The seed of fault randomness.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Applies `profile` on every node (restarting its random sequence).
    pub fn set_faults(&self, profile: FaultProfile) -> Result<(), FaultProfileError> {
        profile.validate()?;
        for node in &self.nodes {
            node.faults.set(profile.clone())?;
        }
        Ok(())
    }

    /// Applies `profile` on one node (by index), e.g. an outage of node 1.
    pub fn set_node_faults(&self, node: usize, profile: FaultProfile) -> Result<(), FaultProfileError> {
        self.node(node)?.faults.set(profile)
    }

    /// Clears every fault on every node.
    pub fn clear_faults(&self) {
        for node in &self.nodes {
            node.faults.clear();
        }
    }

    /// The profile in force on a node.
    pub fn faults(&self, node: usize) -> Option<FaultProfile> {
        self.nodes.get(node).map(|n| n.faults.profile())
    }

    /// How many calls are hanging on a node now (a `hang` fault).
    pub fn hung_requests(&self, node: usize) -> usize {
        self.nodes.get(node).map(|n| n.faults.hung()).unwrap_or_default()
    }

    /// Whether a node's listener is open (false during an outage).
    pub fn node_listening(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(|n| n.listening())
    }

    /// Whether a node serves `/v1/*` calls (unsealed, open, synced).
    pub fn node_ready(&self, node: usize) -> bool {
        self.nodes.get(node).is_some_and(|n| n.ready())
    }

    /// The audit log (all nodes of this process).
    pub fn audit(&self) -> &AuditLog {
        &self.shared.audit
    }

    /// Audit counters per (key, action, outcome).
    pub fn counters(&self) -> Counters {
        self.shared.audit.counters()
    }

    /// Adds an unseal share (base64, as `mock-kms init` printed it).
    pub async fn unseal(&self, share: &str) -> Result<SealStatus, SealError> {
        self.shared.unseal(share).await
    }

    /// Where the unseal stands.
    pub fn seal_status(&self) -> SealStatus {
        self.shared.seal_status()
    }

    /// Replaces the accepted credentials.
    pub fn set_credentials(&self, credentials: impl IntoIterator<Item = Credential>) {
        self.shared.auth.replace(credentials);
    }

    /// Sets (replaces) the access policy of `access_key`.
    pub fn set_policy(&self, access_key: &str, policy: crate::api::policy::AccessPolicy) -> Result<(), String> {
        self.shared.policies.set(access_key, policy)
    }

    /// Removes the access policy of `access_key` (it may call everything again).
    pub fn remove_policy(&self, access_key: &str) {
        self.shared.policies.remove(access_key);
    }

    fn serving_node(&self) -> Result<&Arc<Node>, KmsError> {
        let mut last = KmsError::ServiceUnavailable("no node".into());
        for node in &self.nodes {
            match node.serving_keystore() {
                Ok(_) => return Ok(node),
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// Creates a key on the first serving node (replicated to the others).
    pub async fn create_key(&self, key_id: &str, spec: KeySpec) -> Result<KeyMetadata, KmsError> {
        let node = self.serving_node()?;
        let metadata = node.serving_keystore()?.create_key(key_id, spec)?;
        node.commit().await?;
        Ok(metadata)
    }

    /// Rotates a key on the first serving node (replicated to the others).
    pub async fn rotate_key(&self, key_id: &str) -> Result<KeyMetadata, KmsError> {
        let node = self.serving_node()?;
        let metadata = node.serving_keystore()?.rotate(key_id)?;
        node.commit().await?;
        Ok(metadata)
    }

    /// A key's metadata as node `node` sees it.
    pub fn describe_key(&self, node: usize, key_id: &str) -> Result<KeyMetadata, KmsError> {
        let node = self.nodes.get(node).ok_or_else(|| KmsError::InvalidParameter(format!("no node {node}")))?;
        node.keystore().ok_or(KmsError::Sealed)?.describe(key_id)
    }

    /// Stops every node: listeners close, in-flight calls get up to
    /// [`crate::listener::SHUTDOWN_GRACE`] to finish, the audit log is flushed.
    pub async fn shutdown(mut self) {
        let _ = self.shared.shutdown.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = tokio::time::timeout(crate::listener::SHUTDOWN_GRACE + Duration::from_secs(1), task).await;
        }
        self.shared.audit.close();
    }
}

impl Drop for MockKms {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
    }
}
