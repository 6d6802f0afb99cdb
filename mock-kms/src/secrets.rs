//! The secrets manager ([`crate::api::secrets`]): named secrets with versions and version stages,
//! kept in each node's [`KeyStore`] beside the keys.
//!
//! A version's value is encrypted with the secret's KMS key (the key store's own Encrypt, with
//! the secret's name and version bound as encryption context), so what the state file and the
//! replication messages carry is ciphertext under a key whose material is itself sealed: a
//! disabled or deleted key makes the secret unreadable, as in a cloud KMS.
//!
//! Like the keys, the secrets are a CRDT that cluster nodes merge: a secret is one incarnation
//! per creation stamp (a later creation, after a deletion, replaces it whole); its versions are
//! a grow-only set; each stage label and the deletion schedule are last-writer-wins registers
//! ordered by the key store's Lamport [`Stamp`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::api::Action;
use crate::api::secrets::{
    self as wire, DeleteSecretResponse, DescribeSecretResponse, GetSecretValueResponse, ListSecretsResponse, MAX_RECOVERY_DAYS,
    MAX_SECRET_VALUE, MIN_RECOVERY_DAYS, SecretMetadata, SecretVersion, SecretVersionResponse, VersionStage,
};
use crate::error::KmsError;
use crate::keystore::{KeyStore, Stamp};

/// The longest secret name.
pub const MAX_SECRET_NAME_LEN: usize = 192;
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// One version of a secret in a [`SecretSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretVersionSnapshot {
    /// The version id.
    pub version_id: String,
    /// When it was made.
    pub created: Stamp,
    /// When it was made, RFC 3339.
    pub create_time: String,
    /// Base64 of the value's ciphertext blob under the secret's KMS key.
    pub blob: String,
}

/// One stage label in a [`SecretSnapshot`]: the version holding it (`None`: removed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSnapshot {
    /// The stage.
    pub stage: VersionStage,
    /// The version holding it, if any.
    pub version_id: Option<String>,
    /// When it was last moved.
    pub stamp: Stamp,
}

/// One secret in a key-state snapshot (values as ciphertext only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSnapshot {
    /// The name.
    pub name: String,
    /// Its creation (identifies the incarnation).
    pub created: Stamp,
    /// When it was created, RFC 3339.
    pub create_time: String,
    /// The KMS key its values are encrypted with.
    pub encryption_key_id: String,
    /// Its description.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Every version.
    pub versions: Vec<SecretVersionSnapshot>,
    /// Every stage label.
    pub stages: Vec<StageSnapshot>,
    /// When it is gone for good (Unix ms), while scheduled for deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_delete_ms: Option<u64>,
    /// When the deletion schedule was last set.
    pub deletion_stamp: Stamp,
}

#[derive(Clone)]
struct Version {
    created: Stamp,
    create_time: String,
    blob: Vec<u8>,
}

#[derive(Clone)]
struct Secret {
    created: Stamp,
    create_time: String,
    encryption_key_id: String,
    description: String,
    versions: BTreeMap<String, Version>,
    stages: BTreeMap<VersionStage, (Option<String>, Stamp)>,
    planned_delete_ms: Option<u64>,
    deletion_stamp: Stamp,
}

impl Secret {
    fn purged(&self, now_ms: u64) -> bool {
        self.planned_delete_ms.is_some_and(|at| now_ms >= at)
    }

    fn holder(&self, stage: &VersionStage) -> Option<&String> {
        self.stages.get(stage).and_then(|(version, _)| version.as_ref())
    }

    fn stages_of(&self, version_id: &str) -> Vec<VersionStage> {
        self.stages.iter().filter(|(_, (v, _))| v.as_deref() == Some(version_id)).map(|(s, _)| s.clone()).collect()
    }

