//! Every error type of the server side, in one place.
//!
//! Messages name the problem and, where there is one, the fix. They never contain key
//! material, plaintext, secret keys or unseal shares: at most a key id, a version id, an
//! access key (an identifier, not a secret), a path or a fingerprint.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::api::{ErrorCode, KeyState};

/// Why a KMS call was refused. Each variant maps to one [`ErrorCode`] (and so to an HTTP status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KmsError {
    /// A field is missing or malformed.
    #[error("{0}")]
    InvalidParameter(String),
    /// The ciphertext blob is malformed, altered, or not from this KMS.
    #[error("{0}")]
    InvalidCiphertext(String),
    /// The access key is unknown (or the header is missing).
    #[error("access key `{0}` is not known to this KMS: check the AccessKey of the credential")]
    InvalidAccessKeyId(String),
    /// The signature does not verify under the access key's secret key.
    #[error(
        "the request signature does not match the one computed with the secret key of access key `{0}`: \
         check the SecretKey, and that method, path, timestamp, nonce and body are signed exactly as sent"
    )]
    SignatureDoesNotMatch(String),
    /// The request timestamp is too far from the server's clock.
    #[error(
        "request timestamp {timestamp_ms} is {skew_ms} ms away from the server's clock (limit {max_skew_ms} ms): sync the client's clock"
    )]
    RequestTimeTooSkewed {
        /// The timestamp the request carried (Unix ms).
        timestamp_ms: u64,
        /// How far it is from the server's clock.
        skew_ms: u64,
        /// The allowed skew.
        max_skew_ms: u64,
    },
    /// The nonce was seen before within the skew window.
    #[error("nonce `{nonce}` was already used by access key `{access_key}`: every request needs a fresh nonce (a replayed request)")]
    RequestReplayed {
        /// The access key that signed the request.
        access_key: String,
        /// The repeated nonce.
        nonce: String,
    },
    /// The operation is denied (an injected `deny` fault).
    #[error("{action} is denied for this credential")]
    Forbidden {
        /// The denied action.
        action: String,
    },
    /// No such key.
    #[error("key `{0}` not found")]
    KeyNotFound(String),
    /// The key exists, but not the version a ciphertext names.
    #[error("version `{version_id}` of key `{key_id}` not found")]
    KeyVersionNotFound {
        /// The key.
        key_id: String,
        /// The missing version.
        version_id: String,
    },
    /// CreateKey for an id that exists.
    #[error("key `{0}` already exists")]
    KeyAlreadyExists(String),
    /// The key is disabled or pending deletion.
    #[error("key `{key_id}` is {state:?}: it can neither encrypt nor decrypt (EnableKey re-enables a disabled key)")]
    KeyNotEnabled {
        /// The key.
        key_id: String,
        /// Its state.
        state: KeyState,
    },
    /// One version of the key is disabled (admin `…/versions/{version}/disable`) or destroyed
    /// (`…/destroy`: for good).
    #[error("version `{version_id}` of key `{key_id}` {}", if *destroyed {
        "was destroyed: its material is gone and nothing it encrypted can be decrypted again".to_owned()
    } else {
        format!("is disabled: it can neither encrypt nor decrypt (enable it with POST /admin/keys/{key_id}/versions/{version_id}/enable)")
    })]
    KeyVersionNotEnabled {
        /// The key.
        key_id: String,
        /// The disabled version.
        version_id: String,
        /// Whether it was destroyed rather than disabled.
        destroyed: bool,
    },
    /// Over the request quota (an injected `throttle` fault).
    #[error("request quota exceeded: retry after {retry_after_secs} s")]
    Throttling {
        /// Whole seconds until a request would be admitted (the `Retry-After` header).
        retry_after_secs: u64,
    },
    /// An internal failure, or an injected `error_rate` fault.
    #[error("{0}")]
    InternalFailure(String),
    /// The service is sealed and needs unseal shares.
    #[error("the KMS is sealed: POST unseal shares to /admin/unseal until the threshold is reached")]
    Sealed,
    /// The node cannot serve now (starting up, syncing, shutting down).
    #[error("{0}")]
    ServiceUnavailable(String),
    /// No such secret (or version, or stage) in the secrets manager.
    #[error("secret `{0}` not found")]
    SecretNotFound(String),
    /// CreateSecret for a name that exists.
    #[error("secret `{0}` already exists: PutSecretValue adds a version to it")]
    SecretAlreadyExists(String),
    /// The secret is scheduled for deletion.
    #[error("secret `{name}` is scheduled for deletion at {planned}: RestoreSecret cancels the deletion")]
    SecretPendingDeletion {
        /// The secret.
        name: String,
        /// When it is gone for good, RFC 3339.
        planned: String,
    },
    /// The access key's policy does not allow the call.
    #[error(
        "access key `{access_key}` is not allowed kms:{action} on `{resource}` by its access policy: \
         add a statement allowing it (PUT /admin/policies/{access_key})"
    )]
    AccessDenied {
        /// The access key.
        access_key: String,
        /// The action refused.
        action: String,
        /// The resource (`key/<KeyId>`, `secret/<SecretName>`).
        resource: String,
    },
}

