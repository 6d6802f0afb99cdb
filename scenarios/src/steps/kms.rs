//! Steps on the mock remote KMS: faults, KEK rotation, unsealing, credentials.

use super::StepResult;
use crate::error::StepError;
use crate::model::{Credentials, DisableKeyVersion, Faults};
use crate::world::World;

fn kms(world: &World) -> Result<&kms_lab_stack::MockKms, StepError> {
    world.stack.mock_kms().ok_or_else(|| StepError::Failed("the stack runs no mock KMS".into()))
}

pub(super) async fn faults(world: &mut World, faults: &Faults) -> StepResult {
    let yaml = serde_yaml::to_string(&faults.profile).map_err(|e| StepError::Failed(format!("fault profile: {e}")))?;
    kms(world)?.set_faults(faults.node, &yaml).await?;
    Ok(match faults.node {
        Some(node) => format!("in force on mock-kms-{node}"),
        None => "in force on every node".into(),
    })
}

pub(super) async fn clear_faults(world: &mut World) -> StepResult {
    kms(world)?.clear_faults(None).await?;
    Ok("no faults".into())
}

pub(super) async fn rotate(world: &mut World) -> StepResult {
    let answer = kms(world)?.rotate_key().await?;
    let metadata: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
    let version = metadata["KeyMetadata"]["CurrentKeyVersionId"].as_str();
    Ok(match version {
        Some(version) => format!("current key version is now {version}"),
        None => "rotated".into(),
    })
}

pub(super) async fn unseal(world: &mut World, shares: usize) -> StepResult {
    let kms = kms(world)?;
    // A KMS that restarted is sealed again: count shares from the first one.
    let sealed_now = kms.seal_status().await?["Progress"].as_u64().unwrap_or(0) as usize;
    let status = kms.unseal(sealed_now..sealed_now + shares).await?;
    Ok(format!("seal status: sealed={} progress={}/{}", status["Sealed"], status["Progress"], status["Threshold"]))
}

pub(super) async fn disable_key_version(world: &mut World, disable: &DisableKeyVersion) -> StepResult {
    let key_id = world
        .marks
        .get(&disable.mark)
        .and_then(|m| m.key_ids.get(&disable.plugin))
        .cloned()
        .ok_or_else(|| StepError::Failed(format!("{} reported no key id at mark `{}`", disable.plugin, disable.mark)))?;
    // The plugin's key id is `<key>/<version>`: a `key_disabled` entry of that form disables one version.
    let profile = serde_json::json!({ "key_disabled": { "key_ids": [key_id] } });
    kms(world)?.set_faults(None, &profile.to_string()).await?;
    Ok(format!("key version `{key_id}` disabled"))
}

pub(super) async fn set_credentials(world: &mut World, credentials: &Credentials) -> StepResult {
    let kms = kms(world)?;
    let secret = if credentials.secret_key == "original" { kms.options.secret_key.clone() } else { credentials.secret_key.clone() };
    kms.set_credentials(&credentials.access_key, &secret).await?;
    Ok(format!("only access key `{}` is accepted now", credentials.access_key))
}
