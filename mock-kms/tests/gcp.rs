//! The Cloud KMS dialect driven with Google's REST shapes (`/v1/projects/…/cryptoKeys/K:encrypt`,
//! camelCase JSON, base64 `bytes`) through a plain HTTP client, and the same request sequence
//! sent to gcp-kms-emulator (built from `../shared/thirdparty` by kms-lab's locator): a
//! differential test, answers compared field by field.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{Client, Reply};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use kms_lab_stack::process::Supervised;
use mock_kms::MockKms;
use mock_kms::api::Action;
use mock_kms::api::faults::{DenyFault, FaultProfile, ThrottleFault};
use mock_kms::dialects::Dialect;
use serde_json::{Value, json};

const RING: &str = "projects/lab/locations/global/keyRings/ring";
const KEY: &str = "projects/lab/locations/global/keyRings/ring/cryptoKeys/lab-key";

/// A plain HTTP client speaking Google's REST shapes to one endpoint.
struct Gcp {
    http: Client,
}

impl Gcp {
    fn new(base: &str) -> Self {
        Self { http: Client::new(base) }
    }

    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap()).unwrap_or_default();
        self.http.admin(method, &format!("/v1/{path}"), "application/json", body).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.send("POST", path, Some(body)).await
    }

    async fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> Reply {
        let mut body = json!({"plaintext": B64.encode(plaintext)});
        if !aad.is_empty() {
            body["additionalAuthenticatedData"] = json!(B64.encode(aad));
        }
        self.post(&format!("{key}:encrypt"), body).await
    }

    async fn decrypt(&self, key: &str, ciphertext: &str, aad: &[u8]) -> Reply {
        let mut body = json!({"ciphertext": ciphertext});
        if !aad.is_empty() {
            body["additionalAuthenticatedData"] = json!(B64.encode(aad));
        }
        self.post(&format!("{key}:decrypt"), body).await
    }

    async fn set_state(&self, version: &str, state: &str) -> Reply {
        self.send("PATCH", &format!("{version}?updateMask=state"), Some(json!({ "state": state }))).await
    }
}

