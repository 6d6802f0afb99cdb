//! Access policies per access key ([`AccessPolicy`], set through `/admin/policies`): an
//! allow-list of actions on resources, checked on every native-API call after authentication.
//! An access key without a policy may call everything (the lab default); a refused call answers
//! 403 `Forbidden` naming the access key, action and resource, and is audited like any call.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::api::Action;
use crate::api::policy::{AccessPolicy, Policies};
use crate::error::KmsError;

/// The policies of one process (shared by its nodes, like the credentials).
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: RwLock<BTreeMap<String, AccessPolicy>>,
}

impl PolicySet {
    /// Sets (replaces) the policy of `access_key`; refuses a malformed resource pattern.
    pub fn set(&self, access_key: &str, policy: AccessPolicy) -> Result<(), String> {
        policy.validate()?;
        self.policies.write().unwrap_or_else(|p| p.into_inner()).insert(access_key.to_owned(), policy);
        Ok(())
    }

    /// Removes the policy of `access_key` (it may call everything again).
    pub fn remove(&self, access_key: &str) {
        self.policies.write().unwrap_or_else(|p| p.into_inner()).remove(access_key);
    }

    /// Every policy, by access key.
    pub fn all(&self) -> Policies {
        Policies { policies: self.policies.read().unwrap_or_else(|p| p.into_inner()).clone() }
    }

    /// Whether `access_key` may call `action` on `resource`.
    pub fn check(&self, access_key: &str, action: Action, resource: &str) -> Result<(), KmsError> {
        let policies = self.policies.read().unwrap_or_else(|p| p.into_inner());
        match policies.get(access_key) {
            Some(policy) if !policy.allows(action, resource) => Err(KmsError::AccessDenied {
                access_key: access_key.to_owned(),
                action: action.name().to_owned(),
                resource: resource.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// The resource a native-API call acts on: `key/<KeyId>` (Decrypt: the blob's key),
/// `secret/<SecretName>`, or `key/*` / `secret/*` for the list actions.
pub fn resource(action: Action, key_id: Option<&str>, secret_name: Option<&str>) -> String {
    let kind = crate::api::policy::resource_kind(action);
    let name = if action.is_secret_action() { secret_name } else { key_id };
    match (action, name) {
        (Action::ListKeys | Action::ListSecrets, _) | (_, None) => format!("{kind}/*"),
        (_, Some(name)) => format!("{kind}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_policy_allows_everything_and_a_policy_is_an_allow_list() {
        let set = PolicySet::default();
        set.check("AK", Action::PutSecretValue, "secret/db").unwrap();
        set.set("AK", AccessPolicy::allow([Action::GetSecretValue, Action::Decrypt], ["secret/db", "key/*"])).unwrap();
        set.check("AK", Action::GetSecretValue, "secret/db").unwrap();
        set.check("AK", Action::Decrypt, "key/lab-key").unwrap();
        let denied = set.check("AK", Action::GetSecretValue, "secret/other").unwrap_err();
        assert_eq!(denied.code(), crate::api::ErrorCode::Forbidden);
        assert!(denied.to_string().contains("kms:GetSecretValue on `secret/other`"), "{denied}");
        set.check("other-AK", Action::PutSecretValue, "secret/db").unwrap();
        set.remove("AK");
        set.check("AK", Action::PutSecretValue, "secret/db").unwrap();
        assert_eq!(resource(Action::ListSecrets, None, None), "secret/*");
        assert_eq!(resource(Action::Decrypt, Some("k"), None), "key/k");
    }
}
