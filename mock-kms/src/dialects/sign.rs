//! The pieces the clouds' request signatures share, so each dialect's verifier is only its own
//! canonical string: the `Authorization` header of the SigV4 family (`ALGO Credential=…,
//! SignedHeaders=…, Signature=…`: AWS, JD Cloud's `JDCLOUD2-HMAC-SHA256`, Alibaba's
//! `ACS3-HMAC-SHA256`), the clock-skew bound, and form decoding; HMAC, digests, RFC 3986
//! percent-encoding and the signatures a client computes too are in [`crate::api::sign`].
//!
//! Nothing here logs or formats a secret: callers pass secret keys in and get MACs back.

use std::time::{Duration, SystemTime};

/// The fields of a SigV4-family `Authorization` header.
pub(crate) struct Authorization<'a> {
    /// `Credential=`: the access key, then (SigV4, JD Cloud) `/DATE/REGION/SERVICE/TERMINATOR`.
    pub credential: &'a str,
    /// `SignedHeaders=`: lowercase header names joined by `;`.
    pub signed_headers: &'a str,
    /// `Signature=`: lowercase hex.
    pub signature: &'a str,
}

/// What is wrong with an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthorizationProblem {
    /// It does not start with `ALGORITHM ` (another scheme, or garbage).
    Algorithm,
    /// It lacks the named field.
    Missing(&'static str),
}

impl std::fmt::Display for AuthorizationProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Algorithm => f.write_str("the Authorization header is not of this API's signature algorithm"),
            Self::Missing(field) => write!(f, "the Authorization header lacks {field}"),
        }
    }
}

/// Parses `ALGORITHM Credential=…, SignedHeaders=…, Signature=…` (fields separated by `,` with
/// or without spaces, in any order).
pub(crate) fn parse_authorization<'a>(value: &'a str, algorithm: &str) -> Result<Authorization<'a>, AuthorizationProblem> {
    let fields = value.strip_prefix(algorithm).and_then(|rest| rest.strip_prefix(' ')).ok_or(AuthorizationProblem::Algorithm)?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in fields.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    Ok(Authorization {
        credential: credential.ok_or(AuthorizationProblem::Missing("Credential="))?,
        signed_headers: signed_headers.ok_or(AuthorizationProblem::Missing("SignedHeaders="))?,
        signature: signature.ok_or(AuthorizationProblem::Missing("Signature="))?,
    })
}

/// How far `time` is from the server's clock, if farther than `max`.
pub(crate) fn skew_beyond(time: SystemTime, max: Duration) -> Option<Duration> {
    let now = SystemTime::now();
    let skew = now.duration_since(time).or_else(|_| time.duration_since(now)).unwrap_or_default();
    (skew > max).then_some(skew)
}

/// `20260102T030405Z` (SigV4's `X-Amz-Date`, JD Cloud's `x-jdcloud-date`) → the time.
pub(crate) fn parse_compact_time(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &value[0..4], &value[4..6], &value[6..8], &value[9..11], &value[11..13], &value[13..15]);
    humantime::parse_rfc3339(&rfc3339).ok()
}

pub(crate) use crate::api::sign::{hmac_sha256, percent_encode, sha256_hex};

/// The pairs of a URL-encoded query or form body, decoded (`+` is a space); `None` if a `%`
/// escape is malformed or a value is not UTF-8.
pub(crate) fn parse_form(raw: &str) -> Option<Vec<(String, String)>> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// `value` with `%XX` escapes decoded and `+` as a space (a query or form value); `None` if
/// malformed or not UTF-8.
pub(crate) fn percent_decode(value: &str) -> Option<String> {
    decode(value, true)
}

/// A URL path with `%XX` escapes decoded (`+` stays itself); `None` if malformed or not UTF-8.
pub(crate) fn percent_decode_path(value: &str) -> Option<String> {
    decode(value, false)
}

fn decode(value: &str, plus_is_space: bool) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_of_each_cloud_parse() {
        let aws = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20260101/r/kms/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab",
            "AWS4-HMAC-SHA256",
        )
        .unwrap();
        assert_eq!((aws.credential, aws.signed_headers, aws.signature), ("AK/20260101/r/kms/aws4_request", "host;x-amz-date", "ab"));
        let acs3 =
            parse_authorization("ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=host;x-acs-date,Signature=cd", "ACS3-HMAC-SHA256").unwrap();
        assert_eq!((acs3.credential, acs3.signature), ("AK", "cd"));
        assert_eq!(parse_authorization("Bearer x", "ACS3-HMAC-SHA256").err(), Some(AuthorizationProblem::Algorithm));
        assert_eq!(
            parse_authorization("ACS3-HMAC-SHA256 Credential=AK", "ACS3-HMAC-SHA256").err(),
            Some(AuthorizationProblem::Missing("SignedHeaders="))
        );
    }

    #[test]
    fn percent_encoding_is_rfc_3986_and_forms_decode() {
        assert_eq!(percent_encode("a b*c~d/e=f+é"), "a%20b%2Ac~d%2Fe%3Df%2B%C3%A9");
        assert_eq!(
            parse_form("A=1&B=a+b%2Fc&C=").unwrap(),
            [("A".into(), "1".into()), ("B".into(), "a b/c".into()), ("C".into(), String::new())]
        );
        assert_eq!(parse_form("A=%zz"), None);
    }
}
