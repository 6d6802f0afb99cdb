//! The controller on the real control plane (envtest-style): etcd + kube-apiserver with RBAC and
//! a KMS v2 provider, the controller in process with its own least-privilege ServiceAccount
//! token, and the mock KMS (in process) as the secrets store, reached with a credential whose
//! access policy allows only `kms:GetSecretValue` and `kms:Decrypt`.
//!
//! One stack for the whole story (an apiserver takes a while to start on a shared machine); each
//! phase waits, bounded, for what it asserts, and says what it waited for when it fails.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::{Stack, StackOptions};
use kms_secret_sync::crd::{
    ALLOW_NAMESPACES, DataProcess, DataSource, DeletionPolicy, ExternalSecret, JmesPathObject, ReplaceRule, SecretStore,
};
use kms_secret_sync::decide::Reason;
use kms_secret_sync::{ControllerConfig, StoreClient, StoreCredential, lab, rbac};
use kube::api::{Api, DeleteParams, ListParams};
use mock_kms::api::faults::{FaultProfile, OutageFault};
use mock_kms::api::policy::AccessPolicy;
use mock_kms::api::{Action, ErrorCode};
use mock_kms::{AuditQuery, Credential, MockKms, Outcome};

const NS: &str = "default";
const KEY: &str = "secrets-key";
const ADMIN: &str = "lab-admin";
const SYNC: &str = "secret-sync";
/// The polling interval of the controller under test.
const INTERVAL: Duration = Duration::from_secs(2);
/// The bound of every wait: generous for a shared 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn db_value(password: &str) -> String {
    format!(r#"{{"user":"app","password":"{password}"}}"#)
}

