//! Parse and build the values kube-apiserver stores in etcd, one per encryption provider:
//!
//! | provider | stored value |
//! |---|---|
//! | identity | the object itself (protobuf starting with `k8s\0`, or JSON) |
//! | aescbc / aesgcm / secretbox | `k8s:enc:<cipher>:v1:<key name>:` + sealed object |
//! | kms v1 | `k8s:enc:kms:v1:<provider>:` + u16 BE length + wrapped DEK + AES-GCM sealed object |
//! | kms v2 | `k8s:enc:kms:v2:<provider>:` + protobuf `EncryptedObject` |
//!
//! Parsing never panics and never needs a key; opening needs the key side (see [`crate::decode`]).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use prost::Message;

use crate::limits::{self, ValidationError};
use crate::proto::storage::{EncryptedDekSourceType, EncryptedObject};
use crate::seal::{self, SealError};

/// What every encrypted value starts with.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// The encryption provider that wrote a value. Its variants, in the order the migration path
/// takes them, are [`ProviderKind::ALL`]; the list and the names are generated from the
/// variants, so a new variant cannot be left out of either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub enum ProviderKind {
    /// No encryption.
    Identity,
    /// `aescbc` with a static key.
    AesCbc,
    /// `aesgcm` with a static key.
    AesGcm,
    /// `secretbox` with a static key.
    Secretbox,
    /// `kms` with `apiVersion: v1`.
    #[strum(serialize = "kms-v1")]
    KmsV1,
    /// `kms` with `apiVersion: v2`.
    #[strum(serialize = "kms-v2")]
    KmsV2,
}

impl ProviderKind {
    /// Every provider kind, in the order the migration path takes them.
    pub const ALL: &'static [ProviderKind] = <Self as strum::VariantArray>::VARIANTS;

    /// The prefix before the key or provider name (`None` for identity).
    pub fn prefix(self) -> Option<&'static str> {
        match self {
            Self::Identity => None,
            Self::AesCbc => Some("k8s:enc:aescbc:v1:"),
            Self::AesGcm => Some("k8s:enc:aesgcm:v1:"),
            Self::Secretbox => Some("k8s:enc:secretbox:v1:"),
            Self::KmsV1 => Some("k8s:enc:kms:v1:"),
            Self::KmsV2 => Some("k8s:enc:kms:v2:"),
        }
    }

    /// The name used in EncryptionConfiguration and in reports (`kms-v2` for KMS v2).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The static-key ciphers (`aescbc`, `aesgcm`, `secretbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StaticCipher {
    /// AES-CBC with PKCS#7 padding (unauthenticated).
    AesCbc,
    /// AES-GCM, the etcd key as additional data.
    AesGcm,
    /// XSalsa20-Poly1305.
    Secretbox,
}

impl StaticCipher {
    /// The provider kind this cipher belongs to.
    pub fn kind(self) -> ProviderKind {
        match self {
            Self::AesCbc => ProviderKind::AesCbc,
            Self::AesGcm => ProviderKind::AesGcm,
            Self::Secretbox => ProviderKind::Secretbox,
        }
    }

