//! `kms-lab enable`'s files, followed as its runbook says, on the lab's real kube-apiserver and
//! etcd: the generated EncryptionConfiguration passes `kms-lab lint`; the plugin runs with exactly
//! the command of the generated static pod and the generated config (credentials added where the
//! runbook says); the apiserver gets exactly the generated flags; a Secret written through it
//! reads back and is stored `k8s:enc:kms:v2:<provider>:` in etcd.
//!
//! The host paths of a kubeadm node (`/var/run/kmsplugin`, `/etc/kubernetes/kms`, …) are moved
//! under a temp directory through `EnableOptions`; nothing else is changed.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_ops::enable::{self, EnableOptions, KmsPluginSettings};
use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::encryption::{Empty, EncryptionConfiguration, Provider};
use kms_lab_stack::own::OwnBinary;
use kms_lab_stack::process::Supervised;
use kms_lab_stack::{Stack, StackOptions};
use kube::api::{Api, PostParams};
use mock_kms::{Credential, MockKms};

const KEY: &str = "enable-key";
const ACCESS_KEY: &str = "enable-access-key";
const SECRET_KEY: &str = "enable-secret-key-for-the-test";

fn private_copy(from: &Path, to: &Path, edit: impl FnOnce(String) -> String) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let text = edit(std::fs::read_to_string(from).unwrap());
    kms_lab_stack::fsutil::write_private(to, text.as_bytes()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_files_enable_kms_v2_on_the_real_apiserver() {
    let host = tempfile::tempdir().unwrap();
    let options = EnableOptions {
        socket_dir: host.path().join("var/run/kmsplugin"),
        config_dir: host.path().join("etc/kubernetes/kms"),
        plugin_config_dir: host.path().join("etc/kubernetes/kms-plugin"),
        ..EnableOptions::default()
    };
    let kms =
        MockKms::builder().key(KEY).credential(Credential::new(ACCESS_KEY, SECRET_KEY)).seed(9).start().await.expect("the mock KMS starts");
    let endpoint = kms.url().trim_start_matches("http://").to_owned();
    let settings = KmsPluginSettings {
        image: "localhost/kms-plugin:lab".into(),
        kms_endpoint: endpoint,
        kms_key_id: KEY.into(),
        kms_schema: "http".into(),
    };
    let plugin = enable::kms_plugin(&settings, &options);
    let out = host.path().join("generated");
    enable::write(&out, &enable::generate(&plugin, &options).unwrap()).unwrap();

    // Before any node: lint the configuration.
    let text = std::fs::read_to_string(out.join("encryption-config.yaml")).unwrap();
    let report = kms_lab_lint::lint_str(&text, "encryption-config.yaml", &Default::default()).unwrap();
    assert_eq!(report.worst(), None, "{}", report.render_text());

    // Node 1, steps 1–2: the configuration and the plugin's config (credentials added) in place.
    private_copy(&out.join("encryption-config.yaml"), &options.config_dir.join("encryption-config.yaml"), |t| t);
    private_copy(&out.join("kms-plugin.json"), &options.plugin_config_dir.join("kms-plugin.json"), |text| {
        let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
        config["AccessKey"] = ACCESS_KEY.into();
        config["SecretKey"] = SECRET_KEY.into();
        config.to_string()
    });
    std::fs::create_dir_all(&options.socket_dir).unwrap();
    // The kubelet would run the static pod's command; here it runs as a process.
    let pod: k8s_openapi::api::core::v1::Pod =
        serde_yaml::from_str(&std::fs::read_to_string(out.join("manifests/kms-plugin.yaml")).unwrap()).unwrap();
    let command = pod.spec.unwrap().containers[0].command.clone().unwrap();
    assert_eq!(command[0], "kms-plugin");
    let socket = options.socket_dir.join(&plugin.socket_file);
    let mut process =
        Supervised::spawn("kms-plugin", &OwnBinary::KmsPlugin.locate().unwrap(), &command[1..], &host.path().join("kms-plugin.log"), &[])
            .unwrap();
    process
        .wait_ready(&format!("the plugin's socket {}", socket.display()), Duration::from_secs(30), || {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.is_ok() }
        })
        .await
        .unwrap_or_else(|e| panic!("the plugin from the generated static pod starts: {e}"));

    // Step 4: the apiserver with exactly the generated flags (they come last, so they are the
    // ones in force over the stack's own `--encryption-provider-config`).
    let flags: Vec<String> = std::fs::read_to_string(out.join("kube-apiserver-flags.txt")).unwrap().lines().map(str::to_owned).collect();
    let binaries =
        tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default())).await.unwrap().expect("provisioned");
    let run_root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let mut stack_options = StackOptions::new("enable-in-the-lab", binaries, &run_root);
    stack_options.plugins = Vec::new();
    stack_options.encryption = Some(EncryptionConfiguration::new(&["secrets"], vec![Provider::Identity(Empty {})]));
    stack_options.apiserver_args = flags;
    let stack = Stack::launch(stack_options).await.unwrap_or_else(|e| panic!("the apiserver starts with the generated flags: {e}"));

    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("enabled".into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".to_owned(), ByteString(b"enabled-by-the-runbook".to_vec()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("the Secret is created");
    assert_eq!(secrets.get("enabled").await.unwrap().data.unwrap()["password"].0, b"enabled-by-the-runbook");
    let raw = stack.etcd_get("/registry/secrets/default/enabled").await.unwrap().expect("the Secret is in etcd");
    let prefix = format!("k8s:enc:kms:v2:{}:", options.provider_name);
    assert!(raw.starts_with(prefix.as_bytes()), "stored as {:?}", String::from_utf8_lossy(&raw[..raw.len().min(40)]));
    stack.shutdown(false).await;
    process.kill().await;
}
