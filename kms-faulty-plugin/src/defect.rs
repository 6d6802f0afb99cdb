//! The defects a faulty plugin can have, one flag value each (`--defect NAME`, repeatable).

use std::collections::BTreeSet;

/// One way to break the KMS plugin contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Defect {
    /// v2 Status answers `version: "v1"`.
    WrongVersion,
    /// v2 Status answers `healthz` other than `ok`.
    Unhealthy,
    /// Status and Encrypt key ids are longer than 1 KiB.
    OversizeKeyId,
    /// Status's key id changes on every call without a rotation.
    UnstableKeyId,
    /// Status answers `ok` from a cached key id without probing the KEK again (aws-encryption-provider PR #139).
    StatusAlwaysOk,
    /// Status and Encrypt keep reporting the first key id forever, even after the KEK rotates.
    IgnoreRotation,
    /// The key id is the KEK's name without its version, so ids repeat after a rollback A→B→A.
    KeyIdWithoutVersion,
    /// Encrypt answers a key id that differs from Status's.
    KeyIdDiffersFromStatus,
    /// Encrypt's ciphertext carries the plaintext in the clear (both APIs).
    EchoPlaintext,
    /// Encrypting the same plaintext again returns the same ciphertext (both APIs).
    Deterministic,
    /// Readable DEK, encodings: the ciphertext also carries the plaintext in base64 (both APIs).
    Base64Dek,
    /// Readable DEK, partial encodings: the ciphertext also carries the plaintext's first 8 bytes in hex (both APIs).
    PartialDek,
    /// Readable DEK, fixed transforms: the ciphertext also carries the plaintext XORed with a fixed key (both APIs).
    XorFixedKey,
    /// Readable DEK, structure: the ciphertext also carries the plaintext through a fixed byte substitution table
    /// (ECB with a one-byte block: equal prefixes, equal blocks and a zero DEK all show) (both APIs).
    Substitution,
    /// Length leak: the plaintext is run-length encoded before it is encrypted, so the ciphertext's length
    /// depends on its content (both APIs).
    CompressThenEncrypt,
    /// Encrypt's ciphertext is padded beyond the apiserver's 1 KiB limit.
    OversizeCiphertext,
    /// Encrypt returns an annotation whose key is not an FQDN (`kms_version`).
    BadAnnotationKey,
    /// Encrypt returns annotations larger than 32 KiB in total.
    OversizeAnnotations,
    /// Encrypt of an empty plaintext succeeds with an empty ciphertext.
    DropsEmptyPayload,
    /// Every Encrypt answers gRPC OK with an empty ciphertext, as a plugin that swallows its KMS's
    /// error does (both APIs; it crashed `kms-lab conformance`, issue 28).
    EmptyCiphertext,
    /// The request uid is bound into the ciphertext: Decrypt under another uid fails.
    UidAffectsResult,
    /// Encrypt never answers (both APIs).
    HangOnEncrypt,
    /// Decrypt returns a wrong plaintext (last byte flipped) (both APIs).
    CorruptsPlaintext,
    /// Decrypt answers success with random bytes when the ciphertext is garbage, tampered or truncated (both APIs).
    DecryptIgnoresTamper,
    /// Decrypt ignores the annotations (and key id) it is sent.
    IgnoresAnnotations,
    /// After the key id changes, Decrypt refuses ciphertexts of older key ids.
    ForgetsOldKek,
    /// Concurrent Decrypt calls share one buffer: under load a caller gets another caller's plaintext (both APIs).
    RacyUnderLoad,
    /// Decrypt refusals use `Unavailable` instead of `InvalidArgument` (both APIs).
    WrongStatusCode,
    /// Encrypt refuses plaintexts over 1 KiB with an error that quotes them in hex (both APIs).
    PlaintextInError,
    /// v1beta1 Version answers `version: "v1"`.
    V1beta1BadVersion,
    /// v1beta1 Version answers `runtime_version: "latest"` (not semver).
    V1beta1BadRuntimeVersion,
}

/// A set of defects.
#[derive(Debug, Clone, Default)]
pub struct Defects(BTreeSet<Defect>);

impl Defects {
    /// The set of `defects`.
    pub fn new(defects: impl IntoIterator<Item = Defect>) -> Self {
        Self(defects.into_iter().collect())
    }

    /// Whether `defect` is switched on.
    pub fn has(&self, defect: Defect) -> bool {
        self.0.contains(&defect)
    }

    /// Whether any defect changes the key ids the plugin reports (Decrypt then ignores the key id it is sent).
    pub fn mangles_key_id(&self) -> bool {
        [
            Defect::OversizeKeyId,
            Defect::IgnoreRotation,
            Defect::KeyIdWithoutVersion,
            Defect::KeyIdDiffersFromStatus,
            Defect::IgnoresAnnotations,
        ]
        .iter()
        .any(|d| self.has(*d))
    }

    /// The switched-on defects.
    pub fn iter(&self) -> impl Iterator<Item = Defect> + '_ {
        self.0.iter().copied()
    }
}
