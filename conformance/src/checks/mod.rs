//! The catalogue of checks and their dispatch; the logic lives in one small module per area.

mod decrypt;
mod encrypt;
mod hygiene;
mod load;
pub(crate) mod rotation;
mod status;
mod v1beta1;

use crate::context::Ctx;
use crate::report::{Finding, LatencySummary};
use crate::{Api, ConformanceError};

/// Which module runs a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Status,
    Encrypt,
    Decrypt,
    Rotation,
    Load,
    Hygiene,
    V1beta1,
}

/// One check: its stable id, its rule in one line, and where upstream the rule comes from.
#[derive(Debug, Clone, Copy)]
pub struct CheckInfo {
    /// Stable id, e.g. `v2.encrypt.key-id-matches-status`; `--only`/`--skip` take it.
    pub id: &'static str,
    /// The rule, in one line.
    pub rule: &'static str,
    /// The upstream code or document the rule comes from.
    pub reference: &'static str,
    /// The API the check talks.
    pub api: Api,
    area: Area,
}

macro_rules! check {
    ($api:ident, $area:ident, $id:literal, $rule:literal, $reference:expr) => {
        CheckInfo { id: $id, rule: $rule, reference: $reference, api: Api::$api, area: Area::$area }
    };
}

/// Every check, in run order (rotation after everything that assumes a stable key, hygiene last:
/// it also scans the errors the earlier checks received).
const CATALOGUE: &[CheckInfo] = &[
    check!(
        V2,
        Status,
        "v2.status.version",
        "Status.version is \"v2\" or \"v2beta1\" and never changes between calls",
        "k8s.io/apiserver config.go isKMSv2ProviderHealthyAndMaybeRotateDEK (\"KMSv2 API version should not change\")"
    ),
    check!(
        V2,
        Status,
        "v2.status.healthz",
        "a healthy plugin answers Status.healthz \"ok\" (anything else marks the provider unhealthy)",
        "k8s.io/apiserver config.go isKMSv2ProviderHealthyAndMaybeRotateDEK (\"got unexpected healthz status\")"
    ),
    check!(
        V2,
        Status,
        "v2.status.key-id-valid",
        "Status.key_id is non-empty and at most 1 KiB",
        "k8s.io/apiserver kmsv2/envelope.go ValidateKeyID (KeyIDMaxSize = 1 KiB)"
    ),
    check!(
        V2,
        Status,
        "v2.status.key-id-stable",
        "Status.key_id stays the same across calls while the KEK does not rotate (a change makes the apiserver generate a new DEK seed)",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.key-id-matches-status",
        "Encrypt answers within the deadline with the key_id Status reports",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange (encObject.KeyID == statusKeyID, else the rotation fails)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.not-plaintext",
        "Encrypt's ciphertext is not the plaintext and does not contain it",
        "k8s.io/kms apis/v2/api.proto EncryptResponse.ciphertext (the DEK/seed encrypted by the KEK)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.non-deterministic",
        "encrypting the same plaintext twice gives different ciphertexts (randomised encryption)",
        "k8s.io/kms apis/v2/api.proto; upstream mock plugin k8s.io/kms internal/plugins/_mock (AES-GCM, random nonce)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.ciphertext-size",
        "for the 32-byte seed/DEK the apiserver sends, the ciphertext is non-empty and at most 1 KiB",
        "k8s.io/apiserver kmsv2/envelope.go validateEncryptedDEKSource (encryptedDEKSourceMaxSize = 1 KiB)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.annotations-valid",
        "every annotation key is a fully qualified domain name; keys plus values at most 32 KiB",
        "k8s.io/apiserver kmsv2/envelope.go validateAnnotations (IsFullyQualifiedDomainName, annotationsMaxSize = 32 KiB)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.payload-sizes",
        "payloads of 0 B to 4 KiB either round-trip exactly or are refused with an error; 32 B (what the apiserver sends) must round-trip",
        "k8s.io/apiserver kmsv2/envelope.go GenerateTransformer (32-byte seed, HKDF) and its AES_GCM_KEY mode (32-byte DEK)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.uid-independent",
        "the request uid is for logging only: a ciphertext decrypts under any other uid",
        "k8s.io/kms apis/v2/api.proto (uid: \"the UID of the request, used for logging\")"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.round-trip",
        "Decrypt with the key_id and annotations Encrypt returned gives back exactly the plaintext",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-garbage",
        "Decrypt of random bytes is an error, never a plaintext",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage (a decrypt error fails the read)"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-tampered",
        "Decrypt of a ciphertext with one bit flipped (first, middle, last byte) is an error",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage; AEAD integrity of the encrypted DEK source"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-truncated",
        "Decrypt of a truncated ciphertext (last byte cut, half, 1 byte, empty) is an error",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage; AEAD integrity of the encrypted DEK source"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-wrong-annotations",
        "when Encrypt returned annotations, Decrypt refuses changed, dropped or added annotations",
        "k8s.io/kms apis/v2/api.proto DecryptRequest.annotations (\"the annotations returned by Encrypt\"); envelope.go generateCacheKey"
    ),
    check!(
        V2,
        Rotation,
        "v2.rotation.key-id-changes",
        "after the KEK rotates, Status reports a new key_id (within --rotate-wait) and Encrypt uses it",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange (a key_id change is how the apiserver learns of a rotation)"
    ),
    check!(
        V2,
        Rotation,
        "v2.rotation.old-ciphertext-decrypts",
        "after the KEK rotates, a ciphertext from before still decrypts with its old key_id and annotations",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage (old objects are read, then marked stale)"
    ),
    check!(
        V2,
        Load,
        "v2.load.concurrent-round-trips",
        "concurrent Encrypt/Decrypt round trips are all correct (latency reported, not judged)",
        "k8s.io/apiserver kmsv2/grpc_service.go (one gRPC channel shared by every request)"
    ),
    check!(
        V2,
        Hygiene,
        "v2.hygiene.error-codes",
        "refusing a malformed ciphertext uses a non-retryable client-error code (InvalidArgument, FailedPrecondition, NotFound, PermissionDenied, OutOfRange, DataLoss)",
        "gRPC status code semantics (grpc/doc/statuscodes.md); apiserver metric kms_operations_latency_seconds{grpc_status_code}"
    ),
    check!(
        V2,
        Hygiene,
        "v2.hygiene.no-plaintext-in-errors",
        "no error message contains a plaintext the suite sent (raw, hex, base64 or byte-list form)",
        "Kubernetes KMS provider docs: the plugin must not log or return DEKs; error strings reach apiserver logs"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.version.api",
        "Version answers version \"v1beta1\"",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/grpc_service.go checkAPIVersion"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.version.runtime",
        "Version answers a non-empty runtime_name and a semver runtime_version",
        "k8s.io/kms apis/v1beta1/api.proto VersionResponse (runtime_version: \"semantic version\")"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.round-trip",
        "Encrypt then Decrypt gives back exactly the plaintext (\"ping\" health probe, 32-byte DEK, 0 B to 4 KiB)",
        "k8s.io/apiserver config.go kmsPluginProbe.check (encrypts \"ping\" and decrypts it)"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.not-plaintext",
        "Encrypt's cipher is not the plaintext and does not contain it",
        "k8s.io/kms apis/v1beta1/api.proto EncryptResponse.cipher"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.non-deterministic",
        "encrypting the same plaintext twice gives different ciphers",
        "k8s.io/kms apis/v1beta1/api.proto; randomised encryption of DEKs"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.decrypt.refuses-garbage",
        "Decrypt of random, bit-flipped or truncated ciphers is an error, never a plaintext",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/envelope.go TransformFromStorage"
    ),
    check!(
        V1beta1,
        Load,
        "v1beta1.load.concurrent-round-trips",
        "concurrent Encrypt/Decrypt round trips are all correct (latency reported, not judged)",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/grpc_service.go"
    ),
    check!(
        V1beta1,
        Hygiene,
        "v1beta1.hygiene.error-codes",
        "refusing a malformed cipher uses a non-retryable client-error code (InvalidArgument, FailedPrecondition, NotFound, PermissionDenied, OutOfRange, DataLoss)",
        "gRPC status code semantics (grpc/doc/statuscodes.md)"
    ),
    check!(
        V1beta1,
        Hygiene,
        "v1beta1.hygiene.no-plaintext-in-errors",
        "no error message contains a plaintext the suite sent (raw, hex, base64 or byte-list form)",
        "Kubernetes KMS provider docs: the plugin must not log or return DEKs"
    ),
];

