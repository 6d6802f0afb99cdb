//! The clouds' request signatures, computed once for both sides: the mock KMS's dialects verify
//! a request by computing what its signature must be, and [`super::Client`] signs with the same
//! functions. Each is as the cloud's own SDK computes it (proven by the Go SDK probes in
//! `mock-kms/sdk-probes/`, which sign with the SDKs against the mock's verifiers).
//!
//! Nothing here logs or formats a secret: callers pass secret keys in and get signatures back.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// JD Cloud's signature algorithm (`Authorization: JDCLOUD2-HMAC-SHA256 Credential=…`).
pub const JDCLOUD2: &str = "JDCLOUD2-HMAC-SHA256";
/// The last part of a JD Cloud credential scope.
pub const JDCLOUD2_TERMINATOR: &str = "jdcloud2_request";

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    let mut out = [0; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// HMAC-SHA1 of `data` under `key` (Alibaba Cloud's signature v1).
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    let mut out = [0; 20];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Lowercase hex of SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// RFC 3986 percent-encoding: everything but `A-Z a-z 0-9 - _ . ~` as `%XX` (uppercase hex), as
/// Go's `url.QueryEscape` with the `+`→`%20`, `*`→`%2A`, `%7E`→`~` fix-ups the clouds' SDKs apply
/// (query strings, and the canonical strings the signatures cover).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What a `JDCLOUD2-HMAC-SHA256` signature covers, as jdcloud-sdk-go's `core/Signer.go` builds it.
pub struct Jdcloud2Request<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path as sent (escaped as on the wire).
    pub path: &'a str,
    /// The raw query as sent (empty when none).
    pub query: &'a str,
    /// The signed headers in `SignedHeaders` order: lowercase name and its value (several values
    /// joined by `,`, trimmed, inner runs of spaces as one).
    pub headers: &'a [(&'a str, String)],
    /// The body.
    pub body: &'a [u8],
    /// `x-jdcloud-date`, `YYYYMMDDTHHMMSSZ`; its first 8 characters are the scope's date.
    pub timestamp: &'a str,
    /// The scope's region (`cn-north-1`).
    pub region: &'a str,
    /// The scope's service (`kms`).
    pub service: &'a str,
}

impl Jdcloud2Request<'_> {
    /// `SignedHeaders=`: the header names joined by `;`.
    pub fn signed_headers(&self) -> String {
        self.headers.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(";")
    }

    /// The credential scope after the access key: `DATE/REGION/SERVICE/jdcloud2_request`.
    pub fn scope(&self) -> String {
        let date = self.timestamp.get(..8).unwrap_or(self.timestamp);
        format!("{date}/{}/{}/{JDCLOUD2_TERMINATOR}", self.region, self.service)
    }

    /// The lowercase hex signature under `secret_key`.
    pub fn signature(&self, secret_key: &str) -> String {
        let canonical_headers: String = self.headers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
        let canonical = [self.method, self.path, self.query, &canonical_headers, &self.signed_headers(), &sha256_hex(self.body)].join("\n");
        let scope = self.scope();
        let string_to_sign = format!("{JDCLOUD2}\n{}\n{scope}\n{}", self.timestamp, sha256_hex(canonical.as_bytes()));
        let seed = zeroize::Zeroizing::new(format!("JDCLOUD2{secret_key}"));
        let mut parts = scope.split('/');
        let mut key = hmac_sha256(seed.as_bytes(), parts.next().unwrap_or_default().as_bytes());
        for part in parts {
            key = hmac_sha256(&key, part.as_bytes());
        }
        hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
    }
}

/// Alibaba Cloud's RPC signature v1 (alibaba-cloud-sdk-go): base64 HMAC-SHA1, keyed `SECRET&`, of
/// `METHOD&%2F&` + the RFC 3986-encoded `k=v&…` of `params` (every parameter but `Signature`,
/// sorted by key).
pub fn aliyun_v1_signature<'a>(secret_key: &str, method: &str, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut params: Vec<(&str, &str)> = params.into_iter().collect();
    params.sort_by_key(|(k, _)| *k);
    let canonical: Vec<String> = params.into_iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    let string_to_sign = format!("{method}&{}&{}", percent_encode("/"), percent_encode(&canonical.join("&")));
    let key = zeroize::Zeroizing::new(format!("{secret_key}&"));
    base64::engine::general_purpose::STANDARD.encode(hmac_sha1(key.as_bytes(), string_to_sign.as_bytes()))
}
