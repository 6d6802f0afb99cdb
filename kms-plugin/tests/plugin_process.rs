//! The real `kms-plugin` binary on a temporary socket, driven by generated tonic clients.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{PluginProcess, run_to_exit};
use kms_wire::limits;
use kms_wire::proto::{v1beta1, v2};
use tonic::Code;

const SECRET: &[u8] = b"TOP-SECRET-DEK-never-in-logs-0123";

async fn local_plugin(dir: &tempfile::TempDir, args: &[&str]) -> PluginProcess {
    let socket = dir.path().join("kms.sock");
    PluginProcess::start(dir.path(), &socket, &[&["--kms", "local"], args].concat()).await
}

async fn encrypt(client: &kms_wire::PluginClient, plaintext: &[u8]) -> v2::EncryptResponse {
    let request = v2::EncryptRequest { plaintext: Bytes::copy_from_slice(plaintext), uid: "test-uid".into() };
    client.v2().encrypt(request).await.expect("encrypt succeeds").into_inner()
}

fn decrypt_request(encrypted: &v2::EncryptResponse) -> v2::DecryptRequest {
    v2::DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "test-uid".into(),
        key_id: encrypted.key_id.clone(),
        annotations: encrypted.annotations.clone(),
    }
}

#[tokio::test]
async fn v2_status_reports_version_health_and_a_stable_key_id() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &[]).await;
    let client = plugin.client().await;
    let first = client.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(first.version, "v2");
    assert_eq!(first.healthz, "ok");
    limits::validate_key_id(&first.key_id).expect("key id within upstream limits");
    let second = client.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(second.key_id, first.key_id, "key id changed without a rotation");
    let mode = std::fs::metadata(&plugin.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode is {mode:o}");
}

#[tokio::test]
async fn v2_round_trips_0_bytes_to_64_kib_with_randomised_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &[]).await;
    let client = plugin.client().await;
    let status = client.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    for size in [0usize, 1, 32, 1000, 4096, 65536] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let a = encrypt(&client, &plaintext).await;
        let b = encrypt(&client, &plaintext).await;
        assert_eq!(a.key_id, status.key_id, "Encrypt key_id must equal Status key_id");
        assert_ne!(a.ciphertext, b.ciphertext, "two encryptions of {size} bytes are identical");
        if size >= 8 {
            assert!(!a.ciphertext.windows(size.min(32)).any(|w| w == &plaintext[..size.min(32)]), "ciphertext contains the plaintext");
        }
        limits::validate_annotations(&a.annotations).expect("annotations within upstream rules");
        if size <= 32 {
            limits::validate_encrypted_dek(&a.ciphertext).expect("a DEK-sized ciphertext stays within 1 KiB");
        }
        let opened = client.v2().decrypt(decrypt_request(&a)).await.expect("decrypt succeeds").into_inner();
        assert_eq!(opened.plaintext.as_ref(), plaintext.as_slice(), "round trip of {size} bytes");
    }
}

#[tokio::test]
async fn v2_refuses_tampered_garbage_and_mismatched_ciphertext() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &[]).await;
    let client = plugin.client().await;
    let good = encrypt(&client, SECRET).await;

    let mut tampered = decrypt_request(&good);
    let mut bytes = tampered.ciphertext.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tampered.ciphertext = bytes.into();
    let cases = [
        ("tampered", tampered),
        ("garbage", v2::DecryptRequest { ciphertext: Bytes::from_static(b"definitely not a ciphertext at all"), ..decrypt_request(&good) }),
        ("truncated", v2::DecryptRequest { ciphertext: good.ciphertext.slice(..good.ciphertext.len() - 5), ..decrypt_request(&good) }),
        ("empty", v2::DecryptRequest { ciphertext: Bytes::new(), ..decrypt_request(&good) }),
        ("wrong key id", v2::DecryptRequest { key_id: "some-other-key".into(), ..decrypt_request(&good) }),
        (
            "wrong annotations",
            v2::DecryptRequest {
                annotations: BTreeMap::from([("kek-version.kms-lab.io".into(), Bytes::from_static(b"7"))]),
                ..decrypt_request(&good)
            },
        ),
    ];
    for (name, request) in cases {
        let status = client.v2().decrypt(request).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(!status.message().as_bytes().windows(SECRET.len()).any(|w| w == SECRET), "{name}: error echoes the plaintext");
    }
    assert!(!plugin.log_text().contains(std::str::from_utf8(SECRET).unwrap()), "plaintext reached the log");
}

