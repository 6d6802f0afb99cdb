//! The real `mock-kms` binary, as scripts drive it.

mod common;

use common::{AK, Client, KmsProcess, SK, free_port, refused, run_to_exit, wait_until};
use mock_kms::api::{Action, ErrorCode};
use serde_json::json;

fn base_args<'a>(data_dir: &'a str, listen: &'a str) -> Vec<&'a str> {
    vec!["--listen", listen, "--data-dir", data_dir, "--key-id", "lab-key", "--access-key", AK, "--secret-key", SK, "--seed", "7"]
}

#[test]
fn bad_flags_and_unusable_data_dirs_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let empty = dir.path().join("empty");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--listen", "not-an-address"], "--listen"),
        (vec!["--cluster", "3", "--peers", "http://127.0.0.1:1"], "--peers"),
        (vec!["--access-key", "AK"], "--secret-key"),
        (vec!["--sealed"], "--data-dir"),
        (vec!["--no-such-flag"], "--no-such-flag"),
        (vec!["--listen", "127.0.0.1:0", "--data-dir", file.to_str().unwrap()], "a-file"),
        (vec!["--listen", "127.0.0.1:0", "--sealed", "--data-dir", empty.to_str().unwrap()], "mock-kms init"),
        (vec!["--listen", "127.0.0.1:0", "--faults", "/nonexistent/profile.yaml"], "--faults"),
        (vec!["--listen", "127.0.0.1:0", "--cluster", "0"], "--cluster"),
        (vec!["--listen", "127.0.0.1:0", "--peers", "https://127.0.0.1:1"], "http://host:port"),
        (vec!["init", "--data-dir", empty.to_str().unwrap(), "--shares", "2", "--threshold", "3"], "--threshold"),
    ];
    for (args, expected) in cases {
        let (status, _, stderr) = run_to_exit(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: stderr does not name `{expected}`:\n{stderr}");
    }
}

#[tokio::test]
async fn keys_survive_kill_9_and_a_corrupted_state_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_str = data.to_str().unwrap();
    let kms = KmsProcess::start(dir.path(), &base_args(data_str, "127.0.0.1:0"), 1);
    let client = Client::new(kms.url());
    let encrypted = client.encrypt("lab-key", b"persisted").await;
    client.ok::<mock_kms::api::KeyResponse>(Action::RotateKey, &json!({"KeyId": "lab-key"})).await;
    let rotated = client.encrypt("lab-key", b"after rotation").await;
    kms.kill_9();

    let kms = KmsProcess::start(dir.path(), &base_args(data_str, "127.0.0.1:0"), 1);
    let client = Client::new(kms.url());
    assert_eq!(client.decrypt_ok(&encrypted.ciphertext_blob).await, b"persisted");
    assert_eq!(client.decrypt_ok(&rotated.ciphertext_blob).await, b"after rotation");
    let again = client.encrypt("lab-key", b"x").await;
    assert_eq!(again.key_version_id, rotated.key_version_id, "the restart kept the current version");
    assert_eq!(kms.terminate().await.code(), Some(0), "SIGTERM is a clean exit");
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    assert!(audit.lines().count() >= 6 && !audit.contains(SK), "{audit}");

    // A corrupted state file: a clear error, a non-zero exit, and the file left as it was.
    let state = data.join("keys.json");
    let mut bytes = std::fs::read(&state).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&state, &bytes).unwrap();
    let (status, stdout, stderr) = run_to_exit(&base_args(data_str, "127.0.0.1:0"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("keys.json") && stderr.contains("corrupted") && stderr.contains("left untouched"), "{stderr}");
    assert!(!stdout.contains("listening"));
    assert_eq!(std::fs::read(&state).unwrap(), bytes);
}

