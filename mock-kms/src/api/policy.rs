//! Access policies as typed values: an allow-list per access key ([`AccessPolicy`] of
//! [`PolicyStatement`]s naming [`PolicyAction`]s on resource patterns), what
//! `PUT /admin/policies/{access_key}` takes and [`Policies`] what `GET /admin/policies` answers.
//! Server-free, like the rest of [`crate::api`]: checking calls against them is the server's
//! `policy` module.

use serde::{Deserialize, Serialize};

use super::Action;

/// An action as a policy names it: `kms:<Action>` (e.g. `kms:GetSecretValue`), or `kms:*` for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PolicyAction {
    /// `kms:*`: every action.
    All,
    /// `kms:<Action>`.
    Action(Action),
}

impl PolicyAction {
    /// Whether this entry allows `action`.
    pub fn allows(self, action: Action) -> bool {
        match self {
            Self::All => true,
            Self::Action(allowed) => allowed == action,
        }
    }
}

impl std::fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("kms:*"),
            Self::Action(action) => write!(f, "kms:{action}"),
        }
    }
}

impl std::str::FromStr for PolicyAction {
    type Err = String;

    /// Parses `kms:*` or `kms:<Action>`; the error lists every valid name.
    fn from_str(name: &str) -> Result<Self, String> {
        let unknown = || {
            let known: Vec<String> = std::iter::once("kms:*".to_owned()).chain(Action::ALL.iter().map(|a| format!("kms:{a}"))).collect();
            format!("unknown policy action `{}` (known: {})", name.escape_debug(), known.join(", "))
        };
        match name.strip_prefix("kms:") {
            Some("*") => Ok(Self::All),
            Some(action) => Action::from_name(action).map(Self::Action).ok_or_else(unknown),
            None => Err(unknown()),
        }
    }
}

impl TryFrom<String> for PolicyAction {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        name.parse()
    }
}

impl From<PolicyAction> for String {
    fn from(action: PolicyAction) -> String {
        action.to_string()
    }
}

/// The resource a call acts on, as policies match it: `key/<KeyId>`, `secret/<SecretName>`, or
/// `key/*` and `secret/*` for the list actions.
pub fn resource_kind(action: Action) -> &'static str {
    if action.is_secret_action() { "secret" } else { "key" }
}

/// Whether resource pattern `pattern` (`*` matches any run of characters) matches `resource`.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == resource;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !resource.starts_with(first) || resource.len() < first.len() + last.len() || !resource.ends_with(last) {
        return false;
    }
    let mut rest = &resource[first.len()..resource.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// One allow statement: the actions it allows on the resources it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PolicyStatement {
    /// The actions allowed (`kms:GetSecretValue`, `kms:Decrypt`, `kms:*`).
    pub actions: Vec<PolicyAction>,
    /// The resources, as patterns: `secret/db-*`, `key/lab-key`, `*`.
    pub resources: Vec<String>,
}

/// An access key's policy: an allow-list. A call is allowed when a statement allows its action
/// on its resource; an access key without a policy may call everything (the lab default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccessPolicy {
    /// The allow statements.
    pub statements: Vec<PolicyStatement>,
}

impl AccessPolicy {
    /// A policy of one statement: `actions` on `resources`.
    pub fn allow(actions: impl IntoIterator<Item = Action>, resources: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            statements: vec![PolicyStatement {
                actions: actions.into_iter().map(PolicyAction::Action).collect(),
                resources: resources.into_iter().map(Into::into).collect(),
            }],
        }
    }

    /// Whether the policy allows `action` on `resource`.
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        self.statements
            .iter()
            .any(|s| s.actions.iter().any(|a| a.allows(action)) && s.resources.iter().any(|p| resource_matches(p, resource)))
    }

    /// Checks each resource pattern: `*`, or `key/…` / `secret/…`.
    pub fn validate(&self) -> Result<(), String> {
        for (index, statement) in self.statements.iter().enumerate() {
            for resource in &statement.resources {
                if resource != "*" && !resource.starts_with("key/") && !resource.starts_with("secret/") {
                    return Err(format!(
                        "Statements[{index}].Resources: `{}` is not a resource pattern: use `*`, `key/<KeyId>` or `secret/<SecretName>` (`*` matches any characters)",
                        resource.escape_debug()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `GET /admin/policies` answer (and of `PUT`, `DELETE /admin/policies/{access_key}`): every
/// access key's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policies {
    /// The policies by access key.
    pub policies: std::collections::BTreeMap<String, AccessPolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_typed_and_match_resource_patterns() {
        let policy: AccessPolicy = serde_json::from_str(
            r#"{"Statements":[{"Actions":["kms:GetSecretValue","kms:Decrypt"],"Resources":["secret/db-*","key/lab-key"]}]}"#,
        )
        .unwrap();
        assert!(policy.allows(Action::GetSecretValue, "secret/db-main"));
        assert!(policy.allows(Action::Decrypt, "key/lab-key"));
        assert!(!policy.allows(Action::GetSecretValue, "secret/web"));
        assert!(!policy.allows(Action::PutSecretValue, "secret/db-main"));
        let typo = serde_json::from_str::<AccessPolicy>(r#"{"Statements":[{"Actions":["kms:GetSecretVal"],"Resources":["*"]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("unknown policy action `kms:GetSecretVal`") && typo.contains("kms:GetSecretValue"), "{typo}");
        assert!(AccessPolicy::allow([Action::Encrypt], ["lab-key"]).validate().unwrap_err().contains("key/<KeyId>"));
        for (pattern, resource, expected) in
            [("*", "key/k", true), ("secret/a*c", "secret/abc", true), ("secret/a*c", "secret/ab", false), ("a*b*c", "aXbYc", true)]
        {
            assert_eq!(resource_matches(pattern, resource), expected, "{pattern} {resource}");
        }
    }
}
