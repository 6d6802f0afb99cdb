//! v2 Decrypt: the exact round trip, and refusal of garbage, tampered, truncated ciphertexts and
//! wrong annotations.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::encrypt::{APISERVER_PAYLOAD, encrypt};
use super::{CheckResult, unknown};
use crate::context::{CallError, Ctx, Encrypted, bytes, describe_decrypt, describe_encrypt, random, uid};
use crate::report::Finding;

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    match id {
        "v2.decrypt.round-trip" => round_trip(ctx).await.into(),
        "v2.decrypt.refuses-garbage" => refuses(ctx, garbage).await,
        "v2.decrypt.refuses-tampered" => refuses(ctx, tampered).await,
        "v2.decrypt.refuses-truncated" => refuses(ctx, truncated).await,
        "v2.decrypt.refuses-wrong-annotations" => wrong_annotations(ctx).await,
        _ => unknown(id),
    }
}

/// A malformed variant of a good ciphertext: what it is, the bytes, the annotations to send.
pub(crate) struct Variant {
    pub what: String,
    pub ciphertext: Vec<u8>,
    pub annotations: BTreeMap<String, Bytes>,
}

/// Random bytes of the size of a good ciphertext (and one of 64 bytes).
pub(crate) fn garbage(good: &Encrypted) -> Vec<Variant> {
    [good.ciphertext.len().max(1), 64]
        .into_iter()
        .map(|len| Variant { what: format!("{len} random bytes"), ciphertext: random(len), annotations: good.annotations.clone() })
        .collect()
}

/// The good ciphertext with one bit flipped in its first, middle and last byte.
pub(crate) fn tampered(good: &Encrypted) -> Vec<Variant> {
    let len = good.ciphertext.len();
    let mut positions = vec![0, len / 2, len.saturating_sub(1)];
    positions.dedup();
    positions
        .into_iter()
        .filter(|&at| at < len)
        .map(|at| {
            let mut ciphertext = good.ciphertext.to_vec();
            ciphertext[at] ^= 0x01;
            Variant { what: format!("the ciphertext with bit 0 of byte {at} flipped"), ciphertext, annotations: good.annotations.clone() }
        })
        .collect()
}

/// The good ciphertext cut short: last byte missing, half, one byte, empty.
pub(crate) fn truncated(good: &Encrypted) -> Vec<Variant> {
    let len = good.ciphertext.len();
    let mut lengths = vec![len.saturating_sub(1), len / 2, 1, 0];
    lengths.dedup();
    lengths
        .into_iter()
        .filter(|&keep| keep < len)
        .map(|keep| Variant {
            what: format!("the ciphertext truncated to {keep} of {len} bytes"),
            ciphertext: good.ciphertext[..keep].to_vec(),
            annotations: good.annotations.clone(),
        })
        .collect()
}

async fn round_trip(ctx: &Ctx) -> Result<(), Finding> {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("round-trip");
    let encrypted = encrypt(ctx, &plaintext, &uid).await?;
    let sent = format!(
        "{} → {}; then {}",
        describe_encrypt(&plaintext, &uid),
        encrypted.describe(),
        describe_decrypt(&encrypted.ciphertext, &uid, &encrypted.key_id, &encrypted.annotations)
    );
    match ctx.decrypt(&encrypted.ciphertext, &uid, &encrypted.key_id, &encrypted.annotations).await {
        Ok(back) if back.as_ref() == plaintext.as_slice() => Ok(()),
        Ok(back) => Err(Finding::new(
            sent,
            format!("DecryptResponse {{ plaintext: {} }}", bytes(&back)),
            "Decrypt returned different bytes than were encrypted: every object under this DEK seed becomes unreadable",
        )),
        Err(error) => Err(Finding::new(
            sent,
            error.to_string(),
            "Decrypt of what Encrypt just returned must succeed: the apiserver cannot read any object back",
        )),
    }
}

/// Sends each malformed variant of a fresh good ciphertext and expects an error for each.
async fn refuses(ctx: &Ctx, variants: fn(&Encrypted) -> Vec<Variant>) -> CheckResult {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("refuse");
    let good = match encrypt(ctx, &plaintext, &uid).await {
        Ok(good) => good,
        Err(finding) => return CheckResult::fail(finding),
    };
    let variants = variants(&good);
    let count = variants.len();
    for variant in variants {
        if let Err(finding) = expect_refusal(ctx, &good, &plaintext, &variant).await {
            return CheckResult::fail(finding);
        }
    }
    CheckResult::pass().note(format!("{count} malformed ciphertexts refused"))
}

/// Decrypts `variant` and expects an error (and a prompt one).
pub(crate) async fn expect_refusal(ctx: &Ctx, good: &Encrypted, plaintext: &[u8], variant: &Variant) -> Result<Option<CallError>, Finding> {
    let uid = uid("refuse");
    let sent = format!("{} — {}", describe_decrypt(&variant.ciphertext, &uid, &good.key_id, &variant.annotations), variant.what);
    match ctx.decrypt(&variant.ciphertext, &uid, &good.key_id, &variant.annotations).await {
        Ok(back) => {
            let what = if back.as_ref() == plaintext { "the original plaintext" } else { "bytes that were never encrypted" };
            Err(Finding::new(
                sent,
                format!("success: DecryptResponse {{ plaintext: {} }} ({what})", bytes(&back)),
                format!(
                    "{} must be refused with an error, never answered with a plaintext: the apiserver would use wrong key material or accept forged data",
                    variant.what
                ),
            ))
        }
        Err(error @ CallError::Timeout(_)) => Err(Finding::new(
            sent,
            error.to_string(),
            "a malformed ciphertext must be refused promptly: the apiserver's read waits for the answer",
        )),
        Err(error) => Ok(Some(error)),
    }
}

async fn wrong_annotations(ctx: &Ctx) -> CheckResult {
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("annotations");
    let good = match encrypt(ctx, &plaintext, &uid).await {
        Ok(good) => good,
        Err(finding) => return CheckResult::fail(finding),
    };
    let Some((first_key, _)) = good.annotations.iter().next() else {
        return CheckResult::skip(
            "Encrypt returns no annotations, so there is nothing for Decrypt to bind (an added annotation is not judged)",
        );
    };
    let mut changed = good.annotations.clone();
    changed.insert(first_key.clone(), Bytes::from_static(b"changed-by-kms-lab"));
    let mut added = good.annotations.clone();
    added.insert("extra.conformance.kms-lab.io".to_owned(), Bytes::from_static(b"1"));
    let variants = [
        Variant {
            what: format!("the ciphertext with annotation `{first_key}` changed"),
            ciphertext: good.ciphertext.to_vec(),
            annotations: changed,
        },
        Variant {
            what: "the ciphertext with its annotations dropped".to_owned(),
            ciphertext: good.ciphertext.to_vec(),
            annotations: BTreeMap::new(),
        },
        Variant { what: "the ciphertext with an extra annotation".to_owned(), ciphertext: good.ciphertext.to_vec(), annotations: added },
    ];
    for variant in &variants {
        if let Err(finding) = expect_refusal(ctx, &good, &plaintext, variant).await {
            return CheckResult::fail(finding);
        }
    }
    CheckResult::pass().note("changed, dropped and added annotations refused")
}
