//! The real ack-secret-manager beside kms-secret-sync, as it runs in a cluster: its chart's RBAC
//! ([`grant`]), its own ServiceAccount token in a kubeconfig ([`kubeconfig_with_token`]), and
//! what its leader election reads from its Pod ([`leader_pod`], [`in_pod_namespace`]). Nothing
//! of ack-secret-manager is changed; its build is `kms_lab_stack`'s `GoRecipe::ack_secret_manager`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::error::LabError;

/// The name of its ServiceAccount, ClusterRole and binding (its chart's release name here).
pub const NAME: &str = "ack-secret-manager";
/// The field manager of what this module applies.
const MANAGER: &str = "kms-lab";

fn chart_error(path: &Path, problem: impl std::fmt::Display) -> LabError {
    LabError::ThirdParty { path: path.display().to_string(), problem: problem.to_string() }
}

/// The rules of the ClusterRole in its chart (`charts/ack-secret-manager/templates/rbac.yaml` of
/// `source`, its first document; the Helm expressions are only in names and labels).
pub fn chart_rules(source: &Path) -> Result<Vec<PolicyRule>, LabError> {
    let path = source.join("charts/ack-secret-manager/templates/rbac.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| chart_error(&path, e))?;
    let first = text.split("\n---").next().unwrap_or_default();
    let rules = first.find("\nrules:").map(|at| &first[at..]).ok_or_else(|| chart_error(&path, "no `rules:` in its first document"))?;
    #[derive(serde::Deserialize)]
    struct Rules {
        rules: Vec<PolicyRule>,
    }
    serde_yaml::from_str::<Rules>(rules).map(|r| r.rules).map_err(|e| chart_error(&path, e))
}

/// Its ServiceAccount in `namespace`, bound to its chart's ClusterRole (from `source`); a token of it.
pub async fn grant(client: &Client, source: &Path, namespace: &str) -> Result<String, LabError> {
    let meta = |ns: Option<&str>| ObjectMeta { name: Some(NAME.into()), namespace: ns.map(Into::into), ..Default::default() };
    let apply = PatchParams::apply(MANAGER).force();
    let account = ServiceAccount { metadata: meta(Some(namespace)), ..Default::default() };
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .patch(NAME, &apply, &Patch::Apply(&account))
        .await
        .map_err(LabError::kube(format!("apply ServiceAccount `{namespace}/{NAME}`")))?;
    let role = ClusterRole { metadata: meta(None), rules: Some(chart_rules(source)?), ..Default::default() };
    Api::<ClusterRole>::all(client.clone())
        .patch(NAME, &apply, &Patch::Apply(&role))
        .await
        .map_err(LabError::kube("apply its ClusterRole"))?;
    let binding = ClusterRoleBinding {
        metadata: meta(None),
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "ClusterRole".into(), name: NAME.into() },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: NAME.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(NAME, &apply, &Patch::Apply(&binding))
        .await
        .map_err(LabError::kube("apply its ClusterRoleBinding"))?;
    crate::lab::service_account_token(client, namespace, NAME).await
}

/// `admin` (a kubeconfig authenticating with a token) with `token` instead, written to `out`
/// (mode 0600).
pub fn kubeconfig_with_token(admin: &Path, token: &str, out: &Path) -> Result<(), LabError> {
    let bad = |problem: String| LabError::Kubeconfig { path: admin.display().to_string(), problem };
    let text = std::fs::read_to_string(admin).map_err(|e| bad(e.to_string()))?;
    if !text.lines().any(|l| l.trim_start().starts_with("token: ")) {
        return Err(bad("no `token:` to replace: the admin kubeconfig must authenticate with a token".into()));
    }
    let replaced: Vec<String> =
        text.lines().map(|l| if l.trim_start().starts_with("token: ") { format!("    token: {token}") } else { l.to_owned() }).collect();
    // It holds a token: readable by its owner only, as the admin kubeconfig is.
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(out)?;
        file.write_all(replaced.join("\n").as_bytes())
    };
    write().map_err(|e| LabError::Kubeconfig { path: out.display().to_string(), problem: e.to_string() })
}

/// A Pod object in `namespace` for its leader election (operator-lib's leader-for-life needs
/// `POD_NAME` to name a Pod of its namespace, which owns its lock ConfigMap); never scheduled:
/// the lab has no kubelet. Its name, for `POD_NAME`.
pub async fn leader_pod(client: &Client, namespace: &str) -> Result<String, LabError> {
    let name = format!("{NAME}-0");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": namespace },
        "spec": { "serviceAccountName": NAME, "containers": [{ "name": "manager", "image": "ack-secret-manager:lab" }] }
    }))
    .map_err(|e| LabError::ThirdParty { path: "Pod".into(), problem: e.to_string() })?;
    Api::<Pod>::namespaced(client.clone(), namespace)
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&pod))
        .await
        .map_err(LabError::kube(format!("apply Pod `{namespace}/{name}`")))?;
    Ok(name)
}

