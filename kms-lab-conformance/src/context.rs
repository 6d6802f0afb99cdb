//! What every check shares: the client, the per-call deadline, and a record of every plaintext
//! sent and every error received (for the hygiene checks and for redaction).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use kms_wire::PluginClient;
use kms_wire::proto::{KMS_V1BETA1_API_VERSION, v1beta1, v2};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::Options;

/// The longest plugin error message a finding shows in full (the rest is cut, its size shown).
const MAX_MESSAGE_SHOWN: usize = 1024;

/// Why a call gave no answer.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The plugin answered with a gRPC error.
    Status { code: tonic::Code, message: String },
    /// No answer before the deadline.
    Timeout(Duration),
}

impl CallError {
    /// The gRPC code, if the plugin answered.
    pub(crate) fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Timeout(_) => None,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { code, message } => write!(f, "gRPC error {code:?}: {}", quote_at_most(message, MAX_MESSAGE_SHOWN)),
            Self::Timeout(after) => write!(f, "no answer within {after:?} (--timeout)"),
        }
    }
}

/// One error answer, kept for the hygiene checks.
#[derive(Debug, Clone)]
pub(crate) struct SeenError {
    /// What was sent.
    pub sent: String,
    /// The gRPC code.
    pub code: tonic::Code,
    /// The raw message (may hold a leaked plaintext: never printed as is).
    pub message: String,
}

/// A v2 Encrypt answer.
#[derive(Debug, Clone)]
pub(crate) struct Encrypted {
    pub ciphertext: Bytes,
    pub key_id: String,
    pub annotations: BTreeMap<String, Bytes>,
}

impl Encrypted {
    pub(crate) fn describe(&self) -> String {
        format!(
            "EncryptResponse {{ ciphertext: {}, key_id: {}, annotations: {} }}",
            bytes(&self.ciphertext),
            quote(&self.key_id),
            annotations(&self.annotations)
        )
    }
}

/// Shared state of one run.
pub(crate) struct Ctx {
    client: PluginClient,
    pub options: Options,
    plaintexts: Mutex<Vec<Vec<u8>>>,
    errors: Mutex<Vec<SeenError>>,
    /// The rotation both rotation checks observe, done at most once.
    pub rotation: tokio::sync::OnceCell<crate::checks::rotation::Rotation>,
}

impl Ctx {
    pub(crate) fn new(client: PluginClient, options: Options) -> Self {
        Self { client, options, plaintexts: Mutex::default(), errors: Mutex::default(), rotation: tokio::sync::OnceCell::new() }
    }

