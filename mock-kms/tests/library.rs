//! The mock KMS started in process with `MockKms::builder()`, driven over real HTTP on loopback.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{AK, Client, SK, Sign, encrypt_request, now_ms, refused, wait_until};
use mock_kms::api::faults::{DenyFault, ErrorRateFault, FaultProfile, HangFault, LatencyFault, OutageFault};
use mock_kms::api::{self, Action, ErrorCode, KeySpec, KeyState};
use mock_kms::{AuditQuery, Credential, MockKms, Outcome};
use serde_json::json;

async fn kms() -> (MockKms, Client) {
    let kms = MockKms::builder().key("lab-key").credential(Credential::new(AK, SK)).seed(1).start().await.expect("mock KMS starts");
    let client = Client::new(&kms.url());
    (kms, client)
}

fn key_request(key_id: &str) -> api::KeyRequest {
    api::KeyRequest { key_id: key_id.into() }
}

#[tokio::test]
async fn every_action_works_and_errors_map_to_their_codes() {
    let (kms, client) = kms().await;

    // CreateKey, DescribeKey, ListKeys.
    let created = client.create_key("app-key").await;
    assert_eq!((created.key_state, created.key_spec, created.key_version_ids.len()), (KeyState::Enabled, KeySpec::Aes256, 1));
    client
        .call(Action::CreateKey, &api::CreateKeyRequest { key_id: "app-key".into(), ..Default::default() })
        .await
        .expect_error(ErrorCode::KeyAlreadyExists);
    client
        .call(Action::CreateKey, &api::CreateKeyRequest { key_id: "bad id!".into(), ..Default::default() })
        .await
        .expect_error(ErrorCode::InvalidParameter);
    let described: api::KeyResponse = client.ok(Action::DescribeKey, &key_request("app-key")).await;
    assert_eq!(described.key_metadata, created);
    client.call(Action::DescribeKey, &key_request("nope")).await.expect_error(ErrorCode::KeyNotFound);
    let listed: api::ListKeysResponse = client.ok(Action::ListKeys, &json!({})).await;
    assert_eq!(listed.keys.iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["app-key", "lab-key"]);

    // Encrypt / Decrypt with an encryption context; the response names key and version, and the
    // request id header matches the body.
    let context = BTreeMap::from([("purpose".to_owned(), "test".to_owned())]);
    let request = api::EncryptRequest { encryption_context: context.clone(), ..encrypt_request("app-key", b"hello kms") };
    let reply = client.call(Action::Encrypt, &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let encrypted: api::EncryptResponse = reply.json();
    assert_eq!(reply.header(api::HEADER_REQUEST_ID), Some(encrypted.request_id.as_str()));
    assert_eq!((encrypted.key_id.as_str(), encrypted.key_version_id.as_str()), ("app-key", created.current_key_version_id.as_str()));
    let decrypt = api::DecryptRequest { ciphertext_blob: encrypted.ciphertext_blob.clone(), encryption_context: context };
    let decrypted: api::DecryptResponse = client.ok(Action::Decrypt, &decrypt).await;
    assert_eq!(B64.decode(&decrypted.plaintext).unwrap(), b"hello kms");
    assert_eq!(decrypted.key_version_id, created.current_key_version_id);
    client.decrypt(&encrypted.ciphertext_blob).await.expect_error(ErrorCode::InvalidCiphertext);
    client.decrypt("bm90IGEgYmxvYg==").await.expect_error(ErrorCode::InvalidCiphertext);
    client.call(Action::Encrypt, &encrypt_request("app-key", &[0u8; 6 * 1024 + 1])).await.expect_error(ErrorCode::InvalidParameter);
    client.encrypt("app-key", &[0u8; 6 * 1024]).await;
    client.call(Action::Encrypt, &encrypt_request("nope", b"x")).await.expect_error(ErrorCode::KeyNotFound);

    // GenerateDataKey.
    let data_key: api::GenerateDataKeyResponse =
        client.ok(Action::GenerateDataKey, &api::GenerateDataKeyRequest { key_id: "app-key".into(), number_of_bytes: Some(16) }).await;
    let plaintext = B64.decode(&data_key.plaintext).unwrap();
    assert_eq!(plaintext.len(), 16);
    assert_eq!(client.decrypt_ok(&data_key.ciphertext_blob).await, plaintext);
    let too_big = api::GenerateDataKeyRequest { key_id: "app-key".into(), number_of_bytes: Some(4096) };
    client.call(Action::GenerateDataKey, &too_big).await.expect_error(ErrorCode::InvalidParameter);

    // RotateKey: old ciphertexts still decrypt, new ones use the new version.
    let rotated: api::KeyResponse = client.ok(Action::RotateKey, &key_request("app-key")).await;
    let rotated = rotated.key_metadata;
    assert_eq!(rotated.key_version_ids.len(), 2);
    assert_ne!(rotated.current_key_version_id, created.current_key_version_id);
    assert_eq!(client.decrypt_ok(&data_key.ciphertext_blob).await, plaintext);
    let after = client.encrypt("app-key", b"new").await;
    assert_eq!(after.key_version_id, rotated.current_key_version_id);
    assert_eq!(client.decrypt_ok(&after.ciphertext_blob).await, b"new");

    // DisableKey → 409 KeyNotEnabled for both directions; EnableKey brings it back.
    let disabled: api::KeyResponse = client.ok(Action::DisableKey, &key_request("app-key")).await;
    assert_eq!(disabled.key_metadata.key_state, KeyState::Disabled);
    client.call(Action::Encrypt, &encrypt_request("app-key", b"x")).await.expect_error(ErrorCode::KeyNotEnabled);
    client.decrypt(&after.ciphertext_blob).await.expect_error(ErrorCode::KeyNotEnabled);
    client.call(Action::RotateKey, &key_request("app-key")).await.expect_error(ErrorCode::KeyNotEnabled);
    let enabled: api::KeyResponse = client.ok(Action::EnableKey, &key_request("app-key")).await;
    assert_eq!(enabled.key_metadata.key_state, KeyState::Enabled);
    assert_eq!(client.decrypt_ok(&after.ciphertext_blob).await, b"new");

    // ScheduleKeyDeletion stops the key at once, for good.
    let deleted: api::KeyResponse = client.ok(Action::ScheduleKeyDeletion, &key_request("app-key")).await;
    assert_eq!(deleted.key_metadata.key_state, KeyState::PendingDeletion);
    client.decrypt(&after.ciphertext_blob).await.expect_error(ErrorCode::KeyNotEnabled);
    client.call(Action::EnableKey, &key_request("app-key")).await.expect_error(ErrorCode::KeyNotEnabled);

    // Unknown actions and malformed bodies.
    client.raw("Explode", b"{}".to_vec(), Sign::default()).await.unwrap().expect_error(ErrorCode::InvalidParameter);
    let malformed = client.raw("Encrypt", br#"{"KeyId": 5, "Plaintext": "c2VjcmV0"}"#.to_vec(), Sign::default()).await.unwrap();
    let message = malformed.expect_error(ErrorCode::InvalidParameter).message;
    assert!(!message.contains("c2VjcmV0"), "{message}");
    kms.shutdown().await;
}

#[tokio::test]
async fn sm4_keys_round_trip() {
    let (kms, client) = kms().await;
    let request = api::CreateKeyRequest { key_id: "sm4-key".into(), key_spec: KeySpec::Sm4 };
    let created: api::KeyResponse = client.ok(Action::CreateKey, &request).await;
    assert_eq!(created.key_metadata.key_spec, KeySpec::Sm4);
    let raw = client.raw("CreateKey", br#"{"KeyId":"sm4-b","KeySpec":"SM4"}"#.to_vec(), Sign::default()).await.unwrap();
    assert_eq!(raw.json::<api::KeyResponse>().key_metadata.key_spec, KeySpec::Sm4, "the short alias is accepted");
    let encrypted = client.encrypt("sm4-key", b"guomi").await;
    assert_eq!(client.decrypt_ok(&encrypted.ciphertext_blob).await, b"guomi");
    client.ok::<api::KeyResponse>(Action::RotateKey, &key_request("sm4-key")).await;
    assert_eq!(client.decrypt_ok(&encrypted.ciphertext_blob).await, b"guomi");
    kms.shutdown().await;
}

#[tokio::test]
async fn authentication_refuses_wrong_unknown_skewed_and_replayed_requests() {
    let (kms, client) = kms().await;
    let body = serde_json::to_vec(&encrypt_request("lab-key", b"x")).unwrap();

    let wrong = client.raw("Encrypt", body.clone(), Sign { secret_key: Some("not-the-secret".into()), ..Sign::default() }).await.unwrap();
    let message = wrong.expect_error(ErrorCode::SignatureDoesNotMatch).message;
    assert!(message.contains(AK) && !message.contains(SK) && !message.contains("not-the-secret"), "{message}");

    let unknown = client.raw("Encrypt", body.clone(), Sign { access_key: Some("AK-nobody".into()), ..Sign::default() }).await.unwrap();
    assert!(unknown.expect_error(ErrorCode::InvalidAccessKeyId).message.contains("AK-nobody"));

    let skewed = client
        .raw("Encrypt", body.clone(), Sign { timestamp_ms: Some(now_ms() - api::MAX_CLOCK_SKEW_MS - 60_000), ..Sign::default() })
        .await
        .unwrap();
    skewed.expect_error(ErrorCode::RequestTimeTooSkewed);
    let future = client
        .raw("Encrypt", body.clone(), Sign { timestamp_ms: Some(now_ms() + api::MAX_CLOCK_SKEW_MS + 60_000), ..Sign::default() })
        .await
        .unwrap();
    future.expect_error(ErrorCode::RequestTimeTooSkewed);

    let once = Sign { nonce: Some("nonce-used-once".into()), ..Sign::default() };
    assert_eq!(client.raw("Encrypt", body.clone(), once.clone()).await.unwrap().status, 200);
    client.raw("Encrypt", body.clone(), once).await.unwrap().expect_error(ErrorCode::RequestReplayed);

    // The admin API replaces the credential set: the old one stops working, the new one works.
    let replaced = client.admin_json("PUT", "/admin/credentials", json!([{"AccessKey": "AK2", "SecretKey": "SK2"}])).await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    assert!(!replaced.text().contains("SK2"));
    client.call(Action::ListKeys, &json!({})).await.expect_error(ErrorCode::InvalidAccessKeyId);
    let fixed = Client::with_credential(&kms.url(), "AK2", "SK2");
    assert_eq!(fixed.call(Action::ListKeys, &json!({})).await.status, 200);
    kms.set_credentials([Credential::new(AK, SK)]);
    assert_eq!(client.call(Action::ListKeys, &json!({})).await.status, 200);
    kms.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_records_every_call_and_counts_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let kms = MockKms::builder().data_dir(dir.path()).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    let client = Client::new(&kms.url());
    let encrypt = client.call(Action::Encrypt, &encrypt_request("lab-key", b"audited")).await;
    let encrypted: api::EncryptResponse = encrypt.json();
    let refused = client
        .raw(
            "Decrypt",
            serde_json::to_vec(&json!({"CiphertextBlob": encrypted.ciphertext_blob})).unwrap(),
            Sign { secret_key: Some("bad".into()), ..Sign::default() },
        )
        .await
        .unwrap();
    refused.expect_error(ErrorCode::SignatureDoesNotMatch);
    client.decrypt_ok(&encrypted.ciphertext_blob).await;
    client.call(Action::DescribeKey, &key_request("missing")).await.expect_error(ErrorCode::KeyNotFound);

    let records = kms.audit().records();
    assert_eq!(records.len(), 4, "{records:#?}");
    let first = &records[0];
    assert_eq!(first.request_id, encrypted.request_id);
    assert_eq!(Some(first.request_id.as_str()), encrypt.header(api::HEADER_REQUEST_ID));
    assert_eq!((first.action.name(), first.outcome.name(), first.access_key.as_deref()), ("Encrypt", "Ok", Some(AK)));
    assert_eq!((first.key_id.as_deref(), first.key_version_id.as_deref()), (Some("lab-key"), Some(encrypted.key_version_id.as_str())));
    assert_eq!(first.node, kms.node_ids()[0]);
    assert!(first.latency_ms >= 0.0);
    assert!(humantime::parse_rfc3339(&first.time).is_ok() && first.time.contains('.'), "{}", first.time);
    // Refused calls are recorded with the key and version their blob names.
    assert_eq!((records[1].outcome.name(), records[1].key_id.as_deref()), ("SignatureDoesNotMatch", Some("lab-key")));
    assert_eq!(records[1].key_version_id.as_deref(), Some(encrypted.key_version_id.as_str()));
    assert_eq!(records[3].outcome, Outcome::Refused(ErrorCode::KeyNotFound));

    assert_eq!(kms.audit().count("lab-key", Action::Encrypt, Outcome::Ok), 1);
    assert_eq!(kms.audit().count("lab-key", Action::Decrypt, Outcome::Ok), 1);
    assert_eq!(kms.audit().count("lab-key", Action::Decrypt, Outcome::Refused(ErrorCode::SignatureDoesNotMatch)), 1);
    let query = AuditQuery { action: Some(Action::Decrypt), since_seq: Some(records[1].seq), ..AuditQuery::default() };
    assert_eq!(kms.audit().query(&query).len(), 1);

    let lines = client.admin_get(&format!("/admin/audit?action=Decrypt&key_id=lab-key&since_seq={}", records[0].seq)).await;
    assert_eq!(lines.header("content-type"), Some("application/x-ndjson"));
    let outcomes: Vec<String> = lines
        .text()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["SignatureDoesNotMatch", "Ok"]);
    let counters: Vec<serde_json::Value> = client.admin_get("/admin/counters").await.json();
    assert!(counters.contains(&json!({"key_id": "lab-key", "action": "Encrypt", "outcome": "Ok", "count": 1})), "{counters:?}");

    kms.shutdown().await;
    let file = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(file.lines().count(), 4);
    assert!(!file.contains("audited") && !file.contains(&B64.encode("audited")) && !file.contains(SK));
}

#[tokio::test]
async fn latency_error_deny_and_key_disabled_faults_apply_at_runtime_and_clear() {
    let (kms, client) = kms().await;
    let sealed = client.encrypt("lab-key", b"data").await;

    // Fixed latency, set over the admin API in YAML, only for Encrypt.
    let yaml = "latency:\n  fixed_ms: 150\n  actions: [Encrypt]\n";
    assert_eq!(client.admin("PUT", "/admin/faults", "application/yaml", yaml).await.status, 200);
    let started = Instant::now();
    client.encrypt("lab-key", b"slow").await;
    assert!(started.elapsed() >= Duration::from_millis(150), "latency not applied: {:?}", started.elapsed());
    let profile: FaultProfile = client.admin_get("/admin/faults").await.json();
    assert_eq!(profile.latency.unwrap().fixed_ms, 150.0);
    assert_eq!(client.admin("DELETE", "/admin/faults", "application/json", "").await.status, 200);
    assert!(kms.faults(0).unwrap().is_empty());
    assert!(kms.audit().query(&AuditQuery { action: Some(Action::Encrypt), ..Default::default() }).last().unwrap().latency_ms >= 150.0);

    // Error rate 1 for Encrypt only.
    let errors = json!({"error_rate": {"rate": 1.0, "actions": ["Encrypt"]}});
    assert_eq!(client.admin_json("PUT", "/admin/faults", errors).await.status, 200);
    client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await.expect_error(ErrorCode::InternalFailure);
    client.decrypt_ok(&sealed.ciphertext_blob).await;

    // Deny Decrypt only.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }), ..Default::default() }).unwrap();
    client.decrypt(&sealed.ciphertext_blob).await.expect_error(ErrorCode::Forbidden);
    client.encrypt("lab-key", b"x").await;

    // Key disabled by a fault: crypto refuses and DescribeKey shows it.
    assert_eq!(client.admin_json("PUT", "/admin/faults", json!({"key_disabled": {"key_ids": ["lab-key"]}})).await.status, 200);
    client.decrypt(&sealed.ciphertext_blob).await.expect_error(ErrorCode::KeyNotEnabled);
    client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await.expect_error(ErrorCode::KeyNotEnabled);
    let described: api::KeyResponse = client.ok(Action::DescribeKey, &key_request("lab-key")).await;
    assert_eq!(described.key_metadata.key_state, KeyState::Disabled);

    // A bad profile is refused with the field named, and the profile in force stays.
    let bad = client.admin_json("PUT", "/admin/faults", json!({"error_rate": {"rate": 2}})).await;
    assert!(bad.expect_error(ErrorCode::InvalidParameter).message.contains("error_rate.rate"));
    assert!(kms.faults(0).unwrap().key_disabled.is_some());

    kms.clear_faults();
    client.decrypt_ok(&sealed.ciphertext_blob).await;
    kms.shutdown().await;
}

#[tokio::test]
async fn throttling_answers_429_with_retry_after() {
    let (kms, client) = kms().await;
    let yaml = "throttle: {per_second: 0.01, burst: 2, actions: [Encrypt]}\n";
    assert_eq!(client.admin("PUT", "/admin/faults", "text/yaml", yaml).await.status, 200);
    let mut throttled = None;
    for _ in 0..3 {
        let reply = client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await;
        if reply.status == 429 {
            throttled = Some(reply);
            break;
        }
    }
    let reply = throttled.expect("a 0.01/s quota with a burst of 2 throttles the third call");
    reply.expect_error(ErrorCode::Throttling);
    let retry_after: u64 = reply.header("retry-after").expect("Retry-After header").parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(client.call(Action::ListKeys, &json!({})).await.status, 200, "other actions are not throttled");
    kms.clear_faults();
    client.encrypt("lab-key", b"x").await;
    kms.shutdown().await;
}

#[tokio::test]
async fn corrupt_responses_flip_bytes_in_ciphertext_and_plaintext() {
    let (kms, client) = kms().await;
    let good = client.encrypt("lab-key", b"plaintext!").await;
    kms.set_faults(FaultProfile::from_yaml("corrupt: {rate: 1.0}").unwrap()).unwrap();
    let corrupted = client.encrypt("lab-key", b"plaintext!").await;
    let reply = client.decrypt(&good.ciphertext_blob).await;
    let plaintext = B64.decode(reply.json::<api::DecryptResponse>().plaintext).unwrap();
    assert_eq!(plaintext.len(), 10);
    assert_ne!(plaintext, b"plaintext!");
    kms.clear_faults();
    // The blob handed out during the fault was altered: it no longer authenticates.
    let reply = client.decrypt(&corrupted.ciphertext_blob).await;
    assert!(reply.status == 400 || reply.status == 404, "{}", reply.text());
    assert_eq!(client.decrypt_ok(&good.ciphertext_blob).await, b"plaintext!");
    kms.shutdown().await;
}

#[tokio::test]
async fn hang_holds_calls_until_cleared() {
    let (kms, client) = kms().await;
    kms.set_faults(FaultProfile {
        hang: Some(HangFault { duration_ms: None, actions: Some(vec![Action::Encrypt]) }),
        ..Default::default()
    })
    .unwrap();
    let hung_client = client.clone();
    let call = tokio::spawn(async move { hung_client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await });
    wait_until("the Encrypt call hangs", || async { kms.hung_requests(0) == 1 }).await;
    // Other actions still answer, and so does the admin API.
    assert_eq!(client.call(Action::ListKeys, &json!({})).await.status, 200);
    let status: serde_json::Value = client.admin_get("/admin/cluster").await.json();
    assert_eq!(status["Nodes"][0]["HungRequests"], 1);
    assert!(!call.is_finished());
    kms.clear_faults();
    let reply = tokio::time::timeout(common::DEADLINE, call).await.expect("the call is released").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(kms.hung_requests(0), 0);
    kms.shutdown().await;
}

#[tokio::test]
async fn outage_refuses_connections_until_cleared() {
    let (kms, client) = kms().await;
    kms.set_faults(FaultProfile { outage: Some(OutageFault::default()), ..Default::default() }).unwrap();
    let url = kms.url();
    wait_until("the listener closes", || refused(&url)).await;
    assert!(client.try_call(Action::ListKeys, &json!({})).await.is_err());
    kms.clear_faults();
    wait_until("the node serves again", || async {
        matches!(client.try_call(Action::ListKeys, &json!({})).await, Ok(r) if r.status == 200)
    })
    .await;

    // A timed outage clears itself (only its end is awaited: the window itself is timing-dependent).
    kms.set_faults(FaultProfile { outage: Some(OutageFault { duration_ms: Some(200) }), ..Default::default() }).unwrap();
    assert!(kms.faults(0).unwrap().outage.is_some());
    wait_until("the timed outage clears itself", || async { kms.faults(0).unwrap().outage.is_none() }).await;
    wait_until("the node serves after the timed outage", || async {
        matches!(client.try_call(Action::ListKeys, &json!({})).await, Ok(r) if r.status == 200)
    })
    .await;
    kms.shutdown().await;
}

async fn outcomes_with_seed(seed: u64) -> Vec<u16> {
    let kms = MockKms::builder().key("lab-key").credential(Credential::new(AK, SK)).seed(seed).start().await.unwrap();
    let client = Client::new(&kms.url());
    let profile = FaultProfile {
        error_rate: Some(ErrorRateFault { rate: 0.5, actions: None }),
        latency: Some(LatencyFault {
            fixed_ms: 0.0,
            distribution: Some(mock_kms::api::faults::LatencyDistribution::Uniform { min_ms: 0.0, max_ms: 2.0 }),
            actions: None,
        }),
        ..Default::default()
    };
    kms.set_faults(profile).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await.status);
    }
    kms.shutdown().await;
    statuses
}