    fn metadata(&self, name: &str) -> SecretMetadata {
        let mut versions: Vec<(&Stamp, &String, &Version)> = self.versions.iter().map(|(id, v)| (&v.created, id, v)).collect();
        versions.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(b.1)));
        SecretMetadata {
            secret_name: name.to_owned(),
            encryption_key_id: self.encryption_key_id.clone(),
            description: self.description.clone(),
            create_time: self.create_time.clone(),
            planned_delete_time: self.planned_delete_ms.map(rfc3339),
            versions: versions
                .into_iter()
                .map(|(_, id, v)| SecretVersion {
                    version_id: id.clone(),
                    version_stages: self.stages_of(id),
                    create_time: v.create_time.clone(),
                })
                .collect(),
        }
    }

    /// Gives `stage` to `version_id`; moving `ACSCurrent` moves `ACSPrevious` to the old current.
    fn move_stage(&mut self, stage: &VersionStage, version_id: &str, stamp: &Stamp) {
        if *stage == VersionStage::Current
            && let Some(old) = self.holder(&VersionStage::Current).cloned()
            && old != version_id
        {
            self.stages.insert(VersionStage::Previous, (Some(old), stamp.clone()));
        }
        self.stages.insert(stage.clone(), (Some(version_id.to_owned()), stamp.clone()));
    }

    fn snapshot(&self, name: &str) -> SecretSnapshot {
        SecretSnapshot {
            name: name.to_owned(),
            created: self.created.clone(),
            create_time: self.create_time.clone(),
            encryption_key_id: self.encryption_key_id.clone(),
            description: self.description.clone(),
            versions: self
                .versions
                .iter()
                .map(|(id, v)| SecretVersionSnapshot {
                    version_id: id.clone(),
                    created: v.created.clone(),
                    create_time: v.create_time.clone(),
                    blob: B64.encode(&v.blob),
                })
                .collect(),
            stages: self
                .stages
                .iter()
                .map(|(stage, (version, stamp))| StageSnapshot { stage: stage.clone(), version_id: version.clone(), stamp: stamp.clone() })
                .collect(),
            planned_delete_ms: self.planned_delete_ms,
            deletion_stamp: self.deletion_stamp.clone(),
        }
    }

    fn from_snapshot(snapshot: &SecretSnapshot) -> Result<Self, String> {
        let mut versions = BTreeMap::new();
        for v in &snapshot.versions {
            let blob = B64
                .decode(&v.blob)
                .map_err(|_| format!("secret `{}` version `{}` has a blob that is not base64", snapshot.name, v.version_id))?;
            versions.insert(v.version_id.clone(), Version { created: v.created.clone(), create_time: v.create_time.clone(), blob });
        }
        Ok(Self {
            created: snapshot.created.clone(),
            create_time: snapshot.create_time.clone(),
            encryption_key_id: snapshot.encryption_key_id.clone(),
            description: snapshot.description.clone(),
            versions,
            stages: snapshot.stages.iter().map(|s| (s.stage.clone(), (s.version_id.clone(), s.stamp.clone()))).collect(),
            planned_delete_ms: snapshot.planned_delete_ms,
            deletion_stamp: snapshot.deletion_stamp.clone(),
        })
    }

    /// Merges another replica of the same incarnation; whether anything changed.
    fn merge(&mut self, other: Secret) -> bool {
        let mut changed = false;
        for (id, version) in other.versions {
            if let std::collections::btree_map::Entry::Vacant(slot) = self.versions.entry(id) {
                slot.insert(version);
                changed = true;
            }
        }
        for (stage, (version, stamp)) in other.stages {
            let newer = self.stages.get(&stage).is_none_or(|(_, local)| stamp > *local);
            if newer {
                self.stages.insert(stage, (version, stamp));
                changed = true;
            }
        }
        if other.deletion_stamp > self.deletion_stamp {
            (self.planned_delete_ms, self.deletion_stamp) = (other.planned_delete_ms, other.deletion_stamp);
            changed = true;
        }
        changed
    }

    fn max_clock(&self) -> u64 {
        let versions = self.versions.values().map(|v| v.created.clock);
        let stages = self.stages.values().map(|(_, s)| s.clock);
        versions.chain(stages).chain([self.created.clock, self.deletion_stamp.clock]).max().unwrap_or_default()
    }
}

/// Every secret of a node, by name.
#[derive(Default)]
pub struct Secrets {
    secrets: BTreeMap<String, Secret>,
}