impl KmsError {
    /// The wire error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidParameter(_) => ErrorCode::InvalidParameter,
            Self::InvalidCiphertext(_) => ErrorCode::InvalidCiphertext,
            Self::InvalidAccessKeyId(_) => ErrorCode::InvalidAccessKeyId,
            Self::SignatureDoesNotMatch(_) => ErrorCode::SignatureDoesNotMatch,
            Self::RequestTimeTooSkewed { .. } => ErrorCode::RequestTimeTooSkewed,
            Self::RequestReplayed { .. } => ErrorCode::RequestReplayed,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::KeyNotFound(_) | Self::KeyVersionNotFound { .. } => ErrorCode::KeyNotFound,
            Self::KeyAlreadyExists(_) => ErrorCode::KeyAlreadyExists,
            Self::KeyNotEnabled { .. } | Self::KeyVersionNotEnabled { .. } => ErrorCode::KeyNotEnabled,
            Self::Throttling { .. } => ErrorCode::Throttling,
            Self::InternalFailure(_) => ErrorCode::InternalFailure,
            Self::Sealed => ErrorCode::Sealed,
            Self::ServiceUnavailable(_) => ErrorCode::ServiceUnavailable,
            // The secrets manager shares the API's resource-generic codes (see api::secrets).
            Self::SecretNotFound(_) => ErrorCode::KeyNotFound,
            Self::SecretAlreadyExists(_) => ErrorCode::KeyAlreadyExists,
            Self::SecretPendingDeletion { .. } => ErrorCode::KeyNotFound,
            Self::AccessDenied { .. } => ErrorCode::Forbidden,
        }
    }
}

/// An AEAD seal or open failed: wrong key length, wrong key, altered data or other associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authenticated encryption failed: wrong key, altered data or other associated data")]
pub struct AeadError;

/// Why a key-state snapshot (a state file or a replication message) could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot's format number is not one this build reads.
    #[error("snapshot format {0} is not supported (this build reads format 1)")]
    UnsupportedFormat(u32),
    /// The snapshot was sealed under another key than the one at hand.
    #[error("it was sealed under key fingerprint {found}, but this node's key has fingerprint {expected}")]
    WrongSealingKey {
        /// The fingerprint in the snapshot.
        found: String,
        /// The fingerprint of the key at hand.
        expected: String,
    },
    /// A key version's sealed material is malformed or fails authentication.
    #[error("the material of key `{key_id}` version `{version_id}` is malformed or fails authentication")]
    Material {
        /// The key.
        key_id: String,
        /// The version.
        version_id: String,
    },
    /// The snapshot is structurally inconsistent.
    #[error("{0}")]
    Inconsistent(String),
}

