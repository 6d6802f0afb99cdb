//! Issue 14: on a shared machine no other local user may read the lab's credentials. A real
//! stack's work directory (serving key, service-account key, token file, EncryptionConfiguration)
//! and run directory (admin kubeconfig, logs) are 0700, and every file in them 0600.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use kms_lab_provision::ProvisionOptions;
use kms_lab_stack::{Stack, StackOptions};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every entry under `dir` that group or others can reach: (path, mode).
fn reachable_by_others(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    if mode(dir) & 0o077 != 0 {
        found.push((dir.display().to_string(), mode(dir)));
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        // etcd and the mock KMS manage their own data directories, inside the private work dir.
        // Component logs are checked too: the supervisor opens them 0600 (`fsutil::append_private`).
        if meta.is_dir() || meta.file_type().is_socket() {
            continue;
        }
        if mode(&path) & 0o077 != 0 {
            found.push((path.display().to_string(), mode(&path)));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_their_directories_are_private() {
    let binaries = tokio::task::spawn_blocking(|| kms_lab_provision::provision(&ProvisionOptions::default()))
        .await
        .unwrap()
        .expect("kube-apiserver and etcd are provisioned");
    let run_root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kms-lab-runs");
    let stack = Stack::launch(StackOptions::new("file-modes-test", binaries, &run_root)).await.expect("the stack starts");
    let work = stack.plugin_socket("plugin-0").and_then(Path::parent).expect("the plugin's socket is in the work directory").to_owned();
    let kubeconfig = stack.kubeconfig_path(0);
    let mut exposed = reachable_by_others(&work);
    exposed.extend(reachable_by_others(stack.run_dir()));
    for name in ["apiserver.key", "sa.key", "tokens.csv", "apiserver-0-encryption.yaml"] {
        assert!(work.join(name).is_file(), "{name} is not in the work directory {}", work.display());
    }
    assert!(kubeconfig.is_file());
    stack.shutdown(false).await;
    assert!(exposed.is_empty(), "readable by other users (path, mode): {exposed:?}");
}