#[tokio::test]
async fn a_seeded_error_rate_repeats_with_the_same_seed() {
    let first = outcomes_with_seed(42).await;
    assert!(first.contains(&500) && first.contains(&200), "{first:?}");
    assert_eq!(outcomes_with_seed(42).await, first, "same seed, same outcomes");
    assert_ne!(outcomes_with_seed(43).await, first, "another seed, other outcomes");
}

#[tokio::test]
async fn sealed_start_needs_three_of_five_shares_and_reseals_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let shares = mock_kms::seal::init(dir.path(), 5, 3).unwrap();
    let foreign = mock_kms::seal::init(tempfile::tempdir().unwrap().path(), 5, 3).unwrap();
    let start = || MockKms::builder().data_dir(dir.path()).sealed(true).key("lab-key").credential(Credential::new(AK, SK)).start();
    let kms = start().await.unwrap();
    let client = Client::new(&kms.url());

    client.call(Action::ListKeys, &json!({})).await.expect_error(ErrorCode::Sealed);
    assert_eq!(client.admin_get("/admin/health").await.status, 503);
    let unseal = |share: &str| client.admin_json("POST", "/admin/unseal", json!({ "Share": share }));

    // A wrong set: refused with a clear message, progress reset.
    unseal(&shares[0]).await;
    unseal(&shares[1]).await;
    let wrong = unseal(&foreign[2]).await;
    assert!(wrong.expect_error(ErrorCode::InvalidParameter).message.contains("progress was reset"));
    assert_eq!(kms.seal_status().progress, 0);
    let garbage = unseal("bm90IGEgc2hhcmU=").await;
    assert!(garbage.expect_error(ErrorCode::InvalidParameter).message.contains("not an unseal share"));

    // Two shares are not enough.
    for (share, progress) in [(&shares[4], 1), (&shares[2], 2)] {
        let status: serde_json::Value = unseal(share).await.json();
        assert_eq!(status, json!({"Sealed": true, "Progress": progress, "Threshold": 3, "Shares": 5}));
    }
    client.call(Action::Encrypt, &encrypt_request("lab-key", b"x")).await.expect_error(ErrorCode::Sealed);

    // The third unseals; the key to ensure is created then.
    let status: serde_json::Value = unseal(&shares[0]).await.json();
    assert_eq!(status["Sealed"], false);
    assert_eq!(client.admin_get("/admin/health").await.status, 200);
    let encrypted = client.encrypt("lab-key", b"sealed data").await;
    kms.shutdown().await;

    // After a restart it is sealed again; the library handle unseals too.
    let kms = start().await.unwrap();
    let client = Client::new(&kms.url());
    client.decrypt(&encrypted.ciphertext_blob).await.expect_error(ErrorCode::Sealed);
    for share in &shares[1..4] {
        kms.unseal(share).await.unwrap();
    }
    assert!(!kms.seal_status().sealed);
    assert_eq!(client.decrypt_ok(&encrypted.ciphertext_blob).await, b"sealed data");
    kms.shutdown().await;
}