/// Every check of every API, in run order.
pub fn catalogue() -> &'static [CheckInfo] {
    CATALOGUE
}

/// The checks of `api` that `only`/`skip` leave, in run order.
pub(crate) fn select(api: Api, only: &[String], skip: &[String]) -> Result<Vec<&'static CheckInfo>, ConformanceError> {
    let of_api: Vec<&'static CheckInfo> = CATALOGUE.iter().filter(|c| c.api == api).collect();
    for id in only.iter().chain(skip) {
        if !of_api.iter().any(|c| c.id == id) {
            let known = of_api.iter().map(|c| c.id).collect::<Vec<_>>().join(", ");
            return Err(ConformanceError::UnknownCheck { id: id.clone(), api, known });
        }
    }
    let selected: Vec<_> =
        of_api.into_iter().filter(|c| (only.is_empty() || only.iter().any(|o| o == c.id)) && !skip.iter().any(|s| s == c.id)).collect();
    if selected.is_empty() {
        return Err(ConformanceError::NothingSelected(api));
    }
    Ok(selected)
}

/// What a check module returns.
#[derive(Debug, Clone)]
pub(crate) struct CheckResult {
    pub outcome: crate::report::CheckOutcome,
    pub notes: Vec<String>,
    pub latency: Option<LatencySummary>,
}

