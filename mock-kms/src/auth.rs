//! Request authentication: the credential set (access key → secret key), HMAC-SHA256 signature
//! verification with [`api::verify`], the clock-skew bound and replay refusal.
//!
//! Checks run in this order: access key known ([`KmsError::InvalidAccessKeyId`]), timestamp within
//! [`api::MAX_CLOCK_SKEW_MS`] ([`KmsError::RequestTimeTooSkewed`]), signature
//! ([`KmsError::SignatureDoesNotMatch`]), then nonce unused ([`KmsError::RequestReplayed`]). A
//! nonce is remembered only once its request verified, for twice the skew window, which covers
//! every timestamp that could still pass the skew check.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::api;
use crate::error::KmsError;

/// The longest nonce accepted.
pub const MAX_NONCE_LEN: usize = 128;

pub use crate::api::Credential;

/// The authentication headers of one request, as received (any may be missing).
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthHeaders<'a> {
    /// `x-kms-access-key`.
    pub access_key: Option<&'a str>,
    /// `x-kms-timestamp`.
    pub timestamp: Option<&'a str>,
    /// `x-kms-nonce`.
    pub nonce: Option<&'a str>,
    /// `x-kms-signature`.
    pub signature: Option<&'a str>,
}

type Secrets = HashMap<String, Zeroizing<String>>;

#[derive(Default)]
struct NonceCache {
    seen: HashMap<(String, String), u64>,
    by_expiry: VecDeque<(u64, (String, String))>,
}

impl NonceCache {
    fn purge(&mut self, now_ms: u64) {
        while let Some((expiry, _)) = self.by_expiry.front() {
            if *expiry > now_ms {
                break;
            }
            if let Some((_, entry)) = self.by_expiry.pop_front() {
                self.seen.remove(&entry);
            }
        }
    }
}

/// Verifies signed requests against a replaceable credential set.
pub struct Authenticator {
    secrets: RwLock<Arc<Secrets>>,
    nonces: Mutex<NonceCache>,
    max_skew_ms: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("access_keys", &self.access_keys()).field("max_skew_ms", &self.max_skew_ms).finish()
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

impl Authenticator {
    /// An authenticator accepting `credentials`, with the API's skew bound.
    pub fn new(credentials: impl IntoIterator<Item = Credential>) -> Self {
        let this = Self { secrets: RwLock::default(), nonces: Mutex::default(), max_skew_ms: api::MAX_CLOCK_SKEW_MS };
        this.replace(credentials);
        this
    }

    /// Replaces the whole credential set (e.g. a scenario "fixing the credentials").
    pub fn replace(&self, credentials: impl IntoIterator<Item = Credential>) {
        let secrets: Secrets = credentials.into_iter().map(|c| (c.access_key, c.secret_key)).collect();
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(secrets);
    }

    /// The access keys accepted now, sorted.
    pub fn access_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.secrets.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The secret key of `access_key`, if it is accepted (for dialects that verify their own
    /// signature scheme, e.g. SigV4).
    pub(crate) fn secret(&self, access_key: &str) -> Option<Zeroizing<String>> {
        self.secrets.read().unwrap_or_else(|p| p.into_inner()).get(access_key).cloned()
    }

    /// Verifies a request; returns its access key.
    pub fn verify(&self, method: &str, path: &str, body: &[u8], headers: AuthHeaders<'_>, now_ms: u64) -> Result<String, KmsError> {
        let missing =
            |name: &str| KmsError::InvalidParameter(format!("missing header `{name}`: every request must be signed (see mock_kms::api)"));
        let access_key = headers.access_key.filter(|a| !a.is_empty()).ok_or_else(|| missing(api::HEADER_ACCESS_KEY))?;
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner()).clone();
        let secret = secrets.get(access_key).ok_or_else(|| KmsError::InvalidAccessKeyId(access_key.to_owned()))?;

        let timestamp = headers.timestamp.ok_or_else(|| missing(api::HEADER_TIMESTAMP))?;
        let timestamp_ms: u64 = timestamp.parse().map_err(|_| {
            KmsError::InvalidParameter(format!("header `{}` must be Unix milliseconds (digits only)", api::HEADER_TIMESTAMP))
        })?;
        let skew_ms = now_ms.abs_diff(timestamp_ms);
        if skew_ms > self.max_skew_ms {
            return Err(KmsError::RequestTimeTooSkewed { timestamp_ms, skew_ms, max_skew_ms: self.max_skew_ms });
        }

        let nonce = headers.nonce.filter(|n| !n.is_empty()).ok_or_else(|| missing(api::HEADER_NONCE))?;
        if nonce.len() > MAX_NONCE_LEN {
            return Err(KmsError::InvalidParameter(format!("header `{}` is longer than {MAX_NONCE_LEN} bytes", api::HEADER_NONCE)));
        }
        let signature = headers.signature.ok_or_else(|| missing(api::HEADER_SIGNATURE))?;
        let canonical = api::canonical_request(method, path, timestamp_ms, nonce, body);
        if !api::verify(secret.as_bytes(), &canonical, signature) {
            return Err(KmsError::SignatureDoesNotMatch(access_key.to_owned()));
        }

        self.remember_nonce(access_key, nonce, now_ms, self.max_skew_ms)?;
        Ok(access_key.to_owned())
    }