fn ok(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Asserts Google's error model: `{"error": {"code": <http>, "message", "status", "errors": [{reason}]}}`
/// with the HTTP status; the message.
fn google_error(reply: &Reply, http: u16, status: &str, reason: &str) -> String {
    let body: Value = reply.json();
    assert_eq!(reply.status, http, "{body}");
    let error = &body["error"];
    assert_eq!((error["code"].as_u64(), error["status"].as_str()), (Some(u64::from(http)), Some(status)), "{body}");
    assert_eq!(error["errors"][0]["reason"], reason, "{body}");
    assert_eq!(error["errors"][0]["message"], error["message"], "{body}");
    error["message"].as_str().expect("a message").to_owned()
}

async fn gcp_kms() -> MockKms {
    common::dialect_kms(Dialect::Gcp).await
}

#[tokio::test]
async fn google_rest_round_trips_with_aad_rotation_and_versions() {
    let kms = gcp_kms().await;
    let gcp = Gcp::new(&kms.url());

    let key = ok(&gcp.get(KEY).await);
    assert_eq!(key["name"], KEY);
    assert_eq!(key["purpose"], "ENCRYPT_DECRYPT");
    assert_eq!(key["primary"]["name"], format!("{KEY}/cryptoKeyVersions/1"));
    assert_eq!(
        (key["primary"]["state"].as_str(), key["primary"]["algorithm"].as_str()),
        (Some("ENABLED"), Some("GOOGLE_SYMMETRIC_ENCRYPTION"))
    );

    // Encrypt answers the version used; AAD is bound.
    let encrypted = ok(&gcp.encrypt(KEY, b"a DEK", b"cluster=lab").await);
    assert_eq!(encrypted["name"], format!("{KEY}/cryptoKeyVersions/1"));
    let v1_blob = encrypted["ciphertext"].as_str().unwrap().to_owned();
    let decrypted = ok(&gcp.decrypt(KEY, &v1_blob, b"cluster=lab").await);
    assert_eq!(B64.decode(decrypted["plaintext"].as_str().unwrap()).unwrap(), b"a DEK");
    assert_eq!(decrypted["usedPrimary"], true);
    let wrong_aad = gcp.decrypt(KEY, &v1_blob, b"cluster=other").await;
    assert_eq!(google_error(&wrong_aad, 400, "INVALID_ARGUMENT", "badRequest"), "Decryption failed: the ciphertext is invalid.");
    google_error(&gcp.decrypt(KEY, &v1_blob, b"").await, 400, "INVALID_ARGUMENT", "badRequest");
    let mut tampered = B64.decode(&v1_blob).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    google_error(&gcp.decrypt(KEY, &B64.encode(&tampered), b"cluster=lab").await, 400, "INVALID_ARGUMENT", "badRequest");
    // Any project, location and key ring names the key store's key `lab-key`.
    let elsewhere = "projects/other/locations/europe-west1/keyRings/r2/cryptoKeys/lab-key";
    ok(&gcp.decrypt(elsewhere, &v1_blob, b"cluster=lab").await);

    // CreateCryptoKeyVersion adds an ENABLED version without making it primary (as Cloud KMS).
    let created = ok(&gcp.post(&format!("{KEY}/cryptoKeyVersions"), json!({})).await);
    assert_eq!((created["name"].as_str(), created["state"].as_str()), (Some(&*format!("{KEY}/cryptoKeyVersions/2")), Some("ENABLED")));
    assert_eq!(ok(&gcp.encrypt(KEY, b"x", b"").await)["name"], format!("{KEY}/cryptoKeyVersions/1"));
    // Rotation: version 2 made primary encrypts; the version-1 blob still decrypts.
    let rotated = ok(&gcp.post(&format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "2"})).await);
    assert_eq!(rotated["primary"]["name"], format!("{KEY}/cryptoKeyVersions/2"));
    let v2 = ok(&gcp.encrypt(KEY, b"after rotation", b"").await);
    assert_eq!(v2["name"], format!("{KEY}/cryptoKeyVersions/2"));
    let old = ok(&gcp.decrypt(KEY, &v1_blob, b"cluster=lab").await);
    assert_eq!(B64.decode(old["plaintext"].as_str().unwrap()).unwrap(), b"a DEK");
    assert_eq!(old.get("usedPrimary"), None, "version 1 is no longer primary: {old}");
    let versions = ok(&gcp.get(&format!("{KEY}/cryptoKeyVersions")).await);
    assert_eq!(versions["totalSize"], 2);
    assert_eq!(kms.describe_key(0, "lab-key").unwrap().key_version_ids.len(), 2);

    // A disabled version neither decrypts nor (as primary) encrypts, in FAILED_PRECONDITION;
    // enabled again, it works again.
    let v1 = format!("{KEY}/cryptoKeyVersions/1");
    assert_eq!(ok(&gcp.set_state(&v1, "DISABLED").await)["state"], "DISABLED");
    let refused = google_error(&gcp.decrypt(KEY, &v1_blob, b"cluster=lab").await, 400, "FAILED_PRECONDITION", "failedPrecondition");
    assert_eq!(refused, format!("{v1} is not enabled, current state is: DISABLED."));
    assert_eq!(ok(&gcp.get(&v1).await)["state"], "DISABLED");
    ok(&gcp.set_state(&v1, "ENABLED").await);
    ok(&gcp.decrypt(KEY, &v1_blob, b"cluster=lab").await);
    let v2_name = format!("{KEY}/cryptoKeyVersions/2");
    ok(&gcp.set_state(&v2_name, "DISABLED").await);
    let refused = google_error(&gcp.encrypt(KEY, b"x", b"").await, 400, "FAILED_PRECONDITION", "failedPrecondition");
    assert_eq!(refused, format!("{v2_name} is not enabled, current state is: DISABLED."));
    google_error(
        &gcp.post(&format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "2"})).await,
        400,
        "FAILED_PRECONDITION",
        "failedPrecondition",
    );
    ok(&gcp.post(&format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "1"})).await);
    ok(&gcp.encrypt(KEY, b"x", b"").await);

    // CreateCryptoKey and ListCryptoKeys.
    let made = ok(&gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=second"), json!({"purpose": "ENCRYPT_DECRYPT"})).await);
    assert_eq!(made["primary"]["name"], format!("{RING}/cryptoKeys/second/cryptoKeyVersions/1"));
    let listed = ok(&gcp.get(&format!("{RING}/cryptoKeys")).await);
    assert_eq!(listed["totalSize"], 2, "{listed}");
    ok(&gcp.post("projects/lab/locations/global/keyRings?keyRingId=ring", json!({})).await);

    // The audit log says which dialect and Google operation was called, mapped to native actions.
    let records = kms.audit().records();
    assert!(records.iter().all(|r| r.dialect.name() == "gcp"), "{records:#?}");
    assert!(records.iter().any(|r| r.operation == "Encrypt" && r.action.name() == "Encrypt" && r.outcome.name() == "Ok"));
    assert!(records.iter().any(|r| r.operation == "Decrypt" && r.outcome.name() == "InvalidCiphertext"));
    assert!(records.iter().any(|r| r.operation == "Decrypt" && r.outcome.name() == "KeyNotEnabled"));
    assert!(records.iter().any(|r| r.operation == "CreateCryptoKeyVersion" && r.action.name() == "RotateKey"));
    assert!(records.iter().any(|r| r.operation == "UpdateCryptoKeyVersion" && r.action.name() == "DisableKey"));
    assert!(records.iter().any(|r| r.operation == "UpdateCryptoKeyVersion" && r.action.name() == "EnableKey"));
    assert!(records.iter().any(|r| r.operation == "GetCryptoKey" && r.action.name() == "DescribeKey"));
    kms.shutdown().await;
}