#[tokio::test]
async fn a_cluster_of_three_keeps_serving_every_key_with_a_node_down() {
    let kms = MockKms::builder().cluster_size(3).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    let clients: Vec<Client> = kms.urls().iter().map(|u| Client::new(u)).collect();
    assert_eq!(kms.node_ids(), ["node-0", "node-1", "node-2"]);
    let lab_key = kms.describe_key(0, "lab-key").unwrap();
    for node in 1..3 {
        assert_eq!(kms.describe_key(node, "lab-key").unwrap(), lab_key, "every node has the same lab-key");
    }

    // A key created on node A is usable on node C.
    clients[0].create_key("ha-key").await;
    let from_a = clients[0].encrypt("ha-key", b"from A").await;
    assert_eq!(clients[2].decrypt_ok(&from_a.ciphertext_blob).await, b"from A");
    let lab_from_c = clients[2].encrypt("lab-key", b"lab from C").await;

    // Take node 1 down through node 0's admin API.
    let outage = clients[0].admin_json("PUT", "/admin/faults?node=node-1", json!({"outage": {}})).await;
    assert_eq!(outage.status, 200, "{}", outage.text());
    let down = kms.urls()[1].clone();
    wait_until("node 1 refuses connections", || refused(&down)).await;

    // The others still encrypt and decrypt every key, and a rotation on C reaches A.
    for client in [&clients[0], &clients[2]] {
        assert_eq!(client.decrypt_ok(&from_a.ciphertext_blob).await, b"from A");
        assert_eq!(client.decrypt_ok(&lab_from_c.ciphertext_blob).await, b"lab from C");
        for key in ["lab-key", "ha-key"] {
            let sealed = client.encrypt(key, b"while 1 is down").await;
            assert_eq!(clients[0].decrypt_ok(&sealed.ciphertext_blob).await, b"while 1 is down");
            assert_eq!(clients[2].decrypt_ok(&sealed.ciphertext_blob).await, b"while 1 is down");
        }
    }
    let rotated: api::KeyResponse = clients[2].ok(Action::RotateKey, &key_request("ha-key")).await;
    let after_rotation = clients[0].encrypt("ha-key", b"rotated").await;
    assert_eq!(after_rotation.key_version_id, rotated.key_metadata.current_key_version_id);

    // Node 1 comes back (cleared through node 2), catches up, and decrypts the new version.
    assert_eq!(clients[2].admin("DELETE", "/admin/faults?node=1", "application/json", "").await.status, 200);
    wait_until("node 1 is back and synced", || async { kms.node_ready(1) }).await;
    assert_eq!(clients[1].decrypt_ok(&after_rotation.ciphertext_blob).await, b"rotated");
    assert_eq!(kms.describe_key(1, "ha-key").unwrap(), kms.describe_key(0, "ha-key").unwrap());
    kms.shutdown().await;
}

