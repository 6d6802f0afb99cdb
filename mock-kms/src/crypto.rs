//! The symmetric primitives: AES-256-GCM and SM4-GCM with a 96-bit random nonce, random
//! bytes from the OS, and the 256-bit [`SealingKey`]s that protect key material at rest (the
//! root key) and in replication messages (the cluster transport key).

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, AesGcm};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::api::KeySpec;
use crate::error::AeadError;

/// GCM nonce length (96 bits).
pub const NONCE_LEN: usize = 12;
/// GCM tag length.
pub const TAG_LEN: usize = 16;

/// SM4 in GCM mode, 96-bit nonce (the aes-gcm construction is generic over a 128-bit block cipher).
type Sm4Gcm = AesGcm<sm4::Sm4, U12>;

/// The key length of a key spec's material, in bytes.
pub fn key_len(spec: KeySpec) -> usize {
    match spec {
        KeySpec::Aes256 => 32,
        KeySpec::Sm4 => 16,
    }
}

/// `len` random bytes from the operating system.
pub fn random_bytes(len: usize) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; len]);
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A random id shaped like a UUID v4 (for key versions and request ids).
pub fn random_uuid() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Encrypts `plaintext` under `key` (of `spec`) with a fresh random nonce; returns `nonce ‖ ciphertext ‖ tag`.
///
/// Fails only if `key` has the wrong length for `spec`.
pub fn seal(spec: KeySpec, key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, AeadError> {
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let payload = Payload { msg: plaintext, aad };
    let sealed = match spec {
        KeySpec::Aes256 => Aes256Gcm::new_from_slice(key).map_err(|_| AeadError)?.encrypt((&nonce).into(), payload),
        KeySpec::Sm4 => Sm4Gcm::new_from_slice(key).map_err(|_| AeadError)?.encrypt((&nonce).into(), payload),
    }
    .map_err(|_| AeadError)?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`seal`] returned; fails if it is too short, altered, or sealed under another key or AAD.
pub fn open(spec: KeySpec, key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(AeadError);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let payload = Payload { msg: body, aad };
    match spec {
        KeySpec::Aes256 => Aes256Gcm::new_from_slice(key).map_err(|_| AeadError)?.decrypt(nonce.into(), payload),
        KeySpec::Sm4 => Sm4Gcm::new_from_slice(key).map_err(|_| AeadError)?.decrypt(nonce.into(), payload),
    }
    .map(Zeroizing::new)
    .map_err(|_| AeadError)
}

/// A 256-bit AES-GCM key that seals key material: the root key (at rest) or the cluster
/// transport key (replication). Its `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct SealingKey {
    key: Zeroizing<[u8; 32]>,
    fingerprint: String,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl SealingKey {
    /// A key from 32 bytes; `None` for another length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self::from_array(bytes.try_into().ok()?))
    }

    /// A key from exactly 32 bytes.
    pub fn from_array(key: [u8; 32]) -> Self {
        Self::from_zeroizing(Zeroizing::new(key))
    }

    fn from_zeroizing(key: Zeroizing<[u8; 32]>) -> Self {
        let digest = Sha256::new_with_prefix(b"mock-kms sealing key fingerprint\0").chain_update(key.as_ref()).finalize();
        Self { key, fingerprint: hex::encode(&digest[..8]) }
    }

    /// A fresh random key.
    pub fn random() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        Self::from_zeroizing(key)
    }

    /// A key derived with HKDF-SHA256 from a shared secret (e.g. the cluster secret) for one purpose.
    pub fn derive(secret: &[u8], purpose: &str) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(b"mock-kms"), secret);
        let mut okm = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32, so expansion cannot fail.
        let _ = hkdf.expand(purpose.as_bytes(), okm.as_mut());
        Self::from_zeroizing(okm)
    }

    /// A short public fingerprint (first 8 bytes of a domain-separated SHA-256), safe to log and store.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The raw key bytes (for splitting into shares, or the dev-mode root key file).
    pub fn expose(&self) -> &[u8] {
        self.key.as_ref()
    }

    /// Seals `plaintext` (AES-256-GCM, random nonce) bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal(KeySpec::Aes256, self.key.as_ref(), aad, plaintext).expect("a 32-byte key always makes an AES-256-GCM cipher")
    }

    /// Opens what [`SealingKey::seal`] returned.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AeadError> {
        open(KeySpec::Aes256, self.key.as_ref(), aad, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_specs_round_trip_and_bind_the_aad() {
        for spec in [KeySpec::Aes256, KeySpec::Sm4] {
            let key = random_bytes(key_len(spec));
            let sealed = seal(spec, &key, b"aad", b"hello").unwrap();
            assert_eq!(open(spec, &key, b"aad", &sealed).unwrap().as_slice(), b"hello");
            assert!(open(spec, &key, b"other", &sealed).is_err());
            assert!(open(spec, &key, b"aad", &sealed[..10]).is_err());
        }
        assert!(seal(KeySpec::Sm4, &[0u8; 32], b"", b"x").is_err(), "SM4 takes a 16-byte key");
    }

    #[test]
    fn sm4_gcm_is_not_aes() {
        let key = [7u8; 16];
        let sealed = seal(KeySpec::Sm4, &key, b"", b"same").unwrap();
        let mut aes_key = [0u8; 32];
        aes_key[..16].copy_from_slice(&key);
        assert!(open(KeySpec::Aes256, &aes_key, b"", &sealed).is_err());
    }

    #[test]
    fn sealing_keys_have_stable_fingerprints_and_hide_the_key() {
        let a = SealingKey::derive(b"secret", "purpose");
        let b = SealingKey::derive(b"secret", "purpose");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), SealingKey::derive(b"secret", "other").fingerprint());
        assert!(!format!("{a:?}").contains(&hex::encode(a.expose())));
        assert_eq!(random_uuid().len(), 36);
    }
}
