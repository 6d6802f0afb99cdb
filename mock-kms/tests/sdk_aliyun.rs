//! The `aliyun` dialect proven with Alibaba Cloud's own Go SDKs (through `mock-kms/sdk-probes`):
//! alibaba-cloud-sdk-go v1.61.18 (signature v1, HMAC-SHA1) and alibabacloud-go/kms-20160120/v3
//! (ACS3-HMAC-SHA256). Every operation round-trips, and each documented refusal reaches the SDK
//! as its typed error (`Code`, HTTP status) and is in the mock's audit log.
//!
//! The secrets manager is proven with the v3 SDK configured as ack-secret-manager configures it
//! (`openapi.Config{Endpoint, Credential}` only, so HTTPS: the dialect is served over TLS here,
//! its CA given to Go through `SSL_CERT_FILE`), calling what it calls.

mod common;

use std::collections::BTreeMap;

use common::probe::{self, Case, all_ok, audited, case};
use common::{AK, SK};
use kms_lab_provision::GoSubject;
use kms_lab_stack::certs::ServingPki;
use mock_kms::api::Action;
use mock_kms::api::faults::{FaultProfile, ThrottleFault};
use mock_kms::api::policy::AccessPolicy;
use mock_kms::dialects::Dialect;
use mock_kms::{Credential, MockKms, MockKmsBuilder};
use serde_json::json;

/// Asserts `case` reached the SDK as Alibaba's `(HTTP status, Code)` and was audited with `outcome`.
fn refused(kms: &MockKms, case: &Case, status: u16, code: &str, operation: &str, outcome: &str) {
    probe::refused(kms, case, json!(code), json!(status), operation, outcome);
}

const ROUND_TRIP: [&str; 17] = [
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "Decrypt(GenerateDataKey)",
    "GenerateDataKeyWithoutPlaintext",
    "DescribeKey",
    "ListKeys",
    "CreateKeyVersion",
    "DescribeKeyVersion",
    "ListKeyVersions",
    "Decrypt(after CreateKeyVersion)",
    "UpdateRotationPolicy",
    "DisableKey",
    "DescribeKey(disabled)",
    "EnableKey",
    "ScheduleKeyDeletion",
    "DescribeKey(pending deletion)",
];

async fn round_trip(subject: GoSubject) {
    let binary = probe::binary(subject).await;
    let kms = probe::kms(Dialect::Aliyun).await;
    let cases = probe::run(&binary, kms.addr(), "roundtrip").await;
    all_ok(&cases, &ROUND_TRIP);
    for name in ["Decrypt", "Decrypt(GenerateDataKey)", "Decrypt(after CreateKeyVersion)"] {
        assert_eq!(case(&cases, name).detail["roundTrip"], json!(true), "{name}");
    }
    assert_eq!(case(&cases, "DescribeKey").detail["keyState"], json!("Enabled"));
    assert_eq!(case(&cases, "DescribeKey(disabled)").detail["keyState"], json!("Disabled"));
    assert_eq!(case(&cases, "DescribeKey(pending deletion)").detail["keyState"], json!("PendingDeletion"));
    assert_eq!(case(&cases, "DescribeKeyVersion").detail["same"], json!(true));
    assert_eq!(case(&cases, "ListKeyVersions").detail, json!({"versions": 2, "totalCount": 2}));
    // Page 2 of size 1 of the two keys, in key id order.
    assert_eq!(case(&cases, "ListKeys").detail, json!({"keyIds": ["lab-key"], "totalCount": 2, "pageNumber": 2}));

    let records = kms.audit().records();
    let rotation = audited(&records, case(&cases, "CreateKeyVersion"), "aliyun", "CreateKeyVersion");
    assert_eq!((rotation.action.name(), rotation.outcome.name()), ("RotateKey", "Ok"));
    let listing = audited(&records, case(&cases, "ListKeys"), "aliyun", "ListKeys");
    assert_eq!((listing.action.name(), listing.outcome.name()), ("ListKeys", "Ok"));
    assert_eq!(kms.describe_key(0, "lab-key").unwrap().key_version_ids.len(), 2);
    assert_eq!(kms.describe_key(0, "doomed-key").unwrap().key_state, mock_kms::api::KeyState::PendingDeletion);
    kms.shutdown().await;
}

/// Throttled as Alibaba answers it (`Throttling`, HTTP 400), denied by a policy as `Forbidden.RAM` 403.
async fn throttling_and_policies(subject: GoSubject) {
    probe::throttled_then_denied(subject, Dialect::Aliyun, (json!("Throttling"), json!(400)), (json!("Forbidden.RAM"), json!(403))).await;
}

