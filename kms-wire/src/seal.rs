//! The data ciphers behind kube-apiserver's storage envelopes, byte-compatible with upstream
//! (`k8s.io/apiserver/pkg/storage/value/encrypt/{aes,secretbox}`):
//!
//! | cipher | layout | additional data |
//! |---|---|---|
//! | AES-GCM (`aesgcm`, KMS v1, KMS v2 `AES_GCM_KEY`) | `nonce[12] ‖ ciphertext ‖ tag[16]` | the etcd key |
//! | HKDF seed (KMS v2 `HKDF_SHA256_XNONCE_AES_GCM_SEED`) | `info[32] ‖ nonce[12] ‖ ciphertext ‖ tag[16]`, key = HKDF-Expand-SHA256(seed, info) | the etcd key |
//! | AES-CBC (`aescbc`, old KMS v1 data) | `iv[16] ‖ ciphertext` with PKCS#7 padding, no MAC | none |
//! | secretbox | `nonce[24] ‖ tag[16] ‖ ciphertext` (XSalsa20-Poly1305) | none |
//!
//! Nonces, IVs and HKDF infos are random per call. Error messages never contain key material
//! or plaintext.

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use crypto_secretbox::XSalsa20Poly1305;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// AES-GCM nonce length.
pub const GCM_NONCE_LEN: usize = 12;
/// AES-GCM (and Poly1305) tag length.
pub const TAG_LEN: usize = 16;
/// AES-CBC IV length (the AES block size).
pub const CBC_IV_LEN: usize = 16;
/// secretbox nonce length.
pub const SECRETBOX_NONCE_LEN: usize = 24;
/// Length of the random HKDF info that starts every seed-sealed value.
pub const HKDF_INFO_LEN: usize = 32;
/// Length of a KMS v2 seed, and of every DEK kube-apiserver generates.
pub const DEK_LEN: usize = 32;

/// Why data could not be sealed or opened. Never carries key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key has a length the cipher does not take.
    #[error("{cipher} key must be {expected} bytes, got {got}")]
    KeyLength {
        /// The cipher.
        cipher: &'static str,
        /// The lengths it takes.
        expected: &'static str,
        /// The length given.
        got: usize,
    },
    /// The sealed data is shorter than its fixed parts.
    #[error("{cipher} data is {got} bytes, shorter than the {need} bytes its header and tag take")]
    TooShort {
        /// The cipher.
        cipher: &'static str,
        /// The minimum length.
        need: usize,
        /// The length given.
        got: usize,
    },
    /// The authentication tag did not verify.
    #[error("{cipher} authentication failed: the data was altered, or the key or the etcd key (additional data) is wrong")]
    Authentication {
        /// The cipher.
        cipher: &'static str,
    },
    /// AES-CBC data whose length is not a whole number of blocks.
    #[error("aes-cbc data is {got} bytes, not a whole number of 16-byte blocks")]
    CbcNotBlockAligned {
        /// The length given.
        got: usize,
    },
    /// AES-CBC padding that does not verify: a wrong key, or altered data.
    #[error("aes-cbc padding is invalid: the key is wrong or the data was altered")]
    CbcPadding,
}

enum AnyAesGcm {
    Aes128(AesGcm<Aes128, U12>),
    Aes192(AesGcm<Aes192, U12>),
    Aes256(AesGcm<Aes256, U12>),
}

impl AnyAesGcm {
    fn new(key: &[u8]) -> Result<Self, SealError> {
        let bad_length = || SealError::KeyLength { cipher: "aes-gcm", expected: "16, 24 or 32", got: key.len() };
        Ok(match key.len() {
            16 => Self::Aes128(AesGcm::new_from_slice(key).map_err(|_| bad_length())?),
            24 => Self::Aes192(AesGcm::new_from_slice(key).map_err(|_| bad_length())?),
            32 => Self::Aes256(AesGcm::new_from_slice(key).map_err(|_| bad_length())?),
            _ => return Err(bad_length()),
        })
    }

    fn encrypt(&self, nonce: &[u8; GCM_NONCE_LEN], payload: Payload<'_, '_>) -> Vec<u8> {
        let nonce = nonce.into();
        let sealed = match self {
            Self::Aes128(c) => c.encrypt(nonce, payload),
            Self::Aes192(c) => c.encrypt(nonce, payload),
            Self::Aes256(c) => c.encrypt(nonce, payload),
        };
        // Encryption only fails for plaintexts beyond AES-GCM's 64 GiB limit, far above anything etcd holds.
        sealed.unwrap_or_default()
    }

    fn decrypt(&self, nonce: &[u8], payload: Payload<'_, '_>) -> Result<Vec<u8>, SealError> {
        let nonce = nonce.into();
        match self {
            Self::Aes128(c) => c.decrypt(nonce, payload),
            Self::Aes192(c) => c.decrypt(nonce, payload),
            Self::Aes256(c) => c.decrypt(nonce, payload),
        }
        .map_err(|_| SealError::Authentication { cipher: "aes-gcm" })
    }
}

