//! The seed's own objects, side by side: every ExternalSecret and SecretStore of
//! ack-secret-manager's README, its chart's README and its sample CR (read from
//! `../shared/thirdparty/ack-secret-manager`, applied unchanged) on the real apiserver with our
//! CRDs; kms-secret-sync syncs them in namespace `default`, the real ack-secret-manager (built
//! from its source, run with the RBAC of its chart and its own ServiceAccount token, as
//! [`kms_secret_sync::ack`] prepares it) syncs the same objects in namespace `ack`, both from the same mock KMS — ours over the native API,
//! theirs over the `aliyun` dialect's secrets manager (HTTPS, ACS3 signatures, the lab CA) —
//! and each Secret of one is compared with the other's.
//!
//! Without the third-party folder the test says where it looked and passes only if
//! `KMS_LAB_REQUIRE_THIRDPARTY` is unset.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kms_lab_provision::{GoRecipe, ProvisionOptions};
use kms_lab_stack::certs::ServingPki;
use kms_lab_stack::process::Supervised;
use kms_lab_stack::{Stack, StackOptions};
use kms_secret_sync::crd::SecretStore;
use kms_secret_sync::decide::Reason;
use kms_secret_sync::{ControllerConfig, StoreClient, StoreCredential, ack, lab};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams};
use mock_kms::api::Action;
use mock_kms::api::faults::{FaultProfile, OutageFault, ThrottleFault};
use mock_kms::api::policy::AccessPolicy;
use mock_kms::api::secrets::CreateSecretRequest;
use mock_kms::dialects::Dialect;
use mock_kms::{Credential, MockKms};
use serde_json::Value;

const KEY: &str = "secrets-key";
const ADMIN: (&str, &str) = ("lab-admin", "admin-secret-key-for-the-test");
/// The seed's grant: `kms:GetSecretValue` and `kms:Decrypt`, nothing else.
const READER: (&str, &str) = ("sync-reader", "sync-reader-secret-for-the-test");
/// Where kms-secret-sync syncs, and where the README's objects say their store is.
const OURS: &str = "default";
/// Where ack-secret-manager syncs the same ExternalSecrets.
const THEIRS: &str = "ack";
/// The README's remote secret `test1`, version `v1`.
const TEST1: &str = r#"{"name":"tom","age":"14","friends":[{"name":"lili"},{"name":"edf"}]}"#;
const WAIT: Duration = Duration::from_secs(120);

/// The YAML documents of every ```yaml block of `file` (dedented: the README's are in list items).
fn yaml_blocks(file: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let (mut blocks, mut current): (Vec<Vec<&str>>, Option<Vec<&str>>) = (Vec::new(), None);
    for line in text.lines() {
        let fence = line.trim_start();
        match (&mut current, fence.starts_with("```")) {
            (None, true) if fence.starts_with("```yaml") || fence.starts_with("```yml") => current = Some(Vec::new()),
            (Some(_), true) => blocks.extend(current.take()),
            (Some(lines), false) => lines.push(line),
            (None, _) => {}
        }
    }
    let mut out = Vec::new();
    for block in blocks {
        let indent = block.iter().filter(|l| !l.trim().is_empty()).map(|l| l.len() - l.trim_start().len()).min().unwrap_or(0);
        let body: String = block.iter().map(|l| format!("{}\n", l.get(indent..).unwrap_or_default())).collect();
        for document in serde_yaml::Deserializer::from_str(&body) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}\n{body}", file.display()));
            out.push(value);
        }
    }
    out
}