async fn refusals(subject: GoSubject) -> (MockKms, BTreeMap<String, Case>) {
    let binary = probe::binary(subject).await;
    let kms = probe::kms(Dialect::Aliyun).await;
    let cases = probe::run(&binary, kms.addr(), "errors").await;
    refused(&kms, case(&cases, "wrong secret key"), 400, "SignatureDoesNotMatch", "Encrypt", "SignatureDoesNotMatch");
    refused(&kms, case(&cases, "unknown access key"), 404, "InvalidAccessKeyId.NotFound", "Encrypt", "InvalidAccessKeyId");
    refused(&kms, case(&cases, "unknown key"), 404, "Forbidden.KeyNotFound", "Encrypt", "KeyNotFound");
    refused(&kms, case(&cases, "disabled key"), 400, "Rejected.Disabled", "Encrypt", "KeyNotEnabled");
    refused(&kms, case(&cases, "replayed nonce"), 400, "SignatureNonceUsed", "Encrypt", "RequestReplayed");
    refused(&kms, case(&cases, "unknown action"), 404, "InvalidAction.NotFound", "Frobnicate", "InvalidParameter");
    (kms, cases)
}

#[tokio::test]
async fn the_v1_sdk_round_trips_every_operation() {
    round_trip(GoSubject::AliyunSdkProbe).await;
}

#[tokio::test]
async fn the_acs3_sdk_round_trips_every_operation() {
    round_trip(GoSubject::AlibabacloudSdkProbe).await;
}

#[tokio::test]
async fn each_refusal_reaches_the_v1_sdk_as_a_server_error_and_is_audited() {
    let (kms, cases) = refusals(GoSubject::AliyunSdkProbe).await;
    refused(&kms, case(&cases, "missing parameter"), 400, "MissingParameter", "Encrypt", "InvalidParameter");
    kms.shutdown().await;
}

#[tokio::test]
async fn each_refusal_reaches_the_acs3_sdk_as_an_sdk_error_and_is_audited() {
    let (kms, cases) = refusals(GoSubject::AlibabacloudSdkProbe).await;
    refused(&kms, case(&cases, "skewed timestamp"), 400, "InvalidTimeStamp.Expired", "Encrypt", "RequestTimeTooSkewed");
    refused(&kms, case(&cases, "missing header"), 400, "MissingParameter", "Encrypt", "InvalidParameter");
    refused(&kms, case(&cases, "ListKeys(Filters)"), 400, "InvalidParameter", "ListKeys", "InvalidParameter");
    all_ok(&cases, &["first use of a nonce"]);
    kms.shutdown().await;
}

#[tokio::test]
async fn throttling_and_access_policies_apply_to_v1_sdk_calls() {
    throttling_and_policies(GoSubject::AliyunSdkProbe).await;
}

#[tokio::test]
async fn throttling_and_access_policies_apply_to_acs3_sdk_calls() {
    throttling_and_policies(GoSubject::AlibabacloudSdkProbe).await;
}

#[tokio::test]
async fn a_sealed_kms_answers_v1_sdk_calls_service_unavailable() {
    probe::sealed(GoSubject::AliyunSdkProbe, Dialect::Aliyun, (json!("ServiceUnavailableTemporary"), json!(503))).await;
}

#[tokio::test]
async fn a_sealed_kms_answers_acs3_sdk_calls_service_unavailable() {
    probe::sealed(GoSubject::AlibabacloudSdkProbe, Dialect::Aliyun, (json!("ServiceUnavailableTemporary"), json!(503))).await;
}

/// The access key of ack-secret-manager's SecretStore in the seed: granted only
/// `kms:GetSecretValue` and `kms:Decrypt`.
const READER: (&str, &str) = ("AK-reader", "SK-reader-secret-never-logged");
/// An access key granted `kms:GetSecretValue` but not `kms:Decrypt` on the secret's key.
const NO_DECRYPT: (&str, &str) = ("AK-no-decrypt", "SK-no-decrypt-secret-never-logged");

