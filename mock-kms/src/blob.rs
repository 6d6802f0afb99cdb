//! The ciphertext blob that Encrypt and GenerateDataKey return (base64 in JSON).
//!
//! ```text
//! "MK" ‖ 0x01 ‖ len(key_id):u8 ‖ key_id ‖ len(version_id):u8 ‖ version_id ‖ nonce[12] ‖ ciphertext ‖ tag[16]
//! ```
//!
//! Everything before the nonce is the header. The AEAD (AES-256-GCM or SM4-GCM, by the key
//! version's spec) authenticates `header ‖ canonical(EncryptionContext)` as associated data, so
//! neither the key, the version nor the context can be swapped. The context is not stored: Decrypt
//! must be given the same map. `canonical` is the entry count, then each entry in key order, all
//! as `u32` big-endian length-prefixed UTF-8: `n ‖ (len k ‖ k ‖ len v ‖ v)*`.

use std::collections::BTreeMap;

use crate::crypto::{NONCE_LEN, TAG_LEN};

/// The first two bytes of every blob.
pub const MAGIC: &[u8; 2] = b"MK";
/// The format byte after the magic.
pub const FORMAT_V1: u8 = 1;
/// The longest key id or version id a blob can name.
pub const MAX_ID_LEN: usize = 255;

/// A parsed blob: which key version sealed it, and the sealed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob<'a> {
    /// The key id.
    pub key_id: &'a str,
    /// The key version id.
    pub version_id: &'a str,
    /// The header bytes (bound as associated data).
    pub header: &'a [u8],
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: &'a [u8],
}

/// The header of a blob for `key_id` / `version_id`; `None` if an id is empty or over 255 bytes.
pub fn header(key_id: &str, version_id: &str) -> Option<Vec<u8>> {
    let (k, v) = (key_id.as_bytes(), version_id.as_bytes());
    if k.is_empty() || v.is_empty() || k.len() > MAX_ID_LEN || v.len() > MAX_ID_LEN {
        return None;
    }
    let mut out = Vec::with_capacity(5 + k.len() + v.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_V1);
    out.push(k.len() as u8);
    out.extend_from_slice(k);
    out.push(v.len() as u8);
    out.extend_from_slice(v);
    Some(out)
}

/// The associated data of a blob: its header and the canonical encryption context.
pub fn aad(header: &[u8], context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend_from_slice(&(context.len() as u32).to_be_bytes());
    for (k, v) in context {
        for bytes in [k.as_bytes(), v.as_bytes()] {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out
}

/// Parses a blob; the error says what is wrong (never any of its bytes).
pub fn parse(bytes: &[u8]) -> Result<Blob<'_>, String> {
    let not_ours = || "not a ciphertext blob of this KMS (bad magic or format byte)".to_owned();
    if bytes.len() < 3 || &bytes[..2] != MAGIC || bytes[2] != FORMAT_V1 {
        return Err(not_ours());
    }
    let mut at = 3;
    let mut take_id = |what: &str| -> Result<&str, String> {
        let len = *bytes.get(at).ok_or_else(|| format!("truncated before the {what}"))? as usize;
        let id = bytes.get(at + 1..at + 1 + len).ok_or_else(|| format!("truncated inside the {what}"))?;
        at += 1 + len;
        let id = std::str::from_utf8(id).map_err(|_| format!("the {what} is not UTF-8"))?;
        if id.is_empty() {
            return Err(format!("the {what} is empty"));
        }
        Ok(id)
    };
    let key_id = take_id("key id")?;
    let version_id = take_id("key version id")?;
    let (header, sealed) = bytes.split_at(at);
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(format!("{} bytes after the header is shorter than nonce and tag ({} bytes)", sealed.len(), NONCE_LEN + TAG_LEN));
    }
    Ok(Blob { key_id, version_id, header, sealed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_parse() {
        let mut blob = header("lab-key", "v-1").unwrap();
        blob.extend_from_slice(&[0u8; NONCE_LEN + TAG_LEN + 3]);
        let parsed = parse(&blob).unwrap();
        assert_eq!((parsed.key_id, parsed.version_id), ("lab-key", "v-1"));
        assert_eq!(parsed.header.len(), 3 + 1 + 7 + 1 + 3);
        assert_eq!(parsed.sealed.len(), NONCE_LEN + TAG_LEN + 3);
        assert!(parse(&blob[..parsed.header.len() + 5]).unwrap_err().contains("shorter"));
        assert!(parse(b"XX\x01").unwrap_err().contains("bad magic"));
        assert!(parse(b"MK\x01\x09abc").unwrap_err().contains("truncated inside the key id"));
        assert!(header("", "v").is_none() && header(&"k".repeat(256), "v").is_none());
    }

    #[test]
    fn context_encoding_is_unambiguous() {
        let h = header("k", "v").unwrap();
        let a = BTreeMap::from([("ab".to_owned(), "c".to_owned())]);
        let b = BTreeMap::from([("a".to_owned(), "bc".to_owned())]);
        assert_ne!(aad(&h, &a), aad(&h, &b));
        assert_ne!(aad(&h, &BTreeMap::new()), aad(&h, &a));
        assert_eq!(aad(&h, &BTreeMap::new()), [h.as_slice(), &[0, 0, 0, 0]].concat());
    }
}
