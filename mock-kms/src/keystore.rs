//! Keys, their versions and states, and the cryptographic operations on them.
//!
//! A key has one or more versions (RotateKey adds one and makes it current; old versions still
//! decrypt) and a state (Enabled, Disabled, PendingDeletion). Key material lives in memory in
//! [`Zeroizing`] buffers; a [`Snapshot`] carries it sealed under a [`SealingKey`] (the root key in
//! the state file, the cluster transport key in replication messages).
//!
//! The state is a CRDT so that cluster nodes converge whatever order changes arrive in: the
//! versions of a key are a grow-only set (version ids are random UUIDs), and its state and its
//! current version are last-writer-wins registers ordered by a Lamport [`Stamp`]. Two nodes that
//! create or rotate the same key concurrently end up with both versions; every ciphertext made by
//! either still decrypts everywhere.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::api::{KeyMetadata, KeySpec, KeyState};
use crate::blob;
use crate::crypto::{self, SealingKey};
use crate::error::{KmsError, SnapshotError};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The largest plaintext Encrypt accepts.
pub const MAX_PLAINTEXT: usize = 6 * 1024;
/// The longest key id CreateKey accepts.
pub const MAX_KEY_ID_LEN: usize = 128;

/// A Lamport timestamp: the node's logical clock at the change, and the node (to break ties).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// The logical clock.
    pub clock: u64,
    /// The node that made the change.
    pub node: String,
}

/// The whole key state of a node, with key material sealed; the state file and replication message format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: u32,
    /// The node that wrote it.
    pub node_id: String,
    /// The node's logical clock: a version counter that grows with every change.
    pub clock: u64,
    /// The fingerprint of the [`SealingKey`] the material is sealed under.
    pub sealed_with: String,
    /// Every key.
    pub keys: Vec<KeySnapshot>,
    /// Every secret of the secrets manager (values as ciphertext under their KMS key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secrets::SecretSnapshot>,
}

/// One key in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySnapshot {
    /// The key id.
    pub key_id: String,
    /// The spec given at creation.
    pub key_spec: KeySpec,
    /// Creation time, RFC 3339.
    pub creation_date: String,
    /// When it was created (the earliest creation wins).
    pub created: Stamp,
    /// The state.
    pub state: KeyState,
    /// When the state was last set.
    pub state_stamp: Stamp,
    /// The version new encryptions use.
    pub current_version_id: String,
    /// When the current version was last set.
    pub current_stamp: Stamp,
    /// Every version.
    pub versions: Vec<VersionSnapshot>,
}

/// One key version in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSnapshot {
    /// The version id (a random UUID).
    pub version_id: String,
    /// The version's spec.
    pub key_spec: KeySpec,
    /// When it was created.
    pub created: Stamp,
    /// Base64 of `nonce ‖ AES-256-GCM(material) ‖ tag` under the snapshot's sealing key.
    pub material: String,
    /// Whether this version is disabled on its own (it neither encrypts nor decrypts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// When `disabled` was last set (`None`: never, i.e. at `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_stamp: Option<Stamp>,
    /// Whether the version was destroyed: its material is gone (zeros) and it stays disabled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub destroyed: bool,
}

/// What Encrypt and GenerateDataKey produce.
#[derive(Debug, Clone)]
pub struct Encrypted {
    /// The version used.
    pub version_id: String,
    /// The ciphertext blob (see [`crate::blob`]).
    pub blob: Vec<u8>,
}

/// What Decrypt produces.
pub struct Decrypted {
    /// The key that had encrypted it.
    pub key_id: String,
    /// The version that had encrypted it.
    pub version_id: String,
    /// The plaintext.
    pub plaintext: Zeroizing<Vec<u8>>,
}

struct Version {
    spec: KeySpec,
    created: Stamp,
    material: Zeroizing<Vec<u8>>,
    /// Disabled on its own: neither encrypts nor decrypts (last writer wins by `state_stamp`).
    disabled: bool,
    state_stamp: Stamp,
    /// Destroyed: the material is wiped (zeros) and the version is disabled for good.
    destroyed: bool,
}