    /// Runs one call under the per-call deadline.
    async fn call<T>(&self, sent: &str, call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, CallError> {
        match tokio::time::timeout(self.options.timeout, call).await {
            Err(_) => Err(CallError::Timeout(self.options.timeout)),
            // tonic's own deadline may fire first; it is the same failure.
            Ok(Err(status)) if status.code() == tonic::Code::Cancelled && status.message().contains("Timeout expired") => {
                Err(CallError::Timeout(self.options.timeout))
            }
            Ok(Err(status)) => {
                let seen = SeenError { sent: sent.to_owned(), code: status.code(), message: status.message().to_owned() };
                self.errors.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
                Err(CallError::Status { code: status.code(), message: self.redact(status.message()) })
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    fn remember(&self, plaintext: &[u8]) {
        if plaintext.len() >= MIN_SCANNED_LEN {
            self.plaintexts.lock().unwrap_or_else(|e| e.into_inner()).push(plaintext.to_vec());
        }
    }

    /// Every error answer so far.
    pub(crate) fn errors(&self) -> Vec<SeenError> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where (and in which encoding) a plaintext the suite sent appears in `message`.
    pub(crate) fn leak_in(&self, message: &str) -> Option<String> {
        let plaintexts = self.plaintexts.lock().unwrap_or_else(|e| e.into_inner());
        plaintexts.iter().find_map(|p| leak_form(p, message).map(|form| format!("{form} of the plaintext {}", bytes(p))))
    }

    /// `message`, or a placeholder when it holds a plaintext the suite sent.
    pub(crate) fn redact(&self, message: &str) -> String {
        match self.leak_in(message) {
            Some(form) => format!("<message withheld: it contains the {form}>"),
            None => message.to_owned(),
        }
    }

    pub(crate) async fn status(&self) -> Result<v2::StatusResponse, CallError> {
        self.call("StatusRequest {}", self.client.v2().status(v2::StatusRequest {})).await
    }

    pub(crate) async fn encrypt(&self, plaintext: &[u8], uid: &str) -> Result<Encrypted, CallError> {
        self.remember(plaintext);
        let request = v2::EncryptRequest { plaintext: Bytes::copy_from_slice(plaintext), uid: uid.to_owned() };
        let sent = describe_encrypt(plaintext, uid);
        let response = self.call(&sent, self.client.v2().encrypt(request)).await?;
        Ok(Encrypted { ciphertext: response.ciphertext, key_id: response.key_id, annotations: response.annotations })
    }

    pub(crate) async fn decrypt(
        &self,
        ciphertext: &[u8],
        uid: &str,
        key_id: &str,
        annotations: &BTreeMap<String, Bytes>,
    ) -> Result<Bytes, CallError> {
        let request = v2::DecryptRequest {
            ciphertext: Bytes::copy_from_slice(ciphertext),
            uid: uid.to_owned(),
            key_id: key_id.to_owned(),
            annotations: annotations.clone(),
        };
        let sent = describe_decrypt(ciphertext, uid, key_id, annotations);
        Ok(self.call(&sent, self.client.v2().decrypt(request)).await?.plaintext)
    }

    pub(crate) async fn v1_version(&self) -> Result<v1beta1::VersionResponse, CallError> {
        let request = v1beta1::VersionRequest { version: KMS_V1BETA1_API_VERSION.to_owned() };
        self.call("VersionRequest { version: \"v1beta1\" }", self.client.v1beta1().version(request)).await
    }

    pub(crate) async fn v1_encrypt(&self, plain: &[u8]) -> Result<Bytes, CallError> {
        self.remember(plain);
        let request = v1beta1::EncryptRequest { version: KMS_V1BETA1_API_VERSION.to_owned(), plain: Bytes::copy_from_slice(plain) };
        let sent = format!("EncryptRequest {{ version: \"v1beta1\", plain: {} }}", bytes(plain));
        Ok(self.call(&sent, self.client.v1beta1().encrypt(request)).await?.cipher)
    }

    pub(crate) async fn v1_decrypt(&self, cipher: &[u8]) -> Result<Bytes, CallError> {
        let request = v1beta1::DecryptRequest { version: KMS_V1BETA1_API_VERSION.to_owned(), cipher: Bytes::copy_from_slice(cipher) };
        let sent = format!("DecryptRequest {{ version: \"v1beta1\", cipher: {} }}", bytes(cipher));
        Ok(self.call(&sent, self.client.v1beta1().decrypt(request)).await?.plain)
    }
}

/// Plaintexts shorter than this are fixed markers (e.g. `ping`) and are not scanned for.
const MIN_SCANNED_LEN: usize = 8;

/// The encoding in which (a 16-byte prefix of) `plaintext` appears in `message`, if it does.
fn leak_form(plaintext: &[u8], message: &str) -> Option<&'static str> {
    let prefix = &plaintext[..plaintext.len().min(16)];
    let eight = &plaintext[..plaintext.len().min(8)];
    let decimal = |sep: &str| eight.iter().map(u8::to_string).collect::<Vec<_>>().join(sep);
    let b64 = base64::engine::general_purpose::STANDARD.encode(plaintext);
    let forms: [(&'static str, String); 5] = [
        ("hex", hex::encode(prefix)),
        ("upper-case hex", hex::encode_upper(prefix)),
        ("base64", b64[..b64.len().min(20)].to_owned()),
        ("Go %v bytes", format!("[{}", decimal(" "))),
        ("Rust {:?} bytes", format!("[{}", decimal(", "))),
    ];
    if message.as_bytes().windows(prefix.len()).any(|w| w == prefix) {
        return Some("raw bytes");
    }
    forms.into_iter().find(|(_, form)| message.contains(form.as_str())).map(|(name, _)| name)
}

/// Random bytes, the suite's stand-in for the DEKs and seeds the apiserver sends.
pub(crate) fn random(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

/// A fresh request uid, as the apiserver sends (a UUID-like string).
pub(crate) fn uid(label: &str) -> String {
    format!("kms-lab-conformance-{label}-{}", hex::encode(random(4)))
}

/// The fixed test markers the suite sends that may be shown as text (the apiserver's v1 health probe).
const MARKERS: &[&[u8]] = &[b"ping"];

/// Bytes described by size and a hash prefix, never by content; the suite's fixed markers as text.
pub(crate) fn bytes(data: &[u8]) -> String {
    if data.is_empty() {
        return "0 B".to_owned();
    }
    if MARKERS.contains(&data) {
        return format!("{:?} ({} B)", String::from_utf8_lossy(data), data.len());
    }
    let digest = Sha256::digest(data);
    format!("{} B (sha256 {}…)", data.len(), hex::encode(&digest[..4]))
}

/// A string in double quotes, shortened when long (control characters escaped).
pub(crate) fn quote(s: &str) -> String {
    quote_at_most(s, 80)
}

/// A string the plugin sent, in double quotes with control characters escaped; longer than
/// `max` bytes, its first three quarters of `max` and its size (a plugin may send megabytes).
pub(crate) fn quote_at_most(s: &str, max: usize) -> String {
    if s.len() > max {
        let cut = (0..=max * 3 / 4).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        format!("{:?}… ({} B)", &s[..cut], s.len())
    } else {
        format!("{s:?}")
    }
}

/// How many annotations a description lists (a plugin may return thousands).
const ANNOTATIONS_SHOWN: usize = 16;

/// Annotations: keys quoted (public metadata), values by size, the first [`ANNOTATIONS_SHOWN`] of them.
pub(crate) fn annotations(annotations: &BTreeMap<String, Bytes>) -> String {
    if annotations.is_empty() {
        return "{}".to_owned();
    }
    // Annotation values are public metadata (stored in etcd in the clear): short printable ones are shown.
    let value = |v: &Bytes| match std::str::from_utf8(v) {
        Ok(text) if v.len() <= 32 && text.chars().all(|c| c.is_ascii_graphic()) => format!("{text:?}"),
        _ => bytes(v),
    };
    let mut items: Vec<String> = annotations.iter().take(ANNOTATIONS_SHOWN).map(|(k, v)| format!("{}: {}", quote(k), value(v))).collect();
    if annotations.len() > ANNOTATIONS_SHOWN {
        items.push(format!("… {} more", annotations.len() - ANNOTATIONS_SHOWN));
    }
    format!("{{ {} }}", items.join(", "))
}

pub(crate) fn describe_encrypt(plaintext: &[u8], uid: &str) -> String {
    format!("EncryptRequest {{ plaintext: {}, uid: {} }}", bytes(plaintext), quote(uid))
}

pub(crate) fn describe_decrypt(ciphertext: &[u8], uid: &str, key_id: &str, annotations_: &BTreeMap<String, Bytes>) -> String {
    format!(
        "DecryptRequest {{ ciphertext: {}, uid: {}, key_id: {}, annotations: {} }}",
        bytes(ciphertext),
        quote(uid),
        quote(key_id),
        annotations(annotations_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plaintexts_in_every_common_encoding() {
        let p: Vec<u8> = (1..=32).collect();
        assert_eq!(leak_form(&p, &format!("bad {}", hex::encode(&p))), Some("hex"));
        assert_eq!(leak_form(&p, &format!("bad {:?}", p)), Some("Rust {:?} bytes"));
        assert_eq!(leak_form(&p, "bad [1 2 3 4 5 6 7 8 9]"), Some("Go %v bytes"));
        assert_eq!(leak_form(&p, &base64::engine::general_purpose::STANDARD.encode(&p)), Some("base64"));
        assert_eq!(leak_form(&p, "authentication failed"), None);
    }

    #[test]
    fn bytes_are_described_by_size_and_hash_only() {
        let secret = b"a very secret data encryption key";
        let text = bytes(secret);
        assert!(text.starts_with("33 B (sha256 "), "{text}");
        assert!(!text.contains("secret"));
        assert_eq!(bytes(b"ping"), "\"ping\" (4 B)");
    }
}
