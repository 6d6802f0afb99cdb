//! The secrets manager of the native API (in the style of Alibaba Cloud KMS's secrets manager):
//! named secrets with versions and version stages, their values sealed under a KMS key.
//!
//! | Action | Request | Answer |
//! |---|---|---|
//! | `CreateSecret` | [`CreateSecretRequest`] | [`SecretVersionResponse`] |
//! | `PutSecretValue` | [`PutSecretValueRequest`] | [`SecretVersionResponse`] |
//! | `GetSecretValue` | [`GetSecretValueRequest`] | [`GetSecretValueResponse`] |
//! | `ListSecrets` | — | [`ListSecretsResponse`] |
//! | `DescribeSecret` | [`SecretRequest`] | [`DescribeSecretResponse`] |
//! | `UpdateSecretVersionStage` | [`UpdateSecretVersionStageRequest`] | [`DescribeSecretResponse`] |
//! | `RotateSecret` | [`RotateSecretRequest`] | [`SecretVersionResponse`] |
//! | `DeleteSecret` | [`DeleteSecretRequest`] | [`DeleteSecretResponse`] |
//! | `RestoreSecret` | [`SecretRequest`] | [`DescribeSecretResponse`] |
//!
//! Errors reuse the API's resource-generic codes: a missing secret, or one scheduled for deletion,
//! is 404 `KeyNotFound`, an existing one 409 `KeyAlreadyExists`, a call an access policy does not
//! allow 403 `Forbidden`; the message names the secret and the fix.

use serde::{Deserialize, Serialize};

/// The stage every new version gets: the value `GetSecretValue` answers when no stage or version is named.
pub const STAGE_CURRENT: &str = "ACSCurrent";
/// The stage the version that was current before the last put or rotation has.
pub const STAGE_PREVIOUS: &str = "ACSPrevious";
/// The most bytes a secret value may have.
pub const MAX_SECRET_VALUE: usize = 30 * 1024;
/// The fewest days `DeleteSecret` keeps a secret restorable.
pub const MIN_RECOVERY_DAYS: u32 = 7;
/// The most days `DeleteSecret` keeps a secret restorable (and the default).
pub const MAX_RECOVERY_DAYS: u32 = 30;

/// A version stage: [`STAGE_CURRENT`], [`STAGE_PREVIOUS`], or a label of the caller's.
///
/// Serialized as its name. A custom label may not start with `ACS` (reserved for the two built-in
/// stages), so a misspelt `ACSCurent` is refused instead of naming a stage no version has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum VersionStage {
    /// `ACSCurrent`.
    Current,
    /// `ACSPrevious`.
    Previous,
    /// A label of the caller's.
    Custom(String),
}

impl VersionStage {
    /// The stage's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Current => STAGE_CURRENT,
            Self::Previous => STAGE_PREVIOUS,
            Self::Custom(label) => label,
        }
    }
}

impl std::fmt::Display for VersionStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for VersionStage {
    type Err = String;

    /// Parses a stage name; `ACS…` names other than the two built-in stages are refused.
    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            STAGE_CURRENT => Ok(Self::Current),
            STAGE_PREVIOUS => Ok(Self::Previous),
            reserved if reserved.starts_with("ACS") => Err(format!(
                "version stage `{}` is reserved: the stages starting with ACS are {STAGE_CURRENT} and {STAGE_PREVIOUS}",
                reserved.escape_debug()
            )),
            label if label.is_empty() || label.len() > 64 || label.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err("a version stage is 1 to 64 characters without spaces".to_owned())
            }
            label => Ok(Self::Custom(label.to_owned())),
        }
    }
}

impl TryFrom<String> for VersionStage {
    type Error = String;

    fn try_from(name: String) -> Result<Self, String> {
        name.parse()
    }
}

impl From<VersionStage> for String {
    fn from(stage: VersionStage) -> String {
        stage.name().to_owned()
    }
}

/// `CreateSecret` request: a new secret with its first version (stage `ACSCurrent`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CreateSecretRequest {
    /// The secret's name: 1 to 192 of `A-Z a-z 0-9 _ . / -`.
    pub secret_name: String,
    /// The first value (text, at most [`MAX_SECRET_VALUE`] bytes). Never logged.
    pub secret_data: String,
    /// The KMS key every version's value is sealed under (a key of `ListKeys`).
    pub encryption_key_id: String,
    /// The first version's id (a random UUID when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// A description for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// `PutSecretValue` request: a new version, by default made current.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PutSecretValueRequest {
    /// The secret.
    pub secret_name: String,
    /// The new value. Never logged.
    pub secret_data: String,
    /// The new version's id (a random UUID when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The stages the new version gets (`[ACSCurrent]` when empty); giving it `ACSCurrent`
    /// moves `ACSPrevious` to the version that was current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub version_stages: Vec<VersionStage>,
}

/// `RotateSecret` request: a new current version with the given value, or a generated one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct RotateSecretRequest {
    /// The secret.
    pub secret_name: String,
    /// The new value (a random 32-character password when absent). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_data: Option<String>,
}

