//! Open a stored value back to the object it holds, given the key side: a plugin socket for
//! KMS values, named keys for the static ciphers.

use std::collections::BTreeMap;
use std::future::Future;

use bytes::Bytes;
use zeroize::Zeroizing;

use crate::client::PluginClient;
use crate::envelope::{Envelope, EnvelopeError, ProviderKind, StaticCipher};
use crate::proto::storage::EncryptedDekSourceType;
use crate::proto::{KMS_V1BETA1_API_VERSION, v1beta1, v2};
use crate::seal::{self, SealError};

/// Why a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value itself is malformed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// No key was given for the provider that wrote the value.
    #[error("no key for {what}: {hint}")]
    NoKey {
        /// The provider and key name.
        what: String,
        /// How to give one.
        hint: &'static str,
    },
    /// The plugin refused to unwrap the DEK or seed.
    #[error("the plugin could not unwrap the DEK: {code:?}: {message}")]
    Unwrap {
        /// The gRPC status code.
        code: tonic::Code,
        /// The plugin's message.
        message: String,
    },
    /// The value was written by another provider than the one expected.
    #[error("the value was written by {found}, not by the expected {expected}: kube-apiserver finds no matching provider for it")]
    ProviderMismatch {
        /// The provider kind and name expected, e.g. `kms-v2 provider \`lab-kms\``.
        expected: String,
        /// The provider kind and name the value carries.
        found: String,
    },
    /// The DEK unwrapped, but the data did not open with it.
    #[error("the data did not open with the unwrapped DEK: {0}")]
    Seal(#[from] SealError),
}

/// The key side a stored value needs: unwrapping for KMS values, named keys for static ciphers.
/// Every method defaults to "not available", so a source implements only what it has.
pub trait KeySource {
    /// Unwraps a KMS v2 DEK or seed.
    fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, DecodeError>> + Send {
        let _ = (encrypted, key_id, annotations);
        async {
            Err(DecodeError::NoKey { what: "a kms-v2 provider".into(), hint: "give the plugin's socket (--plugin unix:///path.sock)" })
        }
    }

    /// Unwraps a KMS v1 DEK.
    fn unwrap_v1(&self, encrypted: &[u8]) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, DecodeError>> + Send {
        let _ = encrypted;
        async {
            Err(DecodeError::NoKey { what: "a kms-v1 provider".into(), hint: "give the plugin's socket (--plugin unix:///path.sock)" })
        }
    }

    /// The key of a static cipher, by its name in the EncryptionConfiguration.
    fn static_key(&self, cipher: StaticCipher, key_name: &str) -> Option<Zeroizing<Vec<u8>>> {
        let _ = (cipher, key_name);
        None
    }
}

fn unwrap_error(status: tonic::Status) -> DecodeError {
    DecodeError::Unwrap { code: status.code(), message: status.message().to_owned() }
}

impl KeySource for PluginClient {
    async fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        let request = v2::DecryptRequest {
            ciphertext: Bytes::copy_from_slice(encrypted),
            uid: "kms-lab-decode".into(),
            key_id: key_id.to_owned(),
            annotations: annotations.clone(),
        };
        let response = self.v2().decrypt(request).await.map_err(unwrap_error)?;
        Ok(Zeroizing::new(response.into_inner().plaintext.to_vec()))
    }

    async fn unwrap_v1(&self, encrypted: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        let request = v1beta1::DecryptRequest { version: KMS_V1BETA1_API_VERSION.into(), cipher: Bytes::copy_from_slice(encrypted) };
        let response = self.v1beta1().decrypt(request).await.map_err(unwrap_error)?;
        Ok(Zeroizing::new(response.into_inner().plain.to_vec()))
    }
}

/// A static key as the EncryptionConfiguration names it (`aescbc`, `aesgcm` or `secretbox`).
#[derive(Clone)]
pub struct StaticKey {
    /// The key's `name`.
    pub name: String,
    /// The raw key bytes (the config holds them base64-encoded).
    pub secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey").field("name", &self.name).field("secret", &"<redacted>").finish()
    }
}