#[tokio::test]
async fn v1beta1_version_round_trip_and_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &[]).await;
    let client = plugin.client().await;
    let version = client.v1beta1().version(v1beta1::VersionRequest { version: "v1beta1".into() }).await.unwrap().into_inner();
    assert_eq!(version.version, "v1beta1");
    assert_eq!(version.runtime_name, "kms-lab-plugin");
    let parts: Vec<&str> = version.runtime_version.split('.').collect();
    assert!(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        "runtime_version `{}` is not semver",
        version.runtime_version
    );

    for size in [0usize, 32, 65536] {
        let plain: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let sealed = client
            .v1beta1()
            .encrypt(v1beta1::EncryptRequest { version: "v1beta1".into(), plain: plain.clone().into() })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(sealed.cipher.as_ref(), plain.as_slice());
        let opened = client
            .v1beta1()
            .decrypt(v1beta1::DecryptRequest { version: "v1beta1".into(), cipher: sealed.cipher })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(opened.plain.as_ref(), plain.as_slice());
    }
    let garbage = client
        .v1beta1()
        .decrypt(v1beta1::DecryptRequest { version: "v1beta1".into(), cipher: Bytes::from_static(b"garbage") })
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
    let wrong_version =
        client.v1beta1().encrypt(v1beta1::EncryptRequest { version: "v9".into(), plain: Bytes::from_static(b"x") }).await.unwrap_err();
    assert!(wrong_version.message().contains("`v9`"), "{wrong_version:?}");
}

