//! The rules kube-apiserver applies to what a KMS v2 plugin returns and what it stores
//! (upstream `envelope/kmsv2/envelope.go`: `ValidateKeyID`, `validateEncryptedDEKSource`,
//! `validateAnnotations`, `ValidateEncryptedObject`). Limits are inclusive: exactly the limit passes.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::proto::storage::{EncryptedDekSourceType, EncryptedObject};

/// The largest key id the apiserver accepts, in bytes.
pub const KEY_ID_MAX_BYTES: usize = 1024;
/// The largest wrapped DEK (plugin `ciphertext`) the apiserver accepts, in bytes.
pub const ENCRYPTED_DEK_MAX_BYTES: usize = 1024;
/// The largest total size of annotation keys plus values the apiserver accepts, in bytes.
pub const ANNOTATIONS_MAX_BYTES: usize = 32 * 1024;
/// The longest DNS subdomain (RFC 1123).
const DNS1123_SUBDOMAIN_MAX: usize = 253;
/// The longest DNS label (RFC 1123).
const DNS1123_LABEL_MAX: usize = 63;

/// Why a key id, wrapped DEK, annotation set or stored object breaks the upstream rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The key id is empty.
    #[error("keyID is empty")]
    KeyIdEmpty,
    /// The key id is longer than [`KEY_ID_MAX_BYTES`].
    #[error("keyID is {len} bytes, which exceeds the max size of {KEY_ID_MAX_BYTES}")]
    KeyIdTooLong {
        /// The key id's length in bytes.
        len: usize,
    },
    /// The wrapped DEK is empty.
    #[error("encrypted DEK source is empty")]
    EncryptedDekEmpty,
    /// The wrapped DEK is longer than [`ENCRYPTED_DEK_MAX_BYTES`].
    #[error("encrypted DEK source is {len} bytes, which exceeds the max size of {ENCRYPTED_DEK_MAX_BYTES}")]
    EncryptedDekTooLong {
        /// The wrapped DEK's length in bytes.
        len: usize,
    },
    /// An annotation key is not a fully qualified domain name.
    #[error("annotation key `{}` is not a fully qualified domain name: {reason} (use a key like `version.kms.example.io`)", shown_key(key))]
    AnnotationKeyNotFqdn {
        /// The offending key (annotation keys are public metadata, never secret).
        key: String,
        /// Which part of RFC 1123 it breaks.
        reason: &'static str,
    },
    /// The annotations together are larger than [`ANNOTATIONS_MAX_BYTES`].
    #[error("total size of annotations is {total}, which exceeds the max size of {ANNOTATIONS_MAX_BYTES}")]
    AnnotationsTooLarge {
        /// Keys plus values, in bytes.
        total: usize,
    },
    /// The stored object has no encrypted data.
    #[error("encrypted data is empty")]
    EncryptedDataEmpty,
    /// The stored object names a DEK source type this version does not know.
    #[error("unknown encryptedDEKSourceType: {0}")]
    UnknownDekSourceType(i32),
}

/// An annotation key as an error shows it: it comes from a plugin or a stored value, so control
/// characters are escaped (never sent to a terminal or log as they are) and a long one is cut.
fn shown_key(key: &str) -> String {
    let escaped: String = key.escape_debug().collect();
    match escaped.char_indices().nth(DNS1123_SUBDOMAIN_MAX) {
        Some((cut, _)) => format!("{}… ({} bytes)", &escaped[..cut], key.len()),
        None => escaped,
    }
}

/// Checks a key id as the apiserver does for `StatusResponse.key_id`, `EncryptResponse.key_id`
/// and the stored `EncryptedObject.keyID`.
pub fn validate_key_id(key_id: &str) -> Result<(), ValidationError> {
    if key_id.is_empty() {
        return Err(ValidationError::KeyIdEmpty);
    }
    if key_id.len() > KEY_ID_MAX_BYTES {
        return Err(ValidationError::KeyIdTooLong { len: key_id.len() });
    }
    Ok(())
}

/// Checks a wrapped DEK (or seed) as the apiserver does for `EncryptResponse.ciphertext`.
pub fn validate_encrypted_dek(encrypted_dek: &[u8]) -> Result<(), ValidationError> {
    if encrypted_dek.is_empty() {
        return Err(ValidationError::EncryptedDekEmpty);
    }
    if encrypted_dek.len() > ENCRYPTED_DEK_MAX_BYTES {
        return Err(ValidationError::EncryptedDekTooLong { len: encrypted_dek.len() });
    }
    Ok(())
}

