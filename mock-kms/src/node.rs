//! One node of the mock KMS: its key store replica, faults, readiness, and what happens after a
//! change (save to the state file, push to peers). The nodes of one process share a [`Shared`]:
//! credentials, audit log, seal state and the shutdown signal.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::watch;

use crate::api::KeySpec;
use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::cluster::Replicator;
use crate::crypto::SealingKey;
use crate::error::{KmsError, PersistError, SealError};
use crate::faults::Faults;
use crate::keystore::{KeyStore, Snapshot};
use crate::persist::StateFile;
use crate::seal::{SealStatus, Submitted, Unsealer};

/// What the nodes of one process share.
pub(crate) struct Shared {
    pub auth: Authenticator,
    /// The access policies per access key (native API).
    pub policies: crate::policy::PolicySet,
    pub audit: AuditLog,
    /// `Some` for a sealed start.
    pub unsealer: Option<Unsealer>,
    /// The root key, once known (at start in dev mode, at unseal in sealed mode).
    pub root: OnceLock<SealingKey>,
    /// Every node of the process (weak: the nodes own `Shared`).
    pub nodes: OnceLock<Vec<Weak<Node>>>,
    /// Keys created at start (and at unseal) when missing.
    pub ensure_keys: Vec<(String, KeySpec)>,
    /// Turns true once to stop every node.
    pub shutdown: watch::Sender<bool>,
    /// Serialises unseal attempts.
    pub unseal_lock: tokio::sync::Mutex<()>,
    /// The AWS dialect's aliases and rotation flags.
    pub aws: crate::dialects::aws::AwsState,
    /// The token the Vault dialect accepts (`--vault-token`).
    pub vault_token: Option<zeroize::Zeroizing<String>>,
    /// The Vault dialect's per-key `min_decryption_version`.
    pub vault: crate::dialects::vault::VaultState,
}

impl Shared {
    /// Every live node of the process, in index order.
    pub fn nodes(&self) -> Vec<Arc<Node>> {
        self.nodes.get().map(|n| n.iter().filter_map(Weak::upgrade).collect()).unwrap_or_default()
    }

    /// Where the unseal stands (`sealed: false` for a dev-mode start).
    pub fn seal_status(&self) -> SealStatus {
        match &self.unsealer {
            Some(unsealer) => unsealer.status(),
            None => SealStatus { sealed: false, progress: 0, threshold: 0, shares: 0 },
        }
    }

    /// Whether `/v1/*` calls must be refused with `Sealed`.
    pub fn sealed(&self) -> bool {
        self.root.get().is_none() && self.unsealer.is_some()
    }

    /// Adds an unseal share; at the threshold, opens every node's key state with the root key.
    pub async fn unseal(&self, share: &str) -> Result<SealStatus, SealError> {
        let _one_at_a_time = self.unseal_lock.lock().await;
        let Some(unsealer) = &self.unsealer else {
            return Ok(self.seal_status());
        };
        let root = match unsealer.submit(share)? {
            Submitted::Progress(status) => return Ok(status),
            Submitted::Unsealed(root) => root,
        };
        for node in self.nodes() {
            if let Err(error) = node.check_pending(&root) {
                unsealer.reset();
                return Err(SealError::Open(error.to_string()));
            }
        }
        let _ = self.root.set(root.clone());
        tracing::info!(fingerprint = root.fingerprint(), "unsealed");
        for node in self.nodes() {
            node.open(&root).await;
        }
        Ok(unsealer.status())
    }
}

/// What a node is made of, besides what it shares with the other nodes of the process.
pub(crate) struct NodeParts {
    pub index: usize,
    /// Its place in the whole cluster (the HA order: the lowest-ranked unsealed node becomes
    /// active when none is): its index in this process, or its place in `--peers`.
    pub rank: usize,
    pub id: String,
    pub addr: SocketAddr,
    pub faults: Faults,
    pub replicator: Option<Replicator>,
    pub state_file: Option<StateFile>,
    /// The state file's snapshot, opened once the root key is known.
    pub pending: Option<Snapshot>,
}

/// One node.
pub(crate) struct Node {
    pub index: usize,
    /// Its place in the whole cluster ([`NodeParts::rank`]).
    pub rank: usize,
    /// Its Vault HA state: whether it is the active node, and its Vault API address.
    pub vault_ha: crate::dialects::vault::HaState,
    pub id: String,
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub faults: Faults,
    pub replicator: Option<Replicator>,
    keystore: OnceLock<Arc<KeyStore>>,
    state_file: Option<StateFile>,
    /// The state file's snapshot, read (and so checked) at start, opened once the root key is known.
    pending: Mutex<Option<Snapshot>>,
    ready: AtomicBool,
    listening: AtomicBool,
    persist_lock: tokio::sync::Mutex<()>,
}

