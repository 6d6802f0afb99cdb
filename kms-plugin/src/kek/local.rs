//! An in-process KEK ring: AES-256-GCM keys, one per version, the newest current.
//!
//! Wrapped format: `0x01 ‖ version (u32 BE) ‖ nonce[12] ‖ AES-256-GCM(dek) ‖ tag[16]`; the first
//! five bytes are bound as additional data, so the version cannot be swapped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use base64::Engine;
use bytes::Bytes;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{Claimed, KekError, Wrapped};

const FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 5;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The annotation that names the KEK version, so `kms-lab decode` can show it.
pub const VERSION_ANNOTATION: &str = "kek-version.kms-lab.io";

struct KeyVersion {
    version: u32,
    key_id: String,
    cipher: Aes256Gcm,
}

/// An in-process key ring, optionally kept in a key file.
pub struct LocalKek {
    file: Option<PathBuf>,
    versions: RwLock<Vec<KeyVersion>>,
}

impl std::fmt::Debug for LocalKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let versions = self.versions.read().map(|v| v.len()).unwrap_or_default();
        f.debug_struct("LocalKek").field("file", &self.file).field("versions", &versions).finish()
    }
}

/// A key id that names the version and a fingerprint of its key (not the key itself).
fn key_id_for(version: u32, key: &[u8]) -> String {
    let fingerprint = Sha256::new_with_prefix(b"kms-lab local kek fingerprint").chain_update(key).finalize();
    format!("local-v{version}-{}", hex::encode(&fingerprint[..6]))
}

fn key_version(version: u32, key: &[u8]) -> Result<KeyVersion, KekError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| KekError::Internal(format!("KEK version {version} is not 32 bytes")))?;
    Ok(KeyVersion { version, key_id: key_id_for(version, key), cipher })
}

fn random_key() -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill_bytes(key.as_mut());
    key
}

/// What `rotate-kek` may replace: a key file (one base64 32-byte key per line, `#` comments),
/// or a file with no key in it yet. Anything else the user names is left as it is.
const KEY_FILE: kms_lab_cli_common::files::FileKind = kms_lab_cli_common::files::FileKind {
    what: "KEK file (one base64-encoded 32-byte key per line)",
    recognise: kms_lab_cli_common::files::Recognise::By(|bytes| std::str::from_utf8(bytes).is_ok_and(|text| parse_key_lines(text).is_ok())),
    mode: 0o600,
};

/// Appends a new random key to a key file (creating it, mode 0600), making it the current
/// version. The file is replaced atomically, and only if it is a key file: anything else at
/// `path` is refused and left unchanged.
pub fn append_random_key(path: &Path) -> Result<(), KekError> {
    let mut text = match std::fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Zeroizing::new(Vec::new()),
        Err(e) => return Err(KekError::KeyFile(format!("cannot read key file `{}`: {e}{}", path.display(), io_hint(&e)))),
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    text.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(random_key().as_ref()).as_bytes());
    text.push(b'\n');
    kms_lab_cli_common::files::replace(path, &KEY_FILE, &text).map_err(|e| KekError::KeyFile(e.to_string()))
}

/// A hint for an I/O error on the key file (empty when none fits).
fn io_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => " (run the plugin as the file's owner, or pass another --kek-file)",
        std::io::ErrorKind::IsADirectory => " (--kek-file takes a file: one base64 key per line)",
        std::io::ErrorKind::NotFound => " (create its directory first)",
        _ => "",
    }
}

/// The most bytes a key file may hold (a million key versions is far beyond any real rotation).
const MAX_KEY_FILE_BYTES: u64 = 64 << 20;

fn read_key_file(path: &Path) -> Result<Vec<KeyVersion>, KekError> {
    use std::io::Read;
    let unreadable = |e: std::io::Error| KekError::KeyFile(format!("cannot read key file `{}`: {e}{}", path.display(), io_hint(&e)));
    let mut bytes = Zeroizing::new(Vec::new());
    std::fs::File::open(path).and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes)).map_err(unreadable)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KekError::KeyFile(format!(
            "key file `{}` is larger than {} MiB: is it the right file? (expected one base64 key per line)",
            path.display(),
            MAX_KEY_FILE_BYTES >> 20
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        KekError::KeyFile(format!(
            "key file `{}` line {line}: not UTF-8 text; expected one base64-encoded 32-byte key per line",
            path.display()
        ))
    })?;
    let versions = parse_key_lines(text)
        .map_err(|line| KekError::KeyFile(format!("key file `{}` line {line}: expected a base64-encoded 32-byte key", path.display())))?;
    if versions.is_empty() {
        return Err(KekError::KeyFile(format!(
            "key file `{}` holds no key (it is empty or only comments): add one with `kms-plugin rotate-kek --kek-file {0}`",
            path.display()
        )));
    }
    Ok(versions)
}