    /// Seals `plaintext` under `key`; `etcd_key` is bound where the cipher authenticates it.
    pub fn seal(self, key: &[u8], plaintext: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, SealError> {
        match self {
            Self::AesCbc => seal::aes_cbc_seal(key, plaintext),
            Self::AesGcm => seal::aes_gcm_seal(key, plaintext, etcd_key),
            Self::Secretbox => seal::secretbox_seal(key, plaintext),
        }
    }

    /// Opens what [`StaticCipher::seal`] sealed.
    pub fn open(self, key: &[u8], sealed: &[u8], etcd_key: &[u8]) -> Result<Vec<u8>, SealError> {
        match self {
            Self::AesCbc => seal::aes_cbc_open(key, sealed),
            Self::AesGcm => seal::aes_gcm_open(key, sealed, etcd_key),
            Self::Secretbox => seal::secretbox_open(key, sealed),
        }
    }
}

/// One value as kube-apiserver stores it in etcd.
#[derive(Clone, PartialEq)]
pub enum Envelope {
    /// Written by the `identity` provider: the serialized object, unencrypted.
    Identity {
        /// The object bytes.
        data: Bytes,
    },
    /// Written by `aescbc`, `aesgcm` or `secretbox`.
    Static {
        /// Which cipher.
        cipher: StaticCipher,
        /// The key's `name` from the EncryptionConfiguration.
        key_name: String,
        /// The sealed object (layout in [`crate::seal`]).
        sealed: Bytes,
    },
    /// Written by a `kms` provider with `apiVersion: v1`.
    KmsV1 {
        /// The provider's `name`.
        provider: String,
        /// The DEK as the plugin wrapped it.
        encrypted_dek: Bytes,
        /// The object sealed with AES-GCM under the DEK (AES-CBC before Kubernetes 1.25).
        sealed: Bytes,
    },
    /// Written by a `kms` provider with `apiVersion: v2`.
    KmsV2 {
        /// The provider's `name`.
        provider: String,
        /// The stored object: sealed data, key id, wrapped DEK or seed, annotations.
        object: EncryptedObject,
    },
}

/// A DEK or seed as a KMS plugin wrapped it, with what the plugin returned alongside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedDekSource {
    /// Whether the plaintext behind `encrypted` is a DEK or a seed.
    pub source_type: EncryptedDekSourceType,
    /// The plugin's `EncryptResponse.ciphertext`.
    pub encrypted: Bytes,
    /// The plugin's `EncryptResponse.key_id`.
    pub key_id: String,
    /// The plugin's `EncryptResponse.annotations`.
    pub annotations: BTreeMap<String, Bytes>,
}

