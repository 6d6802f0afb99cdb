//! KMS v1 (`v1beta1`): Version fields, round trips, ciphertext shape, refusal of bad ciphers.

use kms_wire::proto::{KMS_V1BETA1_API_VERSION, v1beta1};

use super::decrypt::{Variant, garbage, tampered, truncated};
use super::encrypt::APISERVER_PAYLOAD;
use super::{CheckResult, unknown};
use crate::context::{CallError, Ctx, Encrypted, bytes, quote, random};
use crate::report::Finding;

const SENT_VERSION: &str = "VersionRequest { version: \"v1beta1\" }";
/// What the apiserver's v1 health probe encrypts.
const PING: &[u8] = b"ping";
/// Round-trip sizes besides `ping`.
const SIZES: &[usize] = &[APISERVER_PAYLOAD, 0, 1, 64, 1024, 4096];

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    match id {
        "v1beta1.version.api" => version_api(ctx).await.into(),
        "v1beta1.version.runtime" => version_runtime(ctx).await.into(),
        "v1beta1.round-trip" => round_trip(ctx).await.into(),
        "v1beta1.encrypt.not-plaintext" => not_plaintext(ctx).await.into(),
        "v1beta1.encrypt.non-deterministic" => non_deterministic(ctx).await.into(),
        "v1beta1.encrypt.dek-not-readable" => super::exposure::dek_not_readable(&V1Encryptor(ctx)).await,
        "v1beta1.encrypt.length-hides-content" => super::exposure::length_hides_content(&V1Encryptor(ctx)).await,
        "v1beta1.decrypt.refuses-garbage" => refuses_garbage(ctx).await,
        _ => unknown(id),
    }
}

fn describe(response: &v1beta1::VersionResponse) -> String {
    format!(
        "VersionResponse {{ version: {}, runtime_name: {}, runtime_version: {} }}",
        quote(&response.version),
        quote(&response.runtime_name),
        quote(&response.runtime_version)
    )
}

async fn version(ctx: &Ctx) -> Result<v1beta1::VersionResponse, Finding> {
    ctx.v1_version().await.map_err(|error| {
        Finding::new(SENT_VERSION, error.to_string(), "Version must answer: the apiserver checks it before its first Encrypt or Decrypt")
    })
}

async fn version_api(ctx: &Ctx) -> Result<(), Finding> {
    let response = version(ctx).await?;
    if response.version != KMS_V1BETA1_API_VERSION {
        return Err(Finding::new(
            SENT_VERSION,
            describe(&response),
            format!(
                "version is {}, not \"v1beta1\": the apiserver refuses every call (\"KMS provider api version … is not supported\")",
                quote(&response.version)
            ),
        ));
    }
    Ok(())
}

async fn version_runtime(ctx: &Ctx) -> Result<(), Finding> {
    let response = version(ctx).await?;
    if response.runtime_name.is_empty() {
        return Err(Finding::new(SENT_VERSION, describe(&response), "runtime_name is empty: it names the plugin in apiserver logs"));
    }
    if !is_semver(&response.runtime_version) {
        return Err(Finding::new(
            SENT_VERSION,
            describe(&response),
            format!("runtime_version {} is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])", quote(&response.runtime_version)),
        ));
    }
    Ok(())
}

