//! The Vault dialect driven by a Vault client we did not write: Python's `hvac` (HashiCorp's
//! community client, `pip install hvac==2.4.0`). Each test hands `hvac` a list of steps, gets
//! what each answered (a value, or the hvac exception with Vault's `errors` and HTTP status),
//! and asserts it here, next to the mock KMS's audit log.

use std::io::Write;
use std::process::{Command, Stdio};

use mock_kms::MockKms;
use mock_kms::api::Action;
use mock_kms::api::faults::{DenyFault, FaultProfile, ThrottleFault};
use mock_kms::dialects::Dialect;
use serde_json::{Value, json};

const TOKEN: &str = "s.mock-kms-test-token";
const INSTALL_HVAC: &str = "pip install hvac==2.4.0";

/// Runs `steps` through hvac against `url`; one answer per step: `{"ok": value}` or
/// `{"error": "<hvac exception>", "status": code, "errors": [...]}`.
const HVAC_STEPS: &str = r#"
import base64, json, sys
import hvac
from hvac import exceptions

url, token = sys.argv[1], sys.argv[2]
steps = json.load(sys.stdin)
results = []

def b64(text):
    return base64.b64encode(text.encode()).decode()

def value(v):
    # {"from": i}: the value step i answered.
    if isinstance(v, dict) and "from" in v:
        return results[v["from"]]["ok"]
    return v

def run(step):
    client = hvac.Client(url=step.get("url", url), token=step.get("token", token))
    transit, op = client.secrets.transit, step["op"]
    context = b64(step["context"]) if "context" in step else None
    if op == "encrypt":
        return transit.encrypt_data(step["key"], plaintext=b64(step["plaintext"]), context=context)["data"]["ciphertext"]
    if op == "decrypt":
        answer = transit.decrypt_data(step["key"], ciphertext=value(step["ciphertext"]), context=context)
        return base64.b64decode(answer["data"]["plaintext"]).decode()
    if op == "read_key":
        data = transit.read_key(step["key"])["data"]
        return {k: data[k] for k in ("name", "type", "latest_version", "min_decryption_version", "keys")}
    if op == "create_key":
        response = transit.create_key(step["key"])
        return getattr(response, "status_code", 200)
    if op == "rotate_key":
        transit.rotate_key(step["key"])
        return None
    if op == "config":
        transit.update_key_configuration(step["key"], min_decryption_version=step["min_decryption_version"])
        return None
    if op == "lookup_self":
        data = client.auth.token.lookup_self()["data"]
        # The token itself is compared here, never printed.
        shown = {k: data[k] for k in ("ttl", "creation_ttl", "renewable", "policies", "type", "expire_time")}
        shown["id_is_the_token"] = data["id"] == client.token
        return shown
    if op == "renew_self":
        auth = client.auth.token.renew_self(increment=step.get("increment"))["auth"]
        shown = {k: auth[k] for k in ("lease_duration", "renewable", "policies", "token_type")}
        shown["client_token_is_the_token"] = auth["client_token"] == client.token
        return shown
    if op == "approle_login":
        auth = client.auth.approle.login(role_id=step["role_id"], secret_id=step["secret_id"], use_token=False)["auth"]
        shown = {k: auth[k] for k in ("lease_duration", "renewable", "policies", "token_type")}
        # The token handed out is compared here, never printed.
        shown["client_token_is_the_token"] = auth["client_token"] == token
        return shown
    if op == "list_keys":
        return sorted(transit.list_keys()["data"]["keys"])
    if op == "health":
        response = client.sys.read_health_status(method="GET", **step.get("params", {}))
        if isinstance(response, dict):
            return {"status": 200, "body": response}
        return {"status": response.status_code, "body": response.json() if response.content else None}
    if op == "seal_status":
        status = client.sys.read_seal_status()
        return {k: status[k] for k in ("type", "sealed", "t", "n", "progress")}
    if op == "unseal":
        status = client.sys.submit_unseal_key(key=step["share"])
        return {k: status[k] for k in ("sealed", "t", "n", "progress")}
    raise ValueError("unknown step " + op)