impl Version {
    fn new(spec: KeySpec, created: Stamp) -> Self {
        Self {
            spec,
            material: crypto::random_bytes(crypto::key_len(spec)),
            disabled: false,
            state_stamp: created.clone(),
            created,
            destroyed: false,
        }
    }

    /// Wipes the material and disables the version for good.
    fn destroy(&mut self) {
        self.material.iter_mut().for_each(|b| *b = 0);
        (self.disabled, self.destroyed) = (true, true);
    }
}

struct Key {
    spec: KeySpec,
    creation_date: String,
    created: Stamp,
    state: KeyState,
    state_stamp: Stamp,
    current: String,
    current_stamp: Stamp,
    versions: BTreeMap<String, Version>,
}

impl Key {
    fn metadata(&self, key_id: &str) -> KeyMetadata {
        let mut versions: Vec<(&Stamp, &String)> = self.versions.iter().map(|(id, v)| (&v.created, id)).collect();
        versions.sort();
        KeyMetadata {
            key_id: key_id.to_owned(),
            key_state: self.state,
            key_spec: self.spec,
            current_key_version_id: self.current.clone(),
            disabled_key_version_ids: versions.iter().filter(|(_, id)| self.versions[*id].disabled).map(|(_, id)| (*id).clone()).collect(),
            key_version_ids: versions.into_iter().map(|(_, id)| id.clone()).collect(),
            creation_date: self.creation_date.clone(),
        }
    }

    fn require_enabled(&self, key_id: &str) -> Result<(), KmsError> {
        match self.state {
            KeyState::Enabled => Ok(()),
            state => Err(KmsError::KeyNotEnabled { key_id: key_id.to_owned(), state }),
        }
    }

    /// The version, if it is not disabled on its own.
    fn enabled_version(&self, key_id: &str, version_id: &str) -> Result<&Version, KmsError> {
        let version = self
            .versions
            .get(version_id)
            .ok_or_else(|| KmsError::KeyVersionNotFound { key_id: key_id.to_owned(), version_id: version_id.to_owned() })?;
        if version.disabled {
            return Err(KmsError::KeyVersionNotEnabled {
                key_id: key_id.to_owned(),
                version_id: version_id.to_owned(),
                destroyed: version.destroyed,
            });
        }
        Ok(version)
    }

    /// Merges `other` into `self`; whether anything changed.
    fn merge(&mut self, other: Key) -> bool {
        let mut changed = false;
        if other.created < self.created {
            (self.spec, self.creation_date, self.created) = (other.spec, other.creation_date, other.created);
            changed = true;
        }
        if other.state_stamp > self.state_stamp {
            (self.state, self.state_stamp) = (other.state, other.state_stamp);
            changed = true;
        }
        if other.current_stamp > self.current_stamp {
            (self.current, self.current_stamp) = (other.current, other.current_stamp);
            changed = true;
        }
        for (id, version) in other.versions {
            match self.versions.entry(id) {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(version);
                    changed = true;
                }
                std::collections::btree_map::Entry::Occupied(mut slot) => {
                    let local = slot.get_mut();
                    // Destruction is final whatever the stamps say.
                    if version.destroyed && !local.destroyed {
                        local.destroy();
                        changed = true;
                    }
                    if version.state_stamp > local.state_stamp && !local.destroyed {
                        (local.disabled, local.state_stamp) = (version.disabled, version.state_stamp);
                        changed = true;
                    }
                }
            }
        }
        changed
    }
}

#[derive(Default)]
struct State {
    clock: u64,
    keys: BTreeMap<String, Key>,
}

impl State {
    fn tick(&mut self, node: &str) -> Stamp {
        self.clock += 1;
        Stamp { clock: self.clock, node: node.to_owned() }
    }

