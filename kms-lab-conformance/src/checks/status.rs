//! v2 Status: version, healthz, key id validity and stability.

use kms_wire::limits;
use kms_wire::proto::{HEALTHZ_OK, KMS_V2_API_VERSION, KMS_V2BETA1_API_VERSION, v2};

use super::{CheckResult, unknown};
use crate::context::{Ctx, quote};
use crate::report::Finding;

/// Status calls made to judge stability.
const STABILITY_CALLS: usize = 5;

const SENT: &str = "StatusRequest {}";

pub(crate) fn describe(response: &v2::StatusResponse) -> String {
    format!(
        "StatusResponse {{ version: {}, healthz: {}, key_id: {} }}",
        quote(&response.version),
        quote(&response.healthz),
        quote(&response.key_id)
    )
}

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    match id {
        "v2.status.version" => version(ctx).await,
        "v2.status.healthz" => healthz(ctx).await,
        "v2.status.key-id-valid" => key_id_valid(ctx).await,
        "v2.status.key-id-stable" => key_id_stable(ctx).await,
        _ => unknown(id),
    }
}

/// One Status call, or the finding that it failed.
pub(crate) async fn status(ctx: &Ctx) -> Result<v2::StatusResponse, Finding> {
    ctx.status().await.map_err(|error| {
        Finding::new(SENT, error.to_string(), "Status must answer: the apiserver calls it at start-up and then every minute")
    })
}

async fn version(ctx: &Ctx) -> CheckResult {
    let result = async {
        let mut first: Option<String> = None;
        for call in 1..=STABILITY_CALLS {
            let response = status(ctx).await?;
            if response.version != KMS_V2_API_VERSION && response.version != KMS_V2BETA1_API_VERSION {
                return Err(Finding::new(
                    SENT,
                    describe(&response),
                    format!("version {} is neither \"{KMS_V2_API_VERSION}\" nor \"{KMS_V2BETA1_API_VERSION}\": the apiserver marks the provider unhealthy", quote(&response.version)),
                ));
            }
            match &first {
                None => first = Some(response.version),
                Some(first) if *first != response.version => {
                    return Err(Finding::new(
                        format!("{SENT} ×{call}"),
                        describe(&response),
                        format!("version changed from {} to {} between calls: it must never change after the first answer", quote(first), quote(&response.version)),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
    .await;
    CheckResult::from(result).note(format!("{STABILITY_CALLS} Status calls"))
}

async fn healthz(ctx: &Ctx) -> CheckResult {
    let result = async {
        let response = status(ctx).await?;
        if response.healthz != HEALTHZ_OK {
            return Err(Finding::new(
                SENT,
                describe(&response),
                format!("healthz is {}, not \"ok\": the apiserver reports /healthz/kms-providers as failing and refuses new writes after 3 minutes", quote(&response.healthz)),
            ));
        }
        Ok(())
    }
    .await;
    result.into()
}

async fn key_id_valid(ctx: &Ctx) -> CheckResult {
    let result = async {
        let response = status(ctx).await?;
        limits::validate_key_id(&response.key_id).map_err(|error| {
            Finding::new(
                SENT,
                describe(&response),
                format!("{error}: the apiserver counts it in invalid_key_id_from_status_total and treats the plugin as unhealthy"),
            )
        })
    }
    .await;
    result.into()
}

async fn key_id_stable(ctx: &Ctx) -> CheckResult {
    let result = async {
        let first = status(ctx).await?;
        for call in 2..=STABILITY_CALLS {
            let response = status(ctx).await?;
            if response.key_id != first.key_id {
                return Err(Finding::new(
                    format!("{SENT} ×{call}, nothing rotated"),
                    describe(&response),
                    format!(
                        "key_id changed from {} to {} without a rotation: every change makes the apiserver generate a new DEK seed and mark all stored objects stale",
                        quote(&first.key_id),
                        quote(&response.key_id)
                    ),
                ));
            }
        }
        Ok(())
    }
    .await;
    CheckResult::from(result).note(format!("{STABILITY_CALLS} Status calls"))
}
