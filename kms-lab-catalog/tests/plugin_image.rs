//! A manifest's `image:` (a plugin author's released image) in the container runtime: the plugin
//! runs from that image, not from one made of the manifest's binary, and a Secret written through
//! the real apiserver is stored `k8s:enc:kms:v2:`; an image missing from the local store is
//! refused with the fix. Needs dockerd (`.ci/run` starts it).
//!
//! The "released image" is the Go peer's, built offline by the stack's image builder and tagged
//! under another name; the manifest's `build:` names a different binary (a copy of `true`), so
//! the plugin can only have served from the image.

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kms_lab_catalog::{ManifestPlugin, catalog};
use kms_lab_provision::{GoSubject, ProvisionOptions, locate_go_subject};
use kms_lab_stack::{Runtime, Stack, StackOptions};
use kube::api::{Api, PostParams};

const RELEASED: &str = "localhost/kms-lab-test/released-plugin:1.0";

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("the docker CLI runs (apt-get install docker.io)");
    assert!(output.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn manifest(dir: &std::path::Path, image: &str) -> kms_lab_catalog::Manifest {
    // The binary `build:` names is not the plugin: only the image can serve the socket.
    std::fs::copy("/bin/true", dir.join("not-the-plugin")).unwrap();
    let path = dir.join("released.yaml");
    std::fs::write(
        &path,
        format!(
            "name: released\ndescription: a released plugin image\nbuild: {{path: not-the-plugin}}\nimage: {image}\ncommand: ['--socket', '{{socket}}']\napis: [v2]\nrotation: none\nreadiness: {{within: 60s}}\n"
        ),
    )
    .unwrap();
    catalog::resolve(path.to_str().unwrap()).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifests_image_runs_the_plugin_in_the_container_runtime() {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    let go_peer = tokio::task::spawn_blocking(|| locate_go_subject(GoSubject::GoPeer, &ProvisionOptions::default()))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let docker_client = kms_lab_stack::container::docker().await.unwrap_or_else(|e| panic!("{e}"));
    let built = kms_lab_stack::images::ensure(&docker_client, &go_peer, "image-test").await.unwrap_or_else(|e| panic!("{e}"));
    docker(&["tag", &built.to_string(), RELEASED]);

    let dir = tempfile::tempdir().unwrap();
    let plugin = ManifestPlugin::prepare(manifest(dir.path(), RELEASED), false).unwrap_or_else(|e| panic!("{e}"));
    let run_root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let mut options = StackOptions::new("plugin-image-test", binaries.clone(), &run_root);
    options.runtime = Runtime::Container;
    options.plugins = vec![plugin.spec("plugin-0")];
    let stack = Stack::launch(options).await.unwrap_or_else(|e| panic!("the stack starts with the released image: {e}"));

    let owner = std::process::id().to_string();
    let images = docker(&[
        "ps",
        "--filter",
        &format!("label={}=plugin-0", kms_lab_stack::container::COMPONENT_LABEL),
        "--filter",
        &format!("label={}={owner}", kms_lab_stack::container::OWNER_LABEL),
        "--format",
        "{{.Image}}",
    ]);
    assert_eq!(images, RELEASED, "plugin-0 runs from the manifest's image");

    let secrets: Api<Secret> = Api::namespaced(stack.kube_client(0).await.unwrap(), "default");
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some("from-image".into()), ..Default::default() },
        data: Some(BTreeMap::from([("password".to_owned(), ByteString(b"released-image-value".to_vec()))])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await.expect("the Secret is created");
    assert_eq!(secrets.get("from-image").await.unwrap().data.unwrap()["password"].0, b"released-image-value");
    let raw = stack.etcd_get("/registry/secrets/default/from-image").await.unwrap().expect("the Secret is in etcd");
    assert!(raw.starts_with(b"k8s:enc:kms:v2:"), "stored as {:?}", String::from_utf8_lossy(&raw[..raw.len().min(30)]));
    stack.shutdown(false).await;

    // An image that is not in the local store is refused before anything waits on it.
    let missing = "localhost/kms-lab-test/never-built:0.0";
    let dir = tempfile::tempdir().unwrap();
    let plugin = ManifestPlugin::prepare(manifest(dir.path(), missing), false).unwrap_or_else(|e| panic!("{e}"));
    let mut options = StackOptions::new("plugin-image-missing", binaries, &run_root);
    options.runtime = Runtime::Container;
    options.plugins = vec![plugin.spec("plugin-0")];
    let error = match Stack::launch(options).await {
        Ok(stack) => {
            stack.shutdown(false).await;
            panic!("a missing image must be refused");
        }
        Err(error) => error.to_string(),
    };
    assert!(error.contains(missing) && error.contains("docker load"), "{error}");
    docker(&["rmi", RELEASED]);
}
