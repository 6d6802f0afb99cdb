//! Vault-style sealed start.
//!
//! `mock-kms init --data-dir DIR` ([`init`]) makes a random root key, splits it with Shamir's
//! secret sharing (5 shares, threshold 3 by default), writes `seal.json` (the split parameters and
//! the root key's fingerprint, never the key) and hands the shares out once. A node started with
//! `--sealed` answers every `/v1/*` call with 503 `Sealed` until an [`Unsealer`] has collected
//! `threshold` distinct shares that reconstruct a key with that fingerprint; then the key state
//! is opened with it. Nothing of the root key reaches the disk, so every restart starts sealed.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::SealingKey;
use crate::error::SealError;
use crate::persist::{self, ROOT_KEY_FILE, SEAL_FILE, STATE_FILE};

/// The `seal.json` format this build writes and reads.
pub const SEAL_FORMAT: u32 = 1;
/// Bytes in one share: the x coordinate and one y byte per root key byte.
const SHARE_LEN: usize = 33;

/// The contents of `seal.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// Always [`SEAL_FORMAT`].
    pub format: u32,
    /// How many shares were made.
    pub shares: u8,
    /// How many reconstruct the root key.
    pub threshold: u8,
    /// The root key's public fingerprint, to recognise a right share set.
    pub root_key_fingerprint: String,
}

pub use crate::api::admin::SealStatus;

/// What one accepted share led to.
#[derive(Debug)]
pub enum Submitted {
    /// More shares are needed (or the KMS was unsealed already).
    Progress(SealStatus),
    /// The threshold was reached and the shares reconstruct the root key.
    Unsealed(SealingKey),
}

/// Creates the sealed state in `dir` and returns the shares (base64), to be shown once.
pub fn init(dir: &Path, shares: u8, threshold: u8) -> Result<Vec<Zeroizing<String>>, SealError> {
    if shares == 0 || threshold == 0 || threshold > shares {
        return Err(SealError::InvalidSplit(format!(
            "--threshold {threshold} must be between 1 and --shares {shares}, and --shares at least 1"
        )));
    }
    if shares > 1 && threshold < 2 {
        return Err(SealError::InvalidSplit(
            "--threshold 1 with several shares makes every share the whole root key: use --threshold 2 or more".into(),
        ));
    }
    persist::ensure_dir(dir)?;
    for (file, what) in [
        (SEAL_FILE, "a sealed state (seal.json)"),
        (ROOT_KEY_FILE, "a dev-mode root key (root.key)"),
        (STATE_FILE, "key state (keys.json)"),
    ] {
        if dir.join(file).exists() {
            return Err(SealError::AlreadyInitialised { dir: dir.to_owned(), what });
        }
    }
    let root = SealingKey::random();
    let dealt: Vec<Zeroizing<String>> = sharks::Sharks(threshold)
        .dealer_rng(root.expose(), &mut OsRng)
        .take(shares.into())
        .map(|share| {
            let bytes = Zeroizing::new(Vec::from(&share));
            Zeroizing::new(B64.encode(&*bytes))
        })
        .collect();
    let config = SealConfig { format: SEAL_FORMAT, shares, threshold, root_key_fingerprint: root.fingerprint().to_owned() };
    persist::write_json(&dir.join(SEAL_FILE), &config)?;
    Ok(dealt)
}

struct Progress {
    /// Raw accepted shares (x coordinate first).
    given: Vec<Zeroizing<Vec<u8>>>,
    unsealed: bool,
}

/// Collects unseal shares for a data dir initialised with [`init`].
pub struct Unsealer {
    config: SealConfig,
    progress: Mutex<Progress>,
}

impl std::fmt::Debug for Unsealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsealer").field("config", &self.config).field("status", &self.status()).finish()
    }
}