/// A mock KMS serving the aliyun dialect over TLS only (its main listener speaks the native API),
/// with `lab-key` and three credentials; the address and the CA file for `SSL_CERT_FILE`.
/// `builder` serving the aliyun dialect over TLS (an extra listener) with a fresh lab CA, and
/// the folder whose `ca.pem` is that CA (for `SSL_CERT_FILE`).
fn aliyun_over_tls(builder: MockKmsBuilder) -> (MockKmsBuilder, tempfile::TempDir) {
    let pki = ServingPki::generate("sdk_aliyun CA", "mock-kms").unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let builder = builder.extra_tls_listener(Dialect::Aliyun, "127.0.0.1:0".parse().unwrap()).tls_identity(pki.cert_pem, pki.key_pem);
    (builder, dir)
}

async fn tls_kms() -> (MockKms, std::net::SocketAddr, tempfile::TempDir) {
    let (builder, dir) = aliyun_over_tls(MockKms::builder());
    let kms = builder
        .credential(Credential::new(AK, SK))
        .credential(Credential::new(READER.0, READER.1))
        .credential(Credential::new(NO_DECRYPT.0, NO_DECRYPT.1))
        .key("lab-key")
        .seed(29)
        .start()
        .await
        .unwrap();
    let addr = kms.dialect_addr(0, Dialect::Aliyun).expect("the aliyun TLS listener");
    (kms, addr, dir)
}

/// Runs a secrets phase of the alibabacloud probe as `credential` against the TLS listener.
async fn secrets_phase(
    addr: std::net::SocketAddr,
    ca: &tempfile::TempDir,
    phase: &str,
    credential: (&str, &str),
) -> BTreeMap<String, Case> {
    let binary = probe::binary(GoSubject::AlibabacloudSdkProbe).await;
    probe::run_as(&binary, addr, phase, credential, Some(&ca.path().join("ca.pem"))).await
}

/// Asserts `case` reached the SDK as Alibaba's `(status, Code)` and was audited on the aliyun
/// dialect as `operation` with the native `outcome` and the secret it named.
fn refused_secret(kms: &MockKms, case: &Case, (status, code): (u16, &str), operation: &str, outcome: &str, secret: Option<&str>) {
    assert!(!case.ok, "{case:?}");
    assert_eq!((&case.code, &case.status), (&json!(code), &json!(status)), "{case:?}");
    assert!(!case.message.contains(SK) && !case.message.contains("s3cr3t"), "{case:?}");
    let records = kms.audit().records();
    let record = audited(&records, case, "aliyun", operation);
    assert_eq!((record.outcome.name(), record.secret_name.as_deref()), (outcome, secret), "{case:?}");
}

const SECRETS_ROUND_TRIP: [&str; 22] = [
    "CreateSecret",
    "GetSecretValue",
    "wire",
    "PutSecretValue",
    "GetSecretValue(ACSCurrent)",
    "GetSecretValue(ACSPrevious)",
    "GetSecretValue(VersionId)",
    "GetSecretValue(FetchExtendedConfig)",
    "UpdateSecretVersionStage",
    "GetSecretValue(after UpdateSecretVersionStage)",
    "UpdateSecretVersionStage(back)",
    "DescribeSecret",
    "CreateSecret(api-token)",
    "CreateSecret(doomed)",
    "PutSecretValue(JSON)",
    "GetSecretValue(JSON)",
    "ListSecrets(page 1)",
    "ListSecrets(page 2)",
    "DeleteSecret",
    "RestoreSecret",
    "GetSecretValue(after RestoreSecret)",
    "DeleteSecret(force)",
];