/// `GetSecretValue` request: by version id, by stage, or (neither) the current version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GetSecretValueRequest {
    /// The secret.
    pub secret_name: String,
    /// The version to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The stage to read (`ACSCurrent` when neither this nor a version id is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_stage: Option<VersionStage>,
}

/// A request naming one secret (`DescribeSecret`, `RestoreSecret`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SecretRequest {
    /// The secret.
    pub secret_name: String,
}

/// `UpdateSecretVersionStage` request: moves a stage to a version, or removes it from one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct UpdateSecretVersionStageRequest {
    /// The secret.
    pub secret_name: String,
    /// The stage to move.
    pub version_stage: VersionStage,
    /// The version that gets the stage (moving `ACSCurrent` moves `ACSPrevious` to the old current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_to_version: Option<String>,
    /// The version that loses the stage (a custom stage only; `ACSCurrent` can only be moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_from_version: Option<String>,
}

/// `DeleteSecret` request: schedules deletion after a recovery window (restorable until then),
/// or deletes at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DeleteSecretRequest {
    /// The secret.
    pub secret_name: String,
    /// Days until the secret is gone, [`MIN_RECOVERY_DAYS`] to [`MAX_RECOVERY_DAYS`] (the most when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_in_days: Option<u32>,
    /// Delete at once, without a recovery window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_delete_without_recovery: bool,
}

/// One version of a secret, in [`SecretMetadata`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretVersion {
    /// The version's id.
    pub version_id: String,
    /// Its stages.
    pub version_stages: Vec<VersionStage>,
    /// When it was made, RFC 3339.
    pub create_time: String,
}

/// What `DescribeSecret` and `ListSecrets` tell of a secret (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretMetadata {
    /// The secret's name.
    pub secret_name: String,
    /// The KMS key its values are sealed under.
    pub encryption_key_id: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
    /// When it was created, RFC 3339.
    pub create_time: String,
    /// When it is deleted for good, RFC 3339; present while it is scheduled for deletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_delete_time: Option<String>,
    /// Every version, oldest first.
    pub versions: Vec<SecretVersion>,
}

/// `CreateSecret`, `PutSecretValue`, `RotateSecret` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SecretVersionResponse {
    /// The secret.
    pub secret_name: String,
    /// The version made.
    pub version_id: String,
    /// Its stages.
    pub version_stages: Vec<VersionStage>,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `GetSecretValue` response. `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetSecretValueResponse {
    /// The secret.
    pub secret_name: String,
    /// The version read.
    pub version_id: String,
    /// Its stages.
    pub version_stages: Vec<VersionStage>,
    /// The value.
    pub secret_data: String,
    /// When the version was made, RFC 3339.
    pub create_time: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `ListSecrets` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListSecretsResponse {
    /// Every secret (those scheduled for deletion included), by name.
    pub secret_list: Vec<SecretMetadata>,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `DescribeSecret`, `UpdateSecretVersionStage`, `RestoreSecret` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeSecretResponse {
    /// The secret after the call.
    pub secret: SecretMetadata,
    /// The request's id in the audit log.
    pub request_id: String,
}

/// `DeleteSecret` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteSecretResponse {
    /// The secret.
    pub secret_name: String,
    /// When it is gone for good, RFC 3339 (now, for a forced delete).
    pub planned_delete_time: String,
    /// The request's id in the audit log.
    pub request_id: String,
}

macro_rules! redacted_debug {
    ($type:ty, $($field:ident),*) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($type))$(.field(stringify!($field), &self.$field))*.finish_non_exhaustive()
            }
        }
    };
}

redacted_debug!(CreateSecretRequest, secret_name, encryption_key_id, version_id);
redacted_debug!(PutSecretValueRequest, secret_name, version_id, version_stages);
redacted_debug!(RotateSecretRequest, secret_name);
redacted_debug!(GetSecretValueResponse, secret_name, version_id, version_stages, request_id);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_parse_and_refuse_reserved_names() {
        assert_eq!("ACSCurrent".parse::<VersionStage>(), Ok(VersionStage::Current));
        assert_eq!("blue".parse::<VersionStage>(), Ok(VersionStage::Custom("blue".into())));
        let typo = "ACSCurent".parse::<VersionStage>().unwrap_err();
        assert!(typo.contains("ACSCurrent and ACSPrevious"), "{typo}");
        assert!(serde_json::from_str::<VersionStage>("\"ACSPrevius\"").is_err());
        assert_eq!(serde_json::to_string(&VersionStage::Previous).unwrap(), "\"ACSPrevious\"");
    }

    #[test]
    fn values_stay_out_of_debug() {
        let put = PutSecretValueRequest { secret_name: "db".into(), secret_data: "hunter2".into(), ..Default::default() };
        let got = GetSecretValueResponse {
            secret_name: "db".into(),
            version_id: "v".into(),
            version_stages: vec![VersionStage::Current],
            secret_data: "hunter2".into(),
            create_time: String::new(),
            request_id: "r".into(),
        };
        assert!(!format!("{put:?}{got:?}").contains("hunter2"));
        assert!(serde_json::to_string(&put).unwrap().contains("\"SecretData\":\"hunter2\""));
    }
}
