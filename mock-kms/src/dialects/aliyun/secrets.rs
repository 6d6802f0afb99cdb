//! The secrets manager of the Alibaba Cloud KMS dialect (RPC API `2016-01-20`): GetSecretValue,
//! CreateSecret, PutSecretValue, UpdateSecretVersionStage, DescribeSecret, ListSecrets,
//! DeleteSecret and RestoreSecret, with the request parameters and answer fields of
//! `github.com/alibabacloud-go/kms-20160120/v3` v3.2.3 (`GetSecretValueRequest`,
//! `GetSecretValueResponseBody`, …; the SDK sends every parameter in the query string).
//!
//! Each operation is the native secrets manager's action ([`crate::secrets::execute`], the
//! native [`Action`] of the same name), reached through the dialect's [`Call`] like the key
//! operations: seal, faults, the signature, the access policy of the calling access key (the
//! resource is `secret/<SecretName>`, `secret/*` for ListSecrets; reading a value also needs
//! `kms:Decrypt` on the secret's key, writing one `kms:Encrypt`), audit (with `secret_name`) and
//! replication of every change.
//!
//! What the mock does not serve is refused with `InvalidParameter` naming it, never ignored:
//! binary values (`SecretDataType=binary`), secret types other than `Generic`, `DryRun=true`,
//! ListSecrets `Filters`, and a CreateSecret without `EncryptionKeyId` (Alibaba would create a
//! service key; the mock seals every value under a key of its own store). `FetchExtendedConfig`
//! is accepted and, as on Alibaba for generic secrets, adds nothing to the answer.
//!
//! Errors, in Alibaba's codes and statuses (the error tables of the KMS API reference for the
//! secrets manager, e.g. CreateSecret's: `Forbidden.ResourceNotFound` 404, `Rejected.ResourceExist`
//! 409, `Rejected.ResourceInDeleteWindow` 409, `Forbidden.NoPermission` 403, `Rejected.Throttling`
//! 429, `InvalidParameter` 400, `InternalFailure` 500; ack-secret-manager's `pkg/utils/util.go`
//! names `Rejected.Throttling` too), in [`crate::api::status::ALIYUN_SECRET_CODES`] (which the
//! client reads back too): see [`refine`] and the parent's `From<KmsError>`.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{AliyunError, Params, arn};
use crate::api::secrets::{self as wire, SecretMetadata, VersionStage};
use crate::api::status::aliyun_secret_error;
use crate::api::{Action, ErrorCode};
use crate::dialects::call::Call;
use crate::keystore::KeyStore;
use crate::secrets::SecretReply;

/// The secrets-manager operations, by the API's action names, with the native action each is.
pub(super) const OPERATIONS: [(&str, Action); 8] = [
    ("GetSecretValue", Action::GetSecretValue),
    ("CreateSecret", Action::CreateSecret),
    ("PutSecretValue", Action::PutSecretValue),
    ("UpdateSecretVersionStage", Action::UpdateSecretVersionStage),
    ("DescribeSecret", Action::DescribeSecret),
    ("ListSecrets", Action::ListSecrets),
    ("DeleteSecret", Action::DeleteSecret),
    ("RestoreSecret", Action::RestoreSecret),
];

/// The only secret type served (Alibaba's standard secret).
const SECRET_TYPE: &str = "Generic";
/// The only value type served.
const DATA_TYPE: &str = "text";
/// ListSecrets' default and largest page size (Alibaba: default 10, 1 to 100).
const PAGE_SIZE: (usize, usize) = (10, 100);

/// The secrets manager's codes for refusals the key operations answer otherwise: throttled is
/// `Rejected.Throttling` 429 and a call the access policy refuses `Forbidden.NoPermission` 403
/// (the secrets operations' error tables in Alibaba's KMS API reference).
pub(super) fn refine(error: AliyunError) -> AliyunError {
    let kind = match error.code {
        ErrorCode::Throttling => "Rejected.Throttling",
        ErrorCode::Forbidden => "Forbidden.NoPermission",
        _ => return error,
    };
    let (status, kind) = aliyun_secret_error(kind);
    AliyunError { status, kind, ..error }
}

/// Serves secrets-manager `action` for `access_key` (signature and admission already passed).
pub(super) async fn run(
    call: &mut Call,
    store: &Arc<KeyStore>,
    params: &Params,
    access_key: &str,
    action: Action,
) -> Result<Value, AliyunError> {
    let name = match action {
        Action::ListSecrets => None,
        _ => Some(params.require("SecretName")?),
    };
    if action == Action::CreateSecret
        && let Some(key_id) = params.get("EncryptionKeyId")
    {
        call.set_key(key_id, None);
    }
    call.authorize_on(access_key, None, name)?;
    let request = native_request(action, params)?;
    let disabled = call.disabled();
    let node = call.node.clone();
    let authorize = |needs: Action, resource: &str| node.shared.policies.check(access_key, needs, resource);
    let done = crate::secrets::execute(store, action, &request, &disabled, &authorize)?;
    if let Some((key_id, version_id)) = &done.key {
        call.set_key(key_id, Some(version_id));
    }
    if !matches!(action, Action::GetSecretValue | Action::ListSecrets | Action::DescribeSecret) {
        node.commit().await?;
    }
    answer(action, params, done.reply)
}

