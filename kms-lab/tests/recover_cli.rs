//! `kms-lab recover --unsafe-delete` on the real stack (kube-apiserver, etcd, kms-plugin, the mock
//! KMS): with every object decryptable it says so and deletes nothing; after a key version is
//! destroyed, the dry run names exactly the undecryptable Secrets and deletes nothing, a user
//! without the RBAC verb `unsafe-delete-ignore-read-errors` is refused, and the admin's run
//! deletes exactly those — every other Secret still reads back and LIST works again.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::{Component, Stack, StackOptions, WaitFor};
use kube::api::{Api, PostParams};

const LOST: &str = "lost";
const KEEP: &str = "keep";

struct Lab {
    stack: Stack,
}

impl Lab {
    /// Runs `kms-lab` against the stack: its kubeconfig, etcd and plugin-0's socket.
    fn kms_lab(&self, args: &[&str]) -> (i32, String, String) {
        let plugin = self.stack.plugin_endpoint("plugin-0").expect("plugin-0 runs");
        let output = Command::new(env!("CARGO_BIN_EXE_kms-lab"))
            .args(args)
            .args(["--endpoints", &self.stack.etcd_url(), "--plugin", &plugin])
            .env("KUBECONFIG", self.stack.kubeconfig_path(0))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("kms-lab runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn client(&self) -> kube::Client {
        self.stack.kube_client(0).await.expect("an admin client")
    }

    async fn etcd_names(&self, namespace: &str) -> Vec<String> {
        let prefix = format!("/registry/secrets/{namespace}/");
        let mut names: Vec<String> =
            self.stack.etcd_list(&prefix).await.expect("etcd lists").into_iter().map(|(k, _)| k[prefix.len()..].to_owned()).collect();
        names.sort();
        names
    }
}

fn value_of(namespace: &str, name: &str) -> Vec<u8> {
    format!("recover-test-value-of-{namespace}-{name}").into_bytes()
}

async fn create(client: &kube::Client, namespace: &str, names: &[&str]) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace { metadata: kube::api::ObjectMeta { name: Some(namespace.into()), ..Default::default() }, ..Default::default() };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(e) => panic!("namespace {namespace}: {e}"),
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in names {
        let secret = Secret {
            metadata: kube::api::ObjectMeta { name: Some((*name).into()), ..Default::default() },
            data: Some(BTreeMap::from([("v".to_owned(), ByteString(value_of(namespace, name)))])),
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &secret).await.unwrap_or_else(|e| panic!("create {namespace}/{name}: {e}"));
    }
}

/// The key id the stored Secret carries.
async fn key_id_of(stack: &Stack, namespace: &str, name: &str) -> String {
    let raw = stack.etcd_get(&format!("/registry/secrets/{namespace}/{name}")).await.unwrap().expect("the Secret is in etcd");
    match kms_wire::envelope::Envelope::parse(&raw).expect("an envelope") {
        kms_wire::envelope::Envelope::KmsV2 { object, .. } => object.key_id,
        other => panic!("{namespace}/{name} is not under KMS v2: {:?}", other.kind()),
    }
}

async fn reads_back(client: &kube::Client, namespace: &str, name: &str) {
    let secret =
        Api::<Secret>::namespaced(client.clone(), namespace).get(name).await.unwrap_or_else(|e| panic!("read {namespace}/{name}: {e}"));
    assert_eq!(secret.data.unwrap_or_default().remove("v").map(|b| b.0), Some(value_of(namespace, name)), "{namespace}/{name}");
}