fn reader_policy() -> AccessPolicy {
    AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/*", &format!("key/{KEY}")])
}

/// The controller's settings for the test: namespace `NS`, the store at `kms_url`, a short
/// polling interval and retry.
fn config_for_test(kms_url: &str) -> ControllerConfig {
    ControllerConfig {
        watch_namespaces: vec![NS.into()],
        kms_endpoint: Some(kms_url.into()),
        polling_interval: INTERVAL,
        reconcile_period: Duration::from_millis(200),
        ..Default::default()
    }
}

/// `entry` reading what `path` selects instead of the whole value.
fn by_path(mut entry: kms_secret_sync::crd::DataSource, path: &str) -> kms_secret_sync::crd::DataSource {
    let alias = entry.name.take().unwrap_or_default();
    entry.jmes_path = vec![JmesPathObject { path: path.into(), object_alias: alias }];
    entry
}

/// Whether `haystack` contains `needle`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_secrets_sync_keep_the_last_good_value_and_are_stored_kms_encrypted() {
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    // The default stack: Secrets encrypted by KMS v2 provider `lab-kms` on a local-KEK plugin.
    let stack = Stack::launch(StackOptions::new("secret-sync-test", binaries, &run_root)).await.expect("the stack starts");
    let admin_secret = "admin-secret-key-for-the-test";
    let sync_secret = "sync-secret-key-for-the-test";
    let kms = MockKms::builder()
        .key(KEY)
        .credential(Credential::new(ADMIN, admin_secret))
        .credential(Credential::new(SYNC, sync_secret))
        .policy(SYNC, reader_policy())
        .seed(7)
        .start()
        .await
        .expect("the mock KMS starts");
    let store = StoreClient::new(reqwest::Client::new(), &kms.url(), StoreCredential::new(ADMIN, admin_secret), Duration::from_secs(5));
    store.create_secret("db", &db_value("pw-v1-first"), KEY).await.unwrap();
    store.create_secret("token", "tok-v1-first", KEY).await.unwrap();

    let client = stack.kube_client(0).await.unwrap();
    lab::install_crds(&client).await.expect("the CRDs install");
    lab::grant_controller(&client, NS).await.expect("the controller's RBAC applies");
    let token = lab::service_account_token(&client, NS, rbac::NAME).await.expect("a ServiceAccount token");
    let as_controller = lab::client_with_token(&stack.kubeconfig_path(0), &token).await.unwrap();

    // Least privilege: the controller's identity reads Secrets only in its namespace, and nothing else.
    let other_ns = Api::<Secret>::namespaced(as_controller.clone(), "kube-system").list(&ListParams::default()).await;
    assert!(matches!(other_ns, Err(kube::Error::Api(ref e)) if e.code == 403), "Secrets of kube-system must be forbidden: {other_ns:?}");
    let config_maps = Api::<ConfigMap>::namespaced(as_controller.clone(), NS).list(&ListParams::default()).await;
    assert!(matches!(config_maps, Err(kube::Error::Api(ref e)) if e.code == 403), "ConfigMaps must be forbidden: {config_maps:?}");

    let controller = lab::RunningController::start(as_controller, config_for_test(&kms.url())).await;
    lab::create_store(&client, NS, "kms", &StoreCredential::new(SYNC, sync_secret)).await.unwrap();
    let kms_store = lab::store_ref(NS, "kms");

    // 1. A remote secret becomes a Secret: one entry by JMESPath, one whole.
    let es = lab::external_secret(
        "app",
        vec![by_path(lab::entry("password", "db", &kms_store), "password"), lab::entry("token", "token", &kms_store)],
    );
    lab::apply_external_secret(&client, NS, &es).await.unwrap();
    lab::wait_for_secret(&client, NS, "app", "password", WAIT, |v| v == Some(&b"pw-v1-first"[..])).await.expect("the first value arrives");
    lab::wait_for_secret(&client, NS, "app", "token", WAIT, |v| v == Some(&b"tok-v1-first"[..])).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "app", true, Some(Reason::Synced), WAIT).await.unwrap();
    assert!(status.last_sync_time.is_some() && status.synced_versions.len() == 2, "{status:?}");

    // 2. Stored `k8s:enc:kms:v2:` in etcd; no synced value in plaintext anywhere in etcd.
    let raw = stack.etcd_get("/registry/secrets/default/app").await.unwrap().expect("the Secret is in etcd");
    assert!(raw.starts_with(b"k8s:enc:kms:v2:lab-kms:"), "stored as {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
    for (key, value) in stack.etcd_list("/registry/").await.unwrap() {
        assert!(!contains(&value, "pw-v1-first") && !contains(&value, "tok-v1-first"), "a synced value is in plaintext in etcd at {key}");
    }

    // 3. A new remote version reaches the Secret within the polling interval (the figure: delay / interval).
    let mut delays = Vec::new();
    for round in 2..=5 {
        // Put at a random point of the controller's polling phase (right after a sync the
        // controller re-reads once because its own write changed the Secret), so the delays
        // sample the whole interval.
        tokio::time::sleep(INTERVAL.mul_f64(rand::random::<f64>())).await;
        let value = format!("pw-v{round}");
        store.put_secret_value("db", &db_value(&value)).await.unwrap();
        // Within the polling interval, with slack for a shared machine: a controller that stopped
        // polling would miss this bound.
        let delay = lab::wait_for_secret(&client, NS, "app", "password", INTERVAL * 5, |v| v == Some(value.as_bytes()))
            .await
            .expect("the new version arrives within the polling interval");
        delays.push(delay);
    }
    eprintln!(
        "figure: sync delay after a put, polling interval {INTERVAL:?}: {:?} (delay/interval: {:?})",
        delays,
        delays.iter().map(|d| format!("{:.2}", d.as_secs_f64() / INTERVAL.as_secs_f64())).collect::<Vec<_>>()
    );

    // 4. A store outage keeps the Secret and says so; it heals by itself.
    kms.set_faults(FaultProfile { outage: Some(OutageFault::default()), ..Default::default() }).unwrap();
    let status =
        lab::wait_for_ready(&client, NS, "app", false, Some(Reason::StoreUnavailable), WAIT).await.expect("the outage is reported");
    assert!(status.ready().unwrap().message.contains("the Secret keeps its last value"), "{status:?}");
    lab::wait_for_secret(&client, NS, "app", "password", Duration::ZERO, |v| v == Some(&b"pw-v5"[..])).await.expect("the Secret is kept");
    kms.clear_faults();
    lab::wait_for_ready(&client, NS, "app", true, Some(Reason::Synced), WAIT).await.expect("the sync heals by itself");

    // 5. A denied GetSecretValue overwrites nothing, is reported and audited; granting it again heals.
    kms.set_policy(SYNC, AccessPolicy::allow([Action::Decrypt], [format!("key/{KEY}")])).unwrap();
    store.put_secret_value("db", &db_value("pw-v6-after-deny")).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "app", false, Some(Reason::AccessDenied), WAIT).await.expect("the denial is reported");
    assert!(status.ready().unwrap().message.contains("kms:GetSecretValue"), "{status:?}");
    lab::wait_for_secret(&client, NS, "app", "password", Duration::ZERO, |v| v == Some(&b"pw-v5"[..])).await.expect("nothing overwritten");
    let denied = kms.audit().query(&AuditQuery {
        action: Some(Action::GetSecretValue),
        outcome: Some(Outcome::Refused(ErrorCode::Forbidden)),
        ..Default::default()
    });
    assert!(denied.iter().any(|r| r.access_key.as_deref() == Some(SYNC) && r.secret_name.as_deref() == Some("db")), "{denied:?}");
    kms.set_policy(SYNC, reader_policy()).unwrap();
    lab::wait_for_secret(&client, NS, "app", "password", WAIT, |v| v == Some(&b"pw-v6-after-deny"[..]))
        .await
        .expect("granted again, it heals");

    // 6. A deleted remote secret is reported, not blanked.
    store.delete_secret("token", None).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "app", false, Some(Reason::RemoteSecretDeleted), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.starts_with("spec.data[1].key"), "{status:?}");
    lab::wait_for_secret(&client, NS, "app", "token", Duration::ZERO, |v| v == Some(&b"tok-v1-first"[..])).await.expect("not blanked");

    // 7. The schema refuses at admission what ack-secret-manager's refuses (and our additions'
    // bad values), naming the field.
    let malformed = serde_json::json!({
        "apiVersion": "alibabacloud.com/v1alpha1", "kind": "ExternalSecret", "metadata": { "name": "malformed" },
        "spec": { "data": [{ "name": "password", "jmesPath": [{ "path": "password" }] }], "deletionPolicy": "Keep" }
    });
    let refused = Api::<ExternalSecret>::namespaced(client.clone(), NS)
        .patch("malformed", &kube::api::PatchParams::apply("test"), &kube::api::Patch::Apply(&malformed))
        .await
        .expect_err("a malformed ExternalSecret is refused");
    let refused = refused.to_string();
    for field in ["spec.data[0].key", "spec.data[0].jmesPath[0].objectAlias", "spec.deletionPolicy"] {
        assert!(refused.contains(field), "{field} is not named in: {refused}");
    }
    // What the schema cannot catch names the field; no Secret is made.
    let bad = lab::external_secret("bad", vec![by_path(lab::entry("password", "db", &kms_store), "nope")]);
    lab::apply_external_secret(&client, NS, &bad).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "bad", false, Some(Reason::PropertyNotFound), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.starts_with("spec.data[0].jmesPath[0].path"), "{status:?}");
    let missing_store = lab::external_secret("lost", vec![lab::entry("password", "db", &lab::store_ref(NS, "no-such-store"))]);
    lab::apply_external_secret(&client, NS, &missing_store).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "lost", false, Some(Reason::StoreNotFound), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.starts_with("spec.data[0].secretStoreRef"), "{status:?}");
    assert!(Api::<Secret>::namespaced(client.clone(), NS).get_opt("bad").await.unwrap().is_none());
    // A synced ExternalSecret changed to a bad regular expression or a JMESPath that selects
    // nothing keeps its last good Secret, says why, and a Warning Event is published.
    let mut split = lab::external_secret("split", vec![]);
    split.spec.data_process = vec![DataProcess {
        extract: Some(DataSource { key: "db".into(), secret_store_ref: Some(kms_store.clone()), ..Default::default() }),
        replace_rule: vec![ReplaceRule { source: "^pass(.*)$".into(), target: "secret$1".into() }],
    }];
    lab::apply_external_secret(&client, NS, &split).await.unwrap();
    lab::wait_for_secret(&client, NS, "split", "secretword", WAIT, |v| v.is_some()).await.expect("dataProcess splits the JSON value");
    split.spec.data_process[0].replace_rule[0].source = "^pass(.*$".into();
    lab::apply_external_secret(&client, NS, &split).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "split", false, Some(Reason::InvalidSpec), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.starts_with("spec.dataProcess[0].replaceRule[0].source"), "{status:?}");
    split.spec.data_process.clear();
    split.spec.data = vec![by_path(lab::entry("user", "db", &kms_store), "nosuch.path")];
    lab::apply_external_secret(&client, NS, &split).await.unwrap();
    lab::wait_for_ready(&client, NS, "split", false, Some(Reason::PropertyNotFound), WAIT).await.unwrap();
    lab::wait_for_secret(&client, NS, "split", "secretword", Duration::ZERO, |v| v.is_some()).await.expect("the last good Secret stays");

    // Nothing secret in the status or the events; failures have Warning events.
    let statuses =
        serde_json::to_string(&Api::<ExternalSecret>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap()).unwrap();
    let events = Api::<Event>::namespaced(client.clone(), NS).list(&ListParams::default()).await.unwrap();
    let events_text = serde_json::to_string(&events).unwrap();
    for value in ["pw-v1-first", "pw-v5", "pw-v6-after-deny", "tok-v1-first", admin_secret, sync_secret] {
        assert!(!statuses.contains(value) && !events_text.contains(value), "`{value}` leaked into a status or an event");
    }
    for reason in ["StoreUnavailable", "AccessDenied", "RemoteSecretDeleted", "PropertyNotFound", "InvalidSpec"] {
        assert!(
            events.items.iter().any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some(reason)),
            "no Warning event {reason}"
        );
    }

    // `spec.type` is the Secret's type.
    let mut typed = lab::external_secret("typed", vec![lab::entry("token", "db", &kms_store)]);
    typed.spec.type_ = Some("alibabacloud.com/synced".into());
    lab::apply_external_secret(&client, NS, &typed).await.unwrap();
    lab::wait_for_secret(&client, NS, "typed", "token", WAIT, |v| v.is_some()).await.expect("synced");
    let secret_type = Api::<Secret>::namespaced(client.clone(), NS).get("typed").await.unwrap().type_;
    assert_eq!(secret_type.as_deref(), Some("alibabacloud.com/synced"));

    // A store in another namespace serves this one only if it allows it; then the controller
    // needs leave to read that namespace's credential Secret, and the status says so.
    let other = "other-team";
    Api::<Namespace>::all(client.clone())
        .create(
            &Default::default(),
            &Namespace { metadata: kube::api::ObjectMeta { name: Some(other.into()), ..Default::default() }, ..Default::default() },
        )
        .await
        .unwrap();
    lab::create_store(&client, other, "shared", &StoreCredential::new(SYNC, sync_secret)).await.unwrap();
    let cross = lab::external_secret("cross", vec![lab::entry("token", "token", &lab::store_ref(other, "shared"))]);
    lab::apply_external_secret(&client, NS, &cross).await.unwrap();
    let status = lab::wait_for_ready(&client, NS, "cross", false, Some(Reason::StoreNotAllowed), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.contains(ALLOW_NAMESPACES), "{status:?}");
    let allow = serde_json::json!({ "metadata": { "annotations": { ALLOW_NAMESPACES: NS } } });
    Api::<SecretStore>::namespaced(client.clone(), other)
        .patch("shared", &Default::default(), &kube::api::Patch::Merge(&allow))
        .await
        .unwrap();
    // A change of the store does not trigger the ExternalSecret: the next retry (a poll) sees it.
    let status = lab::wait_for_ready(&client, NS, "cross", false, Some(Reason::StoreMisconfigured), WAIT).await.unwrap();
    assert!(status.ready().unwrap().message.contains("may not read Secrets in namespace `other-team`"), "{status:?}");

    // 8. Deleting an ExternalSecret deletes its Secret; with Retain the Secret stays, released.
    let mut kept = lab::external_secret("kept", vec![by_path(lab::entry("password", "db", &kms_store), "password")]);
    kept.spec.deletion_policy = Some(DeletionPolicy::Retain);
    lab::apply_external_secret(&client, NS, &kept).await.unwrap();
    lab::wait_for_secret(&client, NS, "kept", "password", WAIT, |v| v.is_some()).await.unwrap();
    let external = Api::<ExternalSecret>::namespaced(client.clone(), NS);
    for name in ["app", "kept", "bad", "lost", "typed", "cross", "split"] {
        external.delete(name, &DeleteParams::default()).await.unwrap();
    }
    lab::wait_for_secret(&client, NS, "app", "password", WAIT, |v| v.is_none()).await.expect("deleted with its ExternalSecret");
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let released = async {
        let started = std::time::Instant::now();
        loop {
            let gone = external.get_opt("kept").await.unwrap().is_none();
            let secret = secrets.get_opt("kept").await.unwrap();
            if gone {
                return secret;
            }
            assert!(started.elapsed() < WAIT, "ExternalSecret `kept` was not finalized within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let retained = released.await.expect("the Retain Secret stays");
    assert!(retained.metadata.owner_references.unwrap_or_default().is_empty(), "the retained Secret is released");

    // 9. Metrics count the store calls by outcome.
    let metrics = controller.metrics.encode();
    for line in
        [r#"kms_secret_sync_store_calls_total{action="GetSecretValue",outcome="Ok"}"#, r#"outcome="Denied""#, r#"outcome="Unavailable""#]
    {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }

    controller.stop().await;

    // 10. --disable-polling: read at start and on changes only; a restart picks up a new version.
    let frozen_config = ControllerConfig { disable_polling: true, ..config_for_test(&kms.url()) };
    let token = lab::service_account_token(&client, NS, rbac::NAME).await.unwrap();
    let frozen =
        lab::RunningController::start(lab::client_with_token(&stack.kubeconfig_path(0), &token).await.unwrap(), frozen_config.clone())
            .await;
    let mark = kms.audit().last_seq();
    let reads =
        || kms.audit().query(&AuditQuery { action: Some(Action::GetSecretValue), since_seq: Some(mark), ..Default::default() }).len();
    let still = lab::external_secret("frozen", vec![by_path(lab::entry("password", "db", &kms_store), "password")]);
    lab::apply_external_secret(&client, NS, &still).await.unwrap();
    lab::wait_for_secret(&client, NS, "frozen", "password", WAIT, |v| v == Some(&b"pw-v6-after-deny"[..])).await.unwrap();
    // One read: the sync. The reconcile its own Secret write triggers is recognised as the echo
    // of that sync (same generation, the data it wrote) and reads nothing.
    assert_eq!(reads(), 1, "the sync reads once per entry");
    store.put_secret_value("db", &db_value("pw-v7-unpolled")).await.unwrap();
    // An observation window of three polling intervals: a polling controller would have read by now.
    tokio::time::sleep(INTERVAL * 3).await;
    assert_eq!(reads(), 1, "with polling disabled (or on the echo of its own write) the store was read again");
    lab::wait_for_secret(&client, NS, "frozen", "password", Duration::ZERO, |v| v == Some(&b"pw-v6-after-deny"[..]))
        .await
        .expect("the old value stays");
    frozen.stop().await;
    let token = lab::service_account_token(&client, NS, rbac::NAME).await.unwrap();
    let restarted =
        lab::RunningController::start(lab::client_with_token(&stack.kubeconfig_path(0), &token).await.unwrap(), frozen_config).await;
    lab::wait_for_secret(&client, NS, "frozen", "password", WAIT, |v| v == Some(&b"pw-v7-unpolled"[..]))
        .await
        .expect("a restart picks up the new version");
    restarted.stop().await;

    // 11. The store rate limit holds over many ExternalSecrets (the figure: store calls per minute).
    let qps = 4;
    let limited_config = ControllerConfig {
        max_concurrent_kms_secret_pulls: std::num::NonZeroU32::new(qps).unwrap(),
        store_burst: std::num::NonZeroU32::MIN,
        ..config_for_test(&kms.url())
    };
    let token = lab::service_account_token(&client, NS, rbac::NAME).await.unwrap();
    let limited =
        lab::RunningController::start(lab::client_with_token(&stack.kubeconfig_path(0), &token).await.unwrap(), limited_config).await;
    let mark = kms.audit().last_seq();
    let many = 12;
    for i in 0..many {
        lab::apply_external_secret(&client, NS, &lab::external_secret(&format!("many-{i}"), vec![lab::entry("token", "db", &kms_store)]))
            .await
            .unwrap();
    }
    for i in 0..many {
        lab::wait_for_secret(&client, NS, &format!("many-{i}"), "token", WAIT, |v| v.is_some()).await.unwrap();
    }
    let calls = kms.audit().query(&AuditQuery { action: Some(Action::GetSecretValue), since_seq: Some(mark), ..Default::default() });
    let span_ms = calls.last().unwrap().time_unix_ms.saturating_sub(calls[0].time_unix_ms).max(1);
    let per_second = (calls.len() - 1) as f64 * 1000.0 / span_ms as f64;
    eprintln!(
        "figure: {} store calls for {many} ExternalSecrets over {span_ms} ms: {:.1}/s, {:.0}/min (limit {qps}/s, polling every {INTERVAL:?})",
        calls.len(),
        per_second,
        per_second * 60.0
    );
    // A bound on a rate, not a time: the limiter may only make it slower.
    assert!(per_second <= f64::from(qps) * 1.25, "{per_second:.1} calls/s over the {qps}/s limit");
    limited.stop().await;

    kms.shutdown().await;
    stack.shutdown(false).await;
}