#[tokio::test]
async fn the_acs3_sdk_round_trips_the_secrets_manager_as_ack_secret_manager_calls_it() {
    let (kms, addr, ca) = tls_kms().await;
    let cases = secrets_phase(addr, &ca, "secrets", (AK, SK)).await;
    all_ok(&cases, &SECRETS_ROUND_TRIP);
    // What the SDK put on the wire with ack-secret-manager's configuration.
    assert_eq!(case(&cases, "wire").detail, json!({"signature": "ACS3-HMAC-SHA256", "scheme": "https"}));

    let first = &case(&cases, "GetSecretValue").detail;
    assert_eq!(
        first,
        &json!({"roundTrip": true, "versionId": "v1", "versionStages": ["ACSCurrent"], "secretType": "Generic",
                "secretDataType": "text", "createTime": true, "extended": false})
    );
    assert_eq!(case(&cases, "PutSecretValue").detail, json!({"versionId": "v2", "versionStages": ["ACSCurrent"]}));
    for (name, version, stages) in [
        ("GetSecretValue(ACSCurrent)", "v2", json!(["ACSCurrent"])),
        ("GetSecretValue(ACSPrevious)", "v1", json!(["ACSPrevious"])),
        ("GetSecretValue(VersionId)", "v1", json!(["ACSPrevious"])),
        ("GetSecretValue(FetchExtendedConfig)", "v2", json!(["ACSCurrent"])),
        ("GetSecretValue(after UpdateSecretVersionStage)", "v1", json!(["ACSCurrent"])),
        ("GetSecretValue(JSON)", "v2", json!(["ACSCurrent"])),
    ] {
        let detail = &case(&cases, name).detail;
        assert_eq!(
            (&detail["roundTrip"], &detail["versionId"], &detail["versionStages"]),
            (&json!(true), &json!(version), &stages),
            "{name}"
        );
        // A generic secret has no extended configuration or rotation fields, asked for or not.
        assert_eq!(detail["extended"], json!(false), "{name}");
    }
    assert_eq!(
        case(&cases, "CreateSecret").detail,
        json!({"arn": "acs:kms:cn-hangzhou:123456789012:secret/db-password", "versionId": "v1", "secretType": "Generic"})
    );
    assert_eq!(
        case(&cases, "DescribeSecret").detail,
        json!({"arn": "acs:kms:cn-hangzhou:123456789012:secret/db-password", "encryptionKeyId": "lab-key", "secretType": "Generic",
               "description": "from the SDK probe", "updateTime": true})
    );
    assert_eq!(
        case(&cases, "ListSecrets(page 1)").detail,
        json!({"names": ["api-token", "db-password"], "totalCount": 3, "pageNumber": 1, "pageSize": 2})
    );
    assert_eq!(
        case(&cases, "ListSecrets(page 2)").detail,
        json!({"names": ["doomed-secret"], "totalCount": 3, "pageNumber": 2, "pageSize": 2})
    );
    assert_eq!(case(&cases, "DeleteSecret(planned)").detail, json!({"plannedDeleteTime": true, "secretName": "doomed-secret"}));
    assert_eq!(case(&cases, "GetSecretValue(after RestoreSecret)").detail["roundTrip"], json!(true));

    let doomed = Some("doomed-secret");
    refused_secret(
        &kms,
        case(&cases, "secret in its recovery window"),
        (409, "Rejected.ResourceInDeleteWindow"),
        "GetSecretValue",
        "KeyNotFound",
        doomed,
    );
    refused_secret(&kms, case(&cases, "deleted secret"), (404, "Forbidden.ResourceNotFound"), "GetSecretValue", "KeyNotFound", doomed);
    refused_secret(
        &kms,
        case(&cases, "unknown secret"),
        (404, "Forbidden.ResourceNotFound"),
        "GetSecretValue",
        "KeyNotFound",
        Some("no-such-secret"),
    );
    refused_secret(
        &kms,
        case(&cases, "existing secret"),
        (409, "Rejected.ResourceExist"),
        "CreateSecret",
        "KeyAlreadyExists",
        Some("db-password"),
    );
    refused_secret(
        &kms,
        case(&cases, "bad signature"),
        (400, "SignatureDoesNotMatch"),
        "GetSecretValue",
        "SignatureDoesNotMatch",
        Some("db-password"),
    );

    // Each call is audited as the native action, with the secret, the key and the access key.
    let records = kms.audit().records();
    // The first GetSecretValue (a success carries no request id back: the first such record).
    let read = records.iter().find(|r| r.dialect.name() == "aliyun" && r.operation == "GetSecretValue").expect("a GetSecretValue record");
    assert_eq!(
        (read.action.name(), read.outcome.name(), read.secret_name.as_deref(), read.key_id.as_deref(), read.access_key.as_deref()),
        ("GetSecretValue", "Ok", Some("db-password"), Some("lab-key"), Some(AK))
    );
    let aliyun: Vec<_> = records.iter().filter(|r| r.dialect.name() == "aliyun").collect();
    assert_eq!(aliyun.len(), cases.len() - 2, "one record per SDK call (the `wire` and `DeleteSecret(planned)` lines are not calls)");
    assert!(aliyun.iter().all(|r| r.action.action().is_some_and(Action::is_secret_action)), "{aliyun:?}");
    kms.shutdown().await;
}

