//! Error hygiene: fitting gRPC codes for refusals, and no plaintext echoed in error messages.

use bytes::Bytes;
use tonic::Code;

use super::decrypt::{Variant, garbage, tampered, truncated};
use super::encrypt::{APISERVER_PAYLOAD, encrypt};
use super::{CheckResult, unknown};
use crate::Api;
use crate::context::{CallError, Ctx, Encrypted, bytes, describe_decrypt, random, uid};
use crate::report::Finding;

/// Codes that say "this request is wrong and retrying will not help".
const FITTING: &[Code] =
    &[Code::InvalidArgument, Code::FailedPrecondition, Code::NotFound, Code::PermissionDenied, Code::OutOfRange, Code::DataLoss];
/// Large payloads a plugin may refuse (and so might echo in the error).
const LARGE_PAYLOADS: &[usize] = &[4096, 64 * 1024];

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    match id {
        "v2.hygiene.error-codes" => error_codes(ctx, Api::V2).await,
        "v1beta1.hygiene.error-codes" => error_codes(ctx, Api::V1beta1).await,
        "v2.hygiene.no-plaintext-in-errors" => no_plaintext_in_errors(ctx, Api::V2).await,
        "v1beta1.hygiene.no-plaintext-in-errors" => no_plaintext_in_errors(ctx, Api::V1beta1).await,
        _ => unknown(id),
    }
}

/// A good ciphertext for either API (v1beta1 has no key id or annotations).
async fn good(ctx: &Ctx, api: Api, plaintext: &[u8]) -> Result<Encrypted, Finding> {
    match api {
        Api::V2 => encrypt(ctx, plaintext, &uid("hygiene")).await,
        Api::V1beta1 => ctx
            .v1_encrypt(plaintext)
            .await
            .map(|cipher| Encrypted { ciphertext: cipher, key_id: String::new(), annotations: Default::default() })
            .map_err(|error| {
                Finding::new(
                    format!("EncryptRequest {{ plain: {} }}", bytes(plaintext)),
                    error.to_string(),
                    "Encrypt of a 32-byte DEK must succeed",
                )
            }),
    }
}

async fn decrypt_variant(ctx: &Ctx, api: Api, good: &Encrypted, variant: &Variant) -> (String, Result<Bytes, CallError>) {
    match api {
        Api::V2 => {
            let uid = uid("hygiene");
            let sent = describe_decrypt(&variant.ciphertext, &uid, &good.key_id, &variant.annotations);
            (sent, ctx.decrypt(&variant.ciphertext, &uid, &good.key_id, &variant.annotations).await)
        }
        Api::V1beta1 => (format!("DecryptRequest {{ cipher: {} }}", bytes(&variant.ciphertext)), ctx.v1_decrypt(&variant.ciphertext).await),
    }
}

async fn error_codes(ctx: &Ctx, api: Api) -> CheckResult {
    let plaintext = random(APISERVER_PAYLOAD);
    let good = match good(ctx, api, &plaintext).await {
        Ok(good) => good,
        Err(finding) => return CheckResult::fail(finding),
    };
    let variants: Vec<Variant> = [garbage(&good), tampered(&good), truncated(&good)].into_iter().flatten().collect();
    let mut codes = Vec::new();
    for variant in &variants {
        let (sent, result) = decrypt_variant(ctx, api, &good, variant).await;
        match result {
            // Accepting it at all is the decrypt checks' finding; timeouts are too.
            Ok(_) | Err(CallError::Timeout(_)) => {}
            Err(error @ CallError::Status { code, .. }) => {
                if !FITTING.contains(&code) {
                    let hint = match code {
                        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Aborted => {
                            "a retryable code: clients retry a request that can never succeed, and it reads as the plugin being down"
                        }
                        Code::Unknown => {
                            "Unknown is what a Go plugin returns for a plain error: wrap it in status.Error(codes.InvalidArgument, …)"
                        }
                        _ => "it does not say that the request itself is malformed",
                    };
                    return CheckResult::fail(Finding::new(
                        format!("{sent} — {}", variant.what),
                        error.to_string(),
                        format!(
                            "{code:?} does not fit a malformed ciphertext ({hint}); use InvalidArgument (or FailedPrecondition/NotFound/DataLoss)"
                        ),
                    ));
                }
                codes.push(code);
            }
        }
    }
    codes.sort_by_key(|c| *c as i32);
    codes.dedup();
    CheckResult::pass().note(format!("{} refusals, codes: {codes:?}", variants.len()))
}

async fn no_plaintext_in_errors(ctx: &Ctx, api: Api) -> CheckResult {
    // Provoke the errors most likely to echo a payload: refused large plaintexts, and (v2) a
    // decrypt that succeeds internally but fails the annotation check afterwards.
    for &size in LARGE_PAYLOADS {
        let plaintext = random(size);
        let _ = match api {
            Api::V2 => ctx.encrypt(&plaintext, &uid("hygiene")).await.map(|_| ()),
            Api::V1beta1 => ctx.v1_encrypt(&plaintext).await.map(|_| ()),
        };
    }
    if api == Api::V2 {
        let plaintext = random(APISERVER_PAYLOAD);
        if let Ok(good) = ctx.encrypt(&plaintext, &uid("hygiene")).await {
            let mut wrong = good.annotations.clone();
            wrong.insert("extra.conformance.kms-lab.io".to_owned(), Bytes::from_static(b"1"));
            let _ = ctx.decrypt(&good.ciphertext, &uid("hygiene"), &good.key_id, &wrong).await;
            let _ = ctx.decrypt(&good.ciphertext, &uid("hygiene"), "kms-lab-conformance-unknown-key", &good.annotations).await;
        }
    }
    let errors = ctx.errors();
    for seen in &errors {
        if let Some(leak) = ctx.leak_in(&seen.message) {
            return CheckResult::fail(Finding::new(
                seen.sent.clone(),
                format!("gRPC error {:?}: <message withheld: it contains the {leak}>", seen.code),
                "an error message contains plaintext the suite sent: error strings end up in apiserver and plugin logs, so DEKs and seeds leak (describe payloads by size, never by content)",
            ));
        }
    }
    CheckResult::pass().note(format!("{} error messages scanned", errors.len()))
}