impl Secrets {
    /// The secrets as snapshot entries, by name.
    pub fn snapshot(&self) -> Vec<SecretSnapshot> {
        self.secrets.iter().map(|(name, s)| s.snapshot(name)).collect()
    }

    /// Merges snapshot entries: (whether anything changed, the highest Lamport clock seen).
    pub fn merge(&mut self, incoming: &[SecretSnapshot]) -> Result<(bool, u64), String> {
        let opened =
            incoming.iter().map(|s| Secret::from_snapshot(s).map(|secret| (s.name.clone(), secret))).collect::<Result<Vec<_>, _>>()?;
        let mut changed = false;
        let mut clock = 0;
        for (name, secret) in opened {
            clock = clock.max(secret.max_clock());
            match self.secrets.get_mut(&name) {
                None => {
                    self.secrets.insert(name, secret);
                    changed = true;
                }
                Some(local) if secret.created > local.created => {
                    *local = secret;
                    changed = true;
                }
                Some(local) if secret.created == local.created => changed |= local.merge(secret),
                Some(_) => {}
            }
        }
        Ok((changed, clock))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Whether `name` is a valid secret name: 1 to 192 of `A-Z a-z 0-9 _ . / -`.
pub fn validate_secret_name(name: &str) -> Result<(), KmsError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    if name.is_empty() || name.len() > MAX_SECRET_NAME_LEN || !name.chars().all(ok) {
        return Err(KmsError::InvalidParameter(format!(
            "SecretName must be 1 to {MAX_SECRET_NAME_LEN} characters of A-Z a-z 0-9 _ . / - (got {} characters)",
            name.chars().count()
        )));
    }
    Ok(())
}

fn validate_version_id(version_id: &str) -> Result<(), KmsError> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if version_id.is_empty() || version_id.len() > 64 || !version_id.chars().all(ok) {
        return Err(KmsError::InvalidParameter("VersionId must be 1 to 64 characters of A-Z a-z 0-9 _ . -".into()));
    }
    Ok(())
}

fn context(name: &str, version_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("SecretName".to_owned(), name.to_owned()), ("SecretVersionId".to_owned(), version_id.to_owned())])
}

fn check_value(data: &str) -> Result<(), KmsError> {
    if data.len() > MAX_SECRET_VALUE {
        return Err(KmsError::InvalidParameter(format!("SecretData is {} bytes; the limit is {MAX_SECRET_VALUE} bytes", data.len())));
    }
    Ok(())
}

fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_";
    crate::crypto::random_bytes(32).iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

/// What a secrets-manager call did, for the audit record and the answer.
pub(crate) struct SecretCall {
    /// The KMS key the call encrypted or decrypted with, and its version.
    pub key: Option<(String, String)>,
    /// The answer.
    pub reply: SecretReply,
}

/// A secrets-manager answer.
pub(crate) enum SecretReply {
    Version(SecretVersionResponse),
    Value(GetSecretValueResponse),
    List(ListSecretsResponse),
    Describe(DescribeSecretResponse),
    Delete(DeleteSecretResponse),
}

impl SecretReply {
    pub(crate) fn into_response(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        match self {
            Self::Version(r) => axum::Json(r).into_response(),
            Self::Value(r) => axum::Json(r).into_response(),
            Self::List(r) => axum::Json(r).into_response(),
            Self::Describe(r) => axum::Json(r).into_response(),
            Self::Delete(r) => axum::Json(r).into_response(),
        }
    }
}

/// Checks that an access key may call `action` on `resource` (an access policy, see [`crate::policy`]).
pub(crate) type Authorize<'a> = &'a dyn Fn(Action, &str) -> Result<(), KmsError>;