/// `binary args` run as in a Pod of `namespace`: in a private mount namespace whose `/var/run`
/// is a fresh tmpfs holding `secrets/kubernetes.io/serviceaccount/namespace` (operator-lib reads
/// the namespace there, and its leader election ends the process without it, although its
/// documentation says it is skipped outside a cluster). Nothing on the host changes. Needs
/// `unshare` (util-linux) and the right to mount (root). The program and its arguments.
pub fn in_pod_namespace(binary: &Path, namespace: &str, args: Vec<String>) -> (PathBuf, Vec<String>) {
    let script = format!(
        "mount -t tmpfs kms-lab /var/run && mkdir -p /var/run/secrets/kubernetes.io/serviceaccount \
         && printf %s '{namespace}' > /var/run/secrets/kubernetes.io/serviceaccount/namespace && exec \"$0\" \"$@\""
    );
    let mut wrapped = vec!["--mount".to_owned(), "--propagation".into(), "private".into(), "--".into(), "sh".into(), "-c".into(), script];
    wrapped.push(binary.display().to_string());
    wrapped.extend(args);
    (PathBuf::from("unshare"), wrapped)
}

/// What its log says once its ExternalSecret controller watches (controller-runtime's line).
pub const STARTED_LINE: &str = "Starting workers";

/// The port it binds for its metrics on every address: controller-runtime's default, which no
/// flag of its moves — so one runs at a time on a host.
pub const METRICS_PORT: u16 = 8080;

/// Waits (bounded) until [`METRICS_PORT`] is free, so that the next one can start; `waiting`
/// is called once if it is not free at once. The error names what to look at.
pub async fn wait_for_metrics_port(deadline: std::time::Duration, waiting: impl FnOnce()) -> Result<(), LabError> {
    let free = || std::net::TcpListener::bind(("0.0.0.0", METRICS_PORT)).is_ok();
    if free() {
        return Ok(());
    }
    waiting();
    let started = std::time::Instant::now();
    while !free() {
        if started.elapsed() > deadline {
            return Err(LabError::Timeout {
                what: format!(
                    "port {METRICS_PORT}, which ack-secret-manager binds for its metrics (no flag moves it), to be free: \
                     see what holds it with `ss -ltnp | grep :{METRICS_PORT}`"
                ),
                waited: deadline,
                last: "still taken".into(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    Ok(())
}

/// The flags it is run with (its own names and meanings, `cmd/manager/main.go`).
#[derive(Debug, Clone)]
pub struct Flags {
    /// `--polling-interval`.
    pub polling_interval: std::time::Duration,
    /// `--disable-polling`.
    pub disable_polling: bool,
    /// `--kms-endpoint`: `host:port` of an Alibaba Cloud KMS API served over HTTPS.
    pub kms_endpoint: String,
    /// `--watch-namespaces`.
    pub watch_namespace: String,
    /// `--reconcile-period`: the base of its retries.
    pub reconcile_period: std::time::Duration,
    /// `--max-concurrent-kms-secret-pulls`: its rate limit of store calls per second (burst 1).
    pub max_concurrent_kms_secret_pulls: Option<std::num::NonZeroU32>,
}

impl Flags {
    /// The command line: these flags, `--region cn-hangzhou` and no worker role (the credential
    /// comes from the SecretStore).
    pub fn args(&self) -> Vec<String> {
        let go = |d: std::time::Duration| format!("{}ms", d.as_millis());
        let mut args = vec![
            format!("--polling-interval={}", go(self.polling_interval)),
            format!("--disable-polling={}", self.disable_polling),
            "--region=cn-hangzhou".to_owned(),
            format!("--kms-endpoint={}", self.kms_endpoint),
            "--enable-worker-role=false".to_owned(),
            format!("--watch-namespaces={}", self.watch_namespace),
            format!("--reconcile-period={}", go(self.reconcile_period)),
        ];
        if let Some(pulls) = self.max_concurrent_kms_secret_pulls {
            args.push(format!("--max-concurrent-kms-secret-pulls={pulls}"));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kubeconfig_carries_the_token_and_only_its_owner_reads_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (admin, out) = (dir.path().join("admin"), dir.path().join("theirs"));
        std::fs::write(&admin, "users:\n- name: admin\n  user:\n    token: admin-token\n").unwrap();
        super::kubeconfig_with_token(&admin, "their-token", &out).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.contains("token: their-token") && !text.contains("admin-token"), "{text}");
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&admin, "users: []\n").unwrap();
        assert!(super::kubeconfig_with_token(&admin, "t", &dir.path().join("none")).is_err(), "no token to replace");
    }

    #[test]
    fn the_wrapper_runs_the_binary_with_its_arguments_after_the_mount() {
        let (program, args) = super::in_pod_namespace(std::path::Path::new("/bin/manager"), "ack", vec!["--a=1".into()]);
        assert_eq!(program, std::path::PathBuf::from("unshare"));
        assert_eq!(&args[..4], ["--mount", "--propagation", "private", "--"]);
        assert!(args[6].contains("printf %s 'ack' > /var/run/secrets/kubernetes.io/serviceaccount/namespace"), "{}", args[6]);
        assert_eq!(&args[7..], ["/bin/manager", "--a=1"]);
    }
}