#[tokio::test]
async fn two_hundred_concurrent_round_trips_on_both_apis() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &[]).await;
    let client = plugin.client().await;
    let calls = (0..200u32).map(|i| {
        let client = client.clone();
        async move {
            let plaintext = format!("dek-{i:04}-{}", "x".repeat(i as usize % 64)).into_bytes();
            if i % 2 == 0 {
                let sealed = encrypt(&client, &plaintext).await;
                client.v2().decrypt(decrypt_request(&sealed)).await.map(|r| r.into_inner().plaintext == plaintext)
            } else {
                let sealed = client
                    .v1beta1()
                    .encrypt(v1beta1::EncryptRequest { version: "v1beta1".into(), plain: plaintext.clone().into() })
                    .await?
                    .into_inner();
                client
                    .v1beta1()
                    .decrypt(v1beta1::DecryptRequest { version: "v1beta1".into(), cipher: sealed.cipher })
                    .await
                    .map(|r| r.into_inner().plain == plaintext)
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    let wrong: Vec<_> = results.iter().enumerate().filter(|(_, r)| !matches!(r, Ok(true))).collect();
    assert!(wrong.is_empty(), "{} of 200 concurrent round trips failed: {wrong:?}", wrong.len());
}

#[tokio::test]
async fn api_v2_only_does_not_serve_v1beta1() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = local_plugin(&dir, &["--api", "v2"]).await;
    let status = plugin.client().await.v1beta1().version(v1beta1::VersionRequest { version: "v1beta1".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

#[tokio::test]
async fn restart_on_the_same_kek_file_keeps_key_id_and_old_ciphertexts() {
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek.keys");
    let args = ["--kek-file", kek_file.to_str().unwrap()];
    let first = local_plugin(&dir, &args).await;
    let sealed = encrypt(&first.client().await, SECRET).await;
    let socket = first.socket.clone();
    let status = first.terminate().await;
    assert!(status.success(), "plugin exited with {status} on SIGTERM");
    assert!(!socket.exists(), "socket file left behind after SIGTERM");

    let second = local_plugin(&dir, &args).await;
    let client = second.client().await;
    let now = client.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(now.key_id, sealed.key_id, "a restart on the same key file changed the key id");
    let opened = client.v2().decrypt(decrypt_request(&sealed)).await.unwrap().into_inner();
    assert_eq!(opened.plaintext.as_ref(), SECRET);
}

#[tokio::test]
async fn rotate_kek_and_sighup_change_the_key_id_and_old_ciphertexts_still_open() {
    let dir = tempfile::tempdir().unwrap();
    let kek_file = dir.path().join("kek.keys");
    let plugin = local_plugin(&dir, &["--kek-file", kek_file.to_str().unwrap(), "--health-ttl", "0s"]).await;
    let client = plugin.client().await;
    let before = encrypt(&client, SECRET).await;
    let (status, stderr) = run_to_exit(&["rotate-kek", "--kek-file", kek_file.to_str().unwrap()]);
    assert!(status.success(), "rotate-kek failed: {stderr}");
    plugin.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    let rotated = loop {
        let status = client.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
        if status.key_id != before.key_id {
            break status;
        }
        assert!(Instant::now() < deadline, "Status key_id did not change within 10 s of SIGHUP; log:\n{}", plugin.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rotated.healthz, "ok");
    let after = encrypt(&client, SECRET).await;
    assert_eq!(after.key_id, rotated.key_id);
    let opened = client.v2().decrypt(decrypt_request(&before)).await.expect("old ciphertext opens after rotation").into_inner();
    assert_eq!(opened.plaintext.as_ref(), SECRET);
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    // A socket file nobody listens on, as a crashed plugin leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let plugin = PluginProcess::start(dir.path(), &socket, &["--kms", "local"]).await;
    let status = plugin.client().await.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.healthz, "ok");
    assert!(plugin.log_text().contains("removing stale socket"));
    assert!(!plugin.log_text().contains('\u{1b}'), "ANSI colour codes in a log file: {:?}", plugin.log_text());
}

#[tokio::test]
async fn a_live_socket_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let first = local_plugin(&dir, &[]).await;
    let (status, stderr) = run_to_exit(&["--socket", first.socket.to_str().unwrap(), "--kms", "local"]);
    // A --socket path that cannot be used is the user's to fix: exit 2, as every flag error.
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("another process is already serving"), "{stderr}");
    let still = first.client().await.v2().status(v2::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(still.healthz, "ok", "the first plugin was disturbed");
}

/// The uid of `nobody`, the "other user" of the socket-ownership tests.
const NOBODY: u32 = 65534;

/// Runs `kms-plugin` as `uid` to completion; `None` when this test process cannot switch users (not root).
fn run_as(uid: u32, args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: switching to uid {uid} needs root; the decision itself is covered by socket::tests");
        return None;
    }
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(common::binary())
        .args(args)
        .uid(uid)
        .gid(uid)
        .stdin(std::process::Stdio::null())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("kms-plugin runs as another user");
    // Bounded: a plugin that took the socket over would serve forever instead of exiting.
    let deadline = Instant::now() + common::READY_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kms-plugin as uid {uid} did not exit within {:?}: it is serving", common::READY_DEADLINE);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Some((status, std::fs::read_to_string(stderr.path()).unwrap_or_default()))
}

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown (the test runs as root)");
}

/// The incident of issue 14: a root plugin serves a 0600 socket in a 0777 directory; another
/// user's plugin on the same path gets "permission denied" connecting, which proves nothing, so
/// it must refuse — and the live plugin keeps serving.
#[tokio::test]
async fn another_users_plugin_never_removes_a_live_socket_it_cannot_connect_to() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let live = local_plugin(&dir, &[]).await;
    let socket = live.socket.to_str().unwrap().to_owned();
    let Some((status, stderr)) = run_as(NOBODY, &["--socket", &socket, "--kms", "local"]) else { return };
    // A --socket path that cannot be used is the user's to fix: exit 2, as every flag error.
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.to_lowercase().contains("permission denied") && stderr.contains("may be live"), "{stderr}");
    assert!(!stderr.contains("removing stale socket"), "{stderr}");
    let still = live.client().await.v2().status(v2::StatusRequest {}).await.expect("the live plugin still answers").into_inner();
    assert_eq!(still.healthz, "ok");
    assert!(!live.log_text().contains("removing stale socket"));
}