/// `"true"`/`"false"` (how the SDK sends a `*bool`, and Alibaba's string flags), absent = false.
fn flag(params: &Params, name: &str) -> Result<bool, AliyunError> {
    match params.get(name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(AliyunError::invalid(format!("{name} `{}` is not true or false", other.escape_debug()))),
    }
}

fn stage(value: &str) -> Result<VersionStage, AliyunError> {
    value.parse().map_err(AliyunError::invalid)
}

/// Refuses what the mock does not store: binary values, secret types but Generic.
fn text_only(params: &Params) -> Result<(), AliyunError> {
    if let Some(kind) = params.get("SecretDataType").filter(|t| *t != DATA_TYPE) {
        return Err(AliyunError::invalid(format!(
            "SecretDataType `{}` is not served by this mock: its secrets manager stores text values (SecretDataType=text)",
            kind.escape_debug()
        )));
    }
    if let Some(kind) = params.get("SecretType").filter(|t| *t != SECRET_TYPE) {
        return Err(AliyunError::invalid(format!(
            "SecretType `{}` is not served by this mock: it serves generic secrets (SecretType=Generic)",
            kind.escape_debug()
        )));
    }
    Ok(())
}

/// The native request body of `action` from the API's parameters.
fn native_request(action: Action, params: &Params) -> Result<Vec<u8>, AliyunError> {
    let name = || params.require("SecretName").map(str::to_owned);
    let body = match action {
        Action::GetSecretValue => {
            flag(params, "FetchExtendedConfig")?;
            if flag(params, "DryRun")? {
                return Err(AliyunError::invalid("DryRun=true is not served by this mock: send the call without it"));
            }
            serde_json::to_vec(&wire::GetSecretValueRequest {
                secret_name: name()?,
                version_id: params.get("VersionId").map(str::to_owned),
                version_stage: params.get("VersionStage").map(stage).transpose()?,
            })
        }
        Action::CreateSecret => {
            text_only(params)?;
            let secret_data = params.require("SecretData")?.to_owned();
            let version_id = params.require("VersionId")?.to_owned();
            let encryption_key_id = params.get("EncryptionKeyId").ok_or_else(|| {
                AliyunError::new(
                    400,
                    "MissingParameter",
                    ErrorCode::InvalidParameter,
                    "The input parameter \"EncryptionKeyId\" is needed by this mock (Alibaba would create a service key): name a key of the mock's store",
                )
            })?;
            serde_json::to_vec(&wire::CreateSecretRequest {
                secret_name: name()?,
                secret_data,
                encryption_key_id: encryption_key_id.to_owned(),
                version_id: Some(version_id),
                description: params.get("Description").unwrap_or_default().to_owned(),
            })
        }
        Action::PutSecretValue => {
            text_only(params)?;
            let version_stages = match params.get("VersionStages") {
                None => Vec::new(),
                Some(raw) => serde_json::from_str::<Vec<String>>(raw)
                    .map_err(|_| AliyunError::invalid("VersionStages must be a JSON array of stage names, e.g. [\"ACSCurrent\"]"))?
                    .iter()
                    .map(|s| stage(s))
                    .collect::<Result<_, _>>()?,
            };
            serde_json::to_vec(&wire::PutSecretValueRequest {
                secret_name: name()?,
                secret_data: params.require("SecretData")?.to_owned(),
                version_id: Some(params.require("VersionId")?.to_owned()),
                version_stages,
            })
        }
        Action::UpdateSecretVersionStage => serde_json::to_vec(&wire::UpdateSecretVersionStageRequest {
            secret_name: name()?,
            version_stage: stage(params.require("VersionStage")?)?,
            move_to_version: params.get("MoveToVersion").map(str::to_owned),
            remove_from_version: params.get("RemoveFromVersion").map(str::to_owned),
        }),
        Action::DescribeSecret | Action::RestoreSecret => {
            flag(params, "FetchTags")?;
            serde_json::to_vec(&wire::SecretRequest { secret_name: name()? })
        }
        Action::ListSecrets => {
            flag(params, "FetchTags")?;
            if params.get("Filters").is_some_and(|f| !matches!(f.trim(), "[]" | "")) {
                return Err(AliyunError::invalid("Filters are not served by this mock: list every secret and page through them"));
            }
            page(params)?;
            Ok(b"{}".to_vec())
        }
        Action::DeleteSecret => {
            let recovery_window_in_days = params
                .get("RecoveryWindowInDays")
                .map(|d| {
                    d.parse::<u32>()
                        .map_err(|_| AliyunError::invalid(format!("RecoveryWindowInDays `{}` is not a number of days", d.escape_debug())))
                })
                .transpose()?;
            serde_json::to_vec(&wire::DeleteSecretRequest {
                secret_name: name()?,
                recovery_window_in_days,
                force_delete_without_recovery: flag(params, "ForceDeleteWithoutRecovery")?,
            })
        }
        other => return Err(AliyunError::invalid(format!("{other} is not a secrets-manager operation of this API"))),
    };
    body.map_err(|e| AliyunError::from(crate::error::KmsError::InternalFailure(format!("the native request did not serialize: {e}"))))
}