#[tokio::test]
async fn every_error_answers_in_googles_error_model() {
    let kms = gcp_kms().await;
    let gcp = Gcp::new(&kms.url());
    let unknown = "projects/lab/locations/global/keyRings/ring/cryptoKeys/nope";
    let message = google_error(&gcp.encrypt(unknown, b"x", b"").await, 404, "NOT_FOUND", "notFound");
    assert_eq!(message, format!("CryptoKey {unknown} not found."));
    google_error(&gcp.get(unknown).await, 404, "NOT_FOUND", "notFound");
    google_error(&gcp.get(&format!("{KEY}/cryptoKeyVersions/9")).await, 404, "NOT_FOUND", "notFound");
    // Encrypt naming a version: the primary one works, another is not served (said so).
    ok(&gcp.encrypt(&format!("{KEY}/cryptoKeyVersions/1"), b"x", b"").await);
    ok(&gcp.post(&format!("{KEY}/cryptoKeyVersions"), json!({})).await);
    let other_version = gcp.encrypt(&format!("{KEY}/cryptoKeyVersions/2"), b"x", b"").await;
    assert!(google_error(&other_version, 501, "UNIMPLEMENTED", "notImplemented").contains("primary version only"));

    // Cloud KMS's 64 KiB plaintext limit, named; exactly 64 KiB passes.
    let too_large = google_error(&gcp.encrypt(KEY, &vec![7u8; 64 * 1024 + 1], b"").await, 400, "INVALID_ARGUMENT", "badRequest");
    assert!(too_large.contains("65537") && too_large.contains("65536"), "{too_large}");
    ok(&gcp.encrypt(KEY, &vec![7u8; 64 * 1024], b"").await);
    let aad = google_error(&gcp.encrypt(KEY, b"x", &vec![1u8; 64 * 1024 + 1]).await, 400, "INVALID_ARGUMENT", "badRequest");
    assert!(aad.contains("additionalAuthenticatedData") && aad.contains("65536"), "{aad}");
    // A body over what the KMS reads: the same shape, never a bare 413.
    let huge = gcp.post(&format!("{KEY}:encrypt"), json!({"plaintext": B64.encode(vec![0u8; 300 * 1024])})).await;
    assert!(google_error(&huge, 400, "INVALID_ARGUMENT", "badRequest").contains("262144"));

    let malformed = gcp.http.admin("POST", &format!("/v1/{KEY}:encrypt"), "application/json", "{not json").await;
    assert!(google_error(&malformed, 400, "INVALID_ARGUMENT", "badRequest").starts_with("Invalid JSON payload received"));
    google_error(&gcp.post(&format!("{KEY}:encrypt"), json!({"plaintext": "%%%"})).await, 400, "INVALID_ARGUMENT", "badRequest");
    google_error(&gcp.post(&format!("{KEY}:encrypt"), json!({})).await, 400, "INVALID_ARGUMENT", "badRequest");
    google_error(&gcp.decrypt(KEY, &B64.encode([1u8; 40]), b"").await, 400, "INVALID_ARGUMENT", "badRequest");
    // A blob of another key, decrypted under this one: Google's own words for it.
    ok(&gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=other"), json!({"purpose": "ENCRYPT_DECRYPT"})).await);
    let other = ok(&gcp.encrypt(&format!("{RING}/cryptoKeys/other"), b"x", b"").await);
    let wrong_key =
        google_error(&gcp.decrypt(KEY, other["ciphertext"].as_str().unwrap(), b"").await, 400, "INVALID_ARGUMENT", "badRequest");
    assert_eq!(wrong_key, "Decryption failed: verify that 'name' refers to the correct CryptoKey.");
    let exists = gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=other"), json!({"purpose": "ENCRYPT_DECRYPT"})).await;
    assert_eq!(google_error(&exists, 409, "ALREADY_EXISTS", "conflict"), format!("CryptoKey {RING}/cryptoKeys/other already exists."));
    google_error(
        &gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=mac"), json!({"purpose": "MAC"})).await,
        400,
        "INVALID_ARGUMENT",
        "badRequest",
    );
    let mask = gcp.send("PATCH", &format!("{KEY}/cryptoKeyVersions/1?updateMask=labels"), Some(json!({"state": "DISABLED"}))).await;
    google_error(&mask, 400, "INVALID_ARGUMENT", "badRequest");
    google_error(&gcp.set_state(&format!("{KEY}/cryptoKeyVersions/1"), "DESTROYED").await, 400, "INVALID_ARGUMENT", "badRequest");
    let unserved = google_error(&gcp.post(&format!("{KEY}:asymmetricSign"), json!({})).await, 404, "NOT_FOUND", "notFound");
    assert!(unserved.contains("this mock serves"), "{unserved}");
    google_error(
        &gcp.post(&format!("{KEY}:testIamPermissions"), json!({"permissions": ["storage.objects.get"]})).await,
        400,
        "INVALID_ARGUMENT",
        "badRequest",
    );

    // Sealed: every call is 503 UNAVAILABLE.
    let dir = tempfile::tempdir().unwrap();
    mock_kms::seal::init(dir.path(), 5, 3).unwrap();
    let sealed = MockKms::builder().dialect(Dialect::Gcp).data_dir(dir.path()).sealed(true).key("lab-key").start().await.unwrap();
    let reply = Gcp::new(&sealed.url()).encrypt(KEY, b"x", b"").await;
    assert!(google_error(&reply, 503, "UNAVAILABLE", "backendError").contains("sealed"));
    sealed.shutdown().await;
    kms.shutdown().await;
}

#[tokio::test]
async fn faults_answer_in_google_shapes_and_deny_names_the_permission() {
    let kms = gcp_kms().await;
    let gcp = Gcp::new(&kms.url());
    let blob = ok(&gcp.encrypt(KEY, b"x", b"").await)["ciphertext"].as_str().unwrap().to_owned();
    let both = json!({"permissions": ["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"]});
    assert_eq!(ok(&gcp.post(&format!("{KEY}:testIamPermissions"), both.clone()).await)["permissions"], both["permissions"]);

    // deny Decrypt: PERMISSION_DENIED naming the permission; TestIamPermissions no longer grants it.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }), ..Default::default() }).unwrap();
    let denied = google_error(&gcp.decrypt(KEY, &blob, b"").await, 403, "PERMISSION_DENIED", "forbidden");
    assert_eq!(denied, format!("Permission 'cloudkms.cryptoKeyVersions.useToDecrypt' denied on resource '{KEY}' (or it may not exist)."));
    ok(&gcp.encrypt(KEY, b"x", b"").await);
    assert_eq!(
        ok(&gcp.post(&format!("{KEY}:testIamPermissions"), both.clone()).await)["permissions"],
        json!(["cloudkms.cryptoKeyVersions.useToEncrypt"])
    );

    // throttle: 429 RESOURCE_EXHAUSTED with a RetryInfo detail.
    let throttle = ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: None };
    kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
    ok(&gcp.get(KEY).await);
    let throttled = gcp.get(KEY).await;
    google_error(&throttled, 429, "RESOURCE_EXHAUSTED", "rateLimitExceeded");
    let detail = &throttled.json::<Value>()["error"]["details"][0];
    assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.RetryInfo", "{detail}");
    assert!(detail["retryDelay"].as_str().is_some_and(|d| d.ends_with('s')), "{detail}");

    // key_disabled on the key, then on version 1 by its Cloud KMS number: FAILED_PRECONDITION,
    // and GetCryptoKey shows the primary DISABLED.
    kms.set_faults(FaultProfile::from_yaml("key_disabled: {key_ids: [lab-key]}").unwrap()).unwrap();
    google_error(&gcp.encrypt(KEY, b"x", b"").await, 400, "FAILED_PRECONDITION", "failedPrecondition");
    assert_eq!(ok(&gcp.get(KEY).await)["primary"]["state"], "DISABLED");
    kms.set_faults(FaultProfile::from_yaml("key_disabled: {key_ids: [lab-key/1]}").unwrap()).unwrap();
    google_error(&gcp.decrypt(KEY, &blob, b"").await, 400, "FAILED_PRECONDITION", "failedPrecondition");

    // error_rate: 500 INTERNAL.
    kms.set_faults(FaultProfile::from_yaml("error_rate: {rate: 1.0}").unwrap()).unwrap();
    google_error(&gcp.encrypt(KEY, b"x", b"").await, 500, "INTERNAL", "backendError");

    // outage: the listener is gone (connection refused), and back when cleared.
    kms.set_faults(FaultProfile::from_yaml("outage: {}").unwrap()).unwrap();
    let url = kms.url();
    common::wait_until("the GCP listener refuses connections", || common::refused(&url)).await;
    kms.clear_faults();
    common::wait_until("the GCP listener accepts again", || async { !common::refused(&url).await }).await;
    ok(&gcp.decrypt(KEY, &blob, b"").await);

    let records = kms.audit().records();
    assert!(records.iter().any(|r| r.operation == "Decrypt" && r.outcome.name() == "Forbidden"));
    assert!(records.iter().any(|r| r.operation == "GetCryptoKey" && r.outcome.name() == "Throttling"));
    assert!(records.iter().any(|r| r.operation == "Encrypt" && r.outcome.name() == "InternalFailure"));
    kms.shutdown().await;
}

