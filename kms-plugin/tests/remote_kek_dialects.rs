//! The plugin's remote KEK in the JD Cloud and Alibaba Cloud dialects against the real mock KMS
//! (in process), whose verifiers the clouds' own Go SDKs prove (`mock-kms/tests/sdk_*.rs`): round
//! trips, the key id each dialect can name, a wrong secret key refused as `Unauthenticated`
//! naming the key to check, a disabled key, throttling retried, Alibaba over HTTPS with a private
//! CA (refused without it), and the caller header in the audit log.

use std::time::Duration;

use kms_plugin::config::{Credential, RemoteKmsConfig};
use kms_plugin::kek::{Caller, Claimed, KekError, RemoteKek, as_caller};
use mock_kms::dialects::Dialect;
use mock_kms::{FaultProfile, MockKms};
use zeroize::Zeroizing;

const AK: &str = "dialect-ak";
const SK: &str = "dialect-secret-key";

/// The TLS identity of a mock KMS listener and the CA file that trusts it.
struct Tls {
    _dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn tls() -> Tls {
    let pki = kms_lab_stack::certs::ServingPki::generate("test CA", "mock-kms").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    Tls { _dir: dir, ca_file, cert_pem: pki.cert_pem, key_pem: pki.key_pem }
}

/// A mock KMS whose main listener speaks native and one more listener `dialect` (over TLS with `tls`).
async fn kms(dialect: Dialect, tls: Option<&Tls>) -> MockKms {
    let builder = MockKms::builder().credential(mock_kms::Credential::new(AK, SK)).key("lab-key").seed(26);
    let any_port = "127.0.0.1:0".parse().unwrap();
    let builder = match tls {
        Some(tls) => builder.tls_identity(tls.cert_pem.clone(), tls.key_pem.clone()).extra_tls_listener(dialect, any_port),
        None => builder.extra_listener(dialect, any_port),
    };
    builder.start().await.unwrap()
}

fn kek(kms: &MockKms, dialect: Dialect, secret_key: &str, ca_file: Option<&std::path::Path>) -> RemoteKek {
    let scheme = if ca_file.is_some() { "https" } else { "http" };
    let addr = kms.dialect_addr(0, dialect).unwrap();
    RemoteKek::new(RemoteKmsConfig {
        endpoints: vec![format!("{scheme}://{addr}")],
        key_id: "lab-key".into(),
        dialect,
        ca_file: ca_file.map(ToOwned::to_owned),
        credential: Credential { access_key: AK.into(), secret_key: Zeroizing::new(secret_key.into()) },
        call_timeout: Duration::from_secs(5),
        max_retries: 3,
    })
    .unwrap()
}

/// Wrap, unwrap with the claimed key id, the audit trail of both on `dialect` with the caller.
async fn round_trip(kms: &MockKms, kek: &RemoteKek, dialect: Dialect, expected_key_id: &str) {
    let dek = [7u8; 32];
    let wrapped = as_caller(Caller::Request, kek.wrap(&dek)).await.unwrap();
    assert_eq!(wrapped.key_id, expected_key_id);
    assert!(!wrapped.ciphertext.windows(dek.len()).any(|w| w == dek), "the DEK is in the ciphertext");
    let claimed = Claimed { key_id: Some(&wrapped.key_id), annotations: None };
    assert_eq!(&*kek.unwrap(&wrapped.ciphertext, claimed).await.unwrap(), &dek);
    let wrong = Claimed { key_id: Some("lab-key/other"), annotations: None };
    assert!(matches!(kek.unwrap(&wrapped.ciphertext, wrong).await, Err(KekError::Mismatch(_))));
    let records = kms.audit().records();
    let encrypt =
        records.iter().find(|r| r.dialect.name() == dialect.name() && r.action.name() == "Encrypt").expect("an Encrypt in the audit log");
    assert_eq!((encrypt.outcome.name(), encrypt.access_key.as_deref(), encrypt.caller), ("Ok", Some(AK), Some(Caller::Request)));
    assert!(
        records.iter().any(|r| r.dialect.name() == dialect.name() && r.action.name() == "Decrypt" && r.outcome.name() == "Ok"),
        "{records:?}"
    );
}

/// A wrong secret key, a disabled key and throttling, as the plugin reports them.
async fn refusals(kms: &MockKms, dialect: Dialect, ca_file: Option<&std::path::Path>) {
    let error = kek(kms, dialect, "not-the-secret", ca_file).wrap(b"dek").await.unwrap_err();
    assert!(matches!(&error, KekError::Unauthenticated(m) if m.contains("SecretKey")), "{dialect}: {error}");
    assert!(!error.to_string().contains("not-the-secret"), "{error}");

    let kek = kek(kms, dialect, SK, ca_file);
    kms.set_faults(FaultProfile::from_yaml("throttle: {per_second: 0.001, burst: 1}\n").unwrap()).unwrap();
    // The one token of the bucket, then throttled: reported as throttling (retryable), not as a
    // refusal of the key or the credential.
    kek.wrap(b"dek").await.unwrap();
    let error = kek.wrap(b"dek").await.unwrap_err();
    assert!(matches!(error, KekError::Throttled(_)), "{dialect}: {error}");
    assert!(kms.audit().records().iter().any(|r| r.dialect.name() == dialect.name() && r.outcome.name() == "Throttling"));

    kms.set_faults(FaultProfile::from_yaml("key_disabled: {key_ids: [lab-key]}\n").unwrap()).unwrap();
    let error = kek.wrap(b"dek").await.unwrap_err();
    assert!(matches!(error, KekError::KeyUnusable(_)), "{dialect}: {error}");
    kms.set_faults(FaultProfile::default()).unwrap();
    kek.wrap(b"dek").await.unwrap();
}

#[tokio::test]
async fn jdcloud_round_trips_with_the_key_id_alone_and_reports_refusals() {
    let kms = kms(Dialect::Jdcloud, None).await;
    let kek = kek(&kms, Dialect::Jdcloud, SK, None);
    // JD Cloud's Encrypt names no key version: the key id is the key's.
    round_trip(&kms, &kek, Dialect::Jdcloud, "lab-key").await;
    kms.rotate_key("lab-key").await.unwrap();
    assert_eq!(kek.wrap(b"dek").await.unwrap().key_id, "lab-key", "a rotation does not show in JD Cloud's answers");
    refusals(&kms, Dialect::Jdcloud, None).await;
    kms.shutdown().await;
}

#[tokio::test]
async fn aliyun_over_https_with_a_private_ca_round_trips_with_the_key_version_and_reports_refusals() {
    let tls = tls();
    let kms = kms(Dialect::Aliyun, Some(&tls)).await;
    let kek = kek(&kms, Dialect::Aliyun, SK, Some(&tls.ca_file));
    let version = kms.describe_key(0, "lab-key").unwrap().current_key_version_id;
    round_trip(&kms, &kek, Dialect::Aliyun, &format!("lab-key/{version}")).await;
    let rotated = kms.rotate_key("lab-key").await.unwrap().current_key_version_id;
    assert_ne!(rotated, version);
    assert_eq!(kek.wrap(b"dek").await.unwrap().key_id, format!("lab-key/{rotated}"), "the key id follows a rotation");
    refusals(&kms, Dialect::Aliyun, Some(&tls.ca_file)).await;

    // Without the CA the TLS handshake fails: the KMS is unavailable, not wrong.
    let untrusting = RemoteKek::new(RemoteKmsConfig {
        endpoints: vec![format!("https://{}", kms.dialect_addr(0, Dialect::Aliyun).unwrap())],
        key_id: "lab-key".into(),
        dialect: Dialect::Aliyun,
        ca_file: None,
        credential: Credential { access_key: AK.into(), secret_key: Zeroizing::new(SK.into()) },
        call_timeout: Duration::from_secs(2),
        max_retries: 0,
    })
    .unwrap();
    assert!(matches!(untrusting.wrap(b"dek").await, Err(KekError::Unavailable(_))));
    kms.shutdown().await;
}