/// The keys of a key file's text, oldest first; `Err(line)` names the first line that is not a
/// base64-encoded 32-byte key, a comment or blank.
fn parse_key_lines(text: &str) -> Result<Vec<KeyVersion>, usize> {
    let mut versions = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(line).map_err(|_| index + 1)?);
        let version = u32::try_from(versions.len() + 1).map_err(|_| index + 1)?;
        versions.push(key_version(version, &key).map_err(|_| index + 1)?);
    }
    Ok(versions)
}

/// `value` in decimal (what `to_string` gives), written into `buffer` without allocating.
fn decimal(mut value: u32, buffer: &mut [u8; 10]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

impl LocalKek {
    /// A ring with one random key, gone when the process ends.
    pub fn random() -> Self {
        let key = random_key();
        let version = key_version(1, key.as_ref()).expect("a 32-byte key always makes a cipher");
        Self { file: None, versions: RwLock::new(vec![version]) }
    }

    /// A ring read from `path`, created with one random key if the file does not exist.
    pub fn from_file(path: &Path) -> Result<Self, KekError> {
        if !path.exists() {
            append_random_key(path)?;
            tracing::info!(path = %path.display(), "created a new KEK file with one random key");
        }
        Ok(Self { file: Some(path.to_owned()), versions: RwLock::new(read_key_file(path)?) })
    }

    /// Re-reads the key file; versions may only be added, never removed or changed.
    pub fn reload(&self) -> Result<(), KekError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let fresh = read_key_file(path)?;
        let mut versions = self.versions.write().map_err(|_| KekError::Internal("key ring lock poisoned".into()))?;
        if fresh.len() < versions.len() || fresh.iter().zip(versions.iter()).any(|(new, old)| new.key_id != old.key_id) {
            return Err(KekError::KeyFile(format!(
                "key file `{}` lost or changed an existing key version; only appending new versions is allowed (nothing was reloaded)",
                path.display()
            )));
        }
        let added = fresh.len() - versions.len();
        *versions = fresh;
        tracing::info!(added, current = %versions.last().map(|v| v.key_id.as_str()).unwrap_or_default(), "reloaded KEK file");
        Ok(())
    }

    /// Wraps `plaintext` with the current version.
    pub fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, KekError> {
        let versions = self.versions.read().map_err(|_| KekError::Internal("key ring lock poisoned".into()))?;
        let current = versions.last().ok_or_else(|| KekError::Internal("key ring is empty".into()))?;
        // One allocation: header ‖ nonce ‖ plaintext, sealed in place, then the tag appended.
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&current.version.to_be_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let (header, rest) = out.split_at_mut(HEADER_LEN);
        let tag = current
            .cipher
            .encrypt_in_place_detached((&nonce).into(), header, &mut rest[NONCE_LEN..])
            .map_err(|_| KekError::Internal("AES-GCM refused the plaintext size".into()))?;
        out.extend_from_slice(&tag);
        Ok(Wrapped {
            ciphertext: out.into(),
            key_id: current.key_id.clone(),
            annotations: BTreeMap::from([(VERSION_ANNOTATION.to_owned(), Bytes::from(current.version.to_string()))]),
        })
    }

    /// Unwraps what [`LocalKek::wrap`] returned, refusing a key id or annotations that do not match.
    pub fn unwrap(&self, ciphertext: &[u8], claimed: Claimed<'_>) -> Result<Zeroizing<Vec<u8>>, KekError> {
        if ciphertext.len() < HEADER_LEN + NONCE_LEN + TAG_LEN {
            return Err(KekError::InvalidCiphertext(format!(
                "{} bytes is shorter than the {} bytes of header, nonce and tag",
                ciphertext.len(),
                HEADER_LEN + NONCE_LEN + TAG_LEN
            )));
        }
        if ciphertext[0] != FORMAT_V1 {
            return Err(KekError::InvalidCiphertext(format!(
                "unknown format byte {:#04x} (expected 0x01): not made by this plugin",
                ciphertext[0]
            )));
        }
        let version = u32::from_be_bytes([ciphertext[1], ciphertext[2], ciphertext[3], ciphertext[4]]);
        let versions = self.versions.read().map_err(|_| KekError::Internal("key ring lock poisoned".into()))?;
        let key = versions.iter().find(|v| v.version == version).ok_or_else(|| KekError::UnknownKeyVersion(version.to_string()))?;
        if let Some(key_id) = claimed.key_id.filter(|id| !id.is_empty())
            && key_id != key.key_id
        {
            return Err(KekError::Mismatch(format!("key_id `{key_id}` does not match the ciphertext's KEK version `{}`", key.key_id)));
        }
        if let Some(annotations) = claimed.annotations {
            let mut digits = [0u8; 10];
            let expected = decimal(version, &mut digits);
            let ok = annotations.len() == 1 && annotations.get(VERSION_ANNOTATION).is_some_and(|v| v.as_ref() == expected);
            if !ok {
                return Err(KekError::Mismatch(format!(
                    "annotations do not match the ciphertext: expected exactly `{VERSION_ANNOTATION}: {version}` as returned by Encrypt"
                )));
            }
        }
        let (header, rest) = ciphertext.split_at(HEADER_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        key.cipher
            .decrypt(nonce.into(), Payload { msg: body, aad: header })
            .map(Zeroizing::new)
            .map_err(|_| KekError::InvalidCiphertext("authentication failed: the ciphertext was altered or wrapped by another key".into()))
    }

    /// The key id of the current version.
    pub fn current_key_id(&self) -> Result<String, KekError> {
        let versions = self.versions.read().map_err(|_| KekError::Internal("key ring lock poisoned".into()))?;
        versions.last().map(|v| v.key_id.clone()).ok_or_else(|| KekError::Internal("key ring is empty".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_matches_to_string() {
        for value in [0, 1, 9, 10, 99, 100, 4_294_967_295, 1_000_000_000] {
            assert_eq!(decimal(value, &mut [0; 10]), value.to_string().as_bytes());
        }
    }

    #[test]
    fn wraps_and_unwraps_with_claims_checked() {
        let kek = LocalKek::random();
        let wrapped = kek.wrap(b"a 32-byte seed from the apiserver").unwrap();
        let claimed = Claimed { key_id: Some(&wrapped.key_id), annotations: Some(&wrapped.annotations) };
        assert_eq!(kek.unwrap(&wrapped.ciphertext, claimed).unwrap().as_slice(), b"a 32-byte seed from the apiserver");
        let wrong_id = Claimed { key_id: Some("local-v9-000000000000"), annotations: None };
        assert!(matches!(kek.unwrap(&wrapped.ciphertext, wrong_id), Err(KekError::Mismatch(_))));
        let no_annotations = BTreeMap::new();
        let wrong_annotations = Claimed { key_id: None, annotations: Some(&no_annotations) };
        assert!(matches!(kek.unwrap(&wrapped.ciphertext, wrong_annotations), Err(KekError::Mismatch(_))));
    }

    #[test]
    fn rotate_kek_refuses_a_file_that_is_not_a_key_file_and_leaves_it_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Cargo.toml");
        std::fs::write(&path, "[package]\nname = \"mine\"\n").unwrap();
        let error = append_random_key(&path).unwrap_err().to_string();
        assert!(error.contains("is not a KEK file") && error.contains("left as it is"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[package]\nname = \"mine\"\n");
        // A new file is made with mode 0600; an empty one takes its first key.
        let fresh = dir.path().join("kek");
        append_random_key(&fresh).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fresh).unwrap().permissions()) & 0o777, 0o600);
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# keys\n").unwrap();
        append_random_key(&empty).unwrap();
        assert_eq!(read_key_file(&empty).unwrap().len(), 1);
    }

    #[test]
    fn rotation_through_the_key_file_keeps_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let kek = LocalKek::from_file(&path).unwrap();
        let old = kek.wrap(b"dek").unwrap();
        append_random_key(&path).unwrap();
        kek.reload().unwrap();
        let new = kek.wrap(b"dek").unwrap();
        assert_ne!(old.key_id, new.key_id);
        assert!(new.key_id.starts_with("local-v2-"));
        assert_eq!(kek.unwrap(&old.ciphertext, Claimed::default()).unwrap().as_slice(), b"dek");
        // A restart on the same file gives the same key ids.
        assert_eq!(LocalKek::from_file(&path).unwrap().current_key_id().unwrap(), new.key_id);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_that_lost_a_version_is_not_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        append_random_key(&path).unwrap();
        append_random_key(&path).unwrap();
        let kek = LocalKek::from_file(&path).unwrap();
        let first_line = std::fs::read_to_string(&path).unwrap().lines().next().unwrap().to_owned();
        std::fs::write(&path, format!("{first_line}\n")).unwrap();
        let message = kek.reload().unwrap_err().to_string();
        assert!(message.contains("only appending"), "{message}");
        assert!(kek.current_key_id().unwrap().starts_with("local-v2-"));
    }

    #[test]
    fn errors_never_contain_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        std::fs::write(&path, "c2hvcnQ=\n").unwrap();
        let message = LocalKek::from_file(&path).unwrap_err().to_string();
        assert!(message.contains("line 1") && !message.contains("c2hvcnQ"), "{message}");
    }

    #[test]
    fn a_bad_key_file_is_a_user_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let cases: [(&[u8], &str); 3] = [
            (b"", "holds no key"),
            (b"# just a comment\n", "holds no key"),
            (b"c2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n\xff\xfe\n", "line 2: not UTF-8"),
        ];
        for (contents, expected) in cases {
            std::fs::write(&path, contents).unwrap();
            let error = LocalKek::from_file(&path).unwrap_err();
            assert!(matches!(error, KekError::KeyFile(_)), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(expected) && !message.contains("internal") && !message.contains("c2VjcmV0"), "{message}");
        }
        let error = LocalKek::from_file(dir.path()).unwrap_err().to_string();
        assert!(error.contains("--kek-file takes a file"), "{error}");
    }
}