/// A socket nobody listens on (ECONNREFUSED) but owned by another uid is not ours to remove.
#[test]
fn a_dead_socket_of_another_user_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.path().join("kms.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: chown to another uid needs root; the decision itself is covered by socket::tests");
        return;
    }
    chown(&socket, NOBODY);
    let (status, stderr) = run_to_exit(&["--socket", socket.to_str().unwrap(), "--kms", "local"]);
    // A --socket path that cannot be used is the user's to fix: exit 2, as every flag error.
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("owned by uid 65534, not by this process (uid 0)"), "{stderr}");
    assert!(socket.exists(), "another user's socket was removed");
}

#[test]
fn bad_configuration_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(&["--socket", "/tmp/x.sock"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kms local"), "{stderr}");

    let config = dir.path().join("config.json");
    std::fs::write(&config, r#"{"KmsEndpoint": "127.0.0.1:9", "KmsKeyId": "k", "SecretKey": "hunter2", "Colour": "blue"}"#).unwrap();
    let (status, stderr) = run_to_exit(&["-f", config.to_str().unwrap(), "--socket", "/tmp/x.sock"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown key `Colour`") && !stderr.contains("hunter2"), "{stderr}");

    let (status, stderr) = run_to_exit(&["-f", "/nonexistent/config.json"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot read config file `/nonexistent/config.json`"), "{stderr}");

    let (status, stderr) = run_to_exit(&["--socket", "/tmp/x.sock", "--kms", "no-port-here"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad --kms: has no `:port`") && !stderr.contains("no-port-here"), "{stderr}");
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let plugin = local_plugin(&dir, &["--metrics-addr", &addr]).await;
    let client = plugin.client().await;
    encrypt(&client, SECRET).await;
    let _ = client.v2().decrypt(v2::DecryptRequest { ciphertext: Bytes::from_static(b"junk"), ..Default::default() }).await;
    let body = http_get(&addr, "/metrics");
    assert!(body.contains(r#"kms_plugin_calls_total{api="v2",method="Encrypt",code="Ok"} 1"#), "{body}");
    assert!(body.contains(r#"kms_plugin_calls_total{api="v2",method="Decrypt",code="InvalidArgument"} 1"#), "{body}");
    assert!(body.contains("kms_plugin_call_duration_seconds_bucket"), "{body}");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics endpoint accepts connections");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("metrics response is text");
    response
}

/// Issue 14: user input the plugin cannot use is a configuration error (exit 2) that says what
/// is wrong, never "internal error"; a log written to a file carries no ANSI colour codes.
#[test]
fn bad_flags_and_key_files_exit_2_and_logs_to_a_file_have_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let socket = socket.to_str().unwrap();
    let (status, stderr) = run_to_exit(&["--socket", socket, "--kms", "local", "--kms-timeout", "0"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("allowed 10ms to 60s"), "{stderr}");
    let kek = dir.path().join("kek");
    for (contents, expected) in [(&b""[..], "holds no key"), (&b"\xff\xfe\n"[..], "not UTF-8")] {
        std::fs::write(&kek, contents).unwrap();
        let (status, stderr) = run_to_exit(&["--socket", socket, "--kms", "local", "--kek-file", kek.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected) && !stderr.contains("internal error"), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "ANSI escape codes in a log that is not a terminal: {stderr:?}");
    }
    assert!(!std::path::Path::new(socket).exists(), "a refused start left a socket behind");
}
