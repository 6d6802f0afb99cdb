//! inspect and migrate on the real stack with etcd under mutual TLS, as on a real cluster:
//! Secrets written in plaintext are counted under identity; after the EncryptionConfiguration
//! puts KMS v2 first, a migration interrupted at a checkpoint resumes and ends with 0 objects
//! left under identity, every object under KMS v2, and every value intact through the API.
//! A second test times migrate beside the `kubectl get -o json | kubectl replace -f -` pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kms_lab_ops::inspect::{self, InspectOptions};
use kms_lab_ops::migrate::{self, MigrateOptions};
use kms_lab_ops::{ProviderRef, Resource};
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider};
use kms_lab_stack::stack::{DEFAULT_PROVIDER, EncryptionBuilder};
use kms_lab_stack::{Stack, StackOptions};
use kube::api::{Api, PostParams};

const NAMESPACE: &str = "migrate-test";

/// A stack whose etcd requires client certificates and whose Secrets start in plaintext
/// (identity first; the KMS v2 provider already configured second, so it can take over).
async fn plaintext_stack(name: &str) -> Stack {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let mut options = StackOptions::new(name, binaries, &run_root);
    options.etcd_mtls = true;
    options.encryption_builder = Some(EncryptionBuilder(Arc::new(|socket| {
        let socket = socket("plugin-0").unwrap_or_default();
        EncryptionConfiguration::new(
            &["secrets"],
            vec![Provider::Identity(Default::default()), Provider::Kms(KmsProvider::v2(DEFAULT_PROVIDER, &socket, Duration::from_secs(3)))],
        )
    })));
    Stack::launch(options).await.expect("the stack starts with etcd under mutual TLS")
}

fn value_of(i: usize) -> Vec<u8> {
    format!("value-{i:05}-of-the-migration-test").into_bytes()
}

/// Creates `count` Secrets `s-00000`… in `namespace` (created too), 16 at a time.
async fn create_secrets(client: &kube::Client, namespace_name: &str, count: usize) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace =
        Namespace { metadata: kube::api::ObjectMeta { name: Some(namespace_name.into()), ..Default::default() }, ..Default::default() };
    namespaces.create(&PostParams::default(), &namespace).await.expect("the namespace is created");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace_name);
    futures::stream::iter(0..count)
        .for_each_concurrent(16, |i| {
            let secrets = secrets.clone();
            async move {
                let secret = Secret {
                    metadata: kube::api::ObjectMeta { name: Some(format!("s-{i:05}")), ..Default::default() },
                    data: Some(BTreeMap::from([("v".to_owned(), ByteString(value_of(i)))])),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &secret).await.expect("a Secret is created");
            }
        })
        .await;
}

/// Every Secret of `namespace` reads back through the API with the value it was created with.
async fn assert_values_intact(client: &kube::Client, namespace: &str, count: usize) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let listed = secrets.list(&Default::default()).await.expect("the Secrets list");
    let by_name: BTreeMap<String, Vec<u8>> = listed
        .items
        .into_iter()
        .map(|s| (s.metadata.name.unwrap_or_default(), s.data.unwrap_or_default().remove("v").map(|b| b.0).unwrap_or_default()))
        .collect();
    assert_eq!(by_name.len(), count, "Secrets lost");
    for i in 0..count {
        assert_eq!(by_name.get(&format!("s-{i:05}")), Some(&value_of(i)), "s-{i:05} does not read back with its value");
    }
}