/// The seed's objects: (kind, name, object) from its READMEs and sample CR, each once.
fn seed_objects(root: &Path) -> Vec<Value> {
    let mut objects: Vec<Value> = Vec::new();
    let files =
        [root.join("README.md"), root.join("charts/ack-secret-manager/README_EN.md"), root.join("charts/ack-secret-manager/README.md")];
    let sample = root.join("deploy/crds/alibabacloud.com_v1alpha1_externalsecret_cr.yaml");
    let sample: Value = serde_yaml::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
    for object in files.iter().flat_map(|f| yaml_blocks(f)).chain([sample]) {
        if object["apiVersion"] == "alibabacloud.com/v1alpha1" && !objects.contains(&object) {
            objects.push(object);
        }
    }
    objects
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

/// Applies `object` unchanged (but for its namespace); `false` with a finding when the apiserver
/// refuses a field that ack-secret-manager's CRD (`their_crd`, its text) lacks too — any other
/// refusal fails the test.
async fn apply_or_finding(client: &kube::Client, namespace: &str, object: &Value, their_crd: &str, findings: &mut Vec<String>) -> bool {
    let Err(error) = apply(client, namespace, object).await else { return true };
    let message = error.to_string();
    let path = message.split(": field not declared in schema").next().and_then(|m| m.rsplit(' ').next()).unwrap_or_default();
    let field = path.rsplit('.').next().unwrap_or_default();
    let (kind, name) = (object["kind"].as_str().unwrap_or_default(), name_of(object));
    assert!(
        !field.is_empty() && !their_crd.contains(&format!(" {field}:")),
        "{kind} `{name}` is refused in {namespace}, but not for a field ack-secret-manager's CRD lacks: {message}"
    );
    let finding = format!("the seed's {kind} `{name}` has `{path}`, which its own CRD lacks: refused by both CRDs");
    if !findings.contains(&finding) {
        findings.push(finding);
    }
    false
}

/// Applies `object` unchanged (but for its namespace) as the admin; the apiserver's answer.
async fn apply(client: &kube::Client, namespace: &str, object: &Value) -> Result<DynamicObject, kube::Error> {
    let kind = object["kind"].as_str().unwrap();
    let resource = kube::api::ApiResource {
        group: "alibabacloud.com".into(),
        version: "v1alpha1".into(),
        api_version: "alibabacloud.com/v1alpha1".into(),
        kind: kind.into(),
        plural: format!("{}s", kind.to_lowercase()),
    };
    let mut object = object.clone();
    object["metadata"]["namespace"] = namespace.into();
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let api = Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource);
    api.patch(&object.metadata.name.clone().unwrap(), &PatchParams::apply("seed-user").force(), &Patch::Apply(&object)).await
}

async fn namespace(client: &kube::Client, name: &str) {
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&ns)).await.unwrap();
}