impl KeyStore {
    /// The live secret `name`, or why not (missing, purged, or scheduled for deletion).
    fn live_secret<'a>(secrets: &'a BTreeMap<String, Secret>, name: &str) -> Result<&'a Secret, KmsError> {
        let now = now_ms();
        let secret = secrets.get(name).filter(|s| !s.purged(now)).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        if let Some(at) = secret.planned_delete_ms {
            return Err(KmsError::SecretPendingDeletion { name: name.to_owned(), planned: rfc3339(at) });
        }
        Ok(secret)
    }

    /// The secret `name` and its KMS key, for a change about to encrypt a value.
    fn key_of_live_secret(&self, name: &str) -> Result<String, KmsError> {
        Ok(Self::live_secret(&self.secrets_read().secrets, name)?.encryption_key_id.clone())
    }

    /// `CreateSecret`.
    pub fn create_secret(&self, request: &wire::CreateSecretRequest) -> Result<(SecretVersionResponse, String), KmsError> {
        validate_secret_name(&request.secret_name)?;
        check_value(&request.secret_data)?;
        let version_id = request.version_id.clone().unwrap_or_else(crate::crypto::random_uuid);
        validate_version_id(&version_id)?;
        let name = &request.secret_name;
        let sealed =
            self.encrypt_up_to(&request.encryption_key_id, request.secret_data.as_bytes(), &context(name, &version_id), MAX_SECRET_VALUE)?;
        let stamp = self.tick();
        let mut secrets = self.secrets_write();
        if let Some(existing) = secrets.secrets.get(name).filter(|s| !s.purged(now_ms())) {
            return Err(match existing.planned_delete_ms {
                Some(at) => KmsError::SecretPendingDeletion { name: name.clone(), planned: rfc3339(at) },
                None => KmsError::SecretAlreadyExists(name.clone()),
            });
        }
        let create_time = rfc3339(now_ms());
        let mut secret = Secret {
            created: stamp.clone(),
            create_time: create_time.clone(),
            encryption_key_id: request.encryption_key_id.clone(),
            description: request.description.clone(),
            versions: BTreeMap::from([(version_id.clone(), Version { created: stamp.clone(), create_time, blob: sealed.blob })]),
            stages: BTreeMap::new(),
            planned_delete_ms: None,
            deletion_stamp: stamp.clone(),
        };
        secret.move_stage(&VersionStage::Current, &version_id, &stamp);
        secrets.secrets.insert(name.clone(), secret);
        let response = SecretVersionResponse {
            secret_name: name.clone(),
            version_id,
            version_stages: vec![VersionStage::Current],
            request_id: String::new(),
        };
        Ok((response, sealed.version_id))
    }

    /// `PutSecretValue` (and `RotateSecret`): a new version with `stages` (`[ACSCurrent]` when empty).
    pub fn put_secret_value(
        &self,
        name: &str,
        data: &str,
        version_id: Option<String>,
        stages: &[VersionStage],
    ) -> Result<(SecretVersionResponse, String, String), KmsError> {
        check_value(data)?;
        let version_id = version_id.unwrap_or_else(crate::crypto::random_uuid);
        validate_version_id(&version_id)?;
        let key_id = self.key_of_live_secret(name)?;
        let sealed = self.encrypt_up_to(&key_id, data.as_bytes(), &context(name, &version_id), MAX_SECRET_VALUE)?;
        let stamp = self.tick();
        let mut secrets = self.secrets_write();
        Self::live_secret(&secrets.secrets, name)?;
        let secret = secrets.secrets.get_mut(name).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        if secret.versions.contains_key(&version_id) {
            return Err(KmsError::InvalidParameter(format!(
                "secret `{name}` already has version `{version_id}`: give a new VersionId, or none for a random one"
            )));
        }
        secret.versions.insert(version_id.clone(), Version { created: stamp.clone(), create_time: rfc3339(now_ms()), blob: sealed.blob });
        let stages: Vec<VersionStage> = if stages.is_empty() { vec![VersionStage::Current] } else { stages.to_vec() };
        for stage in &stages {
            secret.move_stage(stage, &version_id, &stamp);
        }
        let response = SecretVersionResponse {
            secret_name: name.to_owned(),
            version_stages: secret.stages_of(&version_id),
            version_id,
            request_id: String::new(),
        };
        Ok((response, key_id, sealed.version_id))
    }

    /// `GetSecretValue`: by version id, by stage, or the current version.
    pub fn get_secret_value(&self, request: &wire::GetSecretValueRequest) -> Result<(GetSecretValueResponse, String, String), KmsError> {
        let name = &request.secret_name;
        let (key_id, version_id, stages, create_time, blob) = {
            let secrets = self.secrets_read();
            let secret = Self::live_secret(&secrets.secrets, name)?;
            let version_id = match (&request.version_id, &request.version_stage) {
                (Some(id), stage) => {
                    if !secret.versions.contains_key(id) {
                        return Err(KmsError::SecretNotFound(format!("{name}` version `{id}")));
                    }
                    if let Some(stage) = stage
                        && secret.holder(stage) != Some(id)
                    {
                        return Err(KmsError::InvalidParameter(format!("version `{id}` of secret `{name}` does not have stage {stage}")));
                    }
                    id.clone()
                }
                (None, stage) => {
                    let stage = stage.clone().unwrap_or(VersionStage::Current);
                    secret.holder(&stage).cloned().ok_or_else(|| KmsError::SecretNotFound(format!("{name}` stage `{stage}")))?
                }
            };
            let version = &secret.versions[&version_id];
            (
                secret.encryption_key_id.clone(),
                version_id.clone(),
                secret.stages_of(&version_id),
                version.create_time.clone(),
                version.blob.clone(),
            )
        };
        let opened = self.decrypt(&blob, &context(name, &version_id))?;
        let secret_data = String::from_utf8(opened.plaintext.to_vec())
            .map_err(|_| KmsError::InternalFailure(format!("secret `{name}` version `{version_id}` is not UTF-8 text")))?;
        let response = GetSecretValueResponse {
            secret_name: name.clone(),
            version_id,
            version_stages: stages,
            secret_data,
            create_time,
            request_id: String::new(),
        };
        Ok((response, key_id, opened.version_id))
    }

    /// `ListSecrets`: every secret not yet purged, by name.
    pub fn list_secrets(&self) -> Vec<SecretMetadata> {
        let now = now_ms();
        self.secrets_read().secrets.iter().filter(|(_, s)| !s.purged(now)).map(|(name, s)| s.metadata(name)).collect()
    }

    /// `DescribeSecret` (a secret scheduled for deletion is described too).
    pub fn describe_secret(&self, name: &str) -> Result<SecretMetadata, KmsError> {
        let secrets = self.secrets_read();
        let secret = secrets.secrets.get(name).filter(|s| !s.purged(now_ms())).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        Ok(secret.metadata(name))
    }

    /// `UpdateSecretVersionStage`.
    pub fn update_secret_version_stage(&self, request: &wire::UpdateSecretVersionStageRequest) -> Result<SecretMetadata, KmsError> {
        let name = &request.secret_name;
        let stage = &request.version_stage;
        let stamp = self.tick();
        let mut secrets = self.secrets_write();
        Self::live_secret(&secrets.secrets, name)?;
        let secret = secrets.secrets.get_mut(name).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        let known = || secret.versions.keys().cloned().collect::<Vec<_>>().join(", ");
        match (&request.move_to_version, &request.remove_from_version) {
            (None, None) => {
                return Err(KmsError::InvalidParameter("give MoveToVersion, RemoveFromVersion or both".into()));
            }
            (_, Some(from)) if secret.holder(stage) != Some(from) => {
                return Err(KmsError::InvalidParameter(format!("version `{from}` of secret `{name}` does not have stage {stage}")));
            }
            (None, Some(_)) if *stage == VersionStage::Current => {
                return Err(KmsError::InvalidParameter(format!("{stage} can only be moved (MoveToVersion), not removed")));
            }
            (Some(to), _) if !secret.versions.contains_key(to) => {
                return Err(KmsError::InvalidParameter(format!("secret `{name}` has no version `{to}` (known: {})", known())));
            }
            (Some(to), _) => secret.move_stage(stage, &to.clone(), &stamp),
            (None, Some(_)) => {
                secret.stages.insert(stage.clone(), (None, stamp));
            }
        }
        Ok(secret.metadata(name))
    }

    /// `DeleteSecret`: schedules deletion after the recovery window (now when forced).
    pub fn delete_secret(&self, request: &wire::DeleteSecretRequest) -> Result<String, KmsError> {
        let name = &request.secret_name;
        let planned = if request.force_delete_without_recovery {
            if request.recovery_window_in_days.is_some() {
                return Err(KmsError::InvalidParameter("give RecoveryWindowInDays or ForceDeleteWithoutRecovery, not both".into()));
            }
            now_ms()
        } else {
            let days = request.recovery_window_in_days.unwrap_or(MAX_RECOVERY_DAYS);
            if !(MIN_RECOVERY_DAYS..=MAX_RECOVERY_DAYS).contains(&days) {
                return Err(KmsError::InvalidParameter(format!(
                    "RecoveryWindowInDays is {days}; it must be {MIN_RECOVERY_DAYS} to {MAX_RECOVERY_DAYS} (or ForceDeleteWithoutRecovery)"
                )));
            }
            now_ms() + u64::from(days) * DAY_MS
        };
        let stamp = self.tick();
        let mut secrets = self.secrets_write();
        let secret =
            secrets.secrets.get_mut(name).filter(|s| !s.purged(now_ms())).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        if secret.planned_delete_ms.is_some() && !request.force_delete_without_recovery {
            return Err(KmsError::SecretPendingDeletion {
                name: name.clone(),
                planned: rfc3339(secret.planned_delete_ms.unwrap_or(planned)),
            });
        }
        (secret.planned_delete_ms, secret.deletion_stamp) = (Some(planned), stamp);
        Ok(rfc3339(planned))
    }

    /// `RestoreSecret`: cancels a scheduled deletion.
    pub fn restore_secret(&self, name: &str) -> Result<SecretMetadata, KmsError> {
        let stamp = self.tick();
        let mut secrets = self.secrets_write();
        let secret =
            secrets.secrets.get_mut(name).filter(|s| !s.purged(now_ms())).ok_or_else(|| KmsError::SecretNotFound(name.to_owned()))?;
        if secret.planned_delete_ms.is_none() {
            return Err(KmsError::InvalidParameter(format!("secret `{name}` is not scheduled for deletion: there is nothing to restore")));
        }
        (secret.planned_delete_ms, secret.deletion_stamp) = (None, stamp);
        Ok(secret.metadata(name))
    }

    /// The KMS key of secret `name` (any state but purged), for policy checks.
    pub fn secret_key_id(&self, name: &str) -> Option<String> {
        self.secrets_read().secrets.get(name).filter(|s| !s.purged(now_ms())).map(|s| s.encryption_key_id.clone())
    }
}

