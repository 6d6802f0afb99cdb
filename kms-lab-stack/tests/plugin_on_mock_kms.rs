//! The real `kms-plugin` binary against the real `mock-kms` binary (no apiserver): the same v2
//! checks as with a local KEK, a KMS crash and restart, a wrong credential, rotation, audit.

use mock_kms::api::Action;
use mock_kms::api::Outcome;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kms_lab_stack::mockkms::{MockKmsCluster, MockKmsOptions};
use kms_lab_stack::own::OwnBinary;
use kms_lab_stack::plugin::{PluginKek, PluginSlot, PluginSpec};
use kms_wire::PluginClient;
use kms_wire::proto::v2;

struct Rig {
    /// Holds the KMS's and the plugin's files until the test ends.
    _dir: tempfile::TempDir,
    kms: MockKmsCluster,
    plugin: PluginSlot,
}

fn kms_data(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("kms-data")
}

async fn rig(plugin_config: impl FnOnce(&MockKmsCluster) -> serde_json::Value) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let kms = MockKmsCluster::start(
        &kms_lab_stack::Launcher::default(),
        &OwnBinary::MockKms.locate().unwrap(),
        &kms_data(&dir),
        dir.path(),
        MockKmsOptions::default(),
    )
    .await
    .expect("mock-kms starts");
    let spec = PluginSpec {
        name: "plugin".into(),
        kek: PluginKek::Remote(plugin_config(&kms)),
        extra_args: vec!["--health-ttl".into(), "1s".into(), "--kms-timeout".into(), "2s".into()],
        defects: Vec::new(),
    };
    let mut plugin = PluginSlot::new(spec, dir.path());
    plugin
        .start(&kms_lab_stack::Launcher::default(), &OwnBinary::KmsPlugin.locate().unwrap(), &dir.path().join("plugin.log"), None)
        .await
        .expect("the plugin starts");
    Rig { _dir: dir, kms, plugin }
}

async fn client(rig: &Rig) -> PluginClient {
    PluginClient::connect(rig.plugin.socket.to_str().unwrap(), Duration::from_secs(10)).await.unwrap()
}

async fn status(client: &PluginClient) -> v2::StatusResponse {
    client.v2().status(v2::StatusRequest {}).await.expect("Status answers").into_inner()
}