#[tokio::test]
async fn nodes_with_peers_replicate_and_a_restarted_node_catches_up() {
    let listeners: Vec<std::net::TcpListener> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<std::net::SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let node = |name: &str, listener: Option<std::net::TcpListener>, addr| {
        let builder = MockKms::builder()
            .node_id(name)
            .peers(urls.clone())
            .cluster_secret("test secret")
            .key("lab-key")
            .credential(Credential::new(AK, SK));
        match listener {
            Some(listener) => builder.listener(listener),
            None => builder.listen(addr),
        }
        .start()
    };
    // Started at the same time, as a script would: each may create its own version of lab-key,
    // and they converge on one key holding every version.
    let mut listeners = listeners.into_iter();
    let (a, b, c) =
        tokio::join!(node("a", listeners.next(), addrs[0]), node("b", listeners.next(), addrs[1]), node("c", listeners.next(), addrs[2]));
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();
    let lab_key = a.describe_key(0, "lab-key").unwrap();
    assert_eq!(b.describe_key(0, "lab-key").unwrap(), lab_key);
    assert_eq!(c.describe_key(0, "lab-key").unwrap(), lab_key);

    clients[0].create_key("shared").await;
    let from_a = clients[0].encrypt("shared", b"from a").await;
    assert_eq!(clients[2].decrypt_ok(&from_a.ciphertext_blob).await, b"from a");

    // B stops; A and C go on, and A rotates.
    b.shutdown().await;
    let rotated = a.rotate_key("shared").await.unwrap();
    let from_c = clients[2].encrypt("shared", b"from c").await;
    assert_eq!(from_c.key_version_id, rotated.current_key_version_id);
    assert_eq!(clients[0].decrypt_ok(&from_c.ciphertext_blob).await, b"from c");

    // B restarts empty (in memory) and pulls the newest state from its peers.
    let b = node("b", None, addrs[1]).await.unwrap();
    assert_eq!(clients[1].decrypt_ok(&from_c.ciphertext_blob).await, b"from c");
    assert_eq!(clients[1].decrypt_ok(&from_a.ciphertext_blob).await, b"from a");

    // A node with another cluster secret is refused.
    let stranger = MockKms::builder().peers(urls.clone()).cluster_secret("other").start().await.unwrap();
    assert!(stranger.describe_key(0, "shared").is_err());
    for kms in [a, b, c, stranger] {
        kms.shutdown().await;
    }
}