/// The items of page `number` (from 1) of `size`: none past the end.
pub(super) fn on_page<T>(items: &[T], (number, size): (usize, usize)) -> impl Iterator<Item = &T> {
    items.iter().skip((number - 1).saturating_mul(size)).take(size)
}

/// ListSecrets' and ListKeys' `(PageNumber, PageSize)`: from 1, 1 to 100 (defaults 1 and 10).
pub(super) fn page(params: &Params) -> Result<(usize, usize), AliyunError> {
    let number = match params.get("PageNumber") {
        None => 1,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| AliyunError::invalid(format!("PageNumber `{}` must be 1 or more", n.escape_debug())))?,
    };
    let size = match params.get("PageSize") {
        None => PAGE_SIZE.0,
        Some(n) => n
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=PAGE_SIZE.1).contains(n))
            .ok_or_else(|| AliyunError::invalid(format!("PageSize `{}` must be 1 to {}", n.escape_debug(), PAGE_SIZE.1)))?,
    };
    Ok((number, size))
}

fn stages_json(stages: &[VersionStage]) -> Value {
    json!({"VersionStage": stages.iter().map(VersionStage::name).collect::<Vec<_>>()})
}

/// The secret's last change the mock knows of: its newest version (stage moves are not timed).
fn update_time(secret: &SecretMetadata) -> &str {
    secret.versions.iter().map(|v| v.create_time.as_str()).max().unwrap_or(&secret.create_time)
}

/// A ListSecrets entry (`ListSecretsResponseBodySecretListSecret`).
fn listed(secret: &SecretMetadata) -> Value {
    let mut entry = json!({
        "SecretName": secret.secret_name,
        "SecretType": SECRET_TYPE,
        "CreateTime": secret.create_time,
        "UpdateTime": update_time(secret),
    });
    if let Some(planned) = &secret.planned_delete_time {
        entry["PlannedDeleteTime"] = json!(planned);
    }
    entry
}

/// The answer of `action` in Alibaba's shape (the parent adds `RequestId`).
fn answer(action: Action, params: &Params, reply: SecretReply) -> Result<Value, AliyunError> {
    Ok(match reply {
        SecretReply::Value(r) => json!({
            "SecretName": r.secret_name,
            "SecretType": SECRET_TYPE,
            "SecretData": r.secret_data,
            "SecretDataType": DATA_TYPE,
            "VersionId": r.version_id,
            "VersionStages": stages_json(&r.version_stages),
            "CreateTime": r.create_time,
        }),
        SecretReply::Version(r) if action == Action::CreateSecret => {
            json!({"Arn": arn(&r.secret_name), "SecretName": r.secret_name, "VersionId": r.version_id, "SecretType": SECRET_TYPE})
        }
        SecretReply::Version(r) => {
            json!({"SecretName": r.secret_name, "VersionId": r.version_id, "VersionStages": stages_json(&r.version_stages)})
        }
        // UpdateSecretVersionStage and RestoreSecret answer only the name.
        SecretReply::Describe(r) if action != Action::DescribeSecret => json!({"SecretName": r.secret.secret_name}),
        SecretReply::Describe(r) => {
            let s = &r.secret;
            let mut out = json!({
                "Arn": arn(&s.secret_name),
                "SecretName": s.secret_name,
                "SecretType": SECRET_TYPE,
                "Description": s.description,
                "EncryptionKeyId": s.encryption_key_id,
                "CreateTime": s.create_time,
                "UpdateTime": update_time(s),
            });
            if let Some(planned) = &s.planned_delete_time {
                out["PlannedDeleteTime"] = json!(planned);
            }
            if flag(params, "FetchTags")? {
                out["Tags"] = json!({"Tag": []});
            }
            out
        }
        SecretReply::List(r) => {
            let (number, size) = page(params)?;
            let page: Vec<Value> = on_page(&r.secret_list, (number, size)).map(listed).collect();
            json!({"PageNumber": number, "PageSize": size, "TotalCount": r.secret_list.len(), "SecretList": {"Secret": page}})
        }
        SecretReply::Delete(r) => json!({"SecretName": r.secret_name, "PlannedDeleteTime": r.planned_delete_time}),
    })
}