fn parse<T: serde::de::DeserializeOwned>(action: Action, body: &[u8]) -> Result<T, KmsError> {
    serde_json::from_slice(body)
        .map_err(|e| KmsError::InvalidParameter(format!("the body is not a valid {action} request: {}", crate::persist::json_problem(&e))))
}

/// Serves one secrets-manager action. `authorize` checks the second permission some actions need
/// on the secret's KMS key (`kms:Decrypt` to read a value, `kms:Encrypt` to write one); `disabled`
/// are the keys a `key_disabled` fault disables.
pub(crate) fn execute(
    store: &KeyStore,
    action: Action,
    body: &[u8],
    disabled: &BTreeSet<String>,
    authorize: Authorize<'_>,
) -> Result<SecretCall, KmsError> {
    let key_gate = |key_id: &str, needs: Action| -> Result<(), KmsError> {
        if disabled.contains(key_id) {
            return Err(KmsError::KeyNotEnabled { key_id: key_id.to_owned(), state: crate::api::KeyState::Disabled });
        }
        authorize(needs, &format!("key/{key_id}"))
    };
    let with_key = |reply, key_id: String, version: String| SecretCall { key: Some((key_id, version)), reply };
    match action {
        Action::CreateSecret => {
            let request: wire::CreateSecretRequest = parse(action, body)?;
            key_gate(&request.encryption_key_id, Action::Encrypt)?;
            let (response, version) = store.create_secret(&request)?;
            Ok(with_key(SecretReply::Version(response), request.encryption_key_id, version))
        }
        Action::PutSecretValue | Action::RotateSecret => {
            let (name, data, version_id, stages) = if action == Action::PutSecretValue {
                let r: wire::PutSecretValueRequest = parse(action, body)?;
                (r.secret_name.clone(), r.secret_data.clone(), r.version_id.clone(), r.version_stages.clone())
            } else {
                let r: wire::RotateSecretRequest = parse(action, body)?;
                (r.secret_name.clone(), r.secret_data.clone().unwrap_or_else(random_password), None, Vec::new())
            };
            let data = zeroize::Zeroizing::new(data);
            if let Some(key_id) = store.secret_key_id(&name) {
                key_gate(&key_id, Action::Encrypt)?;
            }
            let (response, key_id, version) = store.put_secret_value(&name, &data, version_id, &stages)?;
            Ok(with_key(SecretReply::Version(response), key_id, version))
        }
        Action::GetSecretValue => {
            let request: wire::GetSecretValueRequest = parse(action, body)?;
            if let Some(key_id) = store.secret_key_id(&request.secret_name) {
                key_gate(&key_id, Action::Decrypt)?;
            }
            let (response, key_id, version) = store.get_secret_value(&request)?;
            Ok(with_key(SecretReply::Value(response), key_id, version))
        }
        Action::ListSecrets => Ok(SecretCall {
            key: None,
            reply: SecretReply::List(ListSecretsResponse { secret_list: store.list_secrets(), request_id: String::new() }),
        }),
        Action::DescribeSecret | Action::RestoreSecret => {
            let request: wire::SecretRequest = parse(action, body)?;
            let secret = if action == Action::DescribeSecret {
                store.describe_secret(&request.secret_name)?
            } else {
                store.restore_secret(&request.secret_name)?
            };
            Ok(SecretCall { key: None, reply: SecretReply::Describe(DescribeSecretResponse { secret, request_id: String::new() }) })
        }
        Action::UpdateSecretVersionStage => {
            let request: wire::UpdateSecretVersionStageRequest = parse(action, body)?;
            let secret = store.update_secret_version_stage(&request)?;
            Ok(SecretCall { key: None, reply: SecretReply::Describe(DescribeSecretResponse { secret, request_id: String::new() }) })
        }
        Action::DeleteSecret => {
            let request: wire::DeleteSecretRequest = parse(action, body)?;
            let planned_delete_time = store.delete_secret(&request)?;
            let reply = DeleteSecretResponse { secret_name: request.secret_name, planned_delete_time, request_id: String::new() };
            Ok(SecretCall { key: None, reply: SecretReply::Delete(reply) })
        }
        other => Err(KmsError::InternalFailure(format!("{other} is not a secrets-manager action"))),
    }
}