    /// Remembers the nonce of a request whose signature verified, for twice `max_skew_ms` (every
    /// timestamp that could still pass a skew check of `max_skew_ms`); `Err(RequestReplayed)` if
    /// `access_key` used it before. Dialects that verify their own signature scheme call it too.
    pub(crate) fn remember_nonce(&self, access_key: &str, nonce: &str, now_ms: u64, max_skew_ms: u64) -> Result<(), KmsError> {
        let mut nonces = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        nonces.purge(now_ms);
        let entry = (access_key.to_owned(), nonce.to_owned());
        if nonces.seen.contains_key(&entry) {
            return Err(KmsError::RequestReplayed { access_key: access_key.to_owned(), nonce: nonce.to_owned() });
        }
        let expiry = now_ms + 2 * max_skew_ms;
        nonces.seen.insert(entry.clone(), expiry);
        nonces.by_expiry.push_back((expiry, entry));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn signed<'a>(secret: &str, ts: u64, nonce: &'a str, body: &[u8], out: &'a mut (String, String)) -> AuthHeaders<'a> {
        out.0 = ts.to_string();
        out.1 = api::sign(secret.as_bytes(), &api::canonical_request("POST", "/v1/Encrypt", ts, nonce, body));
        AuthHeaders { access_key: Some("AK"), timestamp: Some(&out.0), nonce: Some(nonce), signature: Some(&out.1) }
    }

    #[test]
    fn verifies_and_refuses_each_way_with_no_secret_in_messages() {
        let auth = Authenticator::new([Credential::new("AK", "SK-very-secret")]);
        let mut buf = Default::default();
        assert_eq!(auth.verify("POST", "/v1/Encrypt", b"{}", signed("SK-very-secret", NOW, "n1", b"{}", &mut buf), NOW).unwrap(), "AK");
        let replay = auth.verify("POST", "/v1/Encrypt", b"{}", signed("SK-very-secret", NOW, "n1", b"{}", &mut buf), NOW + 1).unwrap_err();
        assert!(matches!(replay, KmsError::RequestReplayed { .. }));
        let wrong = auth.verify("POST", "/v1/Encrypt", b"{}", signed("other", NOW, "n2", b"{}", &mut buf), NOW).unwrap_err();
        assert!(matches!(wrong, KmsError::SignatureDoesNotMatch(_)));
        let altered = auth.verify("POST", "/v1/Encrypt", b"{ }", signed("SK-very-secret", NOW, "n3", b"{}", &mut buf), NOW).unwrap_err();
        assert!(matches!(altered, KmsError::SignatureDoesNotMatch(_)));
        let skewed =
            auth.verify("POST", "/v1/Encrypt", b"{}", signed("SK-very-secret", NOW - 400_000, "n4", b"{}", &mut buf), NOW).unwrap_err();
        assert!(matches!(skewed, KmsError::RequestTimeTooSkewed { .. }));
        let mut unknown = signed("SK-very-secret", NOW, "n5", b"{}", &mut buf);
        unknown.access_key = Some("nobody");
        assert!(matches!(auth.verify("POST", "/v1/Encrypt", b"{}", unknown, NOW), Err(KmsError::InvalidAccessKeyId(_))));
        for error in [replay, wrong, skewed] {
            assert!(!error.to_string().contains("SK-very-secret"), "{error}");
        }
        assert!(!format!("{auth:?} {:?}", Credential::new("AK", "SK-very-secret")).contains("SK-very-secret"));
    }

    #[test]
    fn a_failed_signature_does_not_burn_the_nonce_and_nonces_expire() {
        let auth = Authenticator::new([Credential::new("AK", "SK")]);
        let mut buf = Default::default();
        assert!(auth.verify("POST", "/v1/Encrypt", b"", signed("bad", NOW, "n", b"", &mut buf), NOW).is_err());
        auth.verify("POST", "/v1/Encrypt", b"", signed("SK", NOW, "n", b"", &mut buf), NOW).unwrap();
        let later = NOW + 2 * api::MAX_CLOCK_SKEW_MS + 1;
        // The old timestamp is now skewed: the nonce could not be replayed anyway, and is forgotten.
        assert!(matches!(
            auth.verify("POST", "/v1/Encrypt", b"", signed("SK", NOW, "n", b"", &mut buf), later),
            Err(KmsError::RequestTimeTooSkewed { .. })
        ));
        auth.verify("POST", "/v1/Encrypt", b"", signed("SK", later, "other", b"", &mut buf), later).unwrap();
        assert_eq!(auth.nonces.lock().unwrap().seen.len(), 1);
    }

    #[test]
    fn credentials_can_be_replaced_at_runtime() {
        let auth = Authenticator::new([]);
        let mut buf = Default::default();
        assert!(matches!(
            auth.verify("POST", "/v1/Encrypt", b"", signed("SK", NOW, "a", b"", &mut buf), NOW),
            Err(KmsError::InvalidAccessKeyId(_))
        ));
        auth.replace([Credential::new("AK", "SK")]);
        auth.verify("POST", "/v1/Encrypt", b"", signed("SK", NOW, "b", b"", &mut buf), NOW).unwrap();
        assert_eq!(auth.access_keys(), ["AK"]);
    }
}