#[tokio::test]
async fn an_access_key_granted_only_get_secret_value_and_decrypt_reads_secrets_and_nothing_else() {
    let (kms, addr, ca) = tls_kms().await;
    all_ok(&secrets_phase(addr, &ca, "secrets", (AK, SK)).await, &SECRETS_ROUND_TRIP);
    // The seed's grant: kms:GetSecretValue and kms:Decrypt.
    kms.set_policy(READER.0, AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/*", "key/*"])).unwrap();
    kms.set_policy(NO_DECRYPT.0, AccessPolicy::allow([Action::GetSecretValue], ["*"])).unwrap();

    let cases = secrets_phase(addr, &ca, "secrets-reader", READER).await;
    all_ok(&cases, &["reader GetSecretValue"]);
    assert_eq!(case(&cases, "reader GetSecretValue").detail["roundTrip"], json!(true));
    let denied = (403, "Forbidden.NoPermission");
    let db = Some("db-password");
    refused_secret(&kms, case(&cases, "reader DescribeSecret"), denied, "DescribeSecret", "Forbidden", db);
    refused_secret(&kms, case(&cases, "reader PutSecretValue"), denied, "PutSecretValue", "Forbidden", db);
    refused_secret(&kms, case(&cases, "reader ListSecrets"), denied, "ListSecrets", "Forbidden", None);
    let records = kms.audit().records();
    assert_eq!(audited(&records, case(&cases, "reader PutSecretValue"), "aliyun", "PutSecretValue").access_key.as_deref(), Some(READER.0));

    // Without kms:Decrypt on the secret's key the value stays unreadable.
    let cases = secrets_phase(addr, &ca, "secrets-reader", NO_DECRYPT).await;
    let refused = case(&cases, "reader GetSecretValue");
    refused_secret(&kms, refused, denied, "GetSecretValue", "Forbidden", db);
    assert!(refused.message.contains("kms:Decrypt on `key/lab-key`"), "{refused:?}");
    kms.shutdown().await;
}

#[tokio::test]
async fn a_throttled_secret_read_reaches_the_sdk_as_rejected_throttling() {
    let (kms, addr, ca) = tls_kms().await;
    all_ok(&secrets_phase(addr, &ca, "secrets", (AK, SK)).await, &SECRETS_ROUND_TRIP);
    let throttle = ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: Some(vec![Action::GetSecretValue]) };
    kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
    let cases = secrets_phase(addr, &ca, "secrets-throttled", (AK, SK)).await;
    all_ok(&cases, &["GetSecretValue 1"]);
    refused_secret(
        &kms,
        case(&cases, "GetSecretValue 2"),
        (429, "Rejected.Throttling"),
        "GetSecretValue",
        "Throttling",
        Some("db-password"),
    );
    kms.shutdown().await;
}

#[tokio::test]
async fn a_sealed_kms_answers_secret_reads_service_unavailable() {
    let (builder, dir) = aliyun_over_tls(MockKms::builder());
    let data = dir.path().join("data");
    mock_kms::seal::init(&data, 5, 3).unwrap();
    let kms = builder.data_dir(&data).sealed(true).credential(Credential::new(AK, SK)).start().await.unwrap();
    let addr = kms.dialect_addr(0, Dialect::Aliyun).expect("the aliyun TLS listener");
    let cases = secrets_phase(addr, &dir, "secrets-throttled", (AK, SK)).await;
    refused_secret(
        &kms,
        case(&cases, "GetSecretValue 1"),
        (503, "ServiceUnavailableTemporary"),
        "GetSecretValue",
        "Sealed",
        Some("db-password"),
    );
    kms.shutdown().await;
}

#[tokio::test]
async fn a_secret_written_on_one_node_is_read_on_another() {
    let (builder, dir) = aliyun_over_tls(MockKms::builder());
    let kms = builder.cluster_size(2).credential(Credential::new(AK, SK)).key("lab-key").start().await.unwrap();
    let (first, second) = (kms.dialect_addr(0, Dialect::Aliyun).unwrap(), kms.dialect_addr(1, Dialect::Aliyun).unwrap());
    assert_ne!(first, second);
    all_ok(&secrets_phase(first, &dir, "secrets", (AK, SK)).await, &SECRETS_ROUND_TRIP);
    let cases = secrets_phase(second, &dir, "secrets-reader", (AK, SK)).await;
    all_ok(&cases, &["reader GetSecretValue", "reader DescribeSecret", "reader ListSecrets"]);
    assert_eq!(case(&cases, "reader GetSecretValue").detail["roundTrip"], json!(true));
    let records = kms.audit().records();
    let read = audited(&records, case(&cases, "reader DescribeSecret"), "aliyun", "DescribeSecret");
    assert_ne!(read.node, records.iter().find(|r| r.operation == "CreateSecret").unwrap().node, "read on the other node");
    kms.shutdown().await;
}
