//! Plugins from manifests in the real stack (etcd + kube-apiserver as processes): a Secret written
//! through the API reads back and is stored `k8s:enc:kms:v2:` in etcd, through
//! - aws-encryption-provider from its catalog manifest, on the mock KMS's AWS dialect (SigV4);
//! - the Go peer from a manifest written as a stranger would, in a temp dir, naming its binary by `path:`;
//! - vault-kubernetes-kms from its catalog manifest, on the mock KMS's Vault dialect (token auth), as
//!   `k8s:enc:kms:v2:` and as `k8s:enc:kms:v1:` (it serves both APIs on one socket).
//!
//! The Go binaries come from the stack's locator and cache (built on first use: minutes).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_catalog::{ManifestPlugin, catalog};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use kms_lab_stack::{Stack, StackOptions};
use kube::api::{Api, PostParams};

const SECRET_VALUE: &str = "correct-horse-battery-staple";

async fn binaries() -> kms_lab_provision::Binaries {
    tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned")
}

/// Creates a Secret, reads it back, and returns its raw etcd value (checked free of the plaintext).
async fn write_and_read_back(stack: &Stack, name: &str) -> Vec<u8> {
    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".to_owned(), ByteString(SECRET_VALUE.as_bytes().to_vec()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("the Secret is created");
    let read = secrets.get(name).await.expect("the Secret reads back");
    assert_eq!(read.data.unwrap()["password"].0, SECRET_VALUE.as_bytes());
    let raw = stack.etcd_get(&format!("/registry/secrets/default/{name}")).await.unwrap().expect("the Secret is in etcd");
    assert!(!raw.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()), "plaintext found in etcd");
    raw
}

fn assert_prefix(raw: &[u8], prefix: &[u8]) {
    assert!(raw.starts_with(prefix), "stored value starts with {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
}

fn run_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs")
}

/// Makes the stack's apiserver use `plugin-0` through a KMS v1 provider (`lab-kms`), then identity.
fn use_kms_v1(options: &mut StackOptions) {
    use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider};
    options.encryption_builder = Some(kms_lab_stack::EncryptionBuilder(std::sync::Arc::new(|sockets| {
        let socket = sockets("plugin-0").unwrap_or_default();
        EncryptionConfiguration::new(
            &["secrets"],
            vec![
                Provider::Kms(KmsProvider::v1("lab-kms", &socket, 1000, std::time::Duration::from_secs(3))),
                Provider::Identity(Default::default()),
            ],
        )
    })));
}

