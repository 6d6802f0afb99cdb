//! v2 Encrypt: key id, ciphertext shape and size, annotations, payload sizes, uid.

use kms_wire::limits;

use super::status::{describe as describe_status, status};
use super::{CheckResult, unknown};
use crate::context::{Ctx, Encrypted, bytes, describe_decrypt, describe_encrypt, quote, random, uid};
use crate::report::Finding;

/// The size of the seed (KMSv2KDF) or DEK (AES_GCM_KEY) the apiserver sends.
pub(crate) const APISERVER_PAYLOAD: usize = 32;
/// Payload sizes tried: empty, tiny, around the apiserver's 32 bytes, and well beyond.
const PAYLOAD_SIZES: &[usize] = &[0, 1, 16, 31, 32, 33, 64, 256, 1024, 4096];

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    match id {
        "v2.encrypt.key-id-matches-status" => key_id_matches_status(ctx).await.into(),
        "v2.encrypt.not-plaintext" => not_plaintext(ctx).await.into(),
        "v2.encrypt.non-deterministic" => non_deterministic(ctx).await.into(),
        "v2.encrypt.dek-not-readable" => super::exposure::dek_not_readable(&V2Encryptor(ctx)).await,
        "v2.encrypt.length-hides-content" => super::exposure::length_hides_content(&V2Encryptor(ctx)).await,
        "v2.encrypt.ciphertext-size" => ciphertext_size(ctx).await.into(),
        "v2.encrypt.annotations-valid" => annotations_valid(ctx).await.into(),
        "v2.encrypt.payload-sizes" => payload_sizes(ctx).await,
        "v2.encrypt.uid-independent" => uid_independent(ctx).await.into(),
        _ => unknown(id),
    }
}

/// Encrypts `plaintext`, or the finding that Encrypt failed on what the apiserver sends every day.
pub(crate) async fn encrypt(ctx: &Ctx, plaintext: &[u8], uid: &str) -> Result<Encrypted, Finding> {
    ctx.encrypt(plaintext, uid).await.map_err(|error| {
        Finding::new(
            describe_encrypt(plaintext, uid),
            error.to_string(),
            "Encrypt of a 32-byte seed/DEK must succeed: the apiserver sends exactly this for every new DEK seed",
        )
    })
}

async fn key_id_matches_status(ctx: &Ctx) -> Result<(), Finding> {
    let before = status(ctx).await?;
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("key-id");
    let encrypted = encrypt(ctx, &plaintext, &uid).await?;
    if encrypted.key_id != before.key_id {
        return Err(Finding::new(
            format!("StatusRequest {{}} → {}; then {}", describe_status(&before), describe_encrypt(&plaintext, &uid)),
            encrypted.describe(),
            format!(
                "Encrypt's key_id {} differs from Status's {}: the apiserver refuses to rotate to the new DEK seed (\"failed to rotate DEK\") and keeps writing with the old one",
                quote(&encrypted.key_id),
                quote(&before.key_id)
            ),
        ));
    }
    Ok(())
}

async fn not_plaintext(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("not-plaintext");
    let encrypted = encrypt(ctx, &plaintext, &uid).await?;
    let contains = encrypted.ciphertext.windows(plaintext.len()).position(|w| w == plaintext.as_slice());
    if let Some(offset) = contains {
        return Err(Finding::new(
            describe_encrypt(&plaintext, &uid),
            encrypted.describe(),
            format!("the ciphertext contains the plaintext at byte {offset}: anyone who reads etcd reads the DEK seed"),
        ));
    }
    Ok(())
}

async fn non_deterministic(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("nondeterministic");
    let first = encrypt(ctx, &plaintext, &uid).await?;
    let second = encrypt(ctx, &plaintext, &uid).await?;
    if first.ciphertext == second.ciphertext {
        return Err(Finding::new(
            format!("{} twice", describe_encrypt(&plaintext, &uid)),
            format!("the same ciphertext both times: {}", bytes(&first.ciphertext)),
            "encryption is deterministic: equal plaintexts are visible as equal ciphertexts (use a random nonce/IV per call)",
        ));
    }
    Ok(())
}

async fn ciphertext_size(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("size");
    let encrypted = encrypt(ctx, &plaintext, &uid).await?;
    limits::validate_encrypted_dek(&encrypted.ciphertext).map_err(|error| {
        Finding::new(
            describe_encrypt(&plaintext, &uid),
            encrypted.describe(),
            format!("{error}: the apiserver refuses to store the object"),
        )
    })
}

async fn annotations_valid(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("annotations");
    let encrypted = encrypt(ctx, &plaintext, &uid).await?;
    limits::validate_annotations(&encrypted.annotations).map_err(|error| {
        Finding::new(
            describe_encrypt(&plaintext, &uid),
            encrypted.describe(),
            format!("{error}; the apiserver refuses to store the object"),
        )
    })
}