async fn wait_for_status(
    client: &PluginClient,
    what: &str,
    deadline: Duration,
    accept: impl Fn(&v2::StatusResponse) -> bool,
) -> (v2::StatusResponse, Duration) {
    let started = Instant::now();
    loop {
        let now = status(client).await;
        if accept(&now) {
            return (now, started.elapsed());
        }
        assert!(started.elapsed() < deadline, "no Status with {what} within {deadline:?}; last: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn encrypt(client: &PluginClient, plaintext: &[u8]) -> Result<v2::EncryptResponse, tonic::Status> {
    client.v2().encrypt(v2::EncryptRequest { plaintext: Bytes::copy_from_slice(plaintext), uid: "t".into() }).await.map(|r| r.into_inner())
}

async fn decrypt(client: &PluginClient, sealed: &v2::EncryptResponse) -> Result<Vec<u8>, tonic::Status> {
    let request = v2::DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: "t".into(),
        key_id: sealed.key_id.clone(),
        annotations: sealed.annotations.clone(),
    };
    client.v2().decrypt(request).await.map(|r| r.into_inner().plaintext.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_checks_pass_through_the_mock_kms() {
    let rig = rig(MockKmsCluster::plugin_config).await;
    let client = client(&rig).await;
    let first = status(&client).await;
    assert_eq!((first.version.as_str(), first.healthz.as_str()), ("v2", "ok"));
    assert!(first.key_id.starts_with("lab-key/"), "{}", first.key_id);
    kms_wire::limits::validate_key_id(&first.key_id).unwrap();
    for size in [0usize, 32, 1024, 6144] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let a = encrypt(&client, &plaintext).await.unwrap();
        let b = encrypt(&client, &plaintext).await.unwrap();
        assert_ne!(a.ciphertext, b.ciphertext, "ciphertexts of {size} bytes repeat");
        assert_eq!(a.key_id, first.key_id);
        if size == 32 {
            kms_wire::limits::validate_encrypted_dek(&a.ciphertext).expect("a wrapped seed stays within 1 KiB");
        }
        assert_eq!(decrypt(&client, &a).await.unwrap(), plaintext, "round trip of {size} bytes");
    }
    let mut tampered = encrypt(&client, b"dek").await.unwrap();
    let mut bytes = tampered.ciphertext.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    tampered.ciphertext = bytes.into();
    assert_eq!(decrypt(&client, &tampered).await.unwrap_err().code(), tonic::Code::InvalidArgument);

    // Every call the plugin made is in the audit log.
    let audit = rig.kms.audit_records(0).await.unwrap();
    let encrypts = audit.iter().filter(|r| r.action == Action::Encrypt && r.outcome == Outcome::Ok).count();
    assert!(encrypts >= 9, "audit shows {encrypts} successful Encrypt calls, the test made 9");
    assert!(audit.iter().all(|r| r.access_key.as_deref() == Some("lab-access-key")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_crash_turns_status_unhealthy_and_a_restart_heals_it() {
    let mut rig = rig(MockKmsCluster::plugin_config).await;
    let client = client(&rig).await;
    let before = encrypt(&client, b"made before the crash").await.unwrap();

    rig.kms.kill_node(0).await.unwrap();
    let (down, noticed) =
        wait_for_status(&client, "healthz not ok after kill -9 of the KMS", Duration::from_secs(30), |s| s.healthz != "ok").await;
    eprintln!("Status turned unhealthy {noticed:?} after kill -9: {}", down.healthz);
    assert!(down.healthz.contains("unavailable"), "{}", down.healthz);
    let started = Instant::now();
    let refused = encrypt(&client, b"dek").await.unwrap_err();
    eprintln!("Encrypt failed after {:?} with {:?}", started.elapsed(), refused.code());
    assert!(matches!(refused.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded), "{refused:?}");

    rig.kms.start_node(0).await.expect("mock-kms restarts on its data dir");
    let (up, healed) = wait_for_status(&client, "healthz ok after the KMS restarted", Duration::from_secs(30), |s| s.healthz == "ok").await;
    eprintln!("Status healthy again {healed:?} after the restart");
    assert_eq!(up.key_id, before.key_id, "the key version changed across a restart");
    assert_eq!(decrypt(&client, &before).await.unwrap(), b"made before the crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_key_is_refused_naming_the_credential() {
    let rig = rig(|kms| {
        let mut config = kms.plugin_config();
        config["SecretKey"] = "not-the-secret".into();
        config
    })
    .await;
    let client = client(&rig).await;
    let now = status(&client).await;
    assert!(now.healthz.contains("SignatureDoesNotMatch") && now.healthz.contains("check SecretKey"), "{}", now.healthz);
    assert!(!now.healthz.contains("not-the-secret"));
    assert_eq!(encrypt(&client, b"dek").await.unwrap_err().code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_in_the_kms_shows_in_status_and_old_ciphertexts_still_open() {
    let rig = rig(MockKmsCluster::plugin_config).await;
    let client = client(&rig).await;
    let old = encrypt(&client, b"old dek").await.unwrap();
    rig.kms.rotate_key().await.unwrap();
    let (rotated, _) = wait_for_status(&client, "a new key id after RotateKey", Duration::from_secs(15), |s| s.key_id != old.key_id).await;
    assert_eq!(rotated.healthz, "ok");
    assert_eq!(encrypt(&client, b"new dek").await.unwrap().key_id, rotated.key_id);
    assert_eq!(decrypt(&client, &old).await.unwrap(), b"old dek");
}

/// Three mock-kms processes replicating one key; the plugin lists all three endpoints. One node
/// is killed while round trips run: failover must hide it from every caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_node_killed_under_load_costs_no_round_trip() {
    use kms_lab_stack::process::Supervised;
    let dir = tempfile::tempdir().unwrap();
    let binary = OwnBinary::MockKms.locate().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| kms_lab_stack::ports::free_port().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let peers: Vec<String> = ports.iter().filter(|p| *p != port).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let args: Vec<String> = [
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            &dir.path().join(format!("node-{i}")).display().to_string(),
            "--key-id",
            "lab-key",
            "--access-key",
            "AK",
            "--secret-key",
            "SK",
            "--node-id",
            &format!("node-{i}"),
            "--peers",
            &peers.join(","),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        std::fs::create_dir_all(dir.path().join(format!("node-{i}"))).unwrap();
        let mut node = Supervised::spawn(&format!("mock-kms-{i}"), &binary, &args, &dir.path().join(format!("node-{i}.log")), &[]).unwrap();
        let port = *port;
        node.wait_ready("admin health", Duration::from_secs(20), || async move {
            kms_lab_stack::http::get(port, "/admin/health", Duration::from_secs(1)).await.is_some()
        })
        .await
        .unwrap();
        nodes.push(node);
    }
    let endpoints: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let config = serde_json::json!({"AccessKey": "AK", "SecretKey": "SK", "KmsEndpoint": endpoints.join(","), "KmsKeyId": "lab-key", "KmsSchema": "http"});
    let spec = PluginSpec {
        name: "plugin".into(),
        kek: PluginKek::Remote(config),
        extra_args: vec!["--kms-timeout".into(), "2s".into()],
        defects: Vec::new(),
    };
    let mut plugin = PluginSlot::new(spec, dir.path());
    plugin
        .start(&kms_lab_stack::Launcher::default(), &OwnBinary::KmsPlugin.locate().unwrap(), &dir.path().join("plugin.log"), None)
        .await
        .unwrap();
    let client = PluginClient::connect(plugin.socket.to_str().unwrap(), Duration::from_secs(10)).await.unwrap();

    let total = 300usize;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in (w..total).step_by(4) {
                    let plaintext = format!("dek-{i}").into_bytes();
                    let result = match encrypt(&client, &plaintext).await {
                        Ok(sealed) => decrypt(&client, &sealed).await.map(|opened| opened == plaintext),
                        Err(status) => Err(status),
                    };
                    if !matches!(result, Ok(true)) {
                        failures.push(format!("{i}: {result:?}"));
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let started = Instant::now();
    while done.load(std::sync::atomic::Ordering::Relaxed) < total / 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the load made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Kill the node the plugin prefers (the first endpoint) in the middle of the load.
    nodes.remove(0).kill().await;
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    eprintln!("{} of {total} round trips failed after killing node-0 under load", failures.len());
    assert!(failures.is_empty(), "round trips failed despite two live nodes: {failures:?}");
}

/// Round trips through the Vault and AWS dialects with clients we did not write (Python's hvac
/// and boto3), each given only what [`MockKmsCluster::dialect_endpoint`] hands a plugin.
const VAULT_AND_AWS_ROUND_TRIPS: &str = r#"
import base64, os
import boto3, hvac
env = os.environ
transit = hvac.Client(url=env["VAULT_URL"], token=env["VAULT_TOKEN"]).secrets.transit
ciphertext = transit.encrypt_data(env["KEY"], plaintext=base64.b64encode(b"via vault").decode())["data"]["ciphertext"]
assert base64.b64decode(transit.decrypt_data(env["KEY"], ciphertext=ciphertext)["data"]["plaintext"]) == b"via vault"
kms = boto3.client("kms", endpoint_url=env["AWS_URL"], region_name="us-east-1")
blob = kms.encrypt(KeyId=env["KEY"], Plaintext=b"via aws")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"via aws"
print(ciphertext.split(":")[1])
"#;

#[tokio::test]
async fn a_mock_kms_node_speaks_the_vault_and_aws_dialects_with_the_credentials_it_hands_out() {
    use kms_lab_stack::mockkms::DialectCredentials;
    use mock_kms::dialects::Dialect;

    let dir = tempfile::tempdir().unwrap();
    let options = MockKmsOptions { dialects: vec![Dialect::Vault, Dialect::Aws], ..MockKmsOptions::default() };
    let mut kms = MockKmsCluster::start(
        &kms_lab_stack::Launcher::default(),
        &OwnBinary::MockKms.locate().unwrap(),
        &kms_data(&dir),
        dir.path(),
        options,
    )
    .await
    .expect("mock-kms starts");
    let vault = kms.dialect_endpoint(Dialect::Vault).unwrap();
    let aws = kms.dialect_endpoint(Dialect::Aws).unwrap();
    let DialectCredentials::VaultToken(token) = &vault.credentials else { panic!("vault hands out a token: {vault:?}") };
    let DialectCredentials::AccessKey(credential) = &aws.credentials else { panic!("aws hands out AK/SK: {aws:?}") };
    assert_ne!(vault.url(), aws.url());
    let missing = kms.dialect_endpoint(Dialect::Gcp).unwrap_err().to_string();
    assert!(missing.contains("native, aws, vault") && missing.contains("`gcp`"), "{missing}");

    let out = std::process::Command::new("python3")
        .args(["-c", VAULT_AND_AWS_ROUND_TRIPS])
        .env("VAULT_URL", vault.url())
        .env("VAULT_TOKEN", token)
        .env("AWS_URL", aws.url())
        .env("AWS_ACCESS_KEY_ID", &credential.access_key)
        .env("AWS_SECRET_ACCESS_KEY", credential.secret_key.as_str())
        .env("KEY", &kms.options.key_id)
        .output()
        .expect("python3 runs (with `pip install hvac==2.4.0 boto3`)");
    assert!(out.status.success(), "the hvac/boto3 round trips failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1", "Vault's ciphertext names the key version");

    // One key store under both dialects; the audit log says which was called.
    let records = kms.audit_records(0).await.unwrap();
    for (dialect, operation) in
        [(Dialect::Vault, "transit/encrypt"), (Dialect::Vault, "transit/decrypt"), (Dialect::Aws, "Encrypt"), (Dialect::Aws, "Decrypt")]
    {
        assert!(
            records.iter().any(|r| r.dialect == dialect && r.operation == operation && r.outcome == Outcome::Ok),
            "no {dialect} {operation} in the audit log: {records:?}"
        );
    }
    kms.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_works_with_least_privilege_and_a_denied_decrypt_is_named_and_audited() {
    use mock_kms::api::Action;
    use mock_kms::api::policy::AccessPolicy;
    let rig = rig(MockKmsCluster::plugin_config).await;
    let access_key = rig.kms.options.credential.access_key.clone();
    // Least privilege for encryption at rest: Encrypt and Decrypt on its key, nothing else.
    rig.kms.set_policy(&access_key, &AccessPolicy::allow([Action::Encrypt, Action::Decrypt], ["key/lab-key"])).await.unwrap();
    let client = client(&rig).await;
    let sealed = encrypt(&client, b"dek under least privilege").await.expect("Encrypt is allowed");
    assert_eq!(decrypt(&client, &sealed).await.unwrap(), b"dek under least privilege");

    rig.kms.set_policy(&access_key, &AccessPolicy::allow([Action::Encrypt], ["key/lab-key"])).await.unwrap();
    let denied = decrypt(&client, &sealed).await.expect_err("Decrypt is no longer allowed");
    assert_ne!(denied.code(), tonic::Code::Ok);
    let refused = rig.kms.audit_records(0).await.unwrap();
    assert!(
        refused.iter().any(|r| r.action == Action::Decrypt
            && r.outcome == Outcome::Refused(mock_kms::api::ErrorCode::Forbidden)
            && r.access_key.as_deref() == Some(access_key.as_str())),
        "the denied Decrypt is audited"
    );
    rig.kms.remove_policy(&access_key).await.unwrap();
    assert_eq!(decrypt(&client, &sealed).await.unwrap(), b"dek under least privilege", "without a policy it may call everything");
}