for step in steps:
    try:
        results.append({"ok": run(step)})
    except exceptions.VaultError as error:
        results.append({"error": type(error).__name__, "errors": error.errors})
print(json.dumps(results))
"#;

/// Runs `steps` through hvac; fails with the install command when python3 or hvac is missing.
fn hvac(url: &str, steps: &Value) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args(["-c", HVAC_STEPS, url, TOKEN])
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_ADDR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 cannot be started ({e}): install python3 and `{INSTALL_HVAC}`"));
    child.stdin.take().unwrap().write_all(steps.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("No module named 'hvac'"), "the hvac client is missing: `{INSTALL_HVAC}`");
    assert!(out.status.success(), "the hvac steps failed: {stderr}");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("hvac printed no answers ({e}): {stderr}"));
    assert_eq!(answers.len(), steps.as_array().unwrap().len());
    answers
}

/// The `ok` value of an answer (panics with the error otherwise).
fn ok(answer: &Value) -> &Value {
    answer.get("ok").unwrap_or_else(|| panic!("expected success, got {answer}"))
}

/// `(hvac exception, Vault's errors)` of an answer.
fn error(answer: &Value) -> (String, Vec<String>) {
    let class = answer["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {answer}")).to_owned();
    let errors =
        answer["errors"].as_array().map(|e| e.iter().map(|m| m.as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default();
    (class, errors)
}

/// A mock KMS speaking Vault on node 0 and node 1 (an in-process cluster), sealed (Shamir 5/3),
/// with `lab-key`; the shares and the data dir.
async fn sealed_vault() -> (MockKms, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let shares = mock_kms::seal::init(dir.path(), 5, 3).unwrap().iter().map(|s| s.to_string()).collect();
    let kms = MockKms::builder()
        .dialect(Dialect::Vault)
        .vault_token(TOKEN)
        .data_dir(dir.path())
        .sealed(true)
        .cluster_size(2)
        .key("lab-key")
        .seed(15)
        .start()
        .await
        .unwrap();
    (kms, shares, dir)
}

async fn vault() -> MockKms {
    MockKms::builder().dialect(Dialect::Vault).vault_token(TOKEN).key("lab-key").seed(15).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_unseals_with_three_of_five_shares_and_reads_health_as_vault_answers_it() {
    let (kms, shares, _dir) = sealed_vault().await;
    let (active, standby) = (kms.urls()[0].clone(), kms.urls()[1].clone());
    let steps = json!([
        {"op": "health"},
        {"op": "health", "params": {"sealed_code": 299}},
        {"op": "seal_status"},
        {"op": "encrypt", "key": "lab-key", "plaintext": "a DEK"},
        {"op": "unseal", "share": shares[0]},
        {"op": "unseal", "share": shares[3]},
        {"op": "unseal", "share": shares[4]},
        {"op": "health"},
        {"op": "health", "url": standby},
        {"op": "health", "url": standby, "params": {"standby_ok": true}},
        {"op": "health", "url": standby, "params": {"standby_code": 200}},
        {"op": "encrypt", "key": "lab-key", "plaintext": "a DEK"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 11}, "url": standby},
    ]);
    let a = hvac(&active, &steps);
    let sealed = ok(&a[0]);
    assert_eq!((sealed["status"].as_u64(), sealed["body"]["sealed"].as_bool()), (Some(503), Some(true)), "{sealed}");
    assert_eq!(ok(&a[1])["status"], 299);
    assert_eq!(ok(&a[2]), &json!({"type": "shamir", "sealed": true, "t": 3, "n": 5, "progress": 0}));
    assert_eq!(error(&a[3]), ("VaultDown".to_owned(), vec!["Vault is sealed".to_owned()]));
    assert_eq!(ok(&a[4]), &json!({"sealed": true, "t": 3, "n": 5, "progress": 1}));
    assert_eq!(ok(&a[5]), &json!({"sealed": true, "t": 3, "n": 5, "progress": 2}));
    assert_eq!(ok(&a[6]), &json!({"sealed": false, "t": 3, "n": 5, "progress": 0}));
    let active_health = ok(&a[7]);
    assert_eq!((active_health["status"].as_u64(), active_health["body"]["standby"].as_bool()), (Some(200), Some(false)));
    let standby_health = ok(&a[8]);
    assert_eq!((standby_health["status"].as_u64(), standby_health["body"]["standby"].as_bool()), (Some(429), Some(true)));
    assert_eq!(ok(&a[9])["status"], 200);
    assert_eq!(ok(&a[10])["status"], 200);
    assert!(ok(&a[11]).as_str().unwrap().starts_with("vault:v1:"), "{}", a[11]);
    assert_eq!(ok(&a[12]), "a DEK", "the standby decrypts what the active node encrypted");

    let records = kms.audit().records();
    assert!(records.iter().any(|r| r.dialect.name() == "vault" && r.operation == "transit/encrypt" && r.outcome.name() == "Sealed"));
    assert!(!kms.seal_status().sealed);
    kms.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_round_trips_rotates_and_honours_min_decryption_version() {
    let kms = vault().await;
    let url = kms.url();
    let steps = json!([
        {"op": "encrypt", "key": "lab-key", "plaintext": "one", "context": "pod-a"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 0}, "context": "pod-a"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 0}, "context": "pod-b"},
        {"op": "read_key", "key": "lab-key"},
        {"op": "rotate_key", "key": "lab-key"},
        {"op": "encrypt", "key": "lab-key", "plaintext": "two"},
        {"op": "read_key", "key": "lab-key"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 0}, "context": "pod-a"},
        {"op": "config", "key": "lab-key", "min_decryption_version": 2},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 0}, "context": "pod-a"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": {"from": 5}},
        {"op": "read_key", "key": "lab-key"},
        {"op": "config", "key": "lab-key", "min_decryption_version": 3},
        {"op": "decrypt", "key": "lab-key", "ciphertext": "not-a-vault-ciphertext"},
        {"op": "decrypt", "key": "lab-key", "ciphertext": "vault:v9:AAAA"},
        {"op": "read_key", "key": "no-such-key"},
        {"op": "create_key", "key": "other-key"},
        {"op": "list_keys"},
        {"op": "encrypt", "key": "lab-key", "plaintext": "x", "token": "wrong-token"},
        {"op": "encrypt", "key": "lab-key", "plaintext": "x", "token": ""},
    ]);
    let a = hvac(&url, &steps);
    assert!(ok(&a[0]).as_str().unwrap().starts_with("vault:v1:"), "{}", a[0]);
    assert_eq!(ok(&a[1]), "one");
    assert_eq!(error(&a[2]), ("InvalidRequest".to_owned(), vec!["cipher: message authentication failed".to_owned()]));
    let key = ok(&a[3]);
    assert_eq!(
        (key["type"].as_str(), key["latest_version"].as_u64(), key["min_decryption_version"].as_u64()),
        (Some("aes256-gcm96"), Some(1), Some(1))
    );
    assert!(ok(&a[5]).as_str().unwrap().starts_with("vault:v2:"), "{}", a[5]);
    let key = ok(&a[6]);
    assert_eq!(key["latest_version"], 2);
    assert_eq!(key["keys"].as_object().unwrap().keys().collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(ok(&a[7]), "one", "the old version still decrypts after rotation");
    assert_eq!(
        error(&a[9]),
        ("InvalidRequest".to_owned(), vec!["ciphertext or signature version is disallowed by policy (too old)".to_owned()])
    );
    assert_eq!(ok(&a[10]), "two");
    assert_eq!(ok(&a[11])["min_decryption_version"], 2);
    assert_eq!(error(&a[12]).0, "InvalidRequest", "min_decryption_version above the latest version");
    assert_eq!(error(&a[13]), ("InvalidRequest".to_owned(), vec!["invalid ciphertext: no prefix".to_owned()]));
    assert_eq!(error(&a[14]), ("InvalidRequest".to_owned(), vec!["invalid ciphertext: version is too new".to_owned()]));
    assert_eq!(error(&a[15]).0, "InvalidPath", "a missing key reads as 404");
    assert_eq!(ok(&a[16]), 204);
    assert_eq!(ok(&a[17]), &json!(["lab-key", "other-key"]));
    assert_eq!(error(&a[18]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    assert_eq!(error(&a[19]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));

    let records = kms.audit().records();
    let encrypts: Vec<_> = records.iter().filter(|r| r.action.name() == "Encrypt").collect();
    assert!(encrypts.iter().all(|r| r.dialect.name() == "vault" && r.operation == "transit/encrypt"));
    assert!(records.iter().any(|r| r.operation == "transit/keys/rotate" && r.action.name() == "RotateKey" && r.outcome.name() == "Ok"));
    assert_eq!(records.iter().filter(|r| r.operation == "transit/encrypt" && r.outcome.name() == "SignatureDoesNotMatch").count(), 1);
    assert_eq!(records.iter().filter(|r| r.operation == "transit/encrypt" && r.outcome.name() == "InvalidAccessKeyId").count(), 1);
    // Two versions in the key store, numbered as hvac saw them.
    assert_eq!(kms.describe_key(0, "lab-key").unwrap().key_version_ids.len(), 2);
    kms.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_answer_in_vaults_shapes_and_deny_maps_transit_operations() {
    let kms = vault().await;
    let url = kms.url();
    let sealed = hvac(&url, &json!([{"op": "encrypt", "key": "lab-key", "plaintext": "x"}]));
    let ciphertext = ok(&sealed[0]).clone();

    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::Decrypt]) }), ..Default::default() }).unwrap();
    let a = hvac(
        &url,
        &json!([
            {"op": "decrypt", "key": "lab-key", "ciphertext": ciphertext},
            {"op": "encrypt", "key": "lab-key", "plaintext": "x"},
        ]),
    );
    assert_eq!(error(&a[0]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    ok(&a[1]);

    kms.set_faults(FaultProfile {
        throttle: Some(ThrottleFault { per_second: 0.001, burst: Some(1.0), actions: Some(vec![Action::Encrypt]) }),
        ..Default::default()
    })
    .unwrap();
    let a = hvac(
        &url,
        &json!([
            {"op": "encrypt", "key": "lab-key", "plaintext": "x"},
            {"op": "encrypt", "key": "lab-key", "plaintext": "x"},
            {"op": "decrypt", "key": "lab-key", "ciphertext": ciphertext},
        ]),
    );
    ok(&a[0]);
    let (class, errors) = error(&a[1]);
    assert_eq!(class, "RateLimitExceeded", "{errors:?}");
    assert!(errors[0].contains("rate limit quota exceeded"), "{errors:?}");
    assert_eq!(ok(&a[2]), "x", "throttling applies to the listed operations only");

    kms.set_faults(FaultProfile::from_yaml("key_disabled: {key_ids: [lab-key]}").unwrap()).unwrap();
    let a = hvac(&url, &json!([{"op": "decrypt", "key": "lab-key", "ciphertext": ciphertext}]));
    assert_eq!(error(&a[0]).0, "InvalidRequest");
    kms.clear_faults();

    let records = kms.audit().records();
    assert!(records.iter().any(|r| r.dialect.name() == "vault" && r.operation == "transit/decrypt" && r.outcome.name() == "Forbidden"));
    assert!(records.iter().any(|r| r.dialect.name() == "vault" && r.operation == "transit/encrypt" && r.outcome.name() == "Throttling"));
    kms.shutdown().await;
}

/// What vault-kubernetes-kms (and Vault's Go client) calls at start and in its token refresher:
/// the token's look-up and renewal through hvac's own `lookup_self` and `renew_self`, next to
/// the key read whose `latest_version` the plugin reports as its key id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hvac_looks_up_and_renews_its_token_and_reads_the_key_version() {
    let kms = vault().await;
    let url = kms.url();
    // Vault's default max TTL, 768 h: what the mock's token reports.
    let ttl: u64 = 768 * 3600;
    let steps = json!([
        {"op": "lookup_self"},
        {"op": "renew_self", "increment": 3600},
        {"op": "renew_self", "increment": "2h"},
        {"op": "renew_self"},
        {"op": "renew_self", "increment": ttl * 10},
        {"op": "lookup_self"},
        {"op": "read_key", "key": "lab-key"},
        {"op": "lookup_self", "token": "wrong-token"},
        {"op": "renew_self", "token": "wrong-token"},
        {"op": "renew_self", "increment": "soon"},
    ]);
    let a = hvac(&url, &steps);
    let looked = ok(&a[0]);
    assert_eq!((looked["ttl"].as_u64(), looked["creation_ttl"].as_u64()), (Some(ttl), Some(ttl)), "{looked}");
    assert_eq!((looked["renewable"].as_bool(), looked["type"].as_str()), (Some(true), Some("service")), "{looked}");
    assert!(looked["policies"].as_array().is_some_and(|p| p.iter().any(|p| p == "default")), "{looked}");
    assert!(looked["expire_time"].as_str().is_some_and(|t| t.len() == 20 && t.ends_with('Z')), "RFC 3339: {looked}");
    assert_eq!(looked["id_is_the_token"], true);
    let leases: Vec<_> = a[1..5].iter().map(|r| ok(r)["lease_duration"].as_u64()).collect();
    assert_eq!(leases, [Some(3600), Some(7200), Some(ttl), Some(ttl)], "the increment asked for, at most the max TTL");
    assert!(a[1..5].iter().all(|r| ok(r)["renewable"] == true && ok(r)["client_token_is_the_token"] == true), "{a:?}");
    assert_eq!(ok(&a[5])["ttl"].as_u64(), Some(ttl), "the token does not run down in the mock");
    assert_eq!(ok(&a[6])["latest_version"], 1);
    assert_eq!(error(&a[7]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    assert_eq!(error(&a[8]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    let (class, errors) = error(&a[9]);
    assert_eq!(class, "InvalidRequest", "{errors:?}");
    assert!(errors[0].contains("increment"), "{errors:?}");

    // Both are DescribeKey for faults: a deny of DescribeKey refuses them (and the key read),
    // not encryption.
    kms.set_faults(FaultProfile { deny: Some(DenyFault { actions: Some(vec![Action::DescribeKey]) }), ..Default::default() }).unwrap();
    let a = hvac(&url, &json!([{"op": "lookup_self"}, {"op": "renew_self"}, {"op": "encrypt", "key": "lab-key", "plaintext": "x"}]));
    assert_eq!(error(&a[0]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    assert_eq!(error(&a[1]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    ok(&a[2]);
    kms.clear_faults();

    let records = kms.audit().records();
    let count = |operation: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| {
                r.dialect.name() == "vault" && r.operation == operation && r.action.name() == "DescribeKey" && r.outcome.name() == outcome
            })
            .count()
    };
    assert_eq!(count("auth/token/lookup-self", "Ok"), 2);
    assert_eq!(count("auth/token/renew-self", "Ok"), 4);
    assert_eq!(count("auth/token/lookup-self", "SignatureDoesNotMatch"), 1);
    assert_eq!(count("auth/token/lookup-self", "Forbidden"), 1);
    assert_eq!(count("auth/token/renew-self", "Forbidden"), 1);
    kms.shutdown().await;
}

#[tokio::test]
async fn an_oversized_vault_request_is_a_vault_error_naming_the_limit() {
    let kms = vault().await;
    // One byte over the Vault dialect's 64 KiB plaintext limit.
    let plaintext = vec![b'a'; 64 * 1024 + 1];
    let body = json!({"plaintext": base64_encode(&plaintext)}).to_string();
    let (status, text) = raw(kms.addr().port(), "POST", "/v1/transit/encrypt/lab-key", &body).await;
    assert_eq!(status, 400, "{text}");
    let errors: Value = serde_json::from_str(&text).unwrap();
    assert!(errors["errors"][0].as_str().unwrap().contains("65536"), "{text}");
    kms.shutdown().await;
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `METHOD path` with the test token and a JSON body: status and body.
async fn raw(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nX-Vault-Token: {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// Three single-node processes' worth of mock KMS in one test (each its own seal, audit and token
/// state, as separate processes), replicating through `--peers`, speaking Vault.
async fn vault_processes() -> Vec<MockKms> {
    let listeners: Vec<std::net::TcpListener> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let urls: Vec<String> = listeners.iter().map(|l| format!("http://{}", l.local_addr().unwrap())).collect();
    let mut nodes = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let node = MockKms::builder()
            .dialect(Dialect::Vault)
            .vault_token(TOKEN)
            .listener(listener)
            .node_id(format!("node-{index}"))
            .peers(urls.clone())
            .cluster_secret("vault-ha-test")
            .key("lab-key")
            .seed(15)
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    nodes
}

/// Vault's HA as a client sees it: one active node (200), standbys (429) that answer everything
/// but `sys/` with a 307 to the active node's address, which hvac follows; when the active node is
/// lost the lowest-ranked standby takes over, and a node that comes back stays a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_redirect_to_the_active_node_and_one_takes_over_when_it_is_lost() {
    let mut nodes = vault_processes().await;
    let port = |i: usize, nodes: &[MockKms]| nodes[i].addr().port();
    let standby = nodes[2].url();

    // Before anyone asked, no node holds the lock; the first request finds node 0 first in line.
    let (status, _) = raw(port(2, &nodes), "GET", "/v1/sys/health", "").await;
    assert_eq!(status, 429, "node 2 is a standby");
    let (status, location) = raw_location(port(2, &nodes), "GET", "/v1/transit/keys/lab-key").await;
    assert_eq!(status, 307);
    assert_eq!(location, format!("{}/v1/transit/keys/lab-key", nodes[0].url()), "the active node's address and the same path");
    let (status, _) = raw(port(0, &nodes), "GET", "/v1/sys/health", "").await;
    assert_eq!(status, 200, "node 0 took the lock");
    let (status, body) = raw(port(1, &nodes), "GET", "/v1/sys/leader", "").await;
    let leader: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &leader["is_self"], &leader["leader_address"]), (200, &json!(false), &json!(nodes[0].url())), "{body}");

    // A Vault client given the standby's address is redirected, and it follows.
    let a = hvac(&standby, &json!([{"op": "encrypt", "key": "lab-key", "plaintext": "a DEK"}, {"op": "health"}]));
    let ciphertext = ok(&a[0]).as_str().unwrap().to_owned();
    assert_eq!(ok(&a[1])["status"], 429);
    let served_by = |kms: &MockKms| kms.audit().records().iter().filter(|r| r.operation == "transit/encrypt").count();
    assert_eq!((served_by(&nodes[0]), served_by(&nodes[2])), (1, 0), "the active node served it; the standby audited nothing");

    // The active node is lost: node 1 (the lowest-ranked left) takes over, node 2 redirects there.
    nodes.remove(0).shutdown().await;
    let (status, location) = raw_location(port(0, &nodes), "GET", "/v1/transit/keys/lab-key").await;
    assert_eq!((status, location.as_str()), (200, ""), "node 1 serves");
    let (status, location) = raw_location(port(1, &nodes), "GET", "/v1/transit/keys/lab-key").await;
    assert_eq!((status, location), (307, format!("{}/v1/transit/keys/lab-key", nodes[0].url())), "node 2 redirects to node 1");
    let a = hvac(&standby, &json!([{"op": "decrypt", "key": "lab-key", "ciphertext": ciphertext}]));
    assert_eq!(ok(&a[0]), "a DEK", "the new active node decrypts what the lost one encrypted");
    let (status, _) = raw(port(0, &nodes), "GET", "/v1/sys/health", "").await;
    assert_eq!(status, 200);
    for kms in nodes {
        kms.shutdown().await;
    }
}

/// With `--vault-token-ttl` the token has a lease, as a Vault service token created with `-ttl`:
/// a look-up reports the time left, `renew-self` sets it to the increment asked, and once it has
/// run out every call with the token — renewal included — is refused 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_lease_runs_down_unless_renewed() {
    let kms = MockKms::builder()
        .dialect(Dialect::Vault)
        .vault_token(TOKEN)
        .vault_token_ttl(std::time::Duration::from_secs(2))
        .key("lab-key")
        .seed(15)
        .start()
        .await
        .unwrap();
    let url = kms.url();
    let a = hvac(&url, &json!([{"op": "lookup_self"}, {"op": "renew_self", "increment": 3}, {"op": "lookup_self"}]));
    let looked = ok(&a[0]);
    assert_eq!(looked["creation_ttl"].as_u64(), Some(2), "{looked}");
    assert!(looked["ttl"].as_u64().is_some_and(|t| (1..=2).contains(&t)), "{looked}");
    assert_eq!(ok(&a[1])["lease_duration"].as_u64(), Some(3), "the increment asked for");
    assert!(ok(&a[2])["ttl"].as_u64().is_some_and(|t| (2..=3).contains(&t)), "{}", a[2]);
    assert_eq!(ok(&a[2])["creation_ttl"].as_u64(), Some(2), "creation_ttl stays what the token was created with");

    // Not renewed again: refused within its 3 s lease plus a second of rounding.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) = raw(kms.addr().port(), "GET", "/v1/auth/token/lookup-self", "").await;
        if status == 403 {
            assert!(body.contains("permission denied"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the token's 3 s lease never ran out: {status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let a = hvac(&url, &json!([{"op": "renew_self"}, {"op": "encrypt", "key": "lab-key", "plaintext": "x"}]));
    assert_eq!(error(&a[0]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]), "an expired token cannot be renewed");
    assert_eq!(error(&a[1]), ("Forbidden".to_owned(), vec!["permission denied".to_owned()]));
    kms.shutdown().await;
}

/// `METHOD path` with the test token: the status and the `Location` header (empty if none).
async fn raw_location(port: u16, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nX-Vault-Token: {TOKEN}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let location = head.lines().find_map(|l| l.strip_prefix("location: ").or_else(|| l.strip_prefix("Location: "))).unwrap_or_default();
    (status, location.trim().to_owned())
}

/// An AppRole login (`auth/approle/login`, what vault-kubernetes-kms's `-auth-method=approle`
/// calls at start and when a renewal fails) through hvac's own `approle.login`: the right role id
/// and secret id get the token with a fresh lease, wrong ones Vault's 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approle_login_hands_out_the_token_with_a_fresh_lease() {
    let kms = MockKms::builder()
        .dialect(Dialect::Vault)
        .vault_token(TOKEN)
        .vault_token_ttl(std::time::Duration::from_secs(60))
        .vault_approle("role-1", "secret-1")
        .key("lab-key")
        .seed(15)
        .start()
        .await
        .unwrap();
    let a = hvac(
        &kms.url(),
        &json!([
            {"op": "approle_login", "role_id": "role-1", "secret_id": "secret-1"},
            {"op": "approle_login", "role_id": "role-1", "secret_id": "wrong"},
            {"op": "approle_login", "role_id": "other", "secret_id": "secret-1"},
            {"op": "lookup_self"},
        ]),
    );
    let auth = ok(&a[0]);
    assert_eq!((auth["lease_duration"].as_u64(), auth["renewable"].as_bool()), (Some(60), Some(true)), "{auth}");
    assert_eq!((auth["token_type"].as_str(), auth["client_token_is_the_token"].as_bool()), (Some("service"), Some(true)), "{auth}");
    for refused in &a[1..3] {
        assert_eq!(error(refused), ("InvalidRequest".to_owned(), vec!["invalid role or secret ID".to_owned()]));
    }
    assert_eq!(ok(&a[3])["creation_ttl"].as_u64(), Some(60));
    let records = kms.audit().records();
    let logins = |outcome: &str| records.iter().filter(|r| r.operation == "auth/approle/login" && r.outcome.name() == outcome).count();
    assert_eq!((logins("Ok"), logins("SignatureDoesNotMatch")), (1, 2), "every login is audited");
    kms.shutdown().await;
}