impl SecretReply {
    /// Sets the answer's request id.
    pub(crate) fn with_request_id(mut self, request_id: &str) -> Self {
        let id = request_id.to_owned();
        match &mut self {
            Self::Version(r) => r.request_id = id,
            Self::Value(r) => r.request_id = id,
            Self::List(r) => r.request_id = id,
            Self::Describe(r) => r.request_id = id,
            Self::Delete(r) => r.request_id = id,
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::KeySpec;
    use crate::crypto::SealingKey;

    fn store() -> KeyStore {
        let store = KeyStore::new("a");
        store.create_key("k", KeySpec::Aes256).unwrap();
        store
    }

    fn create(store: &KeyStore, name: &str, data: &str) -> String {
        let request = wire::CreateSecretRequest {
            secret_name: name.into(),
            secret_data: data.into(),
            encryption_key_id: "k".into(),
            ..Default::default()
        };
        store.create_secret(&request).unwrap().0.version_id
    }

    fn get(store: &KeyStore, name: &str, version_id: Option<&str>, stage: Option<VersionStage>) -> Result<String, KmsError> {
        let request =
            wire::GetSecretValueRequest { secret_name: name.into(), version_id: version_id.map(Into::into), version_stage: stage };
        store.get_secret_value(&request).map(|(r, _, _)| r.secret_data)
    }

    #[test]
    fn versions_and_stages_move_like_a_cloud_secrets_manager() {
        let store = store();
        let first = create(&store, "db", "one");
        let (second, _, _) = store.put_secret_value("db", "two", None, &[]).unwrap();
        assert_eq!(second.version_stages, [VersionStage::Current]);
        assert_eq!(get(&store, "db", None, None).unwrap(), "two");
        assert_eq!(get(&store, "db", None, Some(VersionStage::Previous)).unwrap(), "one");
        assert_eq!(get(&store, "db", Some(&first), None).unwrap(), "one");
        assert!(matches!(get(&store, "db", Some(&first), Some(VersionStage::Current)), Err(KmsError::InvalidParameter(_))));
        // Roll back: ACSCurrent to the first version, ACSPrevious follows.
        let request = wire::UpdateSecretVersionStageRequest {
            secret_name: "db".into(),
            version_stage: VersionStage::Current,
            move_to_version: Some(first.clone()),
            remove_from_version: None,
        };
        let metadata = store.update_secret_version_stage(&request).unwrap();
        assert_eq!(metadata.versions[0].version_stages, [VersionStage::Current]);
        assert_eq!(metadata.versions[1].version_stages, [VersionStage::Previous]);
        assert_eq!(get(&store, "db", None, None).unwrap(), "one");
        assert!(matches!(
            store.create_secret(&wire::CreateSecretRequest {
                secret_name: "db".into(),
                encryption_key_id: "k".into(),
                ..Default::default()
            }),
            Err(KmsError::SecretAlreadyExists(_))
        ));
    }

    #[test]
    fn deletion_has_a_recovery_window_and_force_deletes_at_once() {
        let store = store();
        create(&store, "db", "one");
        let bad = store.delete_secret(&wire::DeleteSecretRequest {
            secret_name: "db".into(),
            recovery_window_in_days: Some(3),
            ..Default::default()
        });
        assert!(matches!(bad, Err(KmsError::InvalidParameter(m)) if m.contains("7 to 30")));
        store.delete_secret(&wire::DeleteSecretRequest { secret_name: "db".into(), ..Default::default() }).unwrap();
        assert!(matches!(get(&store, "db", None, None), Err(KmsError::SecretPendingDeletion { .. })));
        assert!(store.describe_secret("db").unwrap().planned_delete_time.is_some());
        store.restore_secret("db").unwrap();
        assert_eq!(get(&store, "db", None, None).unwrap(), "one");
        store
            .delete_secret(&wire::DeleteSecretRequest {
                secret_name: "db".into(),
                force_delete_without_recovery: true,
                ..Default::default()
            })
            .unwrap();
        assert!(matches!(get(&store, "db", None, None), Err(KmsError::SecretNotFound(_))));
        assert!(store.list_secrets().is_empty());
        // The name can be used again: a new incarnation.
        create(&store, "db", "fresh");
        assert_eq!(get(&store, "db", None, None).unwrap(), "fresh");
    }

    #[test]
    fn values_are_sealed_under_the_key_and_replicas_converge() {
        let transport = SealingKey::random();
        let a = store();
        create(&a, "db", "hunter2");
        let snapshot = a.snapshot(&transport);
        assert!(!serde_json::to_string(&snapshot).unwrap().contains("hunter2"), "only ciphertext leaves the node");
        let b = KeyStore::from_snapshot("b", &snapshot, &transport).unwrap();
        assert_eq!(get(&b, "db", None, None).unwrap(), "hunter2");
        a.put_secret_value("db", "from-a", None, &[]).unwrap();
        b.put_secret_value("db", "from-b", None, &[]).unwrap();
        a.merge(&b.snapshot(&transport), &transport).unwrap();
        b.merge(&a.snapshot(&transport), &transport).unwrap();
        assert_eq!(a.describe_secret("db").unwrap(), b.describe_secret("db").unwrap());
        assert_eq!(a.describe_secret("db").unwrap().versions.len(), 3);
        assert_eq!(get(&a, "db", None, None).unwrap(), get(&b, "db", None, None).unwrap());
        // A disabled key makes the value unreadable.
        a.set_state("k", crate::api::KeyState::Disabled).unwrap();
        assert!(matches!(get(&a, "db", None, None), Err(KmsError::KeyNotEnabled { .. })));
    }
}