fn random_array<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Seals `plaintext` with AES-GCM (16, 24 or 32-byte key) and a random nonce, binding `aad`.
pub fn aes_gcm_seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = AnyAesGcm::new(key)?;
    let nonce = random_array::<GCM_NONCE_LEN>();
    let sealed = cipher.encrypt(&nonce, Payload { msg: plaintext, aad });
    let mut out = Vec::with_capacity(GCM_NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`aes_gcm_seal`] (or upstream's GCM transformer) sealed.
pub fn aes_gcm_open(key: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = AnyAesGcm::new(key)?;
    let need = GCM_NONCE_LEN + TAG_LEN;
    if sealed.len() < need {
        return Err(SealError::TooShort { cipher: "aes-gcm", need, got: sealed.len() });
    }
    let (nonce, body) = sealed.split_at(GCM_NONCE_LEN);
    cipher.decrypt(nonce, Payload { msg: body, aad })
}

/// The per-object key HKDF-Expand-SHA256(seed, info) that upstream's extended-nonce transformer uses.
fn hkdf_derive(seed: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; DEK_LEN]>, SealError> {
    if seed.len() < DEK_LEN {
        return Err(SealError::KeyLength { cipher: "hkdf seed", expected: "at least 32", got: seed.len() });
    }
    let hkdf = hkdf::Hkdf::<Sha256>::from_prk(seed).map_err(|_| SealError::KeyLength {
        cipher: "hkdf seed",
        expected: "at least 32",
        got: seed.len(),
    })?;
    let mut key = Zeroizing::new([0u8; DEK_LEN]);
    hkdf.expand(info, key.as_mut()).map_err(|_| SealError::KeyLength { cipher: "hkdf seed", expected: "at least 32", got: seed.len() })?;
    Ok(key)
}

/// Seals `plaintext` the way KMS v2 does with a seed: a fresh random info, a key derived from
/// seed and info, then AES-256-GCM with a random nonce, binding `aad`.
pub fn hkdf_seed_seal(seed: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let info = random_array::<HKDF_INFO_LEN>();
    let key = hkdf_derive(seed, &info)?;
    let sealed = aes_gcm_seal(key.as_ref(), plaintext, aad)?;
    let mut out = Vec::with_capacity(HKDF_INFO_LEN + sealed.len());
    out.extend_from_slice(&info);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`hkdf_seed_seal`] (or upstream's extended-nonce transformer) sealed.
pub fn hkdf_seed_open(seed: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
    let need = HKDF_INFO_LEN + GCM_NONCE_LEN + TAG_LEN;
    if sealed.len() < need {
        return Err(SealError::TooShort { cipher: "hkdf-aes-gcm", need, got: sealed.len() });
    }
    let (info, rest) = sealed.split_at(HKDF_INFO_LEN);
    let key = hkdf_derive(seed, info)?;
    aes_gcm_open(key.as_ref(), rest, aad)
}

fn check_aes_key(key: &[u8], cipher: &'static str) -> Result<(), SealError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        got => Err(SealError::KeyLength { cipher, expected: "16, 24 or 32", got }),
    }
}

/// Seals `plaintext` with AES-CBC and PKCS#7 padding under a random IV. Not authenticated:
/// upstream's `aescbc` provider has no MAC, so altered data may open to other plaintext.
pub fn aes_cbc_seal(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    check_aes_key(key, "aes-cbc")?;
    let iv = random_array::<CBC_IV_LEN>();
    let body = match key.len() {
        16 => cbc::Encryptor::<Aes128>::new_from_slices(key, &iv).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
        24 => cbc::Encryptor::<Aes192>::new_from_slices(key, &iv).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
        _ => cbc::Encryptor::<Aes256>::new_from_slices(key, &iv).map(|c| c.encrypt_padded_vec_mut::<Pkcs7>(plaintext)),
    }
    .map_err(|_| SealError::KeyLength { cipher: "aes-cbc", expected: "16, 24 or 32", got: key.len() })?;
    let mut out = Vec::with_capacity(CBC_IV_LEN + body.len());
    out.extend_from_slice(&iv);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`aes_cbc_seal`] (or upstream's CBC transformer) sealed.
pub fn aes_cbc_open(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    check_aes_key(key, "aes-cbc")?;
    if sealed.len() < CBC_IV_LEN {
        return Err(SealError::TooShort { cipher: "aes-cbc", need: CBC_IV_LEN, got: sealed.len() });
    }
    let (iv, body) = sealed.split_at(CBC_IV_LEN);
    if body.is_empty() || body.len() % CBC_IV_LEN != 0 {
        return Err(SealError::CbcNotBlockAligned { got: body.len() });
    }
    let bad_key = || SealError::KeyLength { cipher: "aes-cbc", expected: "16, 24 or 32", got: key.len() };
    let opened = match key.len() {
        16 => cbc::Decryptor::<Aes128>::new_from_slices(key, iv).map_err(|_| bad_key())?.decrypt_padded_vec_mut::<Pkcs7>(body),
        24 => cbc::Decryptor::<Aes192>::new_from_slices(key, iv).map_err(|_| bad_key())?.decrypt_padded_vec_mut::<Pkcs7>(body),
        _ => cbc::Decryptor::<Aes256>::new_from_slices(key, iv).map_err(|_| bad_key())?.decrypt_padded_vec_mut::<Pkcs7>(body),
    };
    opened.map_err(|_| SealError::CbcPadding)
}

fn secretbox_cipher(key: &[u8]) -> Result<XSalsa20Poly1305, SealError> {
    XSalsa20Poly1305::new_from_slice(key).map_err(|_| SealError::KeyLength { cipher: "secretbox", expected: "32", got: key.len() })
}

/// Seals `plaintext` with NaCl secretbox (XSalsa20-Poly1305) under a random nonce.
pub fn secretbox_seal(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = secretbox_cipher(key)?;
    let nonce = random_array::<SECRETBOX_NONCE_LEN>();
    // Encryption cannot fail for in-memory sizes; the tag comes first, as in NaCl.
    let sealed = cipher.encrypt((&nonce).into(), plaintext).unwrap_or_default();
    let mut out = Vec::with_capacity(SECRETBOX_NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens what [`secretbox_seal`] (or upstream's secretbox transformer) sealed.
pub fn secretbox_open(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let cipher = secretbox_cipher(key)?;
    let need = SECRETBOX_NONCE_LEN + TAG_LEN;
    if sealed.len() < need {
        return Err(SealError::TooShort { cipher: "secretbox", need, got: sealed.len() });
    }
    let (nonce, body) = sealed.split_at(SECRETBOX_NONCE_LEN);
    cipher.decrypt(nonce.into(), body).map_err(|_| SealError::Authentication { cipher: "secretbox" })
}

/// A fresh random 32-byte key: a DEK, a KMS v2 seed, or a KEK.
pub fn random_key() -> Zeroizing<[u8; DEK_LEN]> {
    Zeroizing::new(random_array::<DEK_LEN>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).expect("test vector is hex")
    }

    /// Upstream `aes_test.go` `TestGCMLegacyDataCompatibility`.
    #[test]
    fn opens_upstream_gcm_vector() {
        let sealed = unhex("9f27c8fcea8a58c467d8e437dbf2d85955f9b4bd912f4ef967d788a0cb07797dac0a3f0a0845605ca85ac8562b4ae1");
        let opened = aes_gcm_open(b"snorlax_awesomes", &sealed, b"bamboo").expect("upstream vector opens");
        assert_eq!(opened, b"pandas are the best");
        assert!(aes_gcm_open(b"snorlax_awesomes", &sealed, b"bamboO").is_err());
    }

    /// Upstream `aes_test.go` `TestExtendedNonceGCMLegacyDataCompatibility`.
    #[test]
    fn opens_upstream_extended_nonce_vector() {
        let seed = unhex("5d40323a820ff95561675e3b95e81867c5fdd561d35a88a2d08b08aa9d4fcf5c");
        let sealed = unhex(
            "2442759e33945fbad709db577a0f037fd8a709fc76979b8942209debcecb9d57efe3d6ff6a1ef6ee9a5003b9833b3043cec1e47b35175b151107a8d2416b0e296bbf66b5d102fcefdf9a78f293d271",
        );
        let opened = hkdf_seed_open(&seed, &sealed, b"bamboo").expect("upstream vector opens");
        assert_eq!(opened, b"pandas are the best");
        let derived = hkdf_derive(&seed, &sealed[..32]).expect("seed is 32 bytes");
        assert_eq!(hex::encode(derived.as_ref()), "6e58b7659c304b0c382f42f16bd700465def1dead80bf6f1bf1d52073bdb0c00");
    }

    #[test]
    fn key_length_errors_name_the_cipher_and_lengths() {
        let message = aes_gcm_seal(&[0; 7], b"x", b"").unwrap_err().to_string();
        assert_eq!(message, "aes-gcm key must be 16, 24 or 32 bytes, got 7");
        assert!(secretbox_seal(&[0; 16], b"x").is_err());
        assert!(hkdf_seed_seal(&[0; 31], b"x", b"").is_err());
    }

    #[test]
    fn every_cipher_round_trips_every_key_size() {
        for key_len in [16, 24, 32] {
            let key = vec![7u8; key_len];
            assert_eq!(aes_gcm_open(&key, &aes_gcm_seal(&key, b"data", b"ad").unwrap(), b"ad").unwrap(), b"data");
            assert_eq!(aes_cbc_open(&key, &aes_cbc_seal(&key, b"data").unwrap()).unwrap(), b"data");
        }
        let key = [9u8; 32];
        assert_eq!(secretbox_open(&key, &secretbox_seal(&key, b"").unwrap()).unwrap(), b"");
        assert_eq!(hkdf_seed_open(&key, &hkdf_seed_seal(&key, b"", b"ad").unwrap(), b"ad").unwrap(), b"");
    }
}
