//! A resource as EncryptionConfiguration names it (`secrets`, `configmaps`, `PLURAL.GROUP`):
//! where its objects live in etcd and how the API serves them.

use std::fmt;

use crate::error::OpsError;

/// API groups whose objects kube-apiserver stores under `/registry/<plural>/` (no group segment).
const BUILT_IN_GROUPS: [&str; 14] = [
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "certificates.k8s.io",
    "admissionregistration.k8s.io",
    "flowcontrol.apiserver.k8s.io",
];

/// One resource, e.g. `secrets` (core) or `widgets.example.com`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Resource {
    /// The plural name, e.g. `secrets`.
    pub plural: String,
    /// The API group (empty: core).
    pub group: String,
}

impl Resource {
    /// Secrets, the resource encryption is first turned on for.
    pub fn secrets() -> Self {
        Self { plural: "secrets".into(), group: String::new() }
    }

    /// ConfigMaps.
    pub fn configmaps() -> Self {
        Self { plural: "configmaps".into(), group: String::new() }
    }

    /// Parses `plural` or `plural.group`. Wildcards (`*.*`, `*.apps`) name no single resource: `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() || text.contains('*') {
            return None;
        }
        let (plural, group) = text.split_once('.').unwrap_or((text, ""));
        Some(Self { plural: plural.to_owned(), group: group.to_owned() })
    }

    /// The etcd key prefix of its objects (kube-apiserver's default `/registry` root), ending in `/`.
    pub fn etcd_prefix(&self) -> String {
        if self.group.is_empty() || BUILT_IN_GROUPS.contains(&self.group.as_str()) {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }

    /// How the API serves it: the core resources directly, others by discovery.
    pub async fn api_resource(&self, client: &kube::Client) -> Result<kube::api::ApiResource, OpsError> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        if self.group.is_empty() && self.plural == "secrets" {
            return Ok(kube::api::ApiResource::erase::<Secret>(&()));
        }
        if self.group.is_empty() && self.plural == "configmaps" {
            return Ok(kube::api::ApiResource::erase::<ConfigMap>(&()));
        }
        let discovery = kube::Discovery::new(client.clone())
            .run()
            .await
            .map_err(|source| OpsError::Api { what: format!("discover the API serving `{self}`"), source })?;
        discovery
            .groups()
            .filter(|group| group.name() == self.group)
            .flat_map(|group| group.recommended_resources())
            .find(|(resource, _)| resource.plural == self.plural)
            .map(|(resource, _)| resource)
            .ok_or_else(|| OpsError::UnknownResource(self.to_string()))
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() { f.write_str(&self.plural) } else { write!(f, "{}.{}", self.plural, self.group) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_prefixes_follow_the_apiserver_layout() {
        assert_eq!(Resource::parse("secrets").unwrap().etcd_prefix(), "/registry/secrets/");
        assert_eq!(Resource::parse("deployments.apps").unwrap().etcd_prefix(), "/registry/deployments/");
        assert_eq!(Resource::parse("widgets.example.com").unwrap().etcd_prefix(), "/registry/example.com/widgets/");
        assert_eq!(Resource::parse("*.*"), None);
    }
}
