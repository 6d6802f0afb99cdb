//! The real control plane: etcd + kube-apiserver + kms-plugin as processes. A Secret written
//! through the API is stored as `k8s:enc:kms:v2:` in etcd (checked with etcdctl too), reads
//! back, and the apiserver's KMS health follows the plugin going away and coming back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::{Stack, StackOptions};
use kms_wire::envelope::Envelope;
use kube::api::{Api, PostParams};

const SECRET_VALUE: &str = "correct-horse-battery-staple";

async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_kms_v2_encrypted_and_health_follows_the_plugin() {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    // Under cargo's test tmp dir (target/tmp): a failed run's logs stay there, a passed run's are removed.
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let mut stack = Stack::launch(StackOptions::new("real-stack-test", binaries.clone(), &run_root)).await.expect("the stack starts");
    let client = stack.kube_client(0).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "default");

    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("db-password".into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".to_owned(), ByteString(SECRET_VALUE.as_bytes().to_vec()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("the Secret is created");

    let raw = stack.etcd_get("/registry/secrets/default/db-password").await.unwrap().expect("the Secret is in etcd");
    assert!(
        raw.starts_with(b"k8s:enc:kms:v2:lab-kms:"),
        "stored value starts with {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(40)])
    );
    assert!(!raw.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()), "plaintext found in etcd");
    let envelope = Envelope::parse(&raw).expect("the stored value parses as a KMS v2 envelope");
    let Envelope::KmsV2 { object, .. } = &envelope else { panic!("expected kms v2, got {envelope:?}") };
    assert!(object.key_id.starts_with("local-v1-"), "key id {}", object.key_id);

    // An independent reader: the provisioned etcdctl sees the same prefix.
    let etcdctl = std::process::Command::new(&binaries.etcdctl.path)
        .args(["--endpoints", &stack.etcd_url(), "get", "/registry/secrets/default/db-password", "--print-value-only"])
        .output()
        .expect("etcdctl runs");
    assert!(
        etcdctl.stdout.starts_with(b"k8s:enc:kms:v2:lab-kms:"),
        "etcdctl printed {:?}",
        String::from_utf8_lossy(&etcdctl.stdout[..etcdctl.stdout.len().min(40)])
    );

    // The plugin opens what the apiserver wrote.
    let plugin = kms_wire::PluginClient::connect(&stack.plugin_endpoint("plugin-0").unwrap(), Duration::from_secs(5)).await.unwrap();
    let object_bytes = kms_wire::decode::open(&envelope, b"/registry/secrets/default/db-password", &plugin)
        .await
        .expect("the value opens through the plugin");
    assert!(object_bytes.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()));

    let read = secrets.get("db-password").await.expect("the Secret reads back");
    assert_eq!(read.data.unwrap()["password"].0, SECRET_VALUE.as_bytes());

    let (status, body) = stack.apiserver_get(0, "/healthz/kms-providers").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok"));

    stack.kill(&kms_lab_stack::Component::Plugin("plugin-0".into())).await.unwrap();
    wait_until("/healthz/kms-providers to fail after the plugin was killed", Duration::from_secs(90), || async {
        matches!(stack.apiserver_get(0, "/healthz/kms-providers").await, Ok((status, _)) if status != 200)
    })
    .await;
    let (_, body) = stack.apiserver_get(0, "/readyz?verbose").await.unwrap();
    assert!(body.contains("[-]kms-providers failed"), "{body}");

    stack.start(&kms_lab_stack::Component::Plugin("plugin-0".into()), kms_lab_stack::WaitFor::Ready).await.unwrap();
    wait_until("/healthz/kms-providers to heal after the plugin restarted", Duration::from_secs(90), || async {
        matches!(stack.apiserver_get(0, "/healthz/kms-providers").await, Ok((200, _)))
    })
    .await;
    // The restarted plugin kept its KEK file, so the old Secret still reads.
    assert_eq!(secrets.get("db-password").await.unwrap().data.unwrap()["password"].0, SECRET_VALUE.as_bytes());

    let pids: Vec<u32> = collect_pids(&stack);
    let kept = stack.shutdown(false).await;
    assert!(kept.is_none());
    for pid in pids {
        assert!(!pid_alive(pid), "process {pid} survived shutdown");
    }
}

fn collect_pids(stack: &Stack) -> Vec<u32> {
    stack.pids()
}
