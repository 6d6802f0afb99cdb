//! The catalogue of checks and their dispatch; the logic lives in one small module per area.

mod decrypt;
mod encrypt;
mod exposure;
mod hygiene;
mod load;
pub(crate) mod rotation;
mod status;
mod v1beta1;

use crate::context::Ctx;
use crate::report::{Finding, LatencySummary, Level};
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
    /// What a broken rule is: a failure or a warning.
    pub level: Level,
    /// Why it has that level: the apiserver code path or the attack (FAIL), or why it is advice (WARN).
    pub why: &'static str,
    area: Area,
}

macro_rules! check {
    ($api:ident, $area:ident, $id:literal, $level:ident, $why:literal, $rule:literal, $reference:expr) => {
        CheckInfo { id: $id, rule: $rule, reference: $reference, api: Api::$api, level: Level::$level, why: $why, area: Area::$area }
    };
}

/// Every check, in run order (rotation after everything that assumes a stable key, hygiene last:
/// it also scans the errors the earlier checks received).
const CATALOGUE: &[CheckInfo] = &[
    check!(
        V2,
        Status,
        "v2.status.version",
        Fail,
        "the apiserver refuses any other version (grpc_service.go Status: \"KMSv2 API version should not change\"), the provider never becomes healthy and every write fails",
        "Status.version is \"v2\" or \"v2beta1\" and never changes between calls",
        "k8s.io/apiserver config.go isKMSv2ProviderHealthyAndMaybeRotateDEK (\"KMSv2 API version should not change\")"
    ),
    check!(
        V2,
        Status,
        "v2.status.healthz",
        Fail,
        "the apiserver marks the provider unhealthy (/healthz/kms-providers fails) and stops generating DEK seeds, so writes fail once the seed expires",
        "a healthy plugin answers Status.healthz \"ok\" (anything else marks the provider unhealthy)",
        "k8s.io/apiserver config.go isKMSv2ProviderHealthyAndMaybeRotateDEK (\"got unexpected healthz status\")"
    ),
    check!(
        V2,
        Status,
        "v2.status.key-id-valid",
        Fail,
        "envelope.go ValidateKeyID rejects the key id: the apiserver cannot encrypt with this provider",
        "Status.key_id is non-empty and at most 1 KiB",
        "k8s.io/apiserver kmsv2/envelope.go ValidateKeyID (KeyIDMaxSize = 1 KiB)"
    ),
    check!(
        V2,
        Status,
        "v2.status.key-id-stable",
        Warn,
        "a key_id change makes the apiserver generate a new DEK seed (one extra Encrypt per change, more KMS calls); reads and writes still work",
        "Status.key_id stays the same across calls while the KEK does not rotate (a change makes the apiserver generate a new DEK seed)",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.key-id-matches-status",
        Fail,
        "rotateDEKOnKeyIDChange refuses an Encrypt whose key_id differs from Status's: the apiserver keeps the old seed and reports \"failed to rotate DEK\"",
        "Encrypt answers within the deadline with the key_id Status reports",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange (encObject.KeyID == statusKeyID, else the rotation fails)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.not-plaintext",
        Fail,
        "attack: whoever reads etcd (a backup, a snapshot) reads the DEK seed and decrypts every object written under it",
        "Encrypt's ciphertext is not the plaintext and does not contain it",
        "k8s.io/kms apis/v2/api.proto EncryptResponse.ciphertext (the DEK/seed encrypted by the KEK)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.dek-not-readable",
        Fail,
        "attack: whoever reads etcd turns the stored encrypted DEK seed back into the seed (an encoding, a fixed transform, a shared keystream) and decrypts every object",
        "the ciphertext does not reveal the plaintext to someone who reads etcd: no encoding (hex, base64, reversed, inverted) of it or of 8+ of its bytes, no fixed XOR key or keystream, no ciphertext structure shared by plaintexts with a common prefix or repeated blocks",
        "k8s.io/kms apis/v2/api.proto EncryptResponse.ciphertext (the DEK/seed encrypted by the KEK); Kubernetes KMS provider docs (etcd must not reveal the data key)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.length-hides-content",
        Warn,
        "the ciphertext's length reveals something about the plaintext (compression before encryption), a few bits of the seed, not the seed: fix by not compressing",
        "the ciphertext length depends on the plaintext's length only, not on its content (an all-zero and a random 32-byte plaintext give ciphertexts of the same length)",
        "k8s.io/kms apis/v2/api.proto EncryptResponse.ciphertext; compression before encryption leaks content through length"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.non-deterministic",
        Warn,
        "DEK seeds are random, so equal seeds never occur in practice: deterministic encryption only shows equality; use a random nonce anyway",
        "encrypting the same plaintext twice gives different ciphertexts (randomised encryption)",
        "k8s.io/kms apis/v2/api.proto; upstream mock plugin k8s.io/kms internal/plugins/_mock (AES-GCM, random nonce)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.ciphertext-size",
        Fail,
        "validateEncryptedDEKSource refuses the object: every write fails",
        "for the 32-byte seed/DEK the apiserver sends, the ciphertext is non-empty and at most 1 KiB",
        "k8s.io/apiserver kmsv2/envelope.go validateEncryptedDEKSource (encryptedDEKSourceMaxSize = 1 KiB)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.annotations-valid",
        Fail,
        "validateAnnotations refuses the object: every write fails",
        "every annotation key is a fully qualified domain name; keys plus values at most 32 KiB",
        "k8s.io/apiserver kmsv2/envelope.go validateAnnotations (IsFullyQualifiedDomainName, annotationsMaxSize = 32 KiB)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.payload-sizes",
        Fail,
        "the apiserver sends a 32-byte seed (or DEK) on every seed generation: if that does not round-trip, writes or reads fail",
        "payloads of 0 B to 4 KiB either round-trip exactly or are refused with an error; 32 B (what the apiserver sends) must round-trip",
        "k8s.io/apiserver kmsv2/envelope.go GenerateTransformer (32-byte seed, HKDF) and its AES_GCM_KEY mode (32-byte DEK)"
    ),
    check!(
        V2,
        Encrypt,
        "v2.encrypt.uid-independent",
        Fail,
        "every apiserver request has a new uid: a uid-bound ciphertext cannot be read back, objects become unreadable",
        "the request uid is for logging only: a ciphertext decrypts under any other uid",
        "k8s.io/kms apis/v2/api.proto (uid: \"the UID of the request, used for logging\")"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.round-trip",
        Fail,
        "TransformFromStorage gets a wrong or no seed: reads fail",
        "Decrypt with the key_id and annotations Encrypt returned gives back exactly the plaintext",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-garbage",
        Fail,
        "a plugin that decrypts anything has no integrity on the encrypted DEK source: a corrupted or substituted etcd value is read with a wrong seed instead of being refused by the KMS",
        "Decrypt of random bytes is an error, never a plaintext",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage (a decrypt error fails the read)"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-tampered",
        Fail,
        "no integrity on the encrypted DEK source: a flipped bit in etcd yields a wrong seed, the fault shows up as an AES-GCM data error far from its cause",
        "Decrypt of a ciphertext with one bit flipped (first, middle, last byte) is an error",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage; AEAD integrity of the encrypted DEK source"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-truncated",
        Warn,
        "a truncated or re-padded ciphertext answered with the original plaintext (base64/padding tolerance in the remote KMS) is harmless to the apiserver; refusing it is cleaner",
        "Decrypt of a truncated ciphertext (last byte cut, half, 1 byte, empty) is an error",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage; AEAD integrity of the encrypted DEK source"
    ),
    check!(
        V2,
        Decrypt,
        "v2.decrypt.refuses-wrong-annotations",
        Warn,
        "the apiserver always sends back the annotations Encrypt returned: ignoring changed ones does not break it, but annotations that matter should be authenticated",
        "when Encrypt returned annotations, Decrypt refuses changed, dropped or added annotations",
        "k8s.io/kms apis/v2/api.proto DecryptRequest.annotations (\"the annotations returned by Encrypt\"); envelope.go generateCacheKey"
    ),
    check!(
        V2,
        Rotation,
        "v2.rotation.key-id-changes",
        Fail,
        "rotateDEKOnKeyIDChange is the apiserver's only way to learn of a KEK rotation: without a new key_id it keeps writing with seeds wrapped by the old KEK",
        "after the KEK rotates, Status reports a new key_id (within --rotate-wait) and Encrypt uses it",
        "k8s.io/apiserver config.go rotateDEKOnKeyIDChange (a key_id change is how the apiserver learns of a rotation)"
    ),
    check!(
        V2,
        Rotation,
        "v2.rotation.old-ciphertext-decrypts",
        Fail,
        "every object written before the rotation becomes unreadable (TransformFromStorage fails) until it is rewritten, which it cannot be",
        "after the KEK rotates, a ciphertext from before still decrypts with its old key_id and annotations",
        "k8s.io/apiserver kmsv2/envelope.go TransformFromStorage (old objects are read, then marked stale)"
    ),
    check!(
        V2,
        Load,
        "v2.load.concurrent-round-trips",
        Fail,
        "the apiserver shares one gRPC channel across all requests: a wrong answer under concurrency is a wrong seed or a leaked one",
        "concurrent Encrypt/Decrypt round trips are all correct (latency reported, not judged)",
        "k8s.io/apiserver kmsv2/grpc_service.go (one gRPC channel shared by every request)"
    ),
    check!(
        V2,
        Hygiene,
        "v2.hygiene.error-codes",
        Warn,
        "the apiserver treats every error code alike (the read or write fails); the code only shows in the kms_operations_latency_seconds metric and logs: use InvalidArgument for a malformed ciphertext",
        "refusing a malformed ciphertext uses a non-retryable client-error code (InvalidArgument, FailedPrecondition, NotFound, PermissionDenied, OutOfRange, DataLoss)",
        "gRPC status code semantics (grpc/doc/statuscodes.md); apiserver metric kms_operations_latency_seconds{grpc_status_code}"
    ),
    check!(
        V2,
        Hygiene,
        "v2.hygiene.no-plaintext-in-errors",
        Fail,
        "attack: error strings reach the apiserver's logs and events: whoever reads the logs reads the seed",
        "no error message contains a plaintext the suite sent (raw, hex, base64 or byte-list form)",
        "Kubernetes KMS provider docs: the plugin must not log or return DEKs; error strings reach apiserver logs"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.version.api",
        Fail,
        "grpc_service.go checkAPIVersion refuses the plugin at startup: the provider is never usable",
        "Version answers version \"v1beta1\"",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/grpc_service.go checkAPIVersion"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.version.runtime",
        Warn,
        "the apiserver only logs runtime_name/runtime_version; a non-semver version is cosmetic",
        "Version answers a non-empty runtime_name and a semver runtime_version",
        "k8s.io/kms apis/v1beta1/api.proto VersionResponse (runtime_version: \"semantic version\")"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.round-trip",
        Fail,
        "the apiserver's KMS v1 health probe (kmsPluginProbe: encrypt \"ping\", decrypt) fails, and DEKs cannot be read back",
        "Encrypt then Decrypt gives back exactly the plaintext (\"ping\" health probe, 32-byte DEK, 0 B to 4 KiB)",
        "k8s.io/apiserver config.go kmsPluginProbe.check (encrypts \"ping\" and decrypts it)"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.not-plaintext",
        Fail,
        "attack: whoever reads etcd reads the DEK of every object (KMS v1 stores one encrypted DEK per object)",
        "Encrypt's cipher is not the plaintext and does not contain it",
        "k8s.io/kms apis/v1beta1/api.proto EncryptResponse.cipher"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.dek-not-readable",
        Fail,
        "attack: whoever reads etcd turns each object's stored encrypted DEK back into the DEK (an encoding, a fixed transform, a shared keystream) and decrypts it",
        "the ciphertext does not reveal the plaintext to someone who reads etcd: no encoding (hex, base64, reversed, inverted) of it or of 8+ of its bytes, no fixed XOR key or keystream, no ciphertext structure shared by plaintexts with a common prefix or repeated blocks",
        "k8s.io/kms apis/v1beta1/api.proto EncryptResponse.cipher (the DEK encrypted by the KEK); Kubernetes KMS provider docs (etcd must not reveal the data key)"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.length-hides-content",
        Warn,
        "the cipher's length reveals something about the plaintext (compression before encryption), a few bits of the DEK, not the DEK: fix by not compressing",
        "the ciphertext length depends on the plaintext's length only, not on its content (an all-zero and a random 32-byte plaintext give ciphertexts of the same length)",
        "k8s.io/kms apis/v1beta1/api.proto EncryptResponse.cipher; compression before encryption leaks content through length"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.encrypt.non-deterministic",
        Warn,
        "DEKs are random, so equal DEKs never occur in practice: deterministic encryption only shows equality; use a random nonce anyway",
        "encrypting the same plaintext twice gives different ciphers",
        "k8s.io/kms apis/v1beta1/api.proto; randomised encryption of DEKs"
    ),
    check!(
        V1beta1,
        V1beta1,
        "v1beta1.decrypt.refuses-garbage",
        Fail,
        "a plugin that decrypts random or bit-flipped ciphers has no integrity: a corrupted etcd value is read with a wrong DEK instead of being refused; a truncated cipher answered with the original plaintext is only a warning",
        "Decrypt of random, bit-flipped or truncated ciphers is an error, never a plaintext",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/envelope.go TransformFromStorage"
    ),
    check!(
        V1beta1,
        Load,
        "v1beta1.load.concurrent-round-trips",
        Fail,
        "the apiserver shares one gRPC channel across all requests: a wrong answer under concurrency is a wrong DEK or a leaked one",
        "concurrent Encrypt/Decrypt round trips are all correct (latency reported, not judged)",
        "k8s.io/apiserver pkg/storage/value/encrypt/envelope/grpc_service.go"
    ),
    check!(
        V1beta1,
        Hygiene,
        "v1beta1.hygiene.error-codes",
        Warn,
        "the apiserver treats every error code alike; the code only shows in metrics and logs: use InvalidArgument for a malformed cipher",
        "refusing a malformed cipher uses a non-retryable client-error code (InvalidArgument, FailedPrecondition, NotFound, PermissionDenied, OutOfRange, DataLoss)",
        "gRPC status code semantics (grpc/doc/statuscodes.md)"
    ),
    check!(
        V1beta1,
        Hygiene,
        "v1beta1.hygiene.no-plaintext-in-errors",
        Fail,
        "attack: error strings reach the apiserver's logs: whoever reads the logs reads the DEK",
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

    /// A warning whatever the check's level (a sub-case of a FAIL-level check that is only advice).
    pub(crate) fn warn(finding: Finding) -> Self {
        Self { outcome: crate::report::CheckOutcome::Warn(finding), notes: Vec::new(), latency: None }
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
            assert!(c.id.starts_with(&format!("{}.", c.api.name())), "{}", c.id);
            assert!(!c.rule.is_empty() && !c.reference.is_empty() && !c.why.is_empty(), "{}", c.id);
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
