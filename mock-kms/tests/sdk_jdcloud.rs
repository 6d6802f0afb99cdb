//! The `jdcloud` dialect proven with JD Cloud's own Go SDK (jdcloud-sdk-go v1.16.0, through
//! `mock-kms/sdk-probes/jdcloud`): every operation round-trips, and each documented refusal
//! reaches the SDK as its error (`error.code`, `error.status`) and is in the mock's audit log.

mod common;

use common::probe::{self, Case, all_ok, audited, case};
use kms_lab_provision::GoSubject;
use mock_kms::MockKms;
use mock_kms::dialects::Dialect;
use serde_json::json;

/// Asserts `case` reached the SDK as JD Cloud's `error {code, status}` and was audited with `outcome`.
fn refused(kms: &MockKms, case: &Case, code: u16, status: &str, operation: &str, outcome: &str) {
    probe::refused(kms, case, json!(code), json!(status), operation, outcome);
}

#[tokio::test]
async fn the_jdcloud_sdk_round_trips_every_operation() {
    let binary = probe::binary(GoSubject::JdcloudSdkProbe).await;
    let kms = probe::kms(Dialect::Jdcloud).await;
    let cases = probe::run(&binary, kms.addr(), "roundtrip").await;
    all_ok(
        &cases,
        &[
            "Encrypt",
            "Decrypt",
            "GenerateDataKey",
            "Decrypt(GenerateDataKey)",
            "DescribeKey",
            "KeyRotation",
            "Decrypt(after KeyRotation)",
            "DescribeKeyDetail",
            "DisableKeyVersion",
            "EnableKeyVersion",
            "DisableKey",
            "DescribeKey(disabled)",
            "EnableKey",
            "ScheduleKeyDeletion",
            "DescribeKey(pending deletion)",
        ],
    );
    for name in ["Decrypt", "Decrypt(GenerateDataKey)", "Decrypt(after KeyRotation)"] {
        assert_eq!(case(&cases, name).detail["roundTrip"], json!(true), "{name}");
    }
    assert_eq!(case(&cases, "GenerateDataKey").detail["bytes"], json!(32));
    assert_eq!(case(&cases, "DescribeKey").detail, json!({"keyId": "lab-key", "keyStatus": 0}));
    assert_eq!(case(&cases, "DescribeKey(disabled)").detail["keyStatus"], json!(1));
    assert_eq!(case(&cases, "DescribeKey(pending deletion)").detail["keyStatus"], json!(2));
    assert_eq!(case(&cases, "DescribeKeyDetail").detail, json!({"keyVersionCount": 2, "versions": 2}));
    // A ciphertext of a version disabled on its own does not decrypt until it is enabled again.
    let disabled_version = case(&cases, "Decrypt(disabled version)");
    refused(&kms, disabled_version, 400, "FAILED_PRECONDITION", "Decrypt", "KeyNotEnabled");

    // Every call is audited under the dialect, its own operation name and the native action.
    let records = kms.audit().records();
    let rotation = audited(&records, case(&cases, "KeyRotation"), "jdcloud", "KeyRotation");
    assert_eq!((rotation.action.name(), rotation.outcome.name()), ("RotateKey", "Ok"));
    let detail = audited(&records, case(&cases, "DescribeKeyDetail"), "jdcloud", "DescribeKeyDetail");
    assert_eq!(detail.action.name(), "DescribeKey");
    assert_eq!(kms.describe_key(0, "doomed-key").unwrap().key_state, mock_kms::api::KeyState::PendingDeletion);
    kms.shutdown().await;
}

#[tokio::test]
async fn each_refusal_reaches_the_jdcloud_sdk_as_its_error_and_is_audited() {
    let binary = probe::binary(GoSubject::JdcloudSdkProbe).await;
    let kms = probe::kms(Dialect::Jdcloud).await;
    let cases = probe::run(&binary, kms.addr(), "errors").await;
    refused(&kms, case(&cases, "wrong secret key"), 401, "UNAUTHENTICATED", "Encrypt", "SignatureDoesNotMatch");
    refused(&kms, case(&cases, "unknown access key"), 401, "UNAUTHENTICATED", "Encrypt", "InvalidAccessKeyId");
    refused(&kms, case(&cases, "unknown key"), 404, "NOT_FOUND", "Encrypt", "KeyNotFound");
    refused(&kms, case(&cases, "disabled key"), 400, "FAILED_PRECONDITION", "Encrypt", "KeyNotEnabled");
    refused(&kms, case(&cases, "skewed timestamp"), 401, "UNAUTHENTICATED", "Encrypt", "RequestTimeTooSkewed");
    refused(&kms, case(&cases, "replayed nonce"), 401, "UNAUTHENTICATED", "Encrypt", "RequestReplayed");
    refused(&kms, case(&cases, "missing header"), 401, "UNAUTHENTICATED", "Encrypt", "InvalidParameter");
    refused(&kms, case(&cases, "unknown action"), 404, "NOT_FOUND", "Frobnicate", "InvalidParameter");
    assert!(case(&cases, "skewed timestamp").message.contains("x-jdcloud-date"), "{:?}", case(&cases, "skewed timestamp"));
    kms.shutdown().await;
}

#[tokio::test]
async fn throttling_and_access_policies_apply_to_jdcloud_calls() {
    let throttled = (json!(429), json!("RESOURCE_EXHAUSTED"));
    let denied = (json!(403), json!("PERMISSION_DENIED"));
    probe::throttled_then_denied(GoSubject::JdcloudSdkProbe, Dialect::Jdcloud, throttled, denied).await;
}

#[tokio::test]
async fn a_sealed_kms_answers_jdcloud_calls_unavailable() {
    probe::sealed(GoSubject::JdcloudSdkProbe, Dialect::Jdcloud, (json!(503), json!("UNAVAILABLE"))).await;
}