impl Node {
    /// A node that is not open yet (no key store until [`Node::open`]).
    pub fn new(parts: NodeParts, shared: Arc<Shared>) -> Self {
        Self {
            index: parts.index,
            rank: parts.rank,
            vault_ha: Default::default(),
            id: parts.id,
            addr: parts.addr,
            shared,
            faults: parts.faults,
            replicator: parts.replicator,
            keystore: OnceLock::new(),
            state_file: parts.state_file,
            pending: Mutex::new(parts.pending),
            ready: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            persist_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The key store, once open.
    pub fn keystore(&self) -> Option<&Arc<KeyStore>> {
        self.keystore.get()
    }

    /// The key store if the node serves `/v1/*` now, else the error to answer with.
    pub fn serving_keystore(&self) -> Result<&Arc<KeyStore>, KmsError> {
        if self.shared.sealed() {
            return Err(KmsError::Sealed);
        }
        match self.keystore.get() {
            Some(store) if self.ready.load(Ordering::SeqCst) => Ok(store),
            _ => Err(KmsError::ServiceUnavailable(format!("node {} is starting: syncing key state from its peers", self.id))),
        }
    }

    /// Whether the node serves `/v1/*` calls.
    pub fn ready(&self) -> bool {
        !self.shared.sealed() && self.keystore.get().is_some() && self.ready.load(Ordering::SeqCst)
    }

    /// Whether the listener is open (false during an outage).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    /// Records whether the listener is open.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::SeqCst);
    }

    /// Records whether the node may serve `/v1/*` (false while it syncs after an outage).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// The URL peers and clients reach this node at.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Checks that the state file opens with `root` (before committing to an unseal).
    pub fn check_pending(&self, root: &SealingKey) -> Result<(), PersistError> {
        let pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(snapshot), Some(file)) = (pending.as_ref(), &self.state_file) {
            KeyStore::from_snapshot(&self.id, snapshot, root)
                .map_err(|source| PersistError::Snapshot { path: file.path().to_owned(), source })?;
        }
        Ok(())
    }

    /// Opens the key state with `root`, syncs from peers, creates the keys to ensure, saves, and
    /// becomes ready. Does nothing if already open.
    pub async fn open(self: &Arc<Self>, root: &SealingKey) {
        if self.keystore.get().is_some() {
            return;
        }
        let snapshot = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take();
        let store = match (snapshot, &self.state_file) {
            // `check_pending` (or the start-up check) vetted it: a failure now is a bug, not data.
            (Some(snapshot), Some(_)) => KeyStore::from_snapshot(&self.id, &snapshot, root).unwrap_or_else(|error| {
                tracing::error!(node = %self.id, %error, "key state failed to open after it was checked; starting empty in memory");
                KeyStore::new(&self.id)
            }),
            _ => KeyStore::new(&self.id),
        };
        let _ = self.keystore.set(Arc::new(store));
        self.sync().await;
        let mut created = false;
        if let Some(store) = self.keystore.get() {
            for (key_id, spec) in &self.shared.ensure_keys {
                if !store.contains(key_id) {
                    match store.create_key(key_id, *spec) {
                        Ok(_) => {
                            tracing::info!(node = %self.id, key_id, "created key");
                            created = true;
                        }
                        Err(error) => {
                            tracing::error!(node = %self.id, key_id, %error, "cannot create key")
                        }
                    }
                }
            }
        }
        if created {
            let _ = self.commit().await;
        } else if let Err(error) = self.persist().await {
            tracing::error!(node = %self.id, %error, "cannot save key state");
        }
        self.set_ready(true);
        tracing::info!(node = %self.id, url = %self.url(), "node ready");
    }

    /// Pulls and merges every live peer's snapshot, saves if anything changed, then pushes the
    /// merged state back so peers learn what only this node had.
    pub async fn sync(&self) {
        let (Some(replicator), Some(store)) = (&self.replicator, self.keystore.get()) else {
            return;
        };
        let mut changed = false;
        for (peer, snapshot) in replicator.pull().await {
            match replicator.merge(store, &snapshot, &peer) {
                Ok(c) => changed |= c,
                Err(error) => {
                    tracing::error!(node = %self.id, %error, "cannot merge a peer's snapshot")
                }
            }
        }
        if changed && let Err(error) = self.persist().await {
            tracing::error!(node = %self.id, %error, "cannot save key state");
        }
        replicator.push(store).await;
        tracing::debug!(node = %self.id, clock = store.clock(), "synced with peers");
    }

    /// Merges a snapshot a peer pushed; saves if it changed anything.
    pub async fn accept_push(&self, snapshot: &Snapshot, peer: &str) -> Result<bool, String> {
        let (Some(replicator), Some(store)) = (&self.replicator, self.keystore.get()) else {
            return Err(format!("node {} is not open yet (sealed or starting)", self.id));
        };
        let changed = replicator.merge(store, snapshot, peer).map_err(|e| e.to_string())?;
        if changed {
            self.persist().await.map_err(|e| e.to_string())?;
        }
        Ok(changed)
    }

    /// Saves the key state (if there is a state file). Writes are serialised and each writes the
    /// newest state, so an older snapshot never overwrites a newer one.
    pub async fn persist(&self) -> Result<(), PersistError> {
        let (Some(file), Some(store), Some(root)) = (&self.state_file, self.keystore.get(), self.shared.root.get()) else {
            return Ok(());
        };
        let _one_writer = self.persist_lock.lock().await;
        let snapshot = store.snapshot(root);
        let file = file.clone();
        tokio::task::spawn_blocking(move || file.save(&snapshot)).await.unwrap_or_else(|join| {
            Err(PersistError::Io {
                action: "save key state (the writer task failed)",
                path: Default::default(),
                source: std::io::Error::other(join.to_string()),
            })
        })
    }

    /// After a local change: save, then push to peers (waiting, bounded, so a change made on one
    /// node is visible on the others when the call returns).
    pub async fn commit(&self) -> Result<(), KmsError> {
        let saved = self.persist().await;
        if let (Some(replicator), Some(store)) = (&self.replicator, self.keystore.get()) {
            replicator.push(store).await;
        }
        saved.map_err(|error| {
            tracing::error!(node = %self.id, %error, "cannot save key state");
            KmsError::InternalFailure("the change was made but could not be saved to the data dir (see the server log)".into())
        })
    }
}