/// Secret `name`'s data in `namespace` once `ready` accepts it (within `deadline`); `None` if it never did.
async fn settled_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    deadline: Duration,
    ready: impl Fn(&BTreeMap<String, String>) -> bool,
) -> Option<BTreeMap<String, String>> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let started = Instant::now();
    loop {
        if let Some(secret) = api.get_opt(name).await.unwrap() {
            let data: BTreeMap<String, String> =
                secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned())).collect();
            if ready(&data) {
                return Some(data);
            }
        }
        if started.elapsed() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_objects_sync_to_the_same_secrets_on_both_controllers() {
    let Some(root) = kms_lab_provision::thirdparty_source_or_skip(&GoRecipe::ack_secret_manager()) else { return };
    let objects = seed_objects(&root);
    let stores: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "SecretStore").collect();
    let externals: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "ExternalSecret").collect();
    assert!(stores.len() >= 2 && externals.len() >= 4, "the seed's READMEs changed: {objects:#?}");

    let (binaries, ack_binary) = tokio::task::spawn_blocking(|| {
        let options = ProvisionOptions::default();
        (kms_lab_provision::provision(&options), kms_lab_provision::locate_go_recipe(&GoRecipe::ack_secret_manager(), &options))
    })
    .await
    .unwrap();
    let binaries = binaries.expect("kube-apiserver and etcd are provisioned");
    let ack_binary = ack_binary.unwrap_or_else(|e| panic!("ack-secret-manager builds: {e}"));
    let run_root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let stack = Stack::launch(StackOptions::new("ack-side-by-side", binaries, &run_root)).await.expect("the stack starts");
    let dir = tempfile::tempdir().unwrap();
    let pki = ServingPki::generate("ack-side-by-side CA", "mock-kms").unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let kms = MockKms::builder()
        .key(KEY)
        .credential(Credential::new(ADMIN.0, ADMIN.1))
        .credential(Credential::new(READER.0, READER.1))
        .policy(READER.0, AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/*", &format!("key/{KEY}")]))
        .extra_tls_listener(Dialect::Aliyun, "127.0.0.1:0".parse().unwrap())
        .tls_identity(pki.cert_pem.clone(), pki.key_pem.clone())
        .seed(29)
        .start()
        .await
        .expect("the mock KMS starts");
    let aliyun = kms.dialect_addr(0, Dialect::Aliyun).expect("the aliyun TLS listener");
    let store = StoreClient::new(reqwest::Client::new(), &kms.url(), StoreCredential::new(ADMIN.0, ADMIN.1), Duration::from_secs(5));
    let request = CreateSecretRequest {
        secret_name: "test1".into(),
        secret_data: TEST1.into(),
        encryption_key_id: KEY.into(),
        version_id: Some("v1".into()),
        ..Default::default()
    };
    let _: Value = store.call(Action::CreateSecret, &request).await.expect("the README's remote secret");

    let admin = stack.kube_client(0).await.unwrap();
    lab::install_crds(&admin).await.unwrap();
    for ns in [THEIRS, "readme"] {
        namespace(&admin, ns).await;
    }

    // Every object of the seed applies unchanged to our CRDs, but for one with a field their own
    // CRD lacks too (the README's cross-account store spells `remoteRamRoleArn` where the CRD
    // has `remoteRamRoleARN`; the sample CR has `spec.size`): refused alike, a finding.
    let crd_text = |file: &str| std::fs::read_to_string(root.join("deploy/crds").join(file)).unwrap();
    let (store_crd, external_crd) = (crd_text("alibabacloud.com_secretstores.yaml"), crd_text("alibabacloud.com_externalsecrets.yaml"));
    let mut findings = Vec::new();
    let mut applied = Vec::new();
    for object in &stores {
        if apply_or_finding(&admin, "readme", object, &store_crd, &mut findings).await {
            applied.push(*object);
        }
    }
    let mut externals_applied = Vec::new();
    for object in &externals {
        let mut both = true;
        for ns in [OURS, THEIRS] {
            both &= apply_or_finding(&admin, ns, object, &external_crd, &mut findings).await;
        }
        if both {
            externals_applied.push(*object);
        }
    }
    assert!(!applied.is_empty() && externals_applied.len() >= 3, "too few objects of the seed apply: {findings:?}");
    // The README's store (RRSA) is what its ExternalSecrets name (`default/scdemo`): as the seed
    // has it, it cannot sync here (no STS), and ours says so.
    apply(&admin, OURS, applied[0]).await.unwrap();
    lab::grant_controller(&admin, OURS).await.unwrap();
    let token = lab::service_account_token(&admin, OURS, kms_secret_sync::rbac::NAME).await.unwrap();
    let as_controller = lab::client_with_token(&stack.kubeconfig_path(0), &token).await.unwrap();
    let config = ControllerConfig {
        watch_namespaces: vec![OURS.into()],
        kms_endpoint: Some(kms.url()),
        polling_interval: Duration::from_secs(5),
        reconcile_period: Duration::from_millis(500),
        ..Default::default()
    };
    let ours = lab::RunningController::start(as_controller, config).await;
    let esdemo = name_of(externals[0]);
    let status = lab::wait_for_ready(&admin, OURS, &esdemo, false, Some(Reason::StoreMisconfigured), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.contains("STS"), "{status:?}");

    // With an access key (the seed's grant) instead, both controllers sync.
    // (Replaced, not merged: server-side apply would keep the RRSA fields beside the access key.)
    Api::<SecretStore>::namespaced(admin.clone(), OURS).delete("scdemo", &Default::default()).await.unwrap();
    lab::create_store(&admin, OURS, "scdemo", &StoreCredential::new(READER.0, READER.1)).await.unwrap();
    let token = ack::grant(&admin, &root, THEIRS).await.unwrap();
    let kubeconfig = dir.path().join("ack-secret-manager.kubeconfig");
    ack::kubeconfig_with_token(&stack.kubeconfig_path(0), &token, &kubeconfig).unwrap();
    let args = ack::Flags {
        polling_interval: Duration::from_secs(5),
        disable_polling: false,
        kms_endpoint: aliyun.to_string(),
        watch_namespace: THEIRS.into(),
        reconcile_period: Duration::from_secs(1),
        max_concurrent_kms_secret_pulls: None,
    }
    .args();
    let envs = [
        ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
        ("SSL_CERT_FILE".to_owned(), ca_file.display().to_string()),
        ("POD_NAME".to_owned(), ack::leader_pod(&admin, THEIRS).await.unwrap()),
        ("POD_NAMESPACE".to_owned(), THEIRS.to_owned()),
    ];
    ack::wait_for_metrics_port(Duration::from_secs(900), || eprintln!("waiting for port {} to be free", ack::METRICS_PORT)).await.unwrap();
    let (program, args) = ack::in_pod_namespace(&ack_binary, THEIRS, args);
    let theirs = Supervised::spawn("ack-secret-manager", &program, &args, &dir.path().join("ack-secret-manager.log"), &envs).unwrap();

    let mut differences = findings;
    for object in &externals_applied {
        let name = name_of(object);
        let mine = settled_secret(&admin, OURS, &name, WAIT, |d| !d.is_empty()).await;
        let mine = mine.unwrap_or_else(|| panic!("kms-secret-sync did not sync `{name}` within {WAIT:?}"));
        let log = theirs.log().to_path_buf();
        let yours = settled_secret(&admin, THEIRS, &name, WAIT, |d| !d.is_empty()).await;
        let yours = yours.unwrap_or_else(|| {
            panic!("ack-secret-manager did not sync `{name}` within {WAIT:?}; its log:\n{}", kms_lab_stack::process::tail(&log, 40))
        });
        // Compared whole; a difference is shown by key, never by value.
        let differing: Vec<&String> = mine.keys().chain(yours.keys()).filter(|k| mine.get(*k) != yours.get(*k)).collect();
        assert!(differing.is_empty(), "`{name}`: kms-secret-sync's Secret and ack-secret-manager's differ at keys {differing:?}");
        eprintln!("`{name}`: the same {} keys on both controllers: {:?}", mine.len(), mine.keys().collect::<Vec<_>>());
    }
    // Figures, both polling every 5 s, on an ExternalSecret of the current version (the README's
    // pin `v1`): the first sync's delay, a new version's delay, and the store calls each
    // controller makes per ExternalSecret per polling interval.
    let latest = serde_json::json!({
        "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret", "metadata": { "name": "latest" },
        "spec": { "data": [{ "key": "test1", "name": "test1", "secretStoreRef": { "name": "scdemo", "namespace": OURS } }] }
    });
    let timed = |namespace: &'static str, started: Instant, want: String| {
        let admin = admin.clone();
        async move {
            settled_secret(&admin, namespace, "latest", WAIT, |d| d.get("test1") == Some(&want)).await?;
            Some(started.elapsed().as_secs_f64())
        }
    };
    let applied_at = Instant::now();
    for ns in [OURS, THEIRS] {
        apply(&admin, ns, &latest).await.unwrap();
    }
    let first = tokio::join!(timed(OURS, applied_at, TEST1.to_owned()), timed(THEIRS, applied_at, TEST1.to_owned()));
    let mark = kms.audit().last_seq();
    let put_at = Instant::now();
    let newer = TEST1.replace("tom", "tim");
    store.put_secret_value("test1", &newer).await.unwrap();
    let new_version = tokio::join!(timed(OURS, put_at, newer.clone()), timed(THEIRS, put_at, newer.clone()));
    assert!(first.0.is_some() && first.1.is_some() && new_version.0.is_some() && new_version.1.is_some(), "{first:?} {new_version:?}");
    let window = Duration::from_secs(30);
    tokio::time::sleep(window.saturating_sub(put_at.elapsed())).await;
    let calls = |dialect: &str| {
        kms.audit().records().iter().filter(|r| r.seq > mark && r.dialect.name() == dialect && r.action.name() == "GetSecretValue").count()
    };
    let per = |n: usize| n as f64 / (window.as_secs_f64() / 5.0) / (externals_applied.len() + 1) as f64;
    eprintln!(
        "figure (kms-secret-sync, ack-secret-manager), polling every 5 s: first sync {:.1} s, {:.1} s; a new version {:.1} s, {:.1} s; store calls per ExternalSecret per poll {:.2}, {:.2}",
        first.0.unwrap_or_default(),
        first.1.unwrap_or_default(),
        new_version.0.unwrap_or_default(),
        new_version.1.unwrap_or_default(),
        per(calls("native")),
        per(calls("aliyun"))
    );

    // When the store fails, what becomes of each controller's Secret? Ours keeps it (asserted);
    // theirs is observed for three of its polling intervals and reported.
    let reader_policy = AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/*", &format!("key/{KEY}")]);
    let credentials = Api::<Secret>::namespaced(admin.clone(), OURS);
    let good = settled_secret(&admin, OURS, &esdemo, WAIT, |d| !d.is_empty()).await.unwrap();
    let failures = [
        "a denied GetSecretValue",
        "a store outage",
        "a throttling store",
        "the remote secret deleted (7-day recovery window)",
        "wrong credentials in the SecretStore",
    ];
    for failure in failures {
        let reason = match failure {
            "a denied GetSecretValue" => {
                kms.set_policy(READER.0, AccessPolicy::allow([Action::Decrypt], [format!("key/{KEY}")])).unwrap();
                Reason::AccessDenied
            }
            "a store outage" => {
                kms.set_faults(FaultProfile { outage: Some(OutageFault::default()), ..Default::default() }).unwrap();
                Reason::StoreUnavailable
            }
            "a throttling store" => {
                // One GetSecretValue per 100 s, shared by both controllers: every poll is refused.
                let throttle = ThrottleFault { per_second: 0.01, burst: Some(1.0), actions: Some(vec![Action::GetSecretValue]) };
                kms.set_faults(FaultProfile { throttle: Some(throttle), ..Default::default() }).unwrap();
                Reason::Throttled
            }
            "the remote secret deleted (7-day recovery window)" => {
                store.delete_secret("test1", Some(7)).await.unwrap();
                Reason::RemoteSecretDeleted
            }
            _ => {
                let wrong = serde_json::json!({ "stringData": { "accessKeySecret": "not-the-secret" } });
                credentials.patch("scdemo-credentials", &PatchParams::default(), &Patch::Merge(&wrong)).await.unwrap();
                Reason::AccessDenied
            }
        };
        let status = lab::wait_for_ready(&admin, OURS, &esdemo, false, Some(reason), WAIT).await.unwrap();
        assert!(status.ready().is_some());
        let kept = settled_secret(&admin, OURS, &esdemo, Duration::ZERO, |d| d == &good).await;
        assert!(kept.is_some(), "{failure}: kms-secret-sync's Secret changed");
        let lost = settled_secret(&admin, THEIRS, &esdemo, Duration::from_secs(15), |d| d != &good).await;
        differences.push(match lost {
            Some(data) => format!("{failure}: ack-secret-manager rewrote its Secret with {} of {} keys", data.len(), good.len()),
            None => format!("{failure}: ack-secret-manager's Secret kept its value for 15 s (three polling intervals)"),
        });
        kms.set_policy(READER.0, reader_policy.clone()).unwrap();
        kms.clear_faults();
        if failure.starts_with("the remote secret deleted") {
            store.restore_secret("test1").await.unwrap();
        }
        let right = serde_json::json!({ "stringData": { "accessKeySecret": READER.1 } });
        credentials.patch("scdemo-credentials", &PatchParams::default(), &Patch::Merge(&right)).await.unwrap();
        lab::wait_for_ready(&admin, OURS, &esdemo, true, Some(Reason::Synced), WAIT).await.unwrap();
        settled_secret(&admin, THEIRS, &esdemo, WAIT, |d| d == &good)
            .await
            .unwrap_or_else(|| panic!("{failure}: ack-secret-manager did not heal"));
    }

    // An ExternalSecret with nothing to sync (valid in both schemas): theirs writes an empty
    // Secret, ours refuses with the reason.
    let empty = serde_json::json!({ "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret", "metadata": { "name": "nothing" }, "spec": { "provider": "kms" } });
    for ns in [OURS, THEIRS] {
        apply(&admin, ns, &empty).await.unwrap();
    }
    let status = lab::wait_for_ready(&admin, OURS, "nothing", false, Some(Reason::InvalidSpec), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.starts_with("spec: neither data nor dataProcess"), "{status:?}");
    // Theirs has read it by the time ours answered; an observation window of two polling intervals.
    let theirs_empty = settled_secret(&admin, THEIRS, "nothing", Duration::from_secs(10), BTreeMap::is_empty).await;
    assert!(Api::<Secret>::namespaced(admin.clone(), OURS).get_opt("nothing").await.unwrap().is_none());
    differences.push(format!(
        "an ExternalSecret with neither data nor dataProcess: ack-secret-manager writes {}, kms-secret-sync writes nothing and says InvalidSpec",
        if theirs_empty.is_some() { "an empty Secret" } else { "nothing" }
    ));
    for difference in &differences {
        eprintln!("difference: {difference}");
    }
    // Each store call of theirs went through the aliyun dialect with the reader's access key.
    let records = kms.audit().records();
    let theirs_calls: Vec<_> = records.iter().filter(|r| r.dialect.name() == "aliyun").collect();
    assert!(!theirs_calls.is_empty(), "ack-secret-manager made no call to the aliyun dialect");
    assert!(
        theirs_calls.iter().all(|r| r.access_key.as_deref() == Some(READER.0) && r.operation == "GetSecretValue"),
        "ack-secret-manager called with something else than the reader's GetSecretValue: {theirs_calls:?}"
    );

    ours.stop().await;
    theirs.stop(Duration::from_secs(10)).await;
    kms.shutdown().await;
    stack.shutdown(false).await;
}
