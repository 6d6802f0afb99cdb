//! The least privilege the controller runs with: a ServiceAccount, a Role in the namespace it
//! watches (exactly the verbs it uses) and a ClusterRole to read SecretStores of other namespaces
//! (used only where a store allows it: [`crate::crd::ALLOW_NAMESPACES`]), with their bindings. `kms-secret-sync rbac --namespace NS` prints them; [`crate::lab::grant_controller`]
//! applies them.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

/// The ServiceAccount's (and roles') name.
pub const NAME: &str = "kms-secret-sync";

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..Default::default()
    }
}

/// What the controller may do in its namespace, and why each verb is there.
pub fn role_rules() -> Vec<PolicyRule> {
    vec![
        // Watch ExternalSecrets; add and remove the finalizer (a JSON patch).
        rule(crate::crd::GROUP, &["externalsecrets"], &["get", "list", "watch", "patch"]),
        // Write the status (a merge patch of the status subresource).
        rule(crate::crd::GROUP, &["externalsecrets/status"], &["patch"]),
        // Owner references with blockOwnerDeletion (needed where OwnerReferencesPermissionEnforcement is on).
        rule(crate::crd::GROUP, &["externalsecrets/finalizers"], &["update"]),
        // Read the stores.
        rule(crate::crd::GROUP, &["secretstores"], &["get"]),
        // Read credential Secrets, watch and write the synced Secrets (server-side apply), delete them with their ExternalSecret.
        rule("", &["secrets"], &["get", "list", "watch", "create", "patch", "delete"]),
        // Events on the ExternalSecrets (kube's recorder creates, then patches a series).
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// The ServiceAccount, Role and RoleBinding in `namespace`, and the ClusterRole and
/// ClusterRoleBinding to read SecretStores anywhere (named `kms-secret-sync-<namespace>`).
pub fn objects(namespace: &str) -> (ServiceAccount, Role, RoleBinding, ClusterRole, ClusterRoleBinding) {
    let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some([(crate::controller::MANAGED_BY.0.to_owned(), crate::controller::MANAGED_BY.1.to_owned())].into()),
        ..Default::default()
    };
    let subject = Subject { kind: "ServiceAccount".into(), name: NAME.into(), namespace: Some(namespace.into()), ..Default::default() };
    let cluster_name = format!("{NAME}-{namespace}");
    let account = ServiceAccount { metadata: meta(NAME, Some(namespace)), ..Default::default() };
    let role = Role { metadata: meta(NAME, Some(namespace)), rules: Some(role_rules()) };
    let binding = RoleBinding {
        metadata: meta(NAME, Some(namespace)),
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "Role".into(), name: NAME.into() },
        subjects: Some(vec![subject.clone()]),
    };
    let cluster_role = ClusterRole {
        metadata: meta(&cluster_name, None),
        rules: Some(vec![rule(crate::crd::GROUP, &["secretstores"], &["get"])]),
        ..Default::default()
    };
    let cluster_binding = ClusterRoleBinding {
        metadata: meta(&cluster_name, None),
        role_ref: RoleRef { api_group: Some("rbac.authorization.k8s.io".into()), kind: "ClusterRole".into(), name: cluster_name.clone() },
        subjects: Some(vec![subject]),
    };
    (account, role, binding, cluster_role, cluster_binding)
}

/// The objects of [`objects`] as one multi-document YAML.
pub fn yaml(namespace: &str) -> Result<String, serde_yaml::Error> {
    let (account, role, binding, cluster_role, cluster_binding) = objects(namespace);
    let mut out = String::new();
    for doc in [
        serde_yaml::to_string(&account)?,
        serde_yaml::to_string(&role)?,
        serde_yaml::to_string(&binding)?,
        serde_yaml::to_string(&cluster_role)?,
        serde_yaml::to_string(&cluster_binding)?,
    ] {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}