/// Whether `version` is a semantic version (an optional leading `v` is tolerated, as Go tags have it).
fn is_semver(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (core, _build) = version.split_once('+').unwrap_or((version, ""));
    let (core, pre) = match core.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (core, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let number_ok = |n: &&str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && (n.len() == 1 || !n.starts_with('0'));
    let pre_ok = pre.is_none_or(|p| {
        !p.is_empty() && p.split('.').all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    });
    numbers.len() == 3 && numbers.iter().all(number_ok) && pre_ok
}

async fn encrypt(ctx: &Ctx, plain: &[u8]) -> Result<Vec<u8>, Finding> {
    ctx.v1_encrypt(plain).await.map(|c| c.to_vec()).map_err(|error| {
        Finding::new(
            format!("EncryptRequest {{ version: \"v1beta1\", plain: {} }}", bytes(plain)),
            error.to_string(),
            "Encrypt of a DEK (or the \"ping\" health probe) must succeed",
        )
    })
}

async fn round_trip(ctx: &Ctx) -> Result<(), Finding> {
    let mut payloads = vec![PING.to_vec()];
    payloads.extend(SIZES.iter().map(|&size| random(size)));
    for (index, plain) in payloads.iter().enumerate() {
        // `ping` and the 32-byte DEK are what the apiserver sends: they must work. Other sizes may
        // be refused, but never answered wrongly.
        let required = index < 2;
        let cipher = match ctx.v1_encrypt(plain).await {
            Ok(cipher) => cipher,
            Err(CallError::Status { .. }) if !required => continue,
            Err(error) => {
                return Err(Finding::new(
                    format!("EncryptRequest {{ version: \"v1beta1\", plain: {} }}", bytes(plain)),
                    error.to_string(),
                    if required {
                        "Encrypt of a DEK (or the \"ping\" health probe) must succeed"
                    } else {
                        "a payload the plugin cannot handle must be refused with an error, not left unanswered"
                    },
                ));
            }
        };
        let sent = format!(
            "EncryptRequest {{ plain: {} }} → EncryptResponse {{ cipher: {} }}; then DecryptRequest {{ cipher: … }}",
            bytes(plain),
            bytes(&cipher)
        );
        match ctx.v1_decrypt(&cipher).await {
            Ok(back) if back.as_ref() == plain.as_slice() => {}
            Ok(back) => {
                return Err(Finding::new(
                    sent,
                    format!("DecryptResponse {{ plain: {} }}", bytes(&back)),
                    "Decrypt returned different bytes than were encrypted",
                ));
            }
            Err(error) if required || matches!(error, CallError::Timeout(_)) => {
                let problem = if plain == PING {
                    "the apiserver's v1 health probe encrypts \"ping\" and decrypts it: this plugin is reported unhealthy"
                } else {
                    "Decrypt of what Encrypt returned must succeed"
                };
                return Err(Finding::new(sent, error.to_string(), problem));
            }
            Err(error) => {
                return Err(Finding::new(
                    sent,
                    error.to_string(),
                    "Encrypt accepted a payload that Decrypt then refuses: refuse it at Encrypt instead",
                ));
            }
        }
    }
    Ok(())
}

async fn not_plaintext(ctx: &Ctx) -> Result<(), Finding> {
    let plain = random(APISERVER_PAYLOAD);
    let cipher = encrypt(ctx, &plain).await?;
    if let Some(offset) = cipher.windows(plain.len()).position(|w| w == plain.as_slice()) {
        return Err(Finding::new(
            format!("EncryptRequest {{ plain: {} }}", bytes(&plain)),
            format!("EncryptResponse {{ cipher: {} }}", bytes(&cipher)),
            format!("the cipher contains the plaintext at byte {offset}: anyone who reads etcd reads the DEK"),
        ));
    }
    Ok(())
}

async fn non_deterministic(ctx: &Ctx) -> Result<(), Finding> {
    let plain = random(APISERVER_PAYLOAD);
    let first = encrypt(ctx, &plain).await?;
    let second = encrypt(ctx, &plain).await?;
    if first == second {
        return Err(Finding::new(
            format!("EncryptRequest {{ plain: {} }} twice", bytes(&plain)),
            format!("the same cipher both times: {}", bytes(&first)),
            "encryption is deterministic: equal DEKs are visible as equal ciphers (use a random nonce/IV per call)",
        ));
    }
    Ok(())
}

async fn refuses_garbage(ctx: &Ctx) -> CheckResult {
    let plain = random(APISERVER_PAYLOAD);
    let cipher = match encrypt(ctx, &plain).await {
        Ok(cipher) => cipher,
        Err(finding) => return CheckResult::fail(finding),
    };
    let good = Encrypted { ciphertext: cipher.into(), key_id: String::new(), annotations: Default::default() };
    let truncations = truncated(&good);
    let truncation_count = truncations.len();
    let variants: Vec<Variant> = [garbage(&good), tampered(&good), truncations].into_iter().flatten().collect();
    let first_truncation = variants.len() - truncation_count;
    let mut warning = None;
    for (index, variant) in variants.iter().enumerate() {
        let sent = format!("DecryptRequest {{ version: \"v1beta1\", cipher: {} }} — {}", bytes(&variant.ciphertext), variant.what);
        match ctx.v1_decrypt(&variant.ciphertext).await {
            // A truncated cipher answered with the original plaintext (the remote KMS tolerates
            // lost padding): the apiserver gets the right DEK, so this is advice only.
            Ok(back) if index >= first_truncation && back.as_ref() == plain.as_slice() => {
                warning.get_or_insert(Finding::new(
                    sent,
                    format!("success: DecryptResponse {{ plain: {} }} (the original plaintext)", bytes(&back)),
                    format!("{} was answered with the original plaintext: harmless to the apiserver, but a cipher should be refused unless it is exactly what Encrypt returned", variant.what),
                ));
            }
            Ok(back) => {
                let what = if back.as_ref() == plain.as_slice() { "the original plaintext" } else { "bytes that were never encrypted" };
                return CheckResult::fail(Finding::new(
                    sent,
                    format!("success: DecryptResponse {{ plain: {} }} ({what})", bytes(&back)),
                    format!("{} must be refused with an error, never answered with a plaintext", variant.what),
                ));
            }
            Err(error @ CallError::Timeout(_)) => {
                return CheckResult::fail(Finding::new(sent, error.to_string(), "a malformed cipher must be refused promptly"));
            }
            Err(_) => {}
        }
    }
    match warning {
        Some(finding) => CheckResult::warn(finding),
        None => CheckResult::pass().note(format!("{} malformed ciphers refused", variants.len())),
    }
}

/// The v1beta1 Encrypt, for the exposure checks.
struct V1Encryptor<'a>(&'a Ctx);

impl super::exposure::Encryptor for V1Encryptor<'_> {
    async fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, Finding> {
        encrypt(self.0, plaintext).await
    }

    fn describe(&self, plaintext: &[u8]) -> String {
        format!("EncryptRequest {{ version: \"v1beta1\", plain: {} }}", bytes(plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::is_semver;

    #[test]
    fn semver_is_checked() {
        for good in ["0.1.0", "1.2.3-rc.1", "v1.30.0", "1.0.0+abc", "10.20.30"] {
            assert!(is_semver(good), "{good}");
        }
        for bad in ["", "latest", "1.2", "01.2.3", "1.2.3-", "1.2.x"] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
