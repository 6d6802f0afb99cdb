//! kube-controller-manager beside the stack, running only what StorageVersionMigration
//! (`storagemigration.k8s.io`, KEP-4192) needs: the `storage-version-migrator-controller` and the
//! `garbage-collector-controller` it waits on. A host process with its log in the run directory,
//! talking to apiserver-0 with the admin kubeconfig, no serving port, no leader election.

use std::path::Path;
use std::time::Duration;

use crate::error::StackError;
use crate::process::Supervised;
use kms_lab_provision::KubeMinor;

/// How long kube-controller-manager may take until its garbage collector has synced.
pub const READY_DEADLINE: Duration = Duration::from_secs(90);
/// The line kube-controller-manager logs (at `--v=2`) once the garbage collector's informers
/// have synced: from then on the migrator controller can run migrations.
pub const READY_LINE: &str = "synced garbage collector";
/// The first minor where `StorageVersionMigrator` is GA and on by default (API
/// `storagemigration.k8s.io/v1`); from v1.35 it is beta and off (API `v1beta1`).
pub const SVM_ON_BY_DEFAULT: KubeMinor = KubeMinor(1, 37);

/// The kube-apiserver flags that turn StorageVersionMigration on at `version` (`v1.36.3`):
/// none from v1.37; on v1.35–v1.36 the feature gate and the v1beta1 API.
pub fn apiserver_flags(version: &str) -> Vec<String> {
    match KubeMinor::parse(version) {
        Some(minor) if minor < SVM_ON_BY_DEFAULT => vec![
            "--feature-gates=StorageVersionMigrator=true".to_owned(),
            "--runtime-config=storagemigration.k8s.io/v1beta1=true".to_owned(),
        ],
        _ => Vec::new(),
    }
}

/// kube-controller-manager's flags against `kubeconfig` at `version`.
pub fn args(kubeconfig: &Path, version: &str) -> Vec<String> {
    let kubeconfig = kubeconfig.display();
    let mut args = vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        "--controllers=garbage-collector-controller,storage-version-migrator-controller".to_owned(),
        "--leader-elect=false".to_owned(),
        "--use-service-account-credentials=false".to_owned(),
        // No serving port: nothing scrapes it, and readiness is the garbage collector's sync.
        "--secure-port=0".to_owned(),
        "--v=2".to_owned(),
    ];
    if KubeMinor::parse(version).is_some_and(|minor| minor < SVM_ON_BY_DEFAULT) {
        args.push("--feature-gates=StorageVersionMigrator=true".to_owned());
    }
    args
}

/// A running kube-controller-manager and the apiserver port it was started against (an
/// apiserver restarted on another port needs a new one).
#[derive(Debug)]
pub struct ControllerManager {
    /// The process.
    pub process: Supervised,
    /// The port of the apiserver it talks to.
    pub apiserver_port: u16,
}

impl ControllerManager {
    /// Starts `binary` (version `version`) against `kubeconfig` (apiserver port `apiserver_port`)
    /// and waits until its log says the garbage collector synced ([`READY_LINE`]).
    pub async fn start(binary: &Path, version: &str, kubeconfig: &Path, apiserver_port: u16, log: &Path) -> Result<Self, StackError> {
        // The log is appended to across restarts: only what this process writes counts.
        let offset = std::fs::metadata(log).map_or(0, |m| m.len()) as usize;
        let mut process = Supervised::spawn("kube-controller-manager", binary, &args(kubeconfig, version), log, &[])?;
        let log = log.to_owned();
        process
            .wait_ready(&format!("its log ({}) to say \"{READY_LINE}\"", log.display()), READY_DEADLINE, || {
                let log = log.clone();
                async move { std::fs::read(&log).is_ok_and(|bytes| logged_since(&bytes, offset, READY_LINE)) }
            })
            .await?;
        Ok(Self { process, apiserver_port })
    }
}

/// Whether `log` holds `line` after its first `offset` bytes.
fn logged_since(log: &[u8], offset: usize, line: &str) -> bool {
    log.get(offset..).is_some_and(|new| String::from_utf8_lossy(new).contains(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reads_only_what_this_start_logged() {
        let earlier = format!("I1207 garbagecollector.go:253] \"{READY_LINE}\"\n");
        let log = format!("{earlier}I1207 controllermanager.go:204] \"Starting\"\n");
        assert!(!logged_since(log.as_bytes(), earlier.len(), READY_LINE));
        assert!(logged_since(format!("{log}{earlier}").as_bytes(), earlier.len(), READY_LINE));
        assert!(logged_since(log.as_bytes(), 0, READY_LINE));
        assert!(!logged_since(b"short", 100, READY_LINE));
    }

    #[test]
    fn older_minors_get_the_gate_and_the_beta_api() {
        assert!(apiserver_flags("v1.37.2").is_empty());
        assert_eq!(
            apiserver_flags("v1.36.3"),
            ["--feature-gates=StorageVersionMigrator=true", "--runtime-config=storagemigration.k8s.io/v1beta1=true"]
        );
        let kcm = args(Path::new("/run/kubeconfig-0"), "v1.35.4");
        assert!(kcm.contains(&"--feature-gates=StorageVersionMigrator=true".to_owned()), "{kcm:?}");
        assert!(kcm.contains(&"--kubeconfig=/run/kubeconfig-0".to_owned()), "{kcm:?}");
        assert!(!args(Path::new("/k"), "v1.37.2").iter().any(|a| a.starts_with("--feature-gates")));
    }
}
