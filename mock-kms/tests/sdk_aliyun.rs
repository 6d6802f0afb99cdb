//! The `aliyun` dialect proven with Alibaba Cloud's own Go SDKs (through `mock-kms/sdk-probes`):
//! alibaba-cloud-sdk-go v1.61.18 (signature v1, HMAC-SHA1) and alibabacloud-go/kms-20160120/v3
//! (ACS3-HMAC-SHA256). Every operation round-trips, and each documented refusal reaches the SDK
//! as its typed error (`Code`, HTTP status) and is in the mock's audit log.

mod common;

use std::collections::BTreeMap;

use common::probe::{self, Case, all_ok, audited, case};
use kms_lab_stack::provision::GoSubject;
use mock_kms::MockKms;
use mock_kms::dialects::Dialect;
use serde_json::json;

/// Asserts `case` reached the SDK as Alibaba's `(HTTP status, Code)` and was audited with `outcome`.
fn refused(kms: &MockKms, case: &Case, status: u16, code: &str, operation: &str, outcome: &str) {
    probe::refused(kms, case, json!(code), json!(status), operation, outcome);
}

const ROUND_TRIP: [&str; 16] = [
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "Decrypt(GenerateDataKey)",
    "GenerateDataKeyWithoutPlaintext",
    "DescribeKey",
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

    let records = kms.audit().records();
    let rotation = audited(&records, case(&cases, "CreateKeyVersion"), "aliyun", "CreateKeyVersion");
    assert_eq!((rotation.action.as_str(), rotation.outcome.as_str()), ("RotateKey", "Ok"));
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