/// Checks plugin annotations: every key an FQDN, keys plus values within [`ANNOTATIONS_MAX_BYTES`].
pub fn validate_annotations(annotations: &BTreeMap<String, Bytes>) -> Result<(), ValidationError> {
    let mut total = 0usize;
    for (key, value) in annotations {
        check_fqdn(key).map_err(|reason| ValidationError::AnnotationKeyNotFqdn { key: key.clone(), reason })?;
        total += key.len() + value.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        return Err(ValidationError::AnnotationsTooLarge { total });
    }
    Ok(())
}

/// Checks a stored KMS v2 object as the apiserver does before it writes or after it reads one.
pub fn validate_encrypted_object(object: &EncryptedObject) -> Result<(), ValidationError> {
    if EncryptedDekSourceType::try_from(object.encrypted_dek_source_type).is_err() {
        return Err(ValidationError::UnknownDekSourceType(object.encrypted_dek_source_type));
    }
    if object.encrypted_data.is_empty() {
        return Err(ValidationError::EncryptedDataEmpty);
    }
    validate_encrypted_dek(&object.encrypted_dek_source)?;
    validate_key_id(&object.key_id)?;
    validate_annotations(&object.annotations)
}

/// Whether `name` is a fully qualified domain name as `IsFullyQualifiedDomainName` in
/// k8s.io/apimachinery defines it.
pub fn is_fqdn(name: &str) -> bool {
    check_fqdn(name).is_ok()
}

/// The reason `name` is not an FQDN, if it is not.
fn check_fqdn(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        return Err("it is longer than 253 characters");
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 {
        return Err("it needs at least two segments separated by dots");
    }
    for label in labels {
        if label.is_empty() {
            return Err("it has an empty segment");
        }
        if label.len() > DNS1123_LABEL_MAX {
            return Err("a segment is longer than 63 characters");
        }
        let bytes = label.as_bytes();
        let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        if !bytes.iter().all(allowed) {
            return Err("only lower-case letters, digits, '-' and '.' are allowed");
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err("each segment must start and end with a letter or digit");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_limits_are_inclusive() {
        assert_eq!(validate_key_id(""), Err(ValidationError::KeyIdEmpty));
        assert_eq!(validate_key_id(&"k".repeat(1024)), Ok(()));
        assert_eq!(validate_key_id(&"k".repeat(1025)), Err(ValidationError::KeyIdTooLong { len: 1025 }));
    }

    #[test]
    fn encrypted_dek_limits_are_inclusive() {
        assert_eq!(validate_encrypted_dek(&[]), Err(ValidationError::EncryptedDekEmpty));
        assert_eq!(validate_encrypted_dek(&[0; 1024]), Ok(()));
        assert_eq!(validate_encrypted_dek(&[0; 1025]), Err(ValidationError::EncryptedDekTooLong { len: 1025 }));
    }

    #[test]
    fn fqdn_rules_match_apimachinery() {
        for good in ["local-kek.kms.kubernetes.io", "a.b", "version.kms.example.io.", "x1.y-2.z3"] {
            assert!(is_fqdn(good), "{good} should be an FQDN");
        }
        for bad in ["", "@", "single", "Upper.case", "-lead.io", "trail-.io", "a..b", "kms.io/key", &format!("{}.io", "a".repeat(64))] {
            assert!(!is_fqdn(bad), "{bad} should not be an FQDN");
        }
    }

    #[test]
    fn annotations_total_size_limit_is_inclusive() {
        let key = "big.kms.example.io".to_string();
        let fits = BTreeMap::from([(key.clone(), Bytes::from(vec![0; ANNOTATIONS_MAX_BYTES - key.len()]))]);
        assert_eq!(validate_annotations(&fits), Ok(()));
        let over = BTreeMap::from([(key.clone(), Bytes::from(vec![0; ANNOTATIONS_MAX_BYTES - key.len() + 1]))]);
        assert_eq!(validate_annotations(&over), Err(ValidationError::AnnotationsTooLarge { total: ANNOTATIONS_MAX_BYTES + 1 }));
    }

    #[test]
    fn annotation_key_error_names_the_key_and_the_fix() {
        let bad = BTreeMap::from([("@".to_string(), Bytes::new())]);
        let message = validate_annotations(&bad).unwrap_err().to_string();
        assert!(message.contains("`@`") && message.contains("version.kms.example.io"), "{message}");
    }
}