impl KeySource for [StaticKey] {
    fn static_key(&self, _cipher: StaticCipher, key_name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.iter().find(|key| key.name == key_name).map(|key| key.secret.clone())
    }
}

/// A plugin for KMS values plus named keys for static ciphers: everything `kms-lab decode` can be given.
#[derive(Debug, Default)]
pub struct KeyRing {
    /// The plugin socket, for KMS values.
    pub plugin: Option<PluginClient>,
    /// Static keys, for aescbc/aesgcm/secretbox values.
    pub static_keys: Vec<StaticKey>,
}

impl KeySource for KeyRing {
    async fn unwrap_v2(
        &self,
        encrypted: &[u8],
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        match &self.plugin {
            Some(plugin) => plugin.unwrap_v2(encrypted, key_id, annotations).await,
            None => ().unwrap_v2(encrypted, key_id, annotations).await,
        }
    }

    async fn unwrap_v1(&self, encrypted: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecodeError> {
        match &self.plugin {
            Some(plugin) => plugin.unwrap_v1(encrypted).await,
            None => ().unwrap_v1(encrypted).await,
        }
    }

    fn static_key(&self, cipher: StaticCipher, key_name: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.static_keys.static_key(cipher, key_name)
    }
}

/// The source with no keys at all: opens only identity values.
impl KeySource for () {}

fn describe(kind: ProviderKind, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{kind} `{name}`"),
        None => kind.to_string(),
    }
}

/// Opens `envelope` as the apiserver does with one configured provider: the value must carry
/// that provider's kind and name (a value written under another name matches no provider).
pub async fn open_as(
    envelope: &Envelope,
    kind: ProviderKind,
    name: Option<&str>,
    etcd_key: &[u8],
    keys: &(impl KeySource + ?Sized),
) -> Result<Vec<u8>, DecodeError> {
    if envelope.kind() != kind || envelope.name() != name {
        return Err(DecodeError::ProviderMismatch { expected: describe(kind, name), found: describe(envelope.kind(), envelope.name()) });
    }
    open(envelope, etcd_key, keys).await
}

/// Opens `envelope`, stored at `etcd_key`, back to the serialized object.
pub async fn open(envelope: &Envelope, etcd_key: &[u8], keys: &(impl KeySource + ?Sized)) -> Result<Vec<u8>, DecodeError> {
    match envelope {
        Envelope::Identity { data } => Ok(data.to_vec()),
        Envelope::Static { cipher, key_name, sealed } => {
            let key = keys.static_key(*cipher, key_name).ok_or_else(|| DecodeError::NoKey {
                what: format!("{} key `{key_name}`", cipher.kind()),
                hint: "give it as --key NAME=BASE64 (the secret from the EncryptionConfiguration)",
            })?;
            Ok(cipher.open(&key, sealed, etcd_key)?)
        }
        Envelope::KmsV1 { encrypted_dek, sealed, .. } => {
            let dek = keys.unwrap_v1(encrypted_dek).await?;
            // Upstream writes AES-GCM since 1.25 and still reads the older AES-CBC data.
            seal::aes_gcm_open(&dek, sealed, etcd_key)
                .or_else(|gcm_error| seal::aes_cbc_open(&dek, sealed).map_err(|_| gcm_error))
                .map_err(Into::into)
        }
        Envelope::KmsV2 { object, .. } => {
            let source = keys.unwrap_v2(&object.encrypted_dek_source, &object.key_id, &object.annotations).await?;
            let opened = match object.encrypted_dek_source_type() {
                EncryptedDekSourceType::AesGcmKey => seal::aes_gcm_open(&source, &object.encrypted_data, etcd_key)?,
                EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed => seal::hkdf_seed_open(&source, &object.encrypted_data, etcd_key)?,
            };
            Ok(opened)
        }
    }
}