    fn key(&self, key_id: &str) -> Result<&Key, KmsError> {
        self.keys.get(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))
    }
}

/// One node's keys. Cheap reads (Encrypt/Decrypt) share a lock; changes take it briefly.
pub struct KeyStore {
    node_id: String,
    state: RwLock<State>,
    /// The secrets manager's secrets (see [`crate::secrets`]); their stamps tick `state`'s clock.
    secrets: RwLock<crate::secrets::Secrets>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.read().keys.len();
        f.debug_struct("KeyStore").field("node_id", &self.node_id).field("keys", &keys).finish()
    }
}

/// The associated data binding sealed material to its key, version and spec.
fn material_aad(key_id: &str, version_id: &str, spec: KeySpec) -> Vec<u8> {
    let spec = match spec {
        KeySpec::Aes256 => "AES_256",
        KeySpec::Sm4 => "SM4",
    };
    let mut aad = b"mock-kms key material v1".to_vec();
    for part in [key_id, version_id, spec] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Whether `key_id` is a valid id for CreateKey: 1 to 128 of `A-Z a-z 0-9 _ . / : -`.
pub fn validate_key_id(key_id: &str) -> Result<(), KmsError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '-');
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN || !key_id.chars().all(ok_char) {
        return Err(KmsError::InvalidParameter(format!(
            "KeyId must be 1 to {MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ . / : - (got {} characters)",
            key_id.chars().count()
        )));
    }
    Ok(())
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl KeyStore {
    /// An empty key store for node `node_id`.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self { node_id: node_id.into(), state: RwLock::new(State::default()), secrets: RwLock::default() }
    }

    /// A key store holding what `snapshot` holds, its material opened with `key`.
    pub fn from_snapshot(node_id: impl Into<String>, snapshot: &Snapshot, key: &SealingKey) -> Result<Self, SnapshotError> {
        let store = Self::new(node_id);
        store.merge(snapshot, key)?;
        Ok(store)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters
        // more than refusing every later call would, so a poisoned lock is used as is.
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn secrets_read(&self) -> RwLockReadGuard<'_, crate::secrets::Secrets> {
        self.secrets.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn secrets_write(&self) -> RwLockWriteGuard<'_, crate::secrets::Secrets> {
        self.secrets.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new Lamport stamp of this node (for a secrets-manager change).
    pub(crate) fn tick(&self) -> Stamp {
        self.write().tick(&self.node_id)
    }

    /// The node this store belongs to.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The logical clock (grows with every change, local or merged).
    pub fn clock(&self) -> u64 {
        self.read().clock
    }

    /// Whether a key exists (in any state).
    pub fn contains(&self, key_id: &str) -> bool {
        self.read().keys.contains_key(key_id)
    }

    /// The whole state, material sealed under `key`.
    pub fn snapshot(&self, key: &SealingKey) -> Snapshot {
        let state = self.read();
        let keys = state
            .keys
            .iter()
            .map(|(key_id, k)| KeySnapshot {
                key_id: key_id.clone(),
                key_spec: k.spec,
                creation_date: k.creation_date.clone(),
                created: k.created.clone(),
                state: k.state,
                state_stamp: k.state_stamp.clone(),
                current_version_id: k.current.clone(),
                current_stamp: k.current_stamp.clone(),
                versions: k
                    .versions
                    .iter()
                    .map(|(version_id, v)| VersionSnapshot {
                        version_id: version_id.clone(),
                        key_spec: v.spec,
                        created: v.created.clone(),
                        material: B64.encode(key.seal(&material_aad(key_id, version_id, v.spec), &v.material)),
                        disabled: v.disabled,
                        state_stamp: (v.state_stamp != v.created).then(|| v.state_stamp.clone()),
                        destroyed: v.destroyed,
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            format: SNAPSHOT_FORMAT,
            node_id: self.node_id.clone(),
            clock: state.clock,
            sealed_with: key.fingerprint().to_owned(),
            keys,
            secrets: self.secrets_read().snapshot(),
        }
    }

    /// Merges a snapshot (its material opened with `key`) into this store; whether anything changed.
    /// Nothing is merged if any part of the snapshot fails to open.
    pub fn merge(&self, snapshot: &Snapshot, key: &SealingKey) -> Result<bool, SnapshotError> {
        let incoming = open_snapshot(snapshot, key)?;
        let (secrets_changed, secrets_clock) = self.secrets_write().merge(&snapshot.secrets).map_err(SnapshotError::Inconsistent)?;
        let mut max_clock = snapshot.clock.max(secrets_clock);
        let mut state = self.write();
        let mut changed = secrets_changed;
        for (key_id, k) in incoming {
            max_clock = max_clock.max(k.created.clock).max(k.state_stamp.clock).max(k.current_stamp.clock);
            max_clock = k.versions.values().map(|v| v.created.clock.max(v.state_stamp.clock)).fold(max_clock, u64::max);
            match state.keys.get_mut(&key_id) {
                Some(local) => changed |= local.merge(k),
                None => {
                    state.keys.insert(key_id, k);
                    changed = true;
                }
            }
        }
        state.clock = state.clock.max(max_clock);
        Ok(changed)
    }

    /// Creates a key with one version.
    pub fn create_key(&self, key_id: &str, spec: KeySpec) -> Result<KeyMetadata, KmsError> {
        validate_key_id(key_id)?;
        let mut state = self.write();
        if state.keys.contains_key(key_id) {
            return Err(KmsError::KeyAlreadyExists(key_id.to_owned()));
        }
        let stamp = state.tick(&self.node_id);
        let version_id = crypto::random_uuid();
        let version = Version::new(spec, stamp.clone());
        let key = Key {
            spec,
            creation_date: now_rfc3339(),
            created: stamp.clone(),
            state: KeyState::Enabled,
            state_stamp: stamp.clone(),
            current: version_id.clone(),
            current_stamp: stamp,
            versions: BTreeMap::from([(version_id, version)]),
        };
        let metadata = key.metadata(key_id);
        state.keys.insert(key_id.to_owned(), key);
        Ok(metadata)
    }

    /// One key's metadata.
    pub fn describe(&self, key_id: &str) -> Result<KeyMetadata, KmsError> {
        Ok(self.read().key(key_id)?.metadata(key_id))
    }

    /// Every key's metadata, by key id.
    pub fn list(&self) -> Vec<KeyMetadata> {
        self.read().keys.iter().map(|(id, k)| k.metadata(id)).collect()
    }

    /// Adds a new version of an enabled key and makes it current.
    pub fn rotate(&self, key_id: &str) -> Result<KeyMetadata, KmsError> {
        self.new_version(key_id, true).map(|(metadata, _)| metadata)
    }

    /// Adds a new version of an enabled key without making it current (Cloud KMS's
    /// CreateCryptoKeyVersion); the metadata after, and the new version's id.
    pub fn add_version(&self, key_id: &str) -> Result<(KeyMetadata, String), KmsError> {
        self.new_version(key_id, false)
    }

    fn new_version(&self, key_id: &str, make_current: bool) -> Result<(KeyMetadata, String), KmsError> {
        let mut state = self.write();
        let spec = {
            let key = state.key(key_id)?;
            key.require_enabled(key_id)?;
            key.spec
        };
        let stamp = state.tick(&self.node_id);
        let version_id = crypto::random_uuid();
        let version = Version::new(spec, stamp.clone());
        let key = state.keys.get_mut(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        key.versions.insert(version_id.clone(), version);
        if make_current {
            (key.current, key.current_stamp) = (version_id.clone(), stamp);
        }
        Ok((key.metadata(key_id), version_id))
    }

    /// Makes an existing version of an enabled key current again (a rollback A→B→A), without
    /// creating a new version; replicated like a rotation.
    pub fn set_current(&self, key_id: &str, version_id: &str) -> Result<KeyMetadata, KmsError> {
        let mut state = self.write();
        {
            let key = state.key(key_id)?;
            key.require_enabled(key_id)?;
            if !key.versions.contains_key(version_id) {
                let known = key.versions.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(KmsError::InvalidParameter(format!("key `{key_id}` has no version `{version_id}` (known: {known})")));
            }
            key.enabled_version(key_id, version_id)?;
        }
        let stamp = state.tick(&self.node_id);
        let key = state.keys.get_mut(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        (key.current, key.current_stamp) = (version_id.to_owned(), stamp);
        Ok(key.metadata(key_id))
    }

    /// Disables (`enabled == false`) or enables one version of a key, as keystore state replicated
    /// like a rotation: a disabled version neither decrypts (409 `KeyNotEnabled`) nor, when
    /// current, encrypts. Setting the state it already has changes nothing.
    pub fn set_version_enabled(&self, key_id: &str, version_id: &str, enabled: bool) -> Result<KeyMetadata, KmsError> {
        let mut state = self.write();
        {
            let key = state.key(key_id)?;
            let Some(version) = key.versions.get(version_id) else {
                let known = key.versions.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(KmsError::InvalidParameter(format!("key `{key_id}` has no version `{version_id}` (known: {known})")));
            };
            if enabled && version.destroyed {
                return Err(KmsError::InvalidParameter(format!(
                    "version `{version_id}` of key `{key_id}` was destroyed: its material is gone and it cannot be enabled"
                )));
            }
            if version.disabled != enabled {
                return Ok(key.metadata(key_id));
            }
        }
        let stamp = state.tick(&self.node_id);
        let key = state.keys.get_mut(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        if let Some(version) = key.versions.get_mut(version_id) {
            (version.disabled, version.state_stamp) = (!enabled, stamp);
        }
        Ok(key.metadata(key_id))
    }

    /// Destroys one version of a key: its material is wiped and it is disabled for good (what a
    /// KMS does when a scheduled key version deletion completes). The current version cannot be
    /// destroyed. Replicated like a rotation; destroying a destroyed version changes nothing.
    pub fn destroy_version(&self, key_id: &str, version_id: &str) -> Result<KeyMetadata, KmsError> {
        let mut state = self.write();
        {
            let key = state.key(key_id)?;
            let Some(version) = key.versions.get(version_id) else {
                let known = key.versions.keys().cloned().collect::<Vec<_>>().join(", ");
                return Err(KmsError::InvalidParameter(format!("key `{key_id}` has no version `{version_id}` (known: {known})")));
            };
            if key.current == version_id {
                return Err(KmsError::InvalidParameter(format!(
                    "version `{version_id}` is key `{key_id}`'s current version: rotate first, then destroy it"
                )));
            }
            if version.destroyed {
                return Ok(key.metadata(key_id));
            }
        }
        let stamp = state.tick(&self.node_id);
        let key = state.keys.get_mut(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        if let Some(version) = key.versions.get_mut(version_id) {
            version.destroy();
            version.state_stamp = stamp;
        }
        Ok(key.metadata(key_id))
    }

    /// Sets a key's state: Enabled (EnableKey), Disabled (DisableKey) or PendingDeletion
    /// (ScheduleKeyDeletion). A key pending deletion can be neither enabled nor disabled.
    pub fn set_state(&self, key_id: &str, target: KeyState) -> Result<KeyMetadata, KmsError> {
        let mut state = self.write();
        let current = state.key(key_id)?.state;
        if current == target {
            return Ok(state.key(key_id)?.metadata(key_id));
        }
        if current == KeyState::PendingDeletion {
            return Err(KmsError::KeyNotEnabled { key_id: key_id.to_owned(), state: current });
        }
        let stamp = state.tick(&self.node_id);
        let key = state.keys.get_mut(key_id).ok_or_else(|| KmsError::KeyNotFound(key_id.to_owned()))?;
        (key.state, key.state_stamp) = (target, stamp);
        Ok(key.metadata(key_id))
    }

    /// Encrypts up to [`MAX_PLAINTEXT`] bytes with the key's current version, binding `context`.
    pub fn encrypt(&self, key_id: &str, plaintext: &[u8], context: &BTreeMap<String, String>) -> Result<Encrypted, KmsError> {
        self.encrypt_up_to(key_id, plaintext, context, MAX_PLAINTEXT)
    }

    /// [`KeyStore::encrypt`] with a dialect's own plaintext limit (Cloud KMS: 64 KiB).
    pub fn encrypt_up_to(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
        limit: usize,
    ) -> Result<Encrypted, KmsError> {
        if plaintext.len() > limit {
            return Err(KmsError::InvalidParameter(format!("Plaintext is {} bytes; the limit is {limit} bytes", plaintext.len())));
        }
        let state = self.read();
        let key = state.key(key_id)?;
        key.require_enabled(key_id)?;
        if !key.versions.contains_key(&key.current) {
            return Err(KmsError::InternalFailure(format!("key `{key_id}` lost its current version")));
        }
        let version = key.enabled_version(key_id, &key.current)?;
        let header = blob::header(key_id, &key.current)
            .ok_or_else(|| KmsError::InternalFailure(format!("key `{key_id}` has an id too long for a blob")))?;
        let sealed = crypto::seal(version.spec, &version.material, &blob::aad(&header, context), plaintext)
            .map_err(|_| KmsError::InternalFailure(format!("key `{key_id}` has material of the wrong length")))?;
        let mut out = header;
        out.extend_from_slice(&sealed);
        Ok(Encrypted { version_id: key.current.clone(), blob: out })
    }

    /// Decrypts a blob from [`KeyStore::encrypt`] given the same `context`.
    pub fn decrypt(&self, blob_bytes: &[u8], context: &BTreeMap<String, String>) -> Result<Decrypted, KmsError> {
        let parsed = blob::parse(blob_bytes).map_err(|problem| KmsError::InvalidCiphertext(format!("CiphertextBlob is {problem}")))?;
        let state = self.read();
        let key = state.key(parsed.key_id)?;
        key.require_enabled(parsed.key_id)?;
        let version = key.enabled_version(parsed.key_id, parsed.version_id)?;
        let plaintext = crypto::open(version.spec, &version.material, &blob::aad(parsed.header, context), parsed.sealed).map_err(|_| {
            KmsError::InvalidCiphertext(
                "CiphertextBlob fails authentication: it was altered, or the EncryptionContext differs from the one given to Encrypt"
                    .into(),
            )
        })?;
        Ok(Decrypted { key_id: parsed.key_id.to_owned(), version_id: parsed.version_id.to_owned(), plaintext })
    }
}

/// Opens every version of a snapshot, checking its structure.
fn open_snapshot(snapshot: &Snapshot, key: &SealingKey) -> Result<BTreeMap<String, Key>, SnapshotError> {
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(SnapshotError::UnsupportedFormat(snapshot.format));
    }
    if snapshot.sealed_with != key.fingerprint() {
        return Err(SnapshotError::WrongSealingKey { found: snapshot.sealed_with.clone(), expected: key.fingerprint().to_owned() });
    }
    let mut keys = BTreeMap::new();
    for k in &snapshot.keys {
        validate_key_id(&k.key_id)
            .map_err(|_| SnapshotError::Inconsistent(format!("key id `{}` is not a valid key id", k.key_id.escape_debug())))?;
        let mut versions = BTreeMap::new();
        for v in &k.versions {
            let bad = || SnapshotError::Material { key_id: k.key_id.clone(), version_id: v.version_id.clone() };
            let sealed = B64.decode(&v.material).map_err(|_| bad())?;
            let material = key.open(&material_aad(&k.key_id, &v.version_id, v.key_spec), &sealed).map_err(|_| bad())?;
            if material.len() != crypto::key_len(v.key_spec) {
                return Err(bad());
            }
            let state_stamp = v.state_stamp.clone().unwrap_or_else(|| v.created.clone());
            versions.insert(
                v.version_id.clone(),
                Version {
                    spec: v.key_spec,
                    created: v.created.clone(),
                    material,
                    disabled: v.disabled || v.destroyed,
                    state_stamp,
                    destroyed: v.destroyed,
                },
            );
        }
        if !versions.contains_key(&k.current_version_id) {
            return Err(SnapshotError::Inconsistent(format!(
                "key `{}` names current version `{}`, which it does not hold",
                k.key_id, k.current_version_id
            )));
        }
        let key = Key {
            spec: k.key_spec,
            creation_date: k.creation_date.clone(),
            created: k.created.clone(),
            state: k.state,
            state_stamp: k.state_stamp.clone(),
            current: k.current_version_id.clone(),
            current_stamp: k.current_stamp.clone(),
            versions,
        };
        if keys.insert(k.key_id.clone(), key).is_some() {
            return Err(SnapshotError::Inconsistent(format!("key `{}` appears twice", k.key_id)));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn rotation_keeps_old_versions_decrypting() {
        let store = KeyStore::new("a");
        let created = store.create_key("k", KeySpec::Aes256).unwrap();
        let old = store.encrypt("k", b"one", &ctx(&[("p", "q")])).unwrap();
        assert_eq!(old.version_id, created.current_key_version_id);
        let rotated = store.rotate("k").unwrap();
        assert_eq!(rotated.key_version_ids.len(), 2);
        assert_eq!(rotated.key_version_ids[0], created.current_key_version_id, "oldest first");
        let new = store.encrypt("k", b"two", &BTreeMap::new()).unwrap();
        assert_eq!(new.version_id, rotated.current_key_version_id);
        assert_eq!(store.decrypt(&old.blob, &ctx(&[("p", "q")])).unwrap().plaintext.as_slice(), b"one");
        assert!(matches!(store.decrypt(&old.blob, &BTreeMap::new()), Err(KmsError::InvalidCiphertext(_))));
        assert_eq!(store.decrypt(&new.blob, &BTreeMap::new()).unwrap().version_id, rotated.current_key_version_id);
    }

    #[test]
    fn states_gate_crypto_and_deletion_is_final() {
        let store = KeyStore::new("a");
        store.create_key("k", KeySpec::Sm4).unwrap();
        let sealed = store.encrypt("k", b"x", &BTreeMap::new()).unwrap();
        store.set_state("k", KeyState::Disabled).unwrap();
        assert!(matches!(store.encrypt("k", b"x", &BTreeMap::new()), Err(KmsError::KeyNotEnabled { .. })));
        assert!(matches!(store.decrypt(&sealed.blob, &BTreeMap::new()), Err(KmsError::KeyNotEnabled { .. })));
        store.set_state("k", KeyState::Enabled).unwrap();
        assert_eq!(store.decrypt(&sealed.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"x");
        store.set_state("k", KeyState::PendingDeletion).unwrap();
        assert!(store.set_state("k", KeyState::Enabled).is_err());
        assert!(matches!(store.create_key("k", KeySpec::Aes256), Err(KmsError::KeyAlreadyExists(_))));
        assert!(matches!(store.create_key("bad id", KeySpec::Aes256), Err(KmsError::InvalidParameter(_))));
    }

    #[test]
    fn a_destroyed_version_never_decrypts_again_even_after_a_merge() {
        let transport = SealingKey::random();
        let (a, b) = (KeyStore::new("a"), KeyStore::new("b"));
        let created = a.create_key("k", KeySpec::Aes256).unwrap();
        assert!(b.merge(&a.snapshot(&transport), &transport).unwrap());
        let old = a.encrypt("k", b"old", &BTreeMap::new()).unwrap();
        let old_version = created.current_key_version_id;
        assert!(a.destroy_version("k", &old_version).is_err(), "the current version cannot be destroyed");
        a.rotate("k").unwrap();
        let new = a.encrypt("k", b"new", &BTreeMap::new()).unwrap();
        a.destroy_version("k", &old_version).unwrap();
        let error = a.decrypt(&old.blob, &BTreeMap::new()).err().expect("a destroyed version does not decrypt");
        assert!(matches!(error, KmsError::KeyVersionNotEnabled { destroyed: true, .. }), "{error}");
        assert!(error.to_string().contains("was destroyed"), "{error}");
        assert_eq!(a.decrypt(&new.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"new");
        let error = a.set_version_enabled("k", &old_version, true).unwrap_err().to_string();
        assert!(error.contains("destroyed"), "{error}");
        // A node that still held the material and enables the version later loses it on merge.
        b.set_version_enabled("k", &old_version, false).unwrap();
        b.set_version_enabled("k", &old_version, true).unwrap();
        assert!(b.merge(&a.snapshot(&transport), &transport).unwrap());
        a.merge(&b.snapshot(&transport), &transport).unwrap();
        for store in [&a, &b] {
            assert!(store.decrypt(&old.blob, &BTreeMap::new()).is_err(), "destroyed on every node");
        }
        // And across a snapshot restore.
        let restored = KeyStore::from_snapshot("a", &a.snapshot(&transport), &transport).unwrap();
        assert!(restored.decrypt(&old.blob, &BTreeMap::new()).is_err());
        assert_eq!(restored.decrypt(&new.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"new");
    }

    #[test]
    fn snapshots_round_trip_and_refuse_another_key() {
        let root = SealingKey::random();
        let store = KeyStore::new("a");
        store.create_key("k", KeySpec::Aes256).unwrap();
        let sealed = store.encrypt("k", b"secret", &BTreeMap::new()).unwrap();
        let snapshot = store.snapshot(&root);
        let json = serde_json::to_string(&snapshot).unwrap();
        assert!(!json.contains("secret"));
        let restored = KeyStore::from_snapshot("a", &serde_json::from_str(&json).unwrap(), &root).unwrap();
        assert_eq!(restored.decrypt(&sealed.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"secret");
        assert_eq!(restored.clock(), store.clock());
        let error = KeyStore::from_snapshot("a", &snapshot, &SealingKey::random()).unwrap_err();
        assert!(matches!(error, SnapshotError::WrongSealingKey { .. }));
        let mut tampered = snapshot.clone();
        tampered.keys[0].key_id = "other".into();
        assert!(matches!(KeyStore::from_snapshot("a", &tampered, &root), Err(SnapshotError::Material { .. })));
    }

    #[test]
    fn concurrent_changes_converge_keeping_every_version() {
        let transport = SealingKey::random();
        let a = KeyStore::new("a");
        let b = KeyStore::new("b");
        a.create_key("k", KeySpec::Aes256).unwrap();
        b.create_key("k", KeySpec::Aes256).unwrap();
        let from_a = a.encrypt("k", b"a", &BTreeMap::new()).unwrap();
        let from_b = b.encrypt("k", b"b", &BTreeMap::new()).unwrap();
        b.set_state("k", KeyState::Disabled).unwrap();
        assert!(a.merge(&b.snapshot(&transport), &transport).unwrap());
        assert!(b.merge(&a.snapshot(&transport), &transport).unwrap());
        assert!(!a.merge(&b.snapshot(&transport), &transport).unwrap(), "converged");
        assert_eq!(a.describe("k").unwrap(), b.describe("k").unwrap());
        assert_eq!(a.describe("k").unwrap().key_state, KeyState::Disabled, "the later change wins");
        a.set_state("k", KeyState::Enabled).unwrap();
        b.merge(&a.snapshot(&transport), &transport).unwrap();
        for store in [&a, &b] {
            assert_eq!(store.decrypt(&from_a.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"a");
            assert_eq!(store.decrypt(&from_b.blob, &BTreeMap::new()).unwrap().plaintext.as_slice(), b"b");
        }
    }
}