/// The catalog manifest `name`, its binaries located (built by the stack's Go locator on first use).
async fn prepare(name: &str) -> ManifestPlugin {
    let manifest = catalog::resolve(name).unwrap_or_else(|e| panic!("{e}"));
    tokio::task::spawn_blocking(move || ManifestPlugin::prepare(manifest, true)).await.unwrap().unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_encryption_provider_from_the_catalog_on_the_aws_dialect_stores_kms_v2() {
    let plugin = prepare("aws-encryption-provider").await;
    let mut options = StackOptions::new("aws-plugin-test", binaries().await, &run_root());
    options.mock_kms = Some(plugin.mock_kms_options());
    options.plugins = vec![plugin.spec("plugin-0")];
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with aws-encryption-provider: {e}"));

    let raw = write_and_read_back(&stack, "aws-secret").await;
    assert_prefix(&raw, b"k8s:enc:kms:v2:lab-kms:");
    // The plugin really called the mock KMS (it speaks nothing but AWS KMS JSON 1.1 with SigV4).
    let records = stack.mock_kms().unwrap().audit_records(0).await.unwrap();
    assert!(
        records.iter().any(|r| r.action == mock_kms::api::Action::Encrypt && r.outcome == mock_kms::api::Outcome::Ok),
        "no successful Encrypt in the mock KMS's audit log: {records:?}"
    );
    stack.shutdown(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_manifest_for_the_go_peer_runs_in_the_stack() {
    let binary = tokio::task::spawn_blocking(|| locate_go_subject(GoSubject::GoPeer, &ProvisionOptions::default()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    // As a plugin author would: a binary somewhere, a manifest beside it, nothing in the catalog.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, dir.path().join("my-plugin")).unwrap();
    let manifest_path = dir.path().join("my-plugin.yaml");
    std::fs::write(
        &manifest_path,
        "name: my-plugin\ndescription: my KMS v2 plugin\nbuild: {path: my-plugin}\ncommand: ['--socket', '{socket}']\napis: [v2]\nrotation: {command: [kill, -HUP, '{pid}']}\nreadiness: {within: 30s}\n",
    )
    .unwrap();
    let manifest = catalog::resolve(manifest_path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let plugin = ManifestPlugin::prepare(manifest, false).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.binary(), dir.path().join("my-plugin"));
    let mut options = StackOptions::new("go-peer-manifest-test", binaries().await, &run_root());
    options.plugins = vec![plugin.spec("plugin-0")];
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with the stranger's plugin: {e}"));

    let raw = write_and_read_back(&stack, "go-secret").await;
    assert_prefix(&raw, b"k8s:enc:kms:v2:lab-kms:");

    // `rotation: {command}` rendered for the running plugin: `{pid}` is its process id; running it
    // rotates the KEK (the Go peer re-keys on SIGHUP), so its Status reports a new key id.
    let argv = stack.plugin_rotate_command("plugin-0").expect("the manifest's rotation command, rendered").to_vec();
    let pid = stack.plugin_pid("plugin-0").expect("the plugin runs");
    assert_eq!(argv, ["kill", "-HUP", &pid.to_string()]);
    let endpoint = stack.plugin_endpoint("plugin-0").unwrap();
    let key_id = || async {
        let client = kms_wire::PluginClient::connect(&endpoint, std::time::Duration::from_secs(5)).await.unwrap();
        client.v2().status(kms_wire::proto::v2::StatusRequest {}).await.unwrap().into_inner().key_id
    };
    let before = key_id().await;
    let status = std::process::Command::new(&argv[0]).args(&argv[1..]).status().expect("the rotation command runs");
    assert!(status.success(), "{argv:?}: {status}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = key_id().await;
    while after == before {
        assert!(std::time::Instant::now() < deadline, "Status still reports key id {before} 10 s after {argv:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = key_id().await;
    }
    // Written under the new key, and the Secret from before still reads.
    write_and_read_back(&stack, "go-secret-rotated").await;
    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    assert_eq!(
        secrets.get("go-secret").await.expect("the Secret from before the rotation reads").data.unwrap()["password"].0,
        SECRET_VALUE.as_bytes()
    );
    stack.shutdown(false).await;
}

/// Every catalog entry with a remote KMS the stack's mock KMS can serve today, in the real stack:
/// a Secret round trip through the apiserver on the API the plugin prefers (v1beta1 for trousseau).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudkms_and_trousseau_awskms_from_the_catalog_store_secrets() {
    use kms_lab_catalog::Api as PluginApi;
    for name in ["k8s-cloudkms-plugin", "trousseau-awskms"] {
        let plugin = prepare(name).await;
        let api = plugin.manifest().preferred_api();
        let mut options = StackOptions::new(&format!("{name}-test"), binaries().await, &run_root());
        options.mock_kms = Some(plugin.mock_kms_options());
        options.plugins = vec![plugin.spec("plugin-0")];
        if api == PluginApi::V1beta1 {
            use_kms_v1(&mut options);
        }
        let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with {name}: {e}"));
        let raw = write_and_read_back(&stack, "catalog-secret").await;
        let prefix: &[u8] = if api == PluginApi::V2 { b"k8s:enc:kms:v2:lab-kms:" } else { b"k8s:enc:kms:v1:lab-kms:" };
        assert!(raw.starts_with(prefix), "{name}: stored value starts with {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
        stack.shutdown(false).await;
    }
}

/// vault-kubernetes-kms (third-party, unmodified) from its catalog manifest on the Vault dialect:
/// it starts (token look-up at start), a Secret is stored `k8s:enc:kms:v2:` and reads back, its
/// Status key id is the Transit key's `latest_version` and follows a rotation in the KMS
/// (`rotation: remote_key_id_follows`); then, in a second stack on the same binary, through a KMS
/// v1 provider, stored `k8s:enc:kms:v1:`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_kubernetes_kms_from_the_catalog_on_the_vault_dialect_stores_kms_v2_and_v1() {
    use mock_kms::api::Action;
    use mock_kms::api::Outcome;
    let started = std::time::Instant::now();
    let plugin = prepare("vault-kubernetes-kms").await;
    eprintln!("vault-kubernetes-kms located (built on first use) in {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(plugin.manifest().apis, [kms_lab_catalog::Api::V2, kms_lab_catalog::Api::V1beta1]);

    let mut options = StackOptions::new("vault-kubernetes-kms-v2-test", binaries().await, &run_root());
    options.mock_kms = Some(plugin.mock_kms_options());
    options.plugins = vec![plugin.spec("plugin-0")];
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with vault-kubernetes-kms: {e}"));
    let raw = write_and_read_back(&stack, "vault-secret").await;
    assert_prefix(&raw, b"k8s:enc:kms:v2:lab-kms:");
    let kms = stack.mock_kms().unwrap();
    let records = kms.audit_records(0).await.unwrap();
    let seen = |operation: &str, action: Action| {
        records.iter().any(|r| {
            r.dialect == mock_kms::dialects::Dialect::Vault && r.operation == operation && r.action == action && r.outcome == Outcome::Ok
        })
    };
    assert!(seen("auth/token/lookup-self", Action::DescribeKey), "no token look-up in the audit log: {records:?}");
    assert!(seen("transit/encrypt", Action::Encrypt), "no Transit encrypt in the audit log: {records:?}");
    assert!(seen("transit/keys/read", Action::DescribeKey), "no key read in the audit log: {records:?}");

    // Its key id is the Transit key's latest_version: "1", then "2" once the KMS rotates the key.
    let endpoint = stack.plugin_endpoint("plugin-0").unwrap();
    let key_id = || async {
        let client = kms_wire::PluginClient::connect(&endpoint, std::time::Duration::from_secs(5)).await.unwrap();
        client.v2().status(kms_wire::proto::v2::StatusRequest {}).await.unwrap().into_inner()
    };
    let status = key_id().await;
    assert_eq!((status.key_id.as_str(), status.healthz.as_str(), status.version.as_str()), ("1", "ok", "v2"));
    kms.rotate_key().await.unwrap();
    let status = key_id().await;
    assert_eq!(status.key_id, "2", "Status reads latest_version on every call, so it follows the rotation at once");
    write_and_read_back(&stack, "vault-secret-rotated").await;
    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    let before = secrets.get("vault-secret").await.expect("the Secret from before the rotation reads");
    assert_eq!(before.data.unwrap()["password"].0, SECRET_VALUE.as_bytes());
    stack.shutdown(false).await;

    let mut options = StackOptions::new("vault-kubernetes-kms-v1-test", binaries().await, &run_root());
    options.mock_kms = Some(plugin.mock_kms_options());
    options.plugins = vec![plugin.spec("plugin-0")];
    use_kms_v1(&mut options);
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with vault-kubernetes-kms (v1): {e}"));
    let raw = write_and_read_back(&stack, "vault-secret-v1").await;
    assert_prefix(&raw, b"k8s:enc:kms:v1:lab-kms:");
    stack.shutdown(false).await;
}

/// kms-plugin as a drop-in for the seeds' plugins: from its catalog manifests `kms-plugin-jdcloud`
/// (the JD Cloud seed's config.json as it is, `--kms-dialect jdcloud`) and `kms-plugin-aliyun`
/// (`"KmsDialect": "aliyun"`, HTTPS with the stack's CA through `SSL_CERT_FILE`), a Secret is
/// stored `k8s:enc:kms:v2:` and, through a KMS v1 provider, `k8s:enc:kms:v1:`; the mock KMS's
/// audit log shows the plugin's calls on that dialect, made for the apiserver's requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_plugin_on_the_jdcloud_and_aliyun_dialects_stores_kms_v2_and_v1() {
    use mock_kms::api::Outcome;
    use mock_kms::api::{Action, Caller};
    for (name, dialect) in
        [("kms-plugin-jdcloud", mock_kms::dialects::Dialect::Jdcloud), ("kms-plugin-aliyun", mock_kms::dialects::Dialect::Aliyun)]
    {
        let plugin = prepare(name).await;
        assert_eq!(plugin.manifest().dialect, Some(dialect));
        for v1 in [false, true] {
            let mut options = StackOptions::new(&format!("{name}-test"), binaries().await, &run_root());
            options.mock_kms = Some(plugin.mock_kms_options());
            options.plugins = vec![plugin.spec("plugin-0")];
            if v1 {
                use_kms_v1(&mut options);
            }
            let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with {name}: {e}"));
            let kms = stack.mock_kms().unwrap();
            let endpoint = kms.dialect_endpoint(dialect).unwrap();
            assert_eq!(endpoint.url().starts_with("https://"), dialect == mock_kms::dialects::Dialect::Aliyun, "{}", endpoint.url());
            let raw = write_and_read_back(&stack, "seed-dialect-secret").await;
            assert_prefix(&raw, if v1 { b"k8s:enc:kms:v1:lab-kms:" } else { b"k8s:enc:kms:v2:lab-kms:" });
            let records = kms.audit_records(0).await.unwrap();
            assert!(
                records.iter().any(|r| r.dialect == dialect
                    && r.action == Action::Encrypt
                    && r.outcome == Outcome::Ok
                    && r.caller == Some(Caller::Request)),
                "{name}: no Encrypt for a request on the {dialect} dialect in the audit log: {records:?}"
            );
            assert!(
                !records.iter().any(|r| r.dialect == mock_kms::dialects::Dialect::Native && r.action == Action::Encrypt),
                "{name}: a native Encrypt"
            );
            stack.shutdown(false).await;
        }
    }
}

/// ack-kms-plugin (third-party, unmodified; dep-managed, built from a copy with its manifest's
/// go.mod) from its catalog manifest on the Alibaba Cloud dialect over HTTPS with the stack's CA:
/// a Secret is stored `k8s:enc:kms:v1:` through the plugin's signed calls, and the source folder
/// still has no go.mod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_kms_plugin_from_the_catalog_on_the_aliyun_dialect_over_https_stores_kms_v1() {
    use mock_kms::api::Action;
    use mock_kms::api::Outcome;
    let started = std::time::Instant::now();
    let plugin = prepare("ack-kms-plugin").await;
    eprintln!("ack-kms-plugin located (built on first use) in {:.1} s", started.elapsed().as_secs_f64());
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/thirdparty/ack-kms-plugin");
    if source.is_dir() {
        assert!(!source.join("go.mod").exists(), "the build wrote a go.mod into {}", source.display());
    }
    let mut options = StackOptions::new("ack-kms-plugin-test", binaries().await, &run_root());
    options.mock_kms = Some(plugin.mock_kms_options());
    options.plugins = vec![plugin.spec("plugin-0")];
    use_kms_v1(&mut options);
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with ack-kms-plugin: {e}"));
    let raw = write_and_read_back(&stack, "ack-secret").await;
    assert_prefix(&raw, b"k8s:enc:kms:v1:lab-kms:");
    let records = stack.mock_kms().unwrap().audit_records(0).await.unwrap();
    let ok = |action: Action| {
        records.iter().any(|r| r.dialect == mock_kms::dialects::Dialect::Aliyun && r.action == action && r.outcome == Outcome::Ok)
    };
    assert!(ok(Action::Encrypt) && ok(Action::Decrypt), "no Alibaba Encrypt and Decrypt in the audit log: {records:?}");
    stack.shutdown(false).await;
}