/// Puts KMS v2 first (identity still reads), and waits until the apiserver writes with it.
async fn switch_to_kms_v2(stack: &Stack) {
    stack.write_encryption_config(0, &stack.default_encryption()).expect("the configuration is written");
    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    let started = Instant::now();
    for attempt in 0.. {
        let probe = Secret {
            metadata: kube::api::ObjectMeta { name: Some(format!("probe-{attempt}")), ..Default::default() },
            ..Default::default()
        };
        secrets.create(&PostParams::default(), &probe).await.expect("a probe Secret is created");
        let raw = stack.etcd_get(&format!("/registry/secrets/default/probe-{attempt}")).await.unwrap().unwrap_or_default();
        secrets.delete(&format!("probe-{attempt}"), &Default::default()).await.expect("the probe is deleted");
        if raw.starts_with(b"k8s:enc:kms:v2:") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the apiserver did not reload the configuration (KMS v2 first) within 90 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn secrets_only() -> InspectOptions {
    InspectOptions { resources: vec![Resource::secrets()], ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_migration_resumes_and_leaves_nothing_under_identity_over_mtls_etcd() {
    const COUNT: usize = 300;
    let stack = plaintext_stack("ops-migrate").await;
    let client = stack.kube_client(0).await.unwrap();
    let etcd = stack.etcd_client().unwrap();
    assert!(stack.etcd_url().starts_with("https://"), "etcd runs with TLS");
    // etcd refuses a reader without a client certificate.
    let tls = stack.etcd_tls().unwrap();
    let without_cert = range_with_a_stranger_cert(&stack.etcd_url(), &tls.ca_cert).await;
    assert!(without_cert.is_err(), "etcd answered a client without a certificate");

    create_secrets(&client, NAMESPACE, COUNT).await;
    let identity = ProviderRef::parse("identity").unwrap();
    let kms_v2 = ProviderRef::parse("kms-v2:lab-kms").unwrap();
    let mut pages = 0;
    let before = inspect::inspect(&etcd, &InspectOptions { page_size: 64, ..secrets_only() }, &mut |_, _, _| pages += 1).await.unwrap();
    let secrets = before.resource(&Resource::secrets()).unwrap();
    assert_eq!((secrets.objects, secrets.objects_under(&identity), secrets.plaintext), (COUNT as u64, COUNT as u64, COUNT as u64));
    assert!(pages >= COUNT / 64, "inspect read {pages} page(s) of 64 for {COUNT} keys");

    switch_to_kms_v2(&stack).await;
    let config = stack.encryption_config_text(0).unwrap();
    let config_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config_file.path(), config).unwrap();
    let with_config = secrets_only().with_config_file(config_file.path()).unwrap();
    let planned = inspect::inspect(&etcd, &with_config, &mut |_, _, _| {}).await.unwrap();
    let plan = planned.resource(&Resource::secrets()).unwrap();
    assert_eq!(plan.rewrite.as_ref().map(|p| p.would_change), Some(COUNT as u64));
    assert!(plan.verdicts.iter().any(|v| v.provider == identity && !v.safe_to_drop), "identity is still needed");

    // First run: stopped at a checkpoint a little past half-way.
    let checkpoint_dir = tempfile::tempdir().unwrap();
    let options = MigrateOptions {
        page_size: 50,
        checkpoint: Some(checkpoint_dir.path().join("migrate.json")),
        stop_after: Some(COUNT as u64 / 2),
        ..Default::default()
    };
    let first = migrate::migrate(&client, &options, &mut |_, _, _| {}).await.unwrap();
    assert!(first.stopped_early, "the first run stops at its checkpoint");
    let half = inspect::inspect(&etcd, &secrets_only(), &mut |_, _, _| {}).await.unwrap();
    let half = half.resource(&Resource::secrets()).unwrap();
    assert!(half.objects_under(&identity) > 0 && half.objects_under(&kms_v2) > 0, "half-way: {:?}", half.providers);

    // Second run, same checkpoint: skips what is done, finishes the rest.
    let second = migrate::migrate(&client, &MigrateOptions { stop_after: None, ..options }, &mut |_, _, _| {}).await.unwrap();
    let done = &second.resources[0];
    assert!(!second.stopped_early);
    assert_eq!(done.already_done, first.rewritten(), "the resumed run skips exactly what the first one rewrote");
    assert_eq!(first.rewritten() + second.rewritten(), COUNT as u64);
    assert_eq!(second.failed().count(), 0, "failed: {:?}", second.failed().collect::<Vec<_>>());

    let after = inspect::inspect(&etcd, &with_config, &mut |_, _, _| {}).await.unwrap();
    let after = after.resource(&Resource::secrets()).unwrap();
    assert_eq!((after.objects_under(&identity), after.objects_under(&kms_v2)), (0, COUNT as u64), "{:?}", after.providers);
    assert!(after.verdicts.iter().any(|v| v.provider == identity && v.safe_to_drop), "identity can go now");
    assert!(after.dek_sources >= 1 && after.key_ids.values().sum::<u64>() == COUNT as u64);
    assert_values_intact(&client, NAMESPACE, COUNT).await;
    println!(
        "RESUME {COUNT} Secrets: first run rewrote {} and stopped; the resumed run skipped {} (0 rewritten twice), rewrote {}, 0 failed",
        first.rewritten(),
        done.already_done,
        second.rewritten()
    );
    assert!(stack.shutdown(false).await.is_none());
}

/// An HTTPS range request to etcd presenting no client certificate.
async fn range_with_a_stranger_cert(url: &str, ca: &std::path::Path) -> Result<(), String> {
    let ca_pem = std::fs::read_to_string(ca).unwrap();
    // The same reader, with the CA but a certificate etcd did not sign: a fresh self-signed one.
    let stranger = stranger_identity();
    let tls = kms_lab_stack::etcd_client::EtcdTls { ca_pem, cert_pem: stranger.0, key_pem: stranger.1 };
    let client = kms_lab_stack::etcd_client::EtcdClient::new(&[url.to_owned()], Some(&tls)).map_err(|e| e.to_string())?;
    client.revision().await.map(|_| ()).map_err(|e| e.to_string())
}

/// A client certificate no CA of the stack signed (what a stranger would present).
fn stranger_identity() -> (String, String) {
    let stranger = kms_lab_stack::certs::Pki::generate().unwrap();
    (stranger.etcd_client_cert_pem, stranger.etcd_client_key_pem)
}

/// Throughput of `kms-lab migrate` beside the raw pipeline, on the same stack in one run: each
/// rewrites its own namespace of plaintext Secrets (a second rewrite of already-migrated objects
/// would be cheaper: the apiserver skips writes that change nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_throughput_beside_kubectl_replace() {
    const PIPELINE_NAMESPACE: &str = "kubectl-replace";
    let count: usize = std::env::var("KMS_LAB_MIGRATE_OBJECTS").ok().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let stack = plaintext_stack("ops-throughput").await;
    let client = stack.kube_client(0).await.unwrap();
    create_secrets(&client, NAMESPACE, count).await;
    create_secrets(&client, PIPELINE_NAMESPACE, count).await;
    switch_to_kms_v2(&stack).await;

    let report = migrate::migrate(&client, &MigrateOptions { namespace: Some(NAMESPACE.into()), ..Default::default() }, &mut |_, _, _| {})
        .await
        .unwrap();
    assert_eq!((report.rewritten(), report.failed().count()), (count as u64, 0));

    let kubectl = stack.binaries().kubectl.path.clone();
    let kubeconfig = stack.kubeconfig_path(0);
    let started = Instant::now();
    let pipeline = format!(
        "'{k}' --kubeconfig '{c}' get secrets -n {PIPELINE_NAMESPACE} -o json | '{k}' --kubeconfig '{c}' replace -f - >/dev/null",
        k = kubectl.display(),
        c = kubeconfig.display()
    );
    let status = tokio::process::Command::new("sh").args(["-c", &pipeline]).status().await.expect("sh runs");
    let pipeline_seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "the kubectl pipeline failed: {status}");

    let after = inspect::inspect(&stack.etcd_client().unwrap(), &secrets_only(), &mut |_, _, _| {}).await.unwrap();
    let secrets = after.resource(&Resource::secrets()).unwrap();
    assert_eq!(secrets.objects_under(&ProviderRef::parse("identity").unwrap()), 0, "{:?}", secrets.providers);
    assert_eq!(secrets.objects_under(&ProviderRef::parse("kms-v2:lab-kms").unwrap()), 2 * count as u64);
    assert_values_intact(&client, NAMESPACE, count).await;
    assert_values_intact(&client, PIPELINE_NAMESPACE, count).await;
    println!(
        "THROUGHPUT {count} Secrets each: kms-lab migrate {:.1} objects/s ({:.1} s, {} conflict(s), {} throttled); kubectl get|replace {:.1} objects/s ({:.1} s)",
        report.objects_per_second,
        report.seconds,
        report.resources[0].conflicts,
        report.resources[0].throttled,
        count as f64 / pipeline_seconds,
        pipeline_seconds
    );
    assert!(stack.shutdown(false).await.is_none());
}