/// A ClusterRole with `verbs` on secrets, bound to `user`; waits until the authorizer allows `delete`.
async fn grant(client: &kube::Client, user: &str, verbs: &[&str]) {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": verbs}],
    }))
    .unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    Api::<ClusterRole>::all(client.clone()).create(&PostParams::default(), &role).await.expect("the ClusterRole is created");
    Api::<ClusterRoleBinding>::all(client.clone()).create(&PostParams::default(), &binding).await.expect("the binding is created");
    let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
        "spec": {"user": user, "resourceAttributes": {"verb": "delete", "resource": "secrets", "namespace": LOST}},
    }))
    .unwrap();
    let started = Instant::now();
    loop {
        let answer = Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await.expect("a review");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the authorizer did not allow `delete` to {user} within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_deletes_exactly_the_undecryptable_secrets_and_only_with_the_verb() {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("binaries are provisioned");
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let stack = Stack::launch(StackOptions::new("recover-cli", binaries, &run_root).with_mock_kms()).await.expect("the stack starts");
    let lab_client = stack.kube_client(0).await.unwrap();
    create(&lab_client, LOST, &["old-0", "old-1", "old-2", "old-3"]).await;
    let mut lab = Lab { stack };

    // Every object decrypts: recover says so and deletes nothing, even with --yes.
    let (code, out, err) = lab.kms_lab(&["recover", "--unsafe-delete", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("every object decrypts (4 KMS object(s) opened through the plugin): nothing to delete"), "{out}");
    assert_eq!(lab.etcd_names(LOST).await.len(), 4);

    // Rotate; a restarted apiserver asks the plugin's Status at once and writes with version 2.
    let kms = lab.stack.mock_kms().expect("a mock KMS");
    let v1 = kms.describe_key().await.unwrap().current_key_version_id;
    kms.rotate_key().await.expect("the KEK rotates");
    lab.stack.restart(&Component::Apiserver(0), WaitFor::Ready).await.expect("the apiserver restarts");
    let client = lab.client().await;
    create(&client, LOST, &["new-0", "new-1"]).await;
    create(&client, KEEP, &["k-0", "k-1", "k-2"]).await;
    assert_ne!(key_id_of(&lab.stack, LOST, "new-0").await, key_id_of(&lab.stack, LOST, "old-0").await, "new Secrets use the new version");

    // Version 1 is destroyed; the apiserver restarts without its DEK cache. It serves but never
    // gets ready: the Secrets watch cache cannot fill past an undecryptable Secret.
    lab.stack.mock_kms().unwrap().destroy_version(&v1).await.expect("version 1 is destroyed");
    lab.stack.restart(&Component::Apiserver(0), WaitFor::Live).await.expect("the apiserver restarts");
    let client = lab.client().await;
    let error = Api::<Secret>::namespaced(client.clone(), LOST).get("old-0").await.expect_err("old-0 cannot be read");
    assert!(error.to_string().contains("corrupt object"), "{error}");
    let (status, body) = lab.stack.apiserver_get(0, "/readyz?verbose").await.expect("/readyz answers");
    assert_ne!(status, 200, "not ready while a Secret cannot be decrypted: {body}");

    // inspect --plugin lists exactly the four, and exits 1.
    let (code, out, err) = lab.kms_lab(&["inspect", "--resource", "secrets"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("9 KMS object(s) opened through the plugin: 5 decrypt, 4 cannot be decrypted"), "{out}");
    for i in 0..4 {
        assert!(out.contains(&format!("cannot be decrypted: secrets lost/old-{i} ")), "{out}");
    }

    // The dry run names the count and deletes nothing.
    let (code, out, err) = lab.kms_lab(&["recover", "--unsafe-delete"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("4 of 4 object(s) would be deleted"), "{out}");
    assert!(out.contains("to delete them: the same command with --yes"), "{out}");
    assert_eq!(lab.etcd_names(LOST).await.len(), 6, "a dry run deletes nothing");

    // A user with `delete` but not the unsafe verb is refused; nothing is deleted.
    grant(&client, "alice", &["get", "list", "delete"]).await;
    let (code, out, err) = lab.kms_lab(&["recover", "--unsafe-delete", "--yes", "--as", "alice"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("REFUSED: 403"), "{out}");
    assert!(err.contains("user `alice` lacks the RBAC verb `unsafe-delete-ignore-read-errors`"), "{err}");
    assert_eq!(lab.etcd_names(LOST).await.len(), 6, "a refused delete deletes nothing");

    // The admin deletes exactly the four.
    let (code, out, err) = lab.kms_lab(&["recover", "--unsafe-delete", "--yes"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deleting 4 object(s) that cannot be decrypted"), "{out}");
    assert!(out.contains("4 of 4 object(s) deleted"), "{out}");
    assert_eq!(lab.etcd_names(LOST).await, ["new-0", "new-1"]);
    assert_eq!(lab.etcd_names(KEEP).await, ["k-0", "k-1", "k-2"]);
    for (namespace, name) in [(LOST, "new-0"), (LOST, "new-1"), (KEEP, "k-0"), (KEEP, "k-1"), (KEEP, "k-2")] {
        reads_back(&client, namespace, name).await;
    }
    // Without them the apiserver gets ready again (bounded wait) and LIST works.
    let started = Instant::now();
    while lab.stack.apiserver_get(0, "/readyz").await.ok().map(|(status, _)| status) != Some(200) {
        assert!(started.elapsed() < Duration::from_secs(60), "the apiserver did not get ready within 60 s of the unsafe deletes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let listed = Api::<Secret>::namespaced(client.clone(), LOST).list(&Default::default()).await.expect("LIST of `lost` works again");
    assert_eq!(listed.items.len(), 2);
    // Nothing the tool printed holds a value.
    for text in [&out, &err] {
        assert!(!text.contains("recover-test-value"), "a value was printed: {text}");
    }
    // And a second run finds nothing left.
    let (code, out, _) = lab.kms_lab(&["recover", "--unsafe-delete", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("nothing to delete"), "{out}");
    lab.stack.shutdown(false).await;
}