#[tokio::test]
async fn a_gcp_ciphertext_opens_on_the_native_api_with_the_aad_as_context() {
    let kms = gcp_kms().await;
    let native = Client::new(&format!("http://{}", kms.dialect_addr(0, Dialect::Native).unwrap()));
    let blob = ok(&Gcp::new(&kms.url()).encrypt(KEY, b"shared", b"aad").await)["ciphertext"].as_str().unwrap().to_owned();
    let context = BTreeMap::from([("gcp:aad".to_owned(), B64.encode(b"aad"))]);
    let reply = native
        .call(Action::Decrypt, &mock_kms::api::DecryptRequest { ciphertext_blob: blob, encryption_context: context })
        .await
        .json::<mock_kms::api::DecryptResponse>();
    assert_eq!(B64.decode(reply.plaintext).unwrap(), b"shared");
    kms.shutdown().await;
}

#[tokio::test]
async fn the_scripted_command_line_serves_cloud_kms_and_keeps_versions_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--dialect", "gcp", "--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap(), "--key-id", "lab-key"];
    let kms = common::KmsProcess::start(dir.path(), &args, 1);
    let gcp = Gcp::new(kms.url());
    let blob = ok(&gcp.encrypt(KEY, b"persisted", b"aad").await)["ciphertext"].as_str().unwrap().to_owned();
    ok(&gcp.post(&format!("{KEY}/cryptoKeyVersions"), json!({})).await);
    ok(&gcp.post(&format!("{KEY}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "2"})).await);
    assert_eq!(kms.terminate().await.code(), Some(0));

    let kms = common::KmsProcess::start(dir.path(), &args, 1);
    let gcp = Gcp::new(kms.url());
    assert_eq!(ok(&gcp.get(KEY).await)["primary"]["name"], format!("{KEY}/cryptoKeyVersions/2"), "the numbering and primary survive");
    let opened = ok(&gcp.decrypt(KEY, &blob, b"aad").await);
    assert_eq!(B64.decode(opened["plaintext"].as_str().unwrap()).unwrap(), b"persisted");
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    assert!(audit.lines().all(|l| l.contains("\"dialect\":\"gcp\"")), "{audit}");
    assert_eq!(kms.terminate().await.code(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// Differential: the same request sequence to gcp-kms-emulator and to the GCP dialect.
// ---------------------------------------------------------------------------------------------

/// gcp-kms-emulator's REST server on a free loopback port; stopped (killed and reaped) on drop.
struct Emulator {
    _process: Supervised,
    url: String,
    _dir: tempfile::TempDir,
}

impl Emulator {
    async fn start() -> Self {
        let binary = tokio::task::spawn_blocking(|| locate_go_subject(GoSubject::GcpKmsEmulator, &ProvisionOptions::default()))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let log = dir.path().join("gcp-kms-emulator.log");
        let mut process = Supervised::spawn("gcp-kms-emulator", &binary, &["--port".to_owned(), port.to_string()], &log, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = format!("127.0.0.1:{port}");
        process
            .wait_ready(&format!("gcp-kms-emulator accepting connections on {addr}"), Duration::from_secs(30), || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Self { _process: process, url: format!("http://{addr}"), _dir: dir }
    }
}

/// Key names compared regardless of style (`protectionLevel` = `protection_level`).
fn normalise(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// The value at a dotted path, keys matched by [`normalise`]. A proto3 default (`null`, `false`,
/// `0`, `""`) counts as absent: Google's JSON mapping omits them, the emulator writes them out.
fn lookup<'a>(body: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = body;
    for part in path.split('.') {
        at = at.as_object()?.iter().find(|(k, _)| normalise(k) == normalise(part)).map(|(_, v)| v)?;
    }
    let default = matches!(at, Value::Null | Value::Bool(false)) || at.as_u64() == Some(0) || at.as_str() == Some("");
    (!default).then_some(at)
}

/// What one step answered: the HTTP status, then for a success the given fields (`values` by
/// value, `present` by presence), for an error its `status` and whether it is Google's error model.
fn observe(reply: &Reply, values: &[&str], present: &[&str]) -> BTreeMap<String, String> {
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let mut seen = BTreeMap::from([("http".to_owned(), reply.status.to_string())]);
    if reply.status >= 400 {
        let error = &body["error"];
        let google = ["code", "message", "status"].iter().all(|f| error.get(f).is_some());
        seen.insert("error model".to_owned(), if google { "google" } else { "other" }.to_owned());
        seen.insert("error.status".to_owned(), error["status"].as_str().unwrap_or("(none)").to_owned());
        return seen;
    }
    for path in values {
        let value = lookup(&body, path).map_or_else(|| "(absent)".to_owned(), |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        seen.insert((*path).to_owned(), value);
    }
    for path in present {
        let there = lookup(&body, path).is_some();
        seen.insert(format!("{path} present"), there.to_string());
    }
    seen
}

const VERSION_FIELDS: &[&str] = &["name", "state", "algorithm", "protectionLevel"];
const KEY_FIELDS: &[&str] = &["name", "purpose", "primary.name", "primary.state", "primary.algorithm", "primary.protectionLevel"];

/// Runs the sequence against one endpoint, on a key ring and key it creates there.
async fn sequence(endpoint: &str) -> Vec<(&'static str, BTreeMap<String, String>)> {
    let gcp = Gcp::new(endpoint);
    let key = format!("{RING}/cryptoKeys/diff");
    let v = |n: u32| format!("{key}/cryptoKeyVersions/{n}");
    let mut seen = Vec::new();
    let ring = gcp.post("projects/lab/locations/global/keyRings?keyRingId=ring", json!({})).await;
    seen.push(("CreateKeyRing", observe(&ring, &["name"], &["createTime"])));
    let created = gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=diff"), json!({"purpose": "ENCRYPT_DECRYPT"})).await;
    let mut fields = observe(&created, KEY_FIELDS, &["createTime", "primary.createTime"]);
    let names: Vec<String> = created.json::<Value>().as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    fields.insert("field names".to_owned(), if names.iter().any(|n| n.contains('_')) { "snake_case" } else { "lowerCamelCase" }.to_owned());
    seen.push(("CreateCryptoKey", fields));
    seen.push(("GetCryptoKey", observe(&gcp.get(&key).await, KEY_FIELDS, &["createTime"])));

    let encrypted = gcp.encrypt(&key, b"a DEK", b"").await;
    seen.push(("Encrypt", observe(&encrypted, &["name", "protectionLevel"], &["ciphertext"])));
    let blob = encrypted.json::<Value>()["ciphertext"].as_str().unwrap_or_default().to_owned();
    seen.push(("Decrypt", observe(&gcp.decrypt(&key, &blob, b"").await, &["plaintext", "usedPrimary", "protectionLevel"], &[])));
    let with_aad = gcp.encrypt(&key, b"bound", b"context").await;
    seen.push(("Encrypt with AAD", observe(&with_aad, &["name"], &["ciphertext"])));
    let aad_blob = with_aad.json::<Value>()["ciphertext"].as_str().unwrap_or_default().to_owned();
    seen.push(("Decrypt same AAD", observe(&gcp.decrypt(&key, &aad_blob, b"context").await, &["plaintext"], &[])));
    seen.push(("Decrypt wrong AAD", observe(&gcp.decrypt(&key, &aad_blob, b"other").await, &["plaintext"], &[])));
    let mut tampered = B64.decode(&blob).unwrap_or_default();
    if let Some(last) = tampered.last_mut() {
        *last ^= 0x55;
    }
    seen.push(("Decrypt tampered", observe(&gcp.decrypt(&key, &B64.encode(&tampered), b"").await, &["plaintext"], &[])));
    seen.push(("Decrypt garbage", observe(&gcp.decrypt(&key, &B64.encode([1u8; 40]), b"").await, &["plaintext"], &[])));
    let unknown = format!("{RING}/cryptoKeys/unknown");
    seen.push(("Encrypt unknown key", observe(&gcp.encrypt(&unknown, b"x", b"").await, &["name"], &[])));
    seen.push(("GetCryptoKey unknown key", observe(&gcp.get(&unknown).await, &["name"], &[])));
    seen.push(("Encrypt empty plaintext", observe(&gcp.encrypt(&key, b"", b"").await, &["name"], &[])));
    seen.push(("Encrypt 64 KiB + 1", observe(&gcp.encrypt(&key, &vec![1u8; 64 * 1024 + 1], b"").await, &["name"], &[])));
    seen.push(("Encrypt 64 KiB", observe(&gcp.encrypt(&key, &vec![1u8; 64 * 1024], b"").await, &["name"], &[])));

    let version = gcp.post(&format!("{key}/cryptoKeyVersions"), json!({})).await;
    seen.push(("CreateCryptoKeyVersion", observe(&version, VERSION_FIELDS, &["createTime"])));
    seen.push(("GetCryptoKey after CreateCryptoKeyVersion", observe(&gcp.get(&key).await, &["primary.name"], &[])));
    let primary = gcp.post(&format!("{key}:updatePrimaryVersion"), json!({"cryptoKeyVersionId": "2"})).await;
    seen.push(("UpdateCryptoKeyPrimaryVersion", observe(&primary, &["primary.name", "primary.state"], &[])));
    seen.push(("Encrypt after rotation", observe(&gcp.encrypt(&key, b"x", b"").await, &["name"], &[])));
    seen.push(("Decrypt version 1 after rotation", observe(&gcp.decrypt(&key, &blob, b"").await, &["plaintext", "usedPrimary"], &[])));
    seen.push(("GetCryptoKeyVersion", observe(&gcp.get(&v(1)).await, VERSION_FIELDS, &[])));
    let list = gcp.get(&format!("{key}/cryptoKeyVersions")).await;
    let count = list.json::<Value>().as_object().and_then(|o| o.values().find_map(Value::as_array)).map_or(0, Vec::len);
    let mut fields = observe(&list, &["totalSize"], &[]);
    fields.insert("versions listed".to_owned(), count.to_string());
    seen.push(("ListCryptoKeyVersions", fields));
    seen.push(("UpdateCryptoKeyVersion DISABLED", observe(&gcp.set_state(&v(1), "DISABLED").await, VERSION_FIELDS, &[])));
    seen.push(("Decrypt disabled version", observe(&gcp.decrypt(&key, &blob, b"").await, &["plaintext"], &[])));
    seen.push(("UpdateCryptoKeyVersion ENABLED", observe(&gcp.set_state(&v(1), "ENABLED").await, &["state"], &[])));
    seen.push(("Decrypt re-enabled version", observe(&gcp.decrypt(&key, &blob, b"").await, &["plaintext"], &[])));
    ok_or_note(gcp.set_state(&v(2), "DISABLED").await);
    seen.push(("Encrypt disabled primary", observe(&gcp.encrypt(&key, b"x", b"").await, &["name"], &[])));
    let other = gcp.post(&format!("{RING}/cryptoKeys?cryptoKeyId=other"), json!({"purpose": "ENCRYPT_DECRYPT"})).await;
    ok_or_note(other);
    let other_blob = gcp.encrypt(&format!("{RING}/cryptoKeys/other"), b"x", b"").await.json::<Value>()["ciphertext"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    seen.push(("Decrypt another key's ciphertext", observe(&gcp.decrypt(&key, &other_blob, b"").await, &["plaintext"], &[])));
    let permissions = json!({"permissions": ["cloudkms.cryptoKeyVersions.useToEncrypt", "cloudkms.cryptoKeyVersions.useToDecrypt"]});
    seen.push(("TestIamPermissions", observe(&gcp.post(&format!("{key}:testIamPermissions"), permissions).await, &["permissions"], &[])));
    seen
}

/// A set-up step both endpoints must take (its answer is not compared).
fn ok_or_note(reply: Reply) {
    assert!(reply.status < 300, "a set-up step failed: {} {}", reply.status, reply.text());
}

/// Where gcp-kms-emulator departs from Cloud KMS's documented behaviour and the GCP dialect
/// follows the documentation (each listed in mock-kms/README.md): `(step, field)`.
const EMULATOR_DEPARTURES: &[(&str, &str)] = &[
    // Google's REST JSON uses lowerCamelCase names; the emulator's gateway writes proto names.
    ("CreateCryptoKey", "field names"),
    // Google answers 200 to a create; the emulator's gateway 201.
    ("CreateKeyRing", "http"),
    ("CreateCryptoKey", "http"),
    ("CreateCryptoKeyVersion", "http"),
    // A SOFTWARE key's versions say protectionLevel SOFTWARE; the emulator leaves it unspecified.
    ("CreateCryptoKey", "primary.protectionLevel"),
    ("GetCryptoKey", "primary.protectionLevel"),
    ("Encrypt", "protectionLevel"),
    ("Decrypt", "protectionLevel"),
    ("CreateCryptoKeyVersion", "protectionLevel"),
    ("GetCryptoKeyVersion", "protectionLevel"),
    ("UpdateCryptoKeyVersion DISABLED", "protectionLevel"),
    // The mock KMS keeps no wall-clock creation time per version (its key store orders versions by
    // a logical clock): CryptoKeyVersion.createTime is left out; the key's createTime is there.
    ("CreateCryptoKey", "primary.createTime present"),
    ("CreateCryptoKeyVersion", "createTime present"),
    // DecryptResponse.usedPrimary: the emulator never sets it.
    ("Decrypt", "usedPrimary"),
    // The emulator ignores additionalAuthenticatedData: a wrong AAD decrypts.
    ("Decrypt wrong AAD", "http"),
    ("Decrypt wrong AAD", "plaintext"),
    ("Decrypt wrong AAD", "error"),
    // Errors: Google's model with 400/404/…; the emulator's gateway answers `{"error": "<text>"}`
    // with 500 (or 404 on a Get) whatever the cause.
    ("Decrypt tampered", "error"),
    ("Decrypt tampered", "http"),
    ("Decrypt garbage", "error"),
    ("Decrypt garbage", "http"),
    ("Encrypt unknown key", "error"),
    ("Encrypt unknown key", "http"),
    ("GetCryptoKey unknown key", "error"),
    ("Decrypt disabled version", "error"),
    ("Decrypt disabled version", "http"),
    ("Encrypt disabled primary", "error"),
    ("Encrypt disabled primary", "http"),
    ("Decrypt another key's ciphertext", "error"),
    ("Decrypt another key's ciphertext", "http"),
    // Google requires a non-empty plaintext of at most 64 KiB; the emulator encrypts anything.
    ("Encrypt empty plaintext", "http"),
    ("Encrypt empty plaintext", "error"),
    ("Encrypt empty plaintext", "name"),
    ("Encrypt 64 KiB + 1", "http"),
    ("Encrypt 64 KiB + 1", "error"),
    ("Encrypt 64 KiB + 1", "name"),
    // The emulator's REST gateway has no :testIamPermissions (405; k8s-cloudkms-plugin's /healthz calls it).
    ("TestIamPermissions", "http"),
    ("TestIamPermissions", "error"),
    ("TestIamPermissions", "permissions"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gcp_dialect_answers_the_sequence_like_the_emulator_except_where_it_departs_from_google() {
    let emulator = Emulator::start().await;
    let kms = MockKms::builder().dialect(Dialect::Gcp).seed(15).start().await.unwrap();
    let ours = sequence(&kms.url()).await;
    let theirs = sequence(&emulator.url).await;
    assert_eq!(ours.len(), theirs.len());
    let mut compared = 0;
    let mut differences = Vec::new();
    for ((step, a), (_, b)) in ours.iter().zip(&theirs) {
        for field in a.keys().chain(b.keys().filter(|f| !a.contains_key(*f))) {
            compared += 1;
            let (x, y) = (a.get(field), b.get(field));
            if x != y {
                // An error on one side and fields on the other: one difference per field, named `error`.
                let what = if field.starts_with("error") { "error" } else { field.as_str() };
                differences.push((*step, what.to_owned(), format!("{step}: {field}: mock-kms {x:?}, emulator {y:?}")));
            }
        }
    }
    differences.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.1 == "error");
    eprintln!("differential vs gcp-kms-emulator: {} steps, {compared} fields compared, {} differences:", ours.len(), differences.len());
    for (_, _, text) in &differences {
        eprintln!("  {text}");
    }
    let unexplained: Vec<&String> =
        differences.iter().filter(|(step, field, _)| !EMULATOR_DEPARTURES.contains(&(*step, field.as_str()))).map(|(_, _, t)| t).collect();
    assert!(unexplained.is_empty(), "differences not listed in mock-kms/README.md: {unexplained:#?}");
    // A departure that no longer shows is stale: the list must say what the emulator does now.
    let stale: Vec<&(&str, &str)> =
        EMULATOR_DEPARTURES.iter().filter(|(step, field)| !differences.iter().any(|(s, f, _)| s == step && f == field)).collect();
    assert!(stale.is_empty(), "departures listed that the emulator no longer shows: {stale:?}");
    kms.shutdown().await;
}