impl CheckResult {
    pub(crate) fn pass() -> Self {
        Self { outcome: crate::report::CheckOutcome::Pass, notes: Vec::new(), latency: None }
    }

    pub(crate) fn fail(finding: Finding) -> Self {
        Self { outcome: crate::report::CheckOutcome::Fail(finding), notes: Vec::new(), latency: None }
    }

    pub(crate) fn skip(reason: impl Into<String>) -> Self {
        Self { outcome: crate::report::CheckOutcome::Skip { reason: reason.into() }, notes: Vec::new(), latency: None }
    }

    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

impl From<Result<(), Finding>> for CheckResult {
    fn from(result: Result<(), Finding>) -> Self {
        match result {
            Ok(()) => Self::pass(),
            Err(finding) => Self::fail(finding),
        }
    }
}

/// Runs one check.
pub(crate) async fn run_one(ctx: &Ctx, info: &CheckInfo) -> CheckResult {
    match info.area {
        Area::Status => status::run(ctx, info.id).await,
        Area::Encrypt => encrypt::run(ctx, info.id).await,
        Area::Decrypt => decrypt::run(ctx, info.id).await,
        Area::Rotation => rotation::run(ctx, info.id).await,
        Area::Load => load::run(ctx, info.id).await,
        Area::Hygiene => hygiene::run(ctx, info.id).await,
        Area::V1beta1 => v1beta1::run(ctx, info.id).await,
    }
}

/// A check id that reached a module that does not own it: a bug in the catalogue.
pub(crate) fn unknown(id: &str) -> CheckResult {
    CheckResult::skip(format!("internal error: no implementation for `{id}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_prefixed_by_their_api() {
        let mut ids: Vec<_> = CATALOGUE.iter().map(|c| c.id).collect();
        for c in CATALOGUE {
            assert!(c.id.starts_with(&format!("{}.", c.api.prefix())), "{}", c.id);
            assert!(!c.rule.is_empty() && !c.reference.is_empty(), "{}", c.id);
        }
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len());
    }

    #[test]
    fn unknown_ids_list_the_valid_ones() {
        let message = select(Api::V2, &["v2.status.verson".into()], &[]).unwrap_err().to_string();
        assert!(message.contains("`v2.status.verson`") && message.contains("v2.status.version"), "{message}");
        assert_eq!(select(Api::V2, &["v2.status.healthz".into()], &[]).unwrap().len(), 1);
    }
}
