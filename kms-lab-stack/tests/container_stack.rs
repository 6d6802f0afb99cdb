//! The stack on the container runtime: etcd, the mock KMS, the plugin and kube-apiserver each
//! in a Docker container built offline from the provisioned binaries, on the host network. A
//! Secret is stored as `k8s:enc:kms:v2:`, the plugin container is killed (SIGKILL) and started
//! again, and afterwards no container of this run is left. The process stack is brought up in
//! the same run first, so both bring-up times are printed side by side.
//!
//! Needs a running Docker daemon (`.ci/run` starts one); without it the test fails and says so.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::{Component, Runtime, Stack, StackOptions, WaitFor};
use kube::api::{Api, PostParams};

const SECRET_VALUE: &str = "container-runtime-secret-value";

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

/// The names of the containers this test process owns (running or not).
fn own_containers() -> Vec<String> {
    let filter = format!("label={}={}", kms_lab_stack::container::OWNER_LABEL, std::process::id());
    let output = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

fn secret(name: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".to_owned(), ByteString(SECRET_VALUE.as_bytes().to_vec()))])),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_runs_in_containers_with_the_same_semantics() {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let options = |runtime| {
        let mut options = StackOptions::new(&format!("container-test-{runtime}"), binaries.clone(), &run_root).with_mock_kms();
        options.runtime = runtime;
        options
    };

    // The process stack first, for the bring-up time beside the container stack's.
    let started = Instant::now();
    let stack = Stack::launch(options(Runtime::Process)).await.expect("the process stack starts");
    let process_seconds = started.elapsed().as_secs_f64();
    assert!(stack.shutdown(false).await.is_none());

    // Images are built (or found) inside the first launch; a second launch shows the warm time.
    let started = Instant::now();
    let stack = Stack::launch(options(Runtime::Container)).await.expect("the container stack starts");
    let cold_seconds = started.elapsed().as_secs_f64();
    assert!(stack.shutdown(false).await.is_none());
    let started = Instant::now();
    let mut stack = Stack::launch(options(Runtime::Container)).await.expect("the container stack starts again");
    let container_seconds = started.elapsed().as_secs_f64();
    println!(
        "bring-up (etcd + mock KMS + plugin + kube-apiserver, ready): process {process_seconds:.1} s, container {container_seconds:.1} s (first, with image builds or lookups: {cold_seconds:.1} s)"
    );
    let names = own_containers();
    for component in ["etcd", "mock-kms", "plugin-0", "apiserver-0"] {
        assert!(names.iter().any(|n| n.starts_with(&format!("kms-lab-{component}-"))), "no {component} container in {names:?}");
    }

    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    secrets.create(&PostParams::default(), &secret("in-containers")).await.expect("the Secret is created");
    let raw = stack.etcd_get("/registry/secrets/default/in-containers").await.unwrap().expect("the Secret is in etcd");
    assert!(raw.starts_with(b"k8s:enc:kms:v2:lab-kms:"), "stored as {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
    assert!(!raw.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()), "plaintext found in etcd");
    // The plugin's log came out of its container into the run directory.
    let plugin_log = std::fs::read_to_string(stack.run_dir().join("plugin-0.log")).unwrap_or_default();
    assert!(!plugin_log.is_empty(), "the plugin container's output did not reach plugin-0.log");

    // kill = SIGKILL: the container goes, KMS health fails; start brings a new one, health heals.
    let plugin = Component::Plugin("plugin-0".into());
    stack.kill(&plugin).await.unwrap();
    assert!(!own_containers().iter().any(|n| n.starts_with("kms-lab-plugin-0-")), "the killed plugin's container is left");
    wait_until("/healthz/kms-providers to fail after the plugin container was killed", Duration::from_secs(90), || async {
        matches!(stack.apiserver_get(0, "/healthz/kms-providers").await, Ok((status, _)) if status != 200)
    })
    .await;
    stack.start(&plugin, WaitFor::Ready).await.unwrap();
    wait_until("/healthz/kms-providers to heal after the plugin container restarted", Duration::from_secs(90), || async {
        matches!(stack.apiserver_get(0, "/healthz/kms-providers").await, Ok((200, _)))
    })
    .await;
    let read = secrets.get("in-containers").await.expect("the Secret reads back after the plugin restart");
    assert_eq!(read.data.unwrap()["password"].0, SECRET_VALUE.as_bytes());

    assert!(stack.shutdown(false).await.is_none());
    let left = own_containers();
    assert!(left.is_empty(), "containers left after shutdown: {left:?}");
}

/// `kms-lab clean`'s sweep: a container whose owner is gone (a run killed with SIGKILL) is
/// removed, one whose owner still runs is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_containers_of_dead_owners_only() {
    let docker = |args: &[&str]| {
        let output = std::process::Command::new("docker").args(args).output().expect("the docker CLI runs");
        assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    // A container that is only created, never started: any image of ours will do (built here
    // from /bin/true with its libraries, so this test needs no other test's images).
    let client = kms_lab_stack::container::docker().await.expect("dockerd answers");
    let image =
        kms_lab_stack::images::ensure(&client, std::path::Path::new("/bin/true"), "test").await.expect("the image builds").to_string();
    let managed = "org.kms-lab.managed=true";
    let dead = format!("kms-lab-clean-dead-{}", std::process::id());
    let live = format!("kms-lab-clean-live-{}", std::process::id());
    // pid 0 is never a live owner; pid 1 (init) always is (not this process: the other test
    // counts the containers this process owns).
    docker(&["create", "--label", managed, "--label", "org.kms-lab.owner-pid=0", "--name", &dead, &image]);
    docker(&["create", "--label", managed, "--label", "org.kms-lab.owner-pid=1", "--name", &live, &image]);
    let report = kms_lab_stack::container::clean(false, false).await.expect("clean runs");
    let names = docker(&["ps", "-a", "--filter", &format!("label={managed}"), "--format", "{{.Names}}"]);
    docker(&["rm", "-f", &live]);
    assert!(report.containers.contains(&dead), "{report:?}");
    assert!(!names.lines().any(|n| n == dead), "the dead owner's container is left: {names}");
    assert!(names.lines().any(|n| n == live), "the live owner's container was removed: {names}");
}