impl Unsealer {
    /// The unsealer for `dir`, `None` if `dir` has no `seal.json`.
    pub fn load(dir: &Path) -> Result<Option<Self>, SealError> {
        let Some(config) = persist::read_json::<SealConfig>(&dir.join(SEAL_FILE), "seal file")? else {
            return Ok(None);
        };
        let bad = |detail: String| persist_corrupt(dir, detail);
        if config.format != SEAL_FORMAT {
            return Err(bad(format!("format {} is not supported (this build reads {SEAL_FORMAT})", config.format)));
        }
        if config.threshold == 0 || config.threshold > config.shares {
            return Err(bad(format!("threshold {} does not fit {} shares", config.threshold, config.shares)));
        }
        Ok(Some(Self { config, progress: Mutex::new(Progress { given: Vec::new(), unsealed: false }) }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `seal.json` contents.
    pub fn config(&self) -> &SealConfig {
        &self.config
    }

    /// Where the unseal stands.
    pub fn status(&self) -> SealStatus {
        let progress = self.lock();
        self.status_of(&progress)
    }

    fn status_of(&self, progress: &Progress) -> SealStatus {
        SealStatus {
            sealed: !progress.unsealed,
            progress: progress.given.len(),
            threshold: self.config.threshold.into(),
            shares: self.config.shares.into(),
        }
    }

    /// Adds one share (base64). A malformed or repeated share is refused and changes nothing; a
    /// full set that does not reconstruct the root key is refused and resets the progress.
    pub fn submit(&self, share: &str) -> Result<Submitted, SealError> {
        let mut progress = self.lock();
        if progress.unsealed {
            return Ok(Submitted::Progress(self.status_of(&progress)));
        }
        let bytes = Zeroizing::new(
            B64.decode(share.trim())
                .map_err(|_| SealError::MalformedShare("it is not base64 (paste one line that `mock-kms init` printed)".into()))?,
        );
        if bytes.len() != SHARE_LEN || bytes[0] == 0 {
            return Err(SealError::MalformedShare(format!(
                "it decodes to {} bytes, not the {SHARE_LEN} bytes of a share from `mock-kms init`",
                bytes.len()
            )));
        }
        if progress.given.iter().any(|g| g[0] == bytes[0]) {
            return Err(SealError::DuplicateShare { progress: progress.given.len(), threshold: self.config.threshold.into() });
        }
        progress.given.push(bytes);
        if progress.given.len() < usize::from(self.config.threshold) {
            return Ok(Submitted::Progress(self.status_of(&progress)));
        }
        let given = std::mem::take(&mut progress.given);
        let shares: Vec<sharks::Share> = given.iter().filter_map(|g| sharks::Share::try_from(g.as_slice()).ok()).collect();
        let dealer = sharks::Sharks(self.config.threshold);
        let recovered = dealer.recover(&shares).map(Zeroizing::new);
        let root = recovered.ok().and_then(|bytes| SealingKey::from_bytes(&bytes));
        match root {
            Some(root) if root.fingerprint() == self.config.root_key_fingerprint => {
                progress.unsealed = true;
                Ok(Submitted::Unsealed(root))
            }
            _ => Err(SealError::WrongShares { threshold: self.config.threshold.into() }),
        }
    }

    /// Forgets the shares given so far (and marks the KMS sealed again if opening the key state failed).
    pub fn reset(&self) {
        let mut progress = self.lock();
        progress.given.clear();
        progress.unsealed = false;
    }
}

fn persist_corrupt(dir: &Path, detail: String) -> SealError {
    SealError::Persist(crate::error::PersistError::Corrupt { what: "seal file", path: dir.join(SEAL_FILE), detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_of_five_shares_unseal_two_do_not_and_a_wrong_set_resets() {
        let dir = tempfile::tempdir().unwrap();
        let shares = init(dir.path(), 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        let text = std::fs::read_to_string(dir.path().join(SEAL_FILE)).unwrap();
        assert!(shares.iter().all(|s| !text.contains(s.as_str())));
        let unsealer = Unsealer::load(dir.path()).unwrap().unwrap();

        // Two shares are not enough.
        assert!(matches!(unsealer.submit(&shares[0]).unwrap(), Submitted::Progress(SealStatus { sealed: true, progress: 1, .. })));
        assert!(matches!(unsealer.submit(&shares[0]), Err(SealError::DuplicateShare { progress: 1, .. })));
        assert!(matches!(unsealer.submit(&shares[3]).unwrap(), Submitted::Progress(SealStatus { progress: 2, .. })));

        // A share from another init makes a wrong set: refused, progress reset.
        let other = tempfile::tempdir().unwrap();
        let foreign = init(other.path(), 5, 3).unwrap();
        let error = unsealer.submit(&foreign[1]).unwrap_err().to_string();
        assert!(error.contains("progress was reset") && !error.contains(foreign[1].as_str()), "{error}");
        assert_eq!(unsealer.status().progress, 0);

        assert!(matches!(unsealer.submit("not base64!"), Err(SealError::MalformedShare(_))));
        unsealer.submit(&shares[4]).unwrap();
        unsealer.submit(&shares[2]).unwrap();
        let Submitted::Unsealed(root) = unsealer.submit(&shares[1]).unwrap() else { panic!("3 shares unseal") };
        assert_eq!(root.fingerprint(), Unsealer::load(dir.path()).unwrap().unwrap().config().root_key_fingerprint);
        assert!(!unsealer.status().sealed);
    }

    #[test]
    fn init_refuses_bad_splits_and_existing_state() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(init(dir.path(), 3, 4), Err(SealError::InvalidSplit(_))));
        assert!(matches!(init(dir.path(), 5, 1), Err(SealError::InvalidSplit(_))));
        init(dir.path(), 1, 1).unwrap();
        assert!(matches!(init(dir.path(), 5, 3), Err(SealError::AlreadyInitialised { .. })));
        assert!(Unsealer::load(tempfile::tempdir().unwrap().path()).unwrap().is_none());
    }
}