/// Why a stored value could not be parsed, built or opened. Never carries key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The value starts with `k8s:enc:` but names no provider kube-apiserver writes.
    #[error(
        "unknown encryption prefix `{0}`: expected k8s:enc:aescbc:v1:, k8s:enc:aesgcm:v1:, k8s:enc:secretbox:v1:, k8s:enc:kms:v1: or k8s:enc:kms:v2:"
    )]
    UnknownPrefix(String),
    /// The provider or key name after the prefix is missing, not UTF-8, or contains `:`.
    #[error("{kind} envelope has an invalid name: {reason}")]
    InvalidName {
        /// The provider kind.
        kind: ProviderKind,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A KMS v1 value too short for the length-prefixed DEK it announces.
    #[error("kms-v1 envelope is truncated: it announces a {announced}-byte encrypted DEK but only {available} bytes follow")]
    KmsV1Truncated {
        /// The DEK length the prefix announces.
        announced: usize,
        /// The bytes that follow it.
        available: usize,
    },
    /// A KMS v1 DEK longer than the 2-byte length prefix can express.
    #[error("kms-v1 encrypted DEK is {0} bytes; the envelope's 2-byte length prefix holds at most 65535")]
    KmsV1DekTooLong(usize),
    /// The bytes after a KMS v2 prefix are not an `EncryptedObject`.
    #[error("kms-v2 EncryptedObject does not decode as protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// The `EncryptedObject` breaks a rule the apiserver applies.
    #[error("kms-v2 EncryptedObject is invalid: {0}")]
    Invalid(#[from] ValidationError),
    /// The cipher refused to seal or open the data.
    #[error(transparent)]
    Seal(#[from] SealError),
}

fn check_name(kind: ProviderKind, name: &str) -> Result<(), EnvelopeError> {
    if name.is_empty() {
        return Err(EnvelopeError::InvalidName { kind, reason: "it is empty" });
    }
    if name.contains(':') {
        return Err(EnvelopeError::InvalidName { kind, reason: "it must not contain ':'" });
    }
    Ok(())
}

/// Shows up to 40 bytes of an unknown prefix, escaped, for an error message.
fn shown_prefix(raw: &[u8]) -> String {
    let end = raw.iter().skip(ENCRYPTED_PREFIX.len()).position(|b| *b == b':').map_or(raw.len(), |i| i + ENCRYPTED_PREFIX.len() + 1);
    raw[..end.min(40)].escape_ascii().to_string()
}

impl Envelope {
    /// Parses a raw etcd value. Anything not starting with `k8s:enc:` is identity data.
    pub fn parse(raw: &[u8]) -> Result<Self, EnvelopeError> {
        if !raw.starts_with(ENCRYPTED_PREFIX) {
            return Ok(Self::Identity { data: Bytes::copy_from_slice(raw) });
        }
        let kind = ProviderKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.prefix().is_some_and(|p| raw.starts_with(p.as_bytes())))
            .ok_or_else(|| EnvelopeError::UnknownPrefix(shown_prefix(raw)))?;
        let after_prefix = &raw[kind.prefix().map_or(0, str::len)..];
        let name_end = after_prefix.iter().position(|b| *b == b':').ok_or(EnvelopeError::InvalidName { kind, reason: "no ':' ends it" })?;
        let name = std::str::from_utf8(&after_prefix[..name_end])
            .map_err(|_| EnvelopeError::InvalidName { kind, reason: "it is not UTF-8" })?
            .to_owned();
        check_name(kind, &name)?;
        let payload = &after_prefix[name_end + 1..];
        match kind {
            ProviderKind::Identity => unreachable!("identity has no prefix"),
            ProviderKind::AesCbc | ProviderKind::AesGcm | ProviderKind::Secretbox => {
                let cipher = match kind {
                    ProviderKind::AesCbc => StaticCipher::AesCbc,
                    ProviderKind::AesGcm => StaticCipher::AesGcm,
                    _ => StaticCipher::Secretbox,
                };
                Ok(Self::Static { cipher, key_name: name, sealed: Bytes::copy_from_slice(payload) })
            }
            ProviderKind::KmsV1 => {
                let available = payload.len().saturating_sub(2);
                let [hi, lo, rest @ ..] = payload else {
                    return Err(EnvelopeError::KmsV1Truncated { announced: 2, available: payload.len() });
                };
                let announced = usize::from(u16::from_be_bytes([*hi, *lo]));
                if announced > rest.len() {
                    return Err(EnvelopeError::KmsV1Truncated { announced, available });
                }
                let (dek, sealed) = rest.split_at(announced);
                Ok(Self::KmsV1 { provider: name, encrypted_dek: Bytes::copy_from_slice(dek), sealed: Bytes::copy_from_slice(sealed) })
            }
            ProviderKind::KmsV2 => {
                let object = EncryptedObject::decode(payload)?;
                limits::validate_encrypted_object(&object)?;
                Ok(Self::KmsV2 { provider: name, object })
            }
        }
    }

    /// The provider kind that wrote this value.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Identity { .. } => ProviderKind::Identity,
            Self::Static { cipher, .. } => cipher.kind(),
            Self::KmsV1 { .. } => ProviderKind::KmsV1,
            Self::KmsV2 { .. } => ProviderKind::KmsV2,
        }
    }

    /// The key name (static ciphers) or provider name (KMS); `None` for identity.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Identity { .. } => None,
            Self::Static { key_name, .. } => Some(key_name),
            Self::KmsV1 { provider, .. } | Self::KmsV2 { provider, .. } => Some(provider),
        }
    }

    /// The bytes kube-apiserver would store for this value. Fails only for a hand-built KMS v1
    /// value whose wrapped DEK does not fit the 2-byte length prefix.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::new();
        if let (Some(prefix), Some(name)) = (self.kind().prefix(), self.name()) {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
        }
        match self {
            Self::Identity { data } => out.extend_from_slice(data),
            Self::Static { sealed, .. } => out.extend_from_slice(sealed),
            Self::KmsV1 { encrypted_dek, sealed, .. } => {
                let len = u16::try_from(encrypted_dek.len()).map_err(|_| EnvelopeError::KmsV1DekTooLong(encrypted_dek.len()))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(encrypted_dek);
                out.extend_from_slice(sealed);
            }
            // Encoding into a Vec only fails when the buffer cannot grow, which a Vec always can.
            Self::KmsV2 { object, .. } => out.extend_from_slice(&object.encode_to_vec()),
        }
        Ok(out)
    }

    /// Seals `plaintext` for `etcd_key` with a static cipher, as `aescbc`/`aesgcm`/`secretbox` do.
    pub fn seal_static(cipher: StaticCipher, key_name: &str, key: &[u8], plaintext: &[u8], etcd_key: &[u8]) -> Result<Self, EnvelopeError> {
        check_name(cipher.kind(), key_name)?;
        let sealed = cipher.seal(key, plaintext, etcd_key)?;
        Ok(Self::Static { cipher, key_name: key_name.to_owned(), sealed: sealed.into() })
    }

    /// Seals `plaintext` for `etcd_key` under `dek` as a KMS v1 provider does; `encrypted_dek` is
    /// the plugin's wrapping of `dek`.
    pub fn seal_kms_v1(provider: &str, dek: &[u8], encrypted_dek: &[u8], plaintext: &[u8], etcd_key: &[u8]) -> Result<Self, EnvelopeError> {
        check_name(ProviderKind::KmsV1, provider)?;
        if encrypted_dek.len() > usize::from(u16::MAX) {
            return Err(EnvelopeError::KmsV1DekTooLong(encrypted_dek.len()));
        }
        let sealed = seal::aes_gcm_seal(dek, plaintext, etcd_key)?;
        Ok(Self::KmsV1 { provider: provider.to_owned(), encrypted_dek: Bytes::copy_from_slice(encrypted_dek), sealed: sealed.into() })
    }

    /// Seals `plaintext` for `etcd_key` as a KMS v2 provider does: with the DEK itself
    /// (`AES_GCM_KEY`) or a key derived from the seed (`HKDF_SHA256_XNONCE_AES_GCM_SEED`).
    /// `dek_source` is the plaintext behind `wrapped.encrypted`.
    pub fn seal_kms_v2(
        provider: &str,
        wrapped: &WrappedDekSource,
        dek_source: &[u8],
        plaintext: &[u8],
        etcd_key: &[u8],
    ) -> Result<Self, EnvelopeError> {
        check_name(ProviderKind::KmsV2, provider)?;
        let encrypted_data = match wrapped.source_type {
            EncryptedDekSourceType::AesGcmKey => seal::aes_gcm_seal(dek_source, plaintext, etcd_key)?,
            EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed => seal::hkdf_seed_seal(dek_source, plaintext, etcd_key)?,
        };
        let object = EncryptedObject {
            encrypted_data: encrypted_data.into(),
            key_id: wrapped.key_id.clone(),
            encrypted_dek_source: wrapped.encrypted.clone(),
            annotations: wrapped.annotations.clone(),
            encrypted_dek_source_type: wrapped.source_type.into(),
        };
        limits::validate_encrypted_object(&object)?;
        Ok(Self::KmsV2 { provider: provider.to_owned(), object })
    }
}

/// Describes a value without its payload bytes, so a `{:?}` never prints ciphertext or plaintext.
impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Identity { data } => f.debug_struct("Identity").field("len", &data.len()).finish(),
            Self::Static { cipher, key_name, sealed } => {
                f.debug_struct("Static").field("cipher", cipher).field("key_name", key_name).field("len", &sealed.len()).finish()
            }
            Self::KmsV1 { provider, encrypted_dek, sealed } => f
                .debug_struct("KmsV1")
                .field("provider", provider)
                .field("encrypted_dek_len", &encrypted_dek.len())
                .field("len", &sealed.len())
                .finish(),
            Self::KmsV2 { provider, object } => f
                .debug_struct("KmsV2")
                .field("provider", provider)
                .field("key_id", &object.key_id)
                .field("source_type", &object.encrypted_dek_source_type().as_str_name())
                .field("annotations", &object.annotations.keys().collect::<Vec<_>>())
                .field("len", &object.encrypted_data.len())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_kinds_in_migration_order_with_their_names() {
        let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["identity", "aescbc", "aesgcm", "secretbox", "kms-v1", "kms-v2"]);
    }
}