#[tokio::test]
async fn a_data_dir_keeps_its_keys_when_moving_from_one_node_to_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let single = MockKms::builder().data_dir(dir.path()).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    let sealed = Client::new(&single.url()).encrypt("lab-key", b"kept").await;
    single.shutdown().await;

    let cluster =
        MockKms::builder().data_dir(dir.path()).cluster_size(3).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    for url in cluster.urls() {
        assert_eq!(Client::new(&url).decrypt_ok(&sealed.ciphertext_blob).await, b"kept");
    }
    assert_eq!(cluster.describe_key(2, "lab-key").unwrap().key_version_ids.len(), 1, "no second lab-key was made");
    cluster.shutdown().await;
    assert!(dir.path().join("node-2").join("keys.json").exists());
}

#[tokio::test]
async fn the_admin_api_makes_an_older_version_current_again() {
    let dir = tempfile::tempdir().unwrap();
    let kms = MockKms::builder().data_dir(dir.path()).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    let client = Client::new(&kms.url());
    let first = client.encrypt("lab-key", b"under A").await;
    let rotated = client.admin_json("POST", "/admin/keys/lab-key/rotate", json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    assert_ne!(client.encrypt("lab-key", b"under B").await.key_version_id, first.key_version_id);

    // A→B→A: the first version is current again, no new version is created.
    let back = client.admin_json("POST", "/admin/keys/lab-key/current", json!({"VersionId": first.key_version_id})).await;
    assert_eq!(back.status, 200, "{}", back.text());
    let metadata: serde_json::Value = serde_json::from_str(&back.text()).unwrap();
    assert_eq!(metadata["KeyMetadata"]["CurrentKeyVersionId"], first.key_version_id.as_str());
    assert_eq!(metadata["KeyMetadata"]["KeyVersionIds"].as_array().unwrap().len(), 2);
    assert_eq!(client.encrypt("lab-key", b"under A again").await.key_version_id, first.key_version_id);

    let unknown = client.admin_json("POST", "/admin/keys/lab-key/current", json!({"VersionId": "no-such-version"})).await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert!(unknown.text().contains("no-such-version"), "{}", unknown.text());
    let malformed = client.admin_json("POST", "/admin/keys/lab-key/current", json!({"Version": "x"})).await;
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    kms.shutdown().await;
}

#[tokio::test]
async fn a_disabled_key_version_is_replicated_state_that_clearing_faults_does_not_undo() {
    use mock_kms::api::admin::{self, KeyMetadataAnswer};
    let kms = MockKms::builder().cluster_size(2).key("lab-key").credential(Credential::new(AK, SK)).start().await.unwrap();
    let clients: Vec<Client> = kms.urls().iter().map(|u| Client::new(u)).collect();
    let first = clients[0].encrypt("lab-key", b"under v1").await;
    let rotated: KeyMetadataAnswer = clients[0].admin("POST", &admin::path::rotate("lab-key"), "application/json", "").await.json();
    let second = clients[0].encrypt("lab-key", b"under v2").await;
    assert_eq!(second.key_version_id, rotated.key_metadata.current_key_version_id);

    // Disable v1 on node 0: node 1 refuses to decrypt with it, v2 still works, the metadata says so.
    let disabled = clients[0].admin("POST", &admin::path::disable_version("lab-key", &first.key_version_id), "application/json", "").await;
    assert_eq!(disabled.status, 200, "{}", disabled.text());
    let disabled: KeyMetadataAnswer = disabled.json();
    assert_eq!(disabled.key_metadata.disabled_key_version_ids, std::slice::from_ref(&first.key_version_id));
    let refused = clients[1].decrypt(&first.ciphertext_blob).await.expect_error(ErrorCode::KeyNotEnabled);
    assert!(refused.message.contains(&first.key_version_id) && refused.message.contains("disabled"), "{}", refused.message);
    assert_eq!(clients[1].decrypt_ok(&second.ciphertext_blob).await, b"under v2");
    assert_eq!(kms.describe_key(1, "lab-key").unwrap().disabled_key_version_ids, std::slice::from_ref(&first.key_version_id));

    // Clearing faults leaves it disabled; a disabled version cannot be made current.
    assert_eq!(clients[0].admin("DELETE", "/admin/faults", "application/json", "").await.status, 200);
    clients[0].decrypt(&first.ciphertext_blob).await.expect_error(ErrorCode::KeyNotEnabled);
    let body = serde_json::to_vec(&admin::SetCurrentRequest { version_id: first.key_version_id.clone() }).unwrap();
    assert_eq!(
        clients[0].admin("POST", &admin::path::current("lab-key"), "application/json", body).await.error().code,
        ErrorCode::KeyNotEnabled
    );
    let unknown = clients[0].admin("POST", &admin::path::disable_version("lab-key", "nope"), "application/json", "").await;
    assert!(unknown.error().message.contains("has no version `nope` (known: "), "{}", unknown.text());

    // Enabled again on node 1, node 0 decrypts it.
    let enabled: KeyMetadataAnswer =
        clients[1].admin("POST", &admin::path::enable_version("lab-key", &first.key_version_id), "application/json", "").await.json();
    assert!(enabled.key_metadata.disabled_key_version_ids.is_empty());
    assert_eq!(clients[0].decrypt_ok(&first.ciphertext_blob).await, b"under v1");

    // The audit log, read typed: exactly the two refused Decrypts say KeyNotEnabled.
    let query =
        AuditQuery { action: Some(Action::Decrypt), outcome: Some(Outcome::Refused(ErrorCode::KeyNotEnabled)), ..Default::default() };
    let records =
        api::parse_audit_lines(&clients[0].admin_get(&format!("{}?{}", admin::path::AUDIT, query.to_query())).await.text()).unwrap();
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.iter().all(|r| r.key_version_id.as_deref() == Some(first.key_version_id.as_str()) && r.caller.is_none()));
    let counters: api::Counters = clients[0].admin_get(admin::path::COUNTERS).await.json();
    assert_eq!(counters.count(Action::Decrypt, Outcome::Refused(ErrorCode::KeyNotEnabled)), 2);
    kms.shutdown().await;
}
