//! `kms-lab decode` on values built by the codecs, with the key side from a real reference plugin.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use kms_plugin::config::{ApiSelection, KekConfig, PluginConfig};
use kms_wire::PluginClient;
use kms_wire::envelope::{Envelope, StaticCipher, WrappedDekSource};
use kms_wire::proto::storage::EncryptedDekSourceType;
use kms_wire::proto::v2;

const ETCD_KEY: &str = "/registry/secrets/default/db-password";
const OBJECT: &[u8] = b"k8s\x00\n\x0cv1\x12\x06Secret password=hunter2";

fn kms_lab(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_kms-lab")).args(args).output().expect("kms-lab runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts the reference plugin in process; returns its endpoint and a stop handle.
async fn start_plugin(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let socket = dir.join("kms.sock");
    let config = PluginConfig {
        socket: socket.clone(),
        api: ApiSelection::Both,
        kek: KekConfig::Local { kek_file: None },
        health_ttl: Duration::from_secs(10),
        metrics_addr: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = kms_plugin::Plugin::bind(config).expect("plugin binds a temp socket");
    let task = tokio::spawn(async move {
        plugin
            .serve(async {
                let _ = stopped.await;
            })
            .await
            .expect("plugin serves");
    });
    (format!("unix://{}", socket.display()), stop, task)
}

#[tokio::test]
async fn decodes_a_kms_v2_value_and_opens_it_through_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, stop, task) = start_plugin(dir.path()).await;
    let client = PluginClient::connect(&endpoint, Duration::from_secs(5)).await.expect("plugin answers");
    let seed = [7u8; 32];
    let wrapped =
        client.v2().encrypt(v2::EncryptRequest { plaintext: Bytes::copy_from_slice(&seed), uid: "t".into() }).await.unwrap().into_inner();
    let source = WrappedDekSource {
        source_type: EncryptedDekSourceType::HkdfSha256XnonceAesGcmSeed,
        encrypted: wrapped.ciphertext,
        key_id: wrapped.key_id.clone(),
        annotations: wrapped.annotations,
    };
    let raw = Envelope::seal_kms_v2("lab-kms", &source, &seed, OBJECT, ETCD_KEY.as_bytes()).unwrap().to_bytes().unwrap();
    let file = dir.path().join("value.bin");
    std::fs::write(&file, &raw).unwrap();

    let described = tokio::task::spawn_blocking({
        let file = file.clone();
        move || kms_lab(&["decode", file.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(described.0, 0, "{described:?}");
    assert!(described.1.contains("provider:        kms-v2") && described.1.contains("name:            lab-kms"), "{}", described.1);
    assert!(described.1.contains(&format!("key id:          {}", wrapped.key_id)), "{}", described.1);
    assert!(
        described.1.contains("HKDF_SHA256_XNONCE_AES_GCM_SEED") && described.1.contains("kek-version.kms-lab.io = 1"),
        "{}",
        described.1
    );
    assert!(!described.1.contains("hunter2"), "plaintext shown without keys");

    let opened = tokio::task::spawn_blocking({
        let (file, endpoint) = (file.clone(), endpoint.clone());
        move || kms_lab(&["decode", file.to_str().unwrap(), "--plugin", &endpoint, "--etcd-key", ETCD_KEY])
    })
    .await
    .unwrap();
    assert_eq!(opened.0, 0, "{opened:?}");
    assert!(opened.1.contains("password=hunter2"), "{}", opened.1);

    let moved = tokio::task::spawn_blocking(move || {
        kms_lab(&["decode", file.to_str().unwrap(), "--plugin", &endpoint, "--etcd-key", "/registry/secrets/default/other"])
    })
    .await
    .unwrap();
    assert_eq!(moved.0, 1, "{moved:?}");
    assert!(moved.2.contains("authentication failed"), "{}", moved.2);
    let _ = stop.send(());
    task.await.unwrap();
}

#[test]
fn explains_a_malformed_value() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.bin");
    std::fs::write(&file, b"k8s:enc:kms:v1:lab:\x01\x00short").unwrap();
    let (code, _, stderr) = kms_lab(&["decode", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("announces a 256-byte encrypted DEK but only 5 bytes follow"), "{stderr}");

    std::fs::write(&file, b"k8s:enc:kms:v2:lab:\xff\xff\xff").unwrap();
    let (code, _, stderr) = kms_lab(&["decode", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("does not decode as protobuf"), "{stderr}");
}

#[test]
fn opens_an_aescbc_value_with_a_named_key_from_hex_input() {
    let dir = tempfile::tempdir().unwrap();
    let key = [3u8; 32];
    let raw = Envelope::seal_static(StaticCipher::AesCbc, "key1", &key, OBJECT, ETCD_KEY.as_bytes()).unwrap().to_bytes().unwrap();
    let file = dir.path().join("value.hex");
    std::fs::write(&file, hex::encode(raw)).unwrap();
    let key_arg = format!("key1={}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key));
    let (code, stdout, stderr) = kms_lab(&[
        "decode",
        file.to_str().unwrap(),
        "--input-encoding",
        "hex",
        "--key",
        &key_arg,
        "--etcd-key",
        ETCD_KEY,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["provider"], "aescbc");
    assert!(report["plaintext"].as_str().unwrap().contains("hunter2"));

    let (code, _, stderr) = kms_lab(&["decode", file.to_str().unwrap(), "--input-encoding", "hex", "--key", "key1=!!!notbase64secret"]);
    assert_eq!(code, 2, "a malformed --key is a usage error");
    assert!(stderr.contains("key1=<redacted>") && !stderr.contains("notbase64secret"), "{stderr}");
}
