//! `kms-lab recover --unsafe-delete` as a step: the objects a lost KEK left undecryptable,
//! found through the plugin, deleted with upstream's unsafe delete (or refused, or a dry run).

use serde::Deserialize;

use super::{Scope, StepFuture, StepKind};
use crate::error::StepError;
use crate::model::{Kind, default_plugin};
use crate::world::{ObjectRef, World};

/// What the apiserver must answer to the unsafe deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoverExpect {
    /// Every undecryptable object is deleted (and forgotten by the scenario).
    Deleted,
    /// A dry run (`dryRun: [All]`): every delete would go through, nothing is deleted.
    WouldDelete,
    /// Every delete is refused (403: the user lacks the RBAC verb); nothing is deleted.
    Refused,
}

/// A user the deletes are made as (impersonated), with the verbs granted to it on the kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsUser {
    /// The user name.
    pub user: String,
    /// RBAC verbs granted on the kind by a ClusterRole bound to the user (e.g. `[delete]`, or
    /// `[delete, unsafe-delete-ignore-read-errors]`).
    pub verbs: Vec<String>,
}

/// `recover: {undecryptable, expect, kind, plugin, apiserver, as}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// How many objects must fail to decrypt through the plugin (each must be one the scenario wrote).
    pub undecryptable: usize,
    /// What the apiserver answers.
    pub expect: RecoverExpect,
    /// Secret or configmap.
    #[serde(default)]
    pub kind: Kind,
    /// The plugin to open values with (default `plugin-0`).
    #[serde(default = "default_plugin")]
    pub plugin: String,
    /// The apiserver to call.
    #[serde(default)]
    pub apiserver: usize,
    /// Make the deletes as this user (default: the admin, `system:masters`).
    #[serde(default, rename = "as")]
    pub as_user: Option<AsUser>,
}

impl StepKind for Recover {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.plugin(&self.plugin)?;
        scope.apiserver(self.apiserver)?;
        if let Some(as_user) = &self.as_user {
            if as_user.user.is_empty() || !as_user.user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
                return Err(format!("`as.user` `{}`: use letters, digits, `-` and `.` (it names a ClusterRole)", as_user.user));
            }
            if as_user.verbs.is_empty() {
                return Err("`as.verbs` is empty: give the RBAC verbs the user holds, e.g. [delete]".into());
            }
        }
        Ok(())
    }

    fn label(&self) -> String {
        let who = self.as_user.as_ref().map(|a| format!(" as `{}` ({})", a.user, a.verbs.join(", "))).unwrap_or_default();
        let what = match self.expect {
            RecoverExpect::Deleted => "deleted",
            RecoverExpect::WouldDelete => "a dry run",
            RecoverExpect::Refused => "refused",
        };
        format!(
            "kms-lab recover --unsafe-delete{who}: {} {} that {} cannot decrypt, {what}",
            self.undecryptable,
            self.kind.resource(),
            self.plugin
        )
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            use kms_lab_ops::recover::{UnsafeDeleteOptions, check_decryption, unsafe_delete};
            let endpoint = world
                .stack
                .plugin_endpoint(&self.plugin)
                .ok_or_else(|| StepError::Failed(format!("the stack runs no plugin `{}`", self.plugin)))?;
            let plugin = kms_wire::PluginClient::connect(&endpoint, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| StepError::Failed(format!("cannot reach {} at {endpoint}: {e}", self.plugin)))?;
            let keys = kms_wire::decode::KeyRing { plugin: Some(plugin), static_keys: Vec::new() };
            let etcd = world.stack.etcd_client()?;
            let resource = self.kind.ops_resource();
            let check = check_decryption(&etcd, &resource, &keys, None, 500).await.map_err(|e| StepError::Failed(e.to_string()))?;
            let names: Vec<String> = check.undecryptable.iter().map(|u| u.object.to_string()).collect();
            if check.undecryptable.len() != self.undecryptable {
                return Err(StepError::Failed(format!(
                    "{} of {} {} cannot be decrypted through {}, expected {}: {}",
                    check.undecryptable.len(),
                    check.checked,
                    self.kind.resource(),
                    self.plugin,
                    self.undecryptable,
                    names.join(", ")
                )));
            }
            let refs: Vec<ObjectRef> = check
                .undecryptable
                .iter()
                .map(|u| ObjectRef {
                    kind: self.kind,
                    namespace: u.object.namespace.clone().unwrap_or_default(),
                    name: u.object.name.clone(),
                })
                .collect();
            if let Some(stranger) = refs.iter().find(|r| !world.objects.contains_key(r)) {
                return Err(StepError::Failed(format!(
                    "{}/{} cannot be decrypted but the scenario never wrote it",
                    stranger.namespace, stranger.name
                )));
            }
            // Figures describe the recovery itself; a later check that finds nothing leaves them.
            if !check.undecryptable.is_empty() {
                world.figure("recover.undecryptable", check.undecryptable.len() as f64);
                world.figure("recover.decryptable", check.decryptable as f64);
            }

            let admin = world.stack.kube_client(self.apiserver).await?;
            if let Some(as_user) = &self.as_user {
                grant(&admin, self.kind.resource(), as_user).await?;
            }
            let objects: Vec<_> = check.undecryptable.iter().map(|u| u.object.clone()).collect();
            let options = UnsafeDeleteOptions {
                dry_run: self.expect == RecoverExpect::WouldDelete,
                as_user: self.as_user.as_ref().map(|a| a.user.clone()),
            };
            let report = unsafe_delete(&admin, &objects, &options).await.map_err(|e| StepError::Failed(format!("kms-lab recover: {e}")))?;
            let first_other = |wanted: fn(&kms_lab_ops::recover::DeleteOutcome) -> bool| {
                report.results.iter().find(|r| !wanted(&r.outcome)).map(|r| format!("{}: {:?}", r.object, r.outcome))
            };
            use kms_lab_ops::recover::DeleteOutcome as O;
            let unexpected = match self.expect {
                RecoverExpect::Deleted => first_other(|o| matches!(o, O::Deleted)),
                RecoverExpect::WouldDelete => first_other(|o| matches!(o, O::WouldDelete)),
                RecoverExpect::Refused => first_other(
                    |o| matches!(o, O::Refused(m) if m.contains(kms_lab_ops::recover::UNSAFE_DELETE_VERB) || m.contains("forbidden")),
                ),
            };
            if let Some(unexpected) = unexpected {
                return Err(StepError::Failed(format!("expected every unsafe delete {:?}, got {unexpected}", self.expect)));
            }
            if self.expect == RecoverExpect::Deleted && !refs.is_empty() {
                for r in &refs {
                    world.objects.remove(r);
                }
                world.figure("recover.deleted", report.deleted() as f64);
                world.figure("recover.delete_s", (report.seconds * 100.0).round() / 100.0);
            }
            let outcome = match self.expect {
                RecoverExpect::Deleted => format!("{} deleted in {:.2} s", report.deleted(), report.seconds),
                RecoverExpect::WouldDelete => format!("{} would be deleted (dry run)", report.deleted()),
                RecoverExpect::Refused => format!("{} refused (403)", report.refused()),
            };
            Ok(format!(
                "{} of {} {} undecryptable ({}); {outcome}",
                check.undecryptable.len(),
                check.checked,
                self.kind.resource(),
                names.join(", ")
            ))
        })
    }
}

