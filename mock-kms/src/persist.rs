//! The data dir: crash-safe writes and strict reads of the files in it.
//!
//! Every file is written atomically (temp file, fsync, rename, fsync of the directory), so a
//! crash leaves the old or the new content, never a mix. A file that exists but does not parse is
//! reported as [`PersistError::Corrupt`] and left untouched: nothing is ever silently replaced.
//!
//! Layout: `root.key` (dev mode: the base64 root key) or `seal.json` (sealed start, see
//! [`crate::seal`]), `keys.json` (the key state, one per node: `node-<i>/keys.json` for an
//! in-process cluster), `audit.jsonl` (the default audit log).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::crypto::SealingKey;
use crate::error::PersistError;
use crate::keystore::Snapshot;

/// The dev-mode root key file.
pub const ROOT_KEY_FILE: &str = "root.key";
/// The sealed-start file written by `mock-kms init`.
pub const SEAL_FILE: &str = "seal.json";
/// The key state file.
pub const STATE_FILE: &str = "keys.json";
/// The default audit log file.
pub const AUDIT_FILE: &str = "audit.jsonl";

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PersistError + 'a {
    move |source| PersistError::Io { action, path: path.to_owned(), source }
}

/// Creates `dir` if needed and checks that files can be created in it.
pub fn ensure_dir(dir: &Path) -> Result<(), PersistError> {
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    if !fs::metadata(dir).map_err(io("inspect", dir))?.is_dir() {
        return Err(PersistError::Io {
            action: "use as a directory",
            path: dir.to_owned(),
            source: std::io::ErrorKind::NotADirectory.into(),
        });
    }
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    File::create(&probe).map_err(io("create files in", dir))?;
    let _ = fs::remove_file(&probe);
    remove_stale_temp_files(dir);
    Ok(())
}

/// Removes temp files a crash mid-write may have left (they never hold the only copy of anything).
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') && name.to_string_lossy().contains(".tmp-") {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), crate::crypto::random_uuid()));
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temp).map_err(io("create", &temp))?;
        file.write_all(bytes).map_err(io("write", &temp))?;
        file.sync_all().map_err(io("fsync", &temp))?;
        fs::rename(&temp, path).map_err(io("rename a temp file onto", path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync directory", dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), PersistError> {
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| PersistError::Io { action: "serialise", path: path.to_owned(), source: e.into() })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Reads and parses a JSON file; `None` if it does not exist, [`PersistError::Corrupt`] if it does not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>, PersistError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => Zeroizing::new(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Io { action: "read", path: path.to_owned(), source });
        }
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| PersistError::Corrupt {
        what,
        path: path.to_owned(),
        // serde_json's messages for missing or unknown fields name only the field; for anything else
        // give only the position, since the message may quote file content.
        detail: json_problem(&e),
    })
}

/// A description of a JSON error that never quotes the document.
pub fn json_problem(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let head = message.split(" at line ").next().unwrap_or_default();
    let named = ["missing field", "unknown field", "duplicate field", "unknown variant"].iter().any(|p| head.starts_with(p));
    match e.classify() {
        serde_json::error::Category::Eof => {
            format!("truncated JSON at line {} column {}", e.line(), e.column())
        }
        serde_json::error::Category::Syntax => {
            format!("not valid JSON at line {} column {}", e.line(), e.column())
        }
        _ if named => format!("{head} at line {} column {}", e.line(), e.column()),
        _ => format!("a value has the wrong type at line {} column {}", e.line(), e.column()),
    }
}

/// The key state file of one node.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored snapshot, `None` if there is no file yet.
    pub fn load(&self) -> Result<Option<Snapshot>, PersistError> {
        read_json(&self.path, "key state file")
    }

    /// Replaces the stored snapshot atomically.
    pub fn save(&self, snapshot: &Snapshot) -> Result<(), PersistError> {
        write_json(&self.path, snapshot)
    }
}

/// The dev-mode root key of `dir`, created (random, mode 0600) if `root.key` does not exist.
pub fn load_or_create_root_key(dir: &Path) -> Result<SealingKey, PersistError> {
    let path = dir.join(ROOT_KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let corrupt = || PersistError::Corrupt {
                what: "root key file",
                path: path.clone(),
                detail: "expected one line of base64 holding 32 bytes".into(),
            };
            let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| corrupt())?);
            SealingKey::from_bytes(&bytes).ok_or_else(corrupt)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SealingKey::random();
            let line = Zeroizing::new(format!("{}\n", B64.encode(key.expose())));
            write_atomic(&path, line.as_bytes())?;
            tracing::info!(path = %path.display(), fingerprint = key.fingerprint(), "created a dev-mode root key (kept in the data dir; use `mock-kms init` and --sealed for a sealed start)");
            Ok(key)
        }
        Err(source) => Err(PersistError::Io { action: "read", path, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_json(&path, &serde_json::json!({"a": 1})).unwrap();
        write_json(&path, &serde_json::json!({"a": 2})).unwrap();
        let value: serde_json::Value = read_json(&path, "test file").unwrap().unwrap();
        assert_eq!(value["a"], 2);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }

    #[test]
    fn corrupt_files_are_reported_without_their_content_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        fs::write(&path, "{\"format\": \"SECRET-CONTENT\"}").unwrap();
        let error = StateFile::new(path.clone()).load().unwrap_err().to_string();
        assert!(error.contains("corrupted") && error.contains("keys.json") && !error.contains("SECRET"), "{error}");
        fs::write(&path, "{not json").unwrap();
        let error = StateFile::new(path.clone()).load().unwrap_err().to_string();
        assert!(error.contains("not valid JSON at line 1"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{not json");
        assert!(StateFile::new(dir.path().join("none.json")).load().unwrap().is_none());
    }

    #[test]
    fn root_key_is_created_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_root_key(dir.path()).unwrap();
        assert_eq!(load_or_create_root_key(dir.path()).unwrap().fingerprint(), first.fingerprint());
        fs::write(dir.path().join(ROOT_KEY_FILE), "c2hvcnQ=\n").unwrap();
        let error = load_or_create_root_key(dir.path()).unwrap_err().to_string();
        assert!(error.contains("root key file") && !error.contains("c2hvcnQ"), "{error}");
    }

    #[test]
    fn a_file_is_not_a_usable_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(ensure_dir(&file).is_err());
        ensure_dir(&dir.path().join("new/sub")).unwrap();
    }
}