/// Why a file in the data dir could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// An I/O error.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("read", "write", "create directory", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but cannot be parsed; it was left untouched.
    #[error(
        "{what} `{}` is corrupted ({detail}); it was left untouched: restore it from a backup, or move it away to start empty",
        path.display()
    )]
    Corrupt {
        /// What the file is ("key state file", "root key file", …).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong (never the file's secret content).
        detail: String,
    },
    /// The key state file does not fit this data dir's root key.
    #[error("key state file `{}` cannot be opened: {source}; it was left untouched", path.display())]
    Snapshot {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: SnapshotError,
    },
}

/// Why a fault profile was refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultProfileError {
    /// The profile file cannot be read.
    #[error("cannot read fault profile `{}`: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML or JSON does not parse into a profile.
    #[error("fault profile{} does not parse: {message}", path.as_ref().map(|p| format!(" `{}`", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// The parser's message (it names line and column, and the field).
        message: String,
    },
    /// A value is out of range.
    #[error("fault profile: `{field}` {problem}")]
    Invalid {
        /// The field, e.g. `error_rate.rate`.
        field: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

/// Why `init` failed or an unseal share was refused.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Share count or threshold out of range.
    #[error("invalid split: {0}")]
    InvalidSplit(String),
    /// `init` on a data dir that already holds state.
    #[error("`{}` already holds {what}: init refuses to overwrite it (pick an empty data dir)", dir.display())]
    AlreadyInitialised {
        /// The data dir.
        dir: PathBuf,
        /// What is there.
        what: &'static str,
    },
    /// The share is not the base64 of a share of the right length.
    #[error("not an unseal share: {0}")]
    MalformedShare(String),
    /// The share was already given in this unseal attempt.
    #[error("this share was already given; progress is {progress} of {threshold}")]
    DuplicateShare {
        /// Shares accepted so far.
        progress: usize,
        /// Shares needed.
        threshold: usize,
    },
    /// The shares do not reconstruct the root key.
    #[error(
        "the {threshold} shares given do not reconstruct this data dir's root key (a share is mistyped or from another init); \
         progress was reset: submit {threshold} shares again"
    )]
    WrongShares {
        /// Shares needed.
        threshold: usize,
    },
    /// The root key is right but the key state could not be opened with it.
    #[error("unsealed the root key, but the key state cannot be opened: {0}; the KMS stays sealed")]
    Open(String),
    /// Reading or writing the data dir failed.
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// Why talking to a cluster peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A peer URL is not `http://host:port`.
    #[error("peer `{url}` is not a valid peer URL ({problem}): use http://host:port")]
    BadPeer {
        /// What was given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The HTTP exchange failed.
    #[error("peer {peer}: {message}")]
    Transport {
        /// The peer URL.
        peer: String,
        /// What happened.
        message: String,
    },
    /// The peer's message is not signed with this cluster's secret.
    #[error("peer {peer}: the snapshot signature does not verify: every node must use the same cluster secret (--cluster-secret)")]
    BadSignature {
        /// The peer URL (or "a peer" for pushes).
        peer: String,
    },
    /// The peer's snapshot cannot be opened.
    #[error("peer {peer}: {source}")]
    Snapshot {
        /// The peer URL.
        peer: String,
        /// Why.
        #[source]
        source: SnapshotError,
    },
}

/// Why [`crate::MockKmsBuilder::start`] failed: bad settings or an unusable data dir.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is invalid or settings conflict; the message names the flag and the fix.
    #[error("{0}")]
    Config(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source} ({hint})", hint = kms_lab_cli_common::hint::listen(source, addr))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The data dir (or a file in it) is unusable.
    #[error("--data-dir: {0}{hint}", hint = data_dir_hint(.0))]
    DataDir(#[from] PersistError),
    /// The seal state is unusable.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// The initial fault profile is invalid.
    #[error(transparent)]
    Faults(#[from] FaultProfileError),
    /// A peer URL is invalid.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The audit log cannot be opened.
    #[error("cannot open the audit log `{}`: {source} (pass --audit-log with a writable path)", path.display())]
    AuditLog {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn data_dir_hint(error: &PersistError) -> &'static str {
    match error {
        PersistError::Io { .. } => " (pass --data-dir a directory this user can create and write)",
        _ => "",
    }
}