/// A ClusterRole `kms-lab-recover-<user>` with `verbs` on `resource`, bound to the user.
async fn grant(admin: &kube::Client, resource: &str, as_user: &AsUser) -> Result<(), StepError> {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use kube::api::{Api, Patch, PatchParams};
    let name = format!("kms-lab-recover-{}", as_user.user);
    let role: ClusterRole = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": [resource], "verbs": as_user.verbs}],
    }))
    .map_err(|e| StepError::Failed(format!("ClusterRole {name}: {e}")))?;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": as_user.user}],
    }))
    .map_err(|e| StepError::Failed(format!("ClusterRoleBinding {name}: {e}")))?;
    let params = PatchParams::apply("kms-lab").force();
    Api::<ClusterRole>::all(admin.clone())
        .patch(&name, &params, &Patch::Apply(&role))
        .await
        .map_err(|e| StepError::Failed(format!("apply ClusterRole {name}: {e}")))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch(&name, &params, &Patch::Apply(&binding))
        .await
        .map_err(|e| StepError::Failed(format!("apply ClusterRoleBinding {name}: {e}")))?;
    // The authorizer sees RBAC objects through an informer: wait (bounded) until it allows every
    // granted verb, so what the deletes meet is the grant, not its propagation.
    let reviews = Api::<SubjectAccessReview>::all(admin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for verb in &as_user.verbs {
        let review: SubjectAccessReview = serde_json::from_value(serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": as_user.user, "resourceAttributes": {"verb": verb, "resource": resource, "namespace": "default"}},
        }))
        .map_err(|e| StepError::Failed(format!("SubjectAccessReview: {e}")))?;
        loop {
            let answer = reviews
                .create(&Default::default(), &review)
                .await
                .map_err(|e| StepError::Failed(format!("SubjectAccessReview for `{verb}`: {e}")))?;
            if answer.status.is_some_and(|s| s.allowed) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(StepError::Failed(format!(
                    "the apiserver's authorizer did not allow `{verb}` on {resource} to `{}` within 20 s of the grant",
                    as_user.user
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
