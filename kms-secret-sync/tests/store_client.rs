//! The store client against the mock KMS's secrets manager over HTTP (in process, no apiserver):
//! versions and stages, rotation and rollback, deletion and restore, and each failure typed as
//! the controller classifies it (policy denial, `deny` fault, throttling, outage).

use std::time::Duration;

use kms_secret_sync::{StoreClient, StoreCredential, StoreError};
use mock_kms::api::faults::{DenyFault, FaultProfile, ThrottleFault};
use mock_kms::api::policy::AccessPolicy;
use mock_kms::api::secrets::VersionStage;
use mock_kms::api::{Action, ErrorCode};
use mock_kms::{AuditQuery, Credential, MockKms, Outcome};

async fn kms() -> (MockKms, StoreClient, StoreClient) {
    let kms = MockKms::builder()
        .key("k")
        .credential(Credential::new("admin", "admin-sk"))
        .credential(Credential::new("reader", "reader-sk"))
        .policy("reader", AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/app-*", "key/k"]))
        .seed(1)
        .start()
        .await
        .unwrap();
    let client =
        |ak: &str, sk: &str| StoreClient::new(reqwest::Client::new(), &kms.url(), StoreCredential::new(ak, sk), Duration::from_secs(5));
    let (admin, reader) = (client("admin", "admin-sk"), client("reader", "reader-sk"));
    (kms, admin, reader)
}

#[tokio::test]
async fn versions_stages_rotation_rollback_deletion_and_restore() {
    let (kms, admin, reader) = kms().await;
    let first = admin.create_secret("app-db", "one", "k").await.unwrap();
    assert_eq!(first.version_stages, [VersionStage::Current]);
    let rotated = admin.rotate_secret("app-db", None).await.unwrap();
    let generated = reader.get_secret_value("app-db", None, None).await.unwrap();
    assert_eq!((generated.version_id.as_str(), generated.secret_data.len()), (rotated.version_id.as_str(), 32), "a generated value");
    assert_eq!(reader.get_secret_value("app-db", None, Some(VersionStage::Previous)).await.unwrap().secret_data, "one");
    // Roll back: ACSCurrent to the first version.
    admin.move_stage("app-db", VersionStage::Current, &first.version_id).await.unwrap();
    assert_eq!(reader.get_secret_value("app-db", None, None).await.unwrap().secret_data, "one");
    assert_eq!(admin.describe_secret("app-db").await.unwrap().versions.len(), 2);

    admin.delete_secret("app-db", Some(7)).await.unwrap();
    let gone = reader.get_secret_value("app-db", None, None).await.unwrap_err();
    assert!(matches!(&gone, StoreError::NotFound { message, .. } if message.contains("scheduled for deletion")), "{gone:?}");
    admin.restore_secret("app-db").await.unwrap();
    assert_eq!(reader.get_secret_value("app-db", None, None).await.unwrap().secret_data, "one");
    let exists = admin.create_secret("app-db", "again", "k").await.unwrap_err();
    assert!(matches!(&exists, StoreError::Failed { message, .. } if message.contains("already exists")), "{exists:?}");
    kms.shutdown().await;
}

#[tokio::test]
async fn each_failure_is_typed_as_the_controller_classifies_it() {
    let (kms, admin, reader) = kms().await;
    admin.create_secret("app-db", "one", "k").await.unwrap();
    admin.create_secret("other", "two", "k").await.unwrap();

    // The access policy: reading outside `secret/app-*` and writing are denied, and audited.
    let denied = reader.get_secret_value("other", None, None).await.unwrap_err();
    assert!(matches!(&denied, StoreError::Denied { message, .. } if message.contains("`secret/other`")), "{denied:?}");
    assert!(matches!(reader.put_secret_value("app-db", "x").await, Err(StoreError::Denied { .. })));
    let audited = kms.audit().query(&AuditQuery { outcome: Some(Outcome::Refused(ErrorCode::Forbidden)), ..Default::default() });
    assert_eq!(
        audited.iter().map(|r| (r.action.name(), r.secret_name.as_deref())).collect::<Vec<_>>(),
        [("GetSecretValue", Some("other")), ("PutSecretValue", Some("app-db"))]
    );
    // GetSecretValue also needs kms:Decrypt on the secret's key.
    kms.set_policy("reader", AccessPolicy::allow([Action::GetSecretValue], ["*"])).unwrap();
    let no_decrypt = reader.get_secret_value("app-db", None, None).await.unwrap_err();
    assert!(matches!(&no_decrypt, StoreError::Denied { message, .. } if message.contains("kms:Decrypt on `key/k`")), "{no_decrypt:?}");
    kms.remove_policy("reader");

    // Faults apply to the new actions like to the others.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::GetSecretValue]) }), ..Default::default() }).unwrap();
    assert!(matches!(reader.get_secret_value("app-db", None, None).await, Err(StoreError::Denied { .. })));
    kms.set_faults(FaultProfile {
        throttle: Some(ThrottleFault { per_second: 0.01, burst: Some(1.0), actions: Some(vec![Action::GetSecretValue]) }),
        ..Default::default()
    })
    .unwrap();
    reader.get_secret_value("app-db", None, None).await.unwrap();
    let throttled = reader.get_secret_value("app-db", None, None).await.unwrap_err();
    assert!(matches!(throttled, StoreError::Throttled { retry_after: Some(_), .. }), "{throttled:?}");
    kms.clear_faults();
    let missing = reader.get_secret_value("app-nothing", None, None).await.unwrap_err();
    assert!(matches!(missing, StoreError::NotFound { .. }), "{missing:?}");
    let url = kms.url();
    kms.shutdown().await;
    let down = StoreClient::new(reqwest::Client::new(), &url, StoreCredential::new("admin", "admin-sk"), Duration::from_secs(2));
    assert!(matches!(down.get_secret_value("app-db", None, None).await, Err(StoreError::Unavailable { .. })));
}