#[tokio::test]
async fn sealed_binary_unseals_with_three_of_five_and_reseals_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sealed");
    let data_str = data.to_str().unwrap();
    let (status, stdout, stderr) = run_to_exit(&["init", "--data-dir", data_str]);
    assert!(status.success(), "{stderr}");
    let shares: Vec<&str> = stdout.lines().collect();
    assert_eq!(shares.len(), 5, "{stdout}");
    assert!(!stderr.contains(shares[0]));
    let (again, _, stderr) = run_to_exit(&["init", "--data-dir", data_str]);
    assert_eq!(again.code(), Some(2), "init refuses an initialised dir: {stderr}");

    let args = [base_args(data_str, "127.0.0.1:0"), vec!["--sealed"]].concat();
    let kms = KmsProcess::start(dir.path(), &args, 1);
    let client = Client::new(kms.url());
    client.call(Action::ListKeys, &json!({})).await.expect_error(ErrorCode::Sealed);
    for share in &shares[..2] {
        let status: serde_json::Value = client.admin_json("POST", "/admin/unseal", json!({ "Share": share })).await.json();
        assert_eq!(status["Sealed"], true);
    }
    client.call(Action::ListKeys, &json!({})).await.expect_error(ErrorCode::Sealed);
    let status: serde_json::Value = client.admin_json("POST", "/admin/unseal", json!({ "Share": shares[2] })).await.json();
    assert_eq!(status["Sealed"], false);
    let encrypted = client.encrypt("lab-key", b"behind the seal").await;
    assert_eq!(kms.terminate().await.code(), Some(0));
    assert!(!kms_log_contains_shares(dir.path(), &shares));

    let kms = KmsProcess::start(dir.path(), &args, 1);
    let client = Client::new(kms.url());
    client.decrypt(&encrypted.ciphertext_blob).await.expect_error(ErrorCode::Sealed);
    let seal: serde_json::Value = client.admin_get("/admin/seal-status").await.json();
    assert_eq!(seal, json!({"Sealed": true, "Progress": 0, "Threshold": 3, "Shares": 5}));
    for share in &shares[2..5] {
        client.admin_json("POST", "/admin/unseal", json!({ "Share": share })).await;
    }
    assert_eq!(client.decrypt_ok(&encrypted.ciphertext_blob).await, b"behind the seal");
}

fn kms_log_contains_shares(dir: &std::path::Path, shares: &[&str]) -> bool {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".log")).any(|e| {
        let log = std::fs::read_to_string(e.path()).unwrap_or_default();
        shares.iter().any(|s| log.contains(s))
    })
}

#[tokio::test]
async fn three_processes_with_peers_survive_losing_one() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let peers = urls.join(",");
    let mut nodes = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let data = dir.path().join(name);
        let listen = format!("127.0.0.1:{}", ports[i]);
        let args =
            [base_args(data.to_str().unwrap(), &listen), vec!["--node-id", name, "--peers", &peers, "--log-format", "json"]].concat();
        nodes.push(Some(KmsProcess::start(dir.path(), &args, 1)));
    }
    let clients: Vec<Client> = urls.iter().map(|u| Client::new(u)).collect();

    // A key created on node A is usable on node C.
    clients[0].create_key("shared").await;
    let from_a = clients[0].encrypt("shared", b"from a").await;
    assert_eq!(clients[2].decrypt_ok(&from_a.ciphertext_blob).await, b"from a");
    let lab_from_b = clients[1].encrypt("lab-key", b"lab from b").await;

    let log = nodes[0].as_ref().unwrap().log_text();
    assert!(log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "--log-format json:\n{log}");
    assert!(!log.contains(SK));

    // Kill B; A and C still encrypt and decrypt every key.
    nodes[1].take().unwrap().kill_9();
    wait_until("node b is gone", || refused(&urls[1])).await;
    for client in [&clients[0], &clients[2]] {
        assert_eq!(client.decrypt_ok(&from_a.ciphertext_blob).await, b"from a");
        assert_eq!(client.decrypt_ok(&lab_from_b.ciphertext_blob).await, b"lab from b");
        for key in ["lab-key", "shared"] {
            let sealed = client.encrypt(key, b"two of three").await;
            assert_eq!(clients[0].decrypt_ok(&sealed.ciphertext_blob).await, b"two of three");
            assert_eq!(clients[2].decrypt_ok(&sealed.ciphertext_blob).await, b"two of three");
        }
    }
}

#[tokio::test]
async fn cluster_flag_prints_one_line_per_node_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--listen", "127.0.0.1:0", "--cluster", "3", "--key-id", "lab-key", "--access-key", AK, "--secret-key", SK];
    let kms = KmsProcess::start(dir.path(), &args, 3);
    let clients: Vec<Client> = kms.urls.iter().map(|u| Client::new(u)).collect();
    let sealed = clients[0].encrypt("lab-key", b"any node").await;
    assert_eq!(clients[2].decrypt_ok(&sealed.ciphertext_blob).await, b"any node");
    let health: serde_json::Value = clients[1].admin_get("/admin/health").await.json();
    assert_eq!(health["Status"], "ok");
    assert!(!kms.log_text().contains(SK));
    assert_eq!(kms.terminate().await.code(), Some(0));
}