async fn payload_sizes(ctx: &Ctx) -> CheckResult {
    let mut round_tripped = Vec::new();
    let mut refused = Vec::new();
    for &size in PAYLOAD_SIZES {
        let plaintext = random(size);
        let uid = uid("sizes");
        let sent = describe_encrypt(&plaintext, &uid);
        let encrypted = match ctx.encrypt(&plaintext, &uid).await {
            Ok(encrypted) => encrypted,
            Err(error) if size != APISERVER_PAYLOAD && error.code().is_some() => {
                refused.push(format!("{size} B ({:?})", error.code().unwrap_or(tonic::Code::Unknown)));
                continue;
            }
            Err(error) => {
                let problem = if size == APISERVER_PAYLOAD {
                    "the 32-byte seed/DEK the apiserver sends must round-trip"
                } else {
                    "a payload the plugin cannot handle must be refused with an error, not left unanswered"
                };
                return CheckResult::fail(Finding::new(sent, error.to_string(), problem));
            }
        };
        if encrypted.ciphertext.is_empty() {
            return CheckResult::fail(Finding::new(
                sent,
                encrypted.describe(),
                format!("Encrypt of {size} B succeeded with an empty ciphertext: the payload is lost (refuse it with an error instead)"),
            ));
        }
        let sent_decrypt = describe_decrypt(&encrypted.ciphertext, &uid, &encrypted.key_id, &encrypted.annotations);
        match ctx.decrypt(&encrypted.ciphertext, &uid, &encrypted.key_id, &encrypted.annotations).await {
            Ok(back) if back.as_ref() == plaintext.as_slice() => round_tripped.push(size),
            Ok(back) => {
                return CheckResult::fail(Finding::new(
                    format!("{sent} → {}; then {sent_decrypt}", encrypted.describe()),
                    format!("DecryptResponse {{ plaintext: {} }}", bytes(&back)),
                    format!("Decrypt of an accepted {size} B payload gave different bytes"),
                ));
            }
            Err(error) => {
                return CheckResult::fail(Finding::new(
                    format!("{sent} → {}; then {sent_decrypt}", encrypted.describe()),
                    error.to_string(),
                    format!("Encrypt accepted a {size} B payload that Decrypt then refuses: refuse it at Encrypt instead"),
                ));
            }
        }
    }
    let mut result = CheckResult::pass()
        .note(format!("round-tripped: {}", round_tripped.iter().map(|s| format!("{s} B")).collect::<Vec<_>>().join(", ")));
    if !refused.is_empty() {
        result = result.note(format!("refused with an error (allowed): {}", refused.join(", ")));
    }
    result
}

async fn uid_independent(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let encrypt_uid = uid("encrypt");
    let encrypted = encrypt(ctx, &plaintext, &encrypt_uid).await?;
    for decrypt_uid in [uid("other"), String::new()] {
        let sent = format!(
            "{} → {}; then {}",
            describe_encrypt(&plaintext, &encrypt_uid),
            encrypted.describe(),
            describe_decrypt(&encrypted.ciphertext, &decrypt_uid, &encrypted.key_id, &encrypted.annotations)
        );
        match ctx.decrypt(&encrypted.ciphertext, &decrypt_uid, &encrypted.key_id, &encrypted.annotations).await {
            Ok(back) if back.as_ref() == plaintext.as_slice() => {}
            Ok(back) => {
                return Err(Finding::new(
                    sent,
                    format!("DecryptResponse {{ plaintext: {} }}", bytes(&back)),
                    "a different uid changed the result: the uid identifies the request for logs, every apiserver request has a new one",
                ));
            }
            Err(error) => {
                return Err(Finding::new(
                    sent,
                    error.to_string(),
                    "Decrypt failed under a different uid: the apiserver decrypts with a new uid on every read, so stored objects become unreadable",
                ));
            }
        }
    }
    Ok(())
}

/// The v2 Encrypt, for the exposure checks.
struct V2Encryptor<'a>(&'a Ctx);

impl super::exposure::Encryptor for V2Encryptor<'_> {
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Finding> {
        let uid = uid("exposure");
        self.0.encrypt(plaintext, &uid).await.map(|e| e.ciphertext.to_vec()).map_err(|error| {
            Finding::new(
                describe_encrypt(plaintext, &uid),
                error.to_string(),
                "Encrypt of a 32-byte plaintext must succeed: the apiserver sends exactly this",
            )
        })
    }

    fn describe(&self, plaintext: &[u8]) -> String {
        describe_encrypt(plaintext, "kms-lab-conformance-exposure-…")
    }
}
