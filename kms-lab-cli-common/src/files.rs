//! Files the user names, treated with care: a command replaces one only if it is absent or
//! already the kind of file the command writes (a report, a checkpoint, a key file), and it
//! replaces it atomically — a crash or a full disk leaves the old file or the new one, never
//! half of either. Anything else the path names is left byte for byte as it was, and the error
//! says what was found there and what to do.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// How a command recognises a file it wrote before (and may therefore replace).
#[derive(Debug, Clone, Copy)]
pub enum Recognise {
    /// A JSON object with every one of these top-level keys.
    JsonObjectWith(&'static [&'static str]),
    /// An XML document whose root element is one of these.
    XmlRoot(&'static [&'static str]),
    /// Text whose first non-blank line starts with this.
    FirstLine(&'static str),
    /// The writer's own reader decides (e.g. a key file: one base64 key per line).
    By(fn(&[u8]) -> bool),
}

/// The kind of file a command writes at a path the user names.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    /// What it is, for messages: `kms-lab scenarios JSON report`.
    pub what: &'static str,
    /// How an existing file of this kind is recognised.
    pub recognise: Recognise,
    /// Permission bits of a new file (an existing file keeps its own).
    pub mode: u32,
}

impl FileKind {
    /// A kind whose new files are readable by everyone (reports, configs): mode 0644.
    pub const fn public(what: &'static str, recognise: Recognise) -> Self {
        Self { what, recognise, mode: 0o644 }
    }

    /// Whether `bytes` are a file of this kind.
    pub fn recognises(&self, bytes: &[u8]) -> bool {
        match self.recognise {
            Recognise::JsonObjectWith(keys) => match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(serde_json::Value::Object(object)) => keys.iter().all(|key| object.contains_key(*key)),
                _ => false,
            },
            Recognise::XmlRoot(roots) => root_element(bytes).is_some_and(|root| roots.contains(&root)),
            Recognise::FirstLine(prefix) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|text| text.lines().find(|line| !line.trim().is_empty()))
                .is_some_and(|line| line.trim_start().starts_with(prefix)),
            Recognise::By(recognise) => recognise(bytes),
        }
    }
}

/// The first element's name of an XML document, after the declaration and comments.
fn root_element(bytes: &[u8]) -> Option<&str> {
    let mut text = std::str::from_utf8(bytes).ok()?.trim_start();
    loop {
        if let Some(rest) = text.strip_prefix("<?") {
            text = rest.split_once("?>")?.1.trim_start();
        } else if let Some(rest) = text.strip_prefix("<!--") {
            text = rest.split_once("-->")?.1.trim_start();
        } else {
            let name = text.strip_prefix('<')?;
            let end = name.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
            return Some(&name[..end]);
        }
    }
}

/// Why a file the user named was not written (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path holds something that is not a file of the kind the command writes.
    #[error("`{path}` exists and is not a {what} ({found}): it was left as it is; name another path, or move that file away first")]
    NotOurs {
        /// The path named.
        path: PathBuf,
        /// The kind the command writes.
        what: &'static str,
        /// What is there instead.
        found: String,
    },
    /// Reading, writing or renaming failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Fails, changing nothing, unless `path` is absent or a file of `kind`: the check a command
/// makes before long work whose result goes there.
pub fn check_replaceable(path: &Path, kind: &FileKind) -> Result<(), FileError> {
    let target = resolve(path)?;
    match std::fs::metadata(&target) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FileError::Io { action: "inspect", path: path.to_owned(), source }),
        Ok(meta) if meta.is_dir() => Err(not_ours(path, kind, "a directory".into())),
        Ok(meta) if !meta.is_file() => Err(not_ours(path, kind, "not a regular file".into())),
        Ok(_) => {
            let bytes = std::fs::read(&target).map_err(|source| FileError::Io { action: "read", path: path.to_owned(), source })?;
            if kind.recognises(&bytes) { Ok(()) } else { Err(not_ours(path, kind, describe(&bytes))) }
        }
    }
}

/// Writes `contents` to `path` if it is absent or a file of `kind` (see [`check_replaceable`]):
/// into a new file beside it, synced, then renamed over it. A symbolic link is followed (the
/// file it names is replaced, the link stays); an existing file keeps its permission bits.
pub fn replace(path: &Path, kind: &FileKind, contents: &[u8]) -> Result<(), FileError> {
    check_replaceable(path, kind)?;
    write_atomically(&resolve(path)?, kind.mode, contents).map_err(|(action, source)| FileError::Io {
        action,
        path: path.to_owned(),
        source,
    })
}

/// The path itself, or the file a symbolic link at it names.
fn resolve(path: &Path) -> Result<PathBuf, FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) => Ok(target),
            // A dangling link: its target is written (as `open` would), relative to the link.
            Err(_) => {
                let link =
                    std::fs::read_link(path).map_err(|source| FileError::Io { action: "read the link", path: path.to_owned(), source })?;
                Ok(path.parent().unwrap_or(Path::new(".")).join(link))
            }
        },
        _ => Ok(path.to_owned()),
    }
}

fn write_atomically(target: &Path, mode: u32, contents: &[u8]) -> Result<(), (&'static str, std::io::Error)> {
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ("create the directory of", e))?;
    let mode = std::fs::metadata(target).map_or(mode, |meta| meta.permissions().mode() & 0o7777);
    let name = target.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.kms-lab-{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(("write", error));
    }
    std::fs::rename(&temp, target).map_err(|error| {
        let _ = std::fs::remove_file(&temp);
        ("replace", error)
    })
}

fn not_ours(path: &Path, kind: &FileKind, found: String) -> FileError {
    FileError::NotOurs { path: path.to_owned(), what: kind.what, found }
}

/// What a file holds, in a few words for the error: its size and shape, never its content (the
/// file may hold a key or a credential; even its first characters stay out of messages).
fn describe(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "it is empty".into();
    }
    let shape = match std::str::from_utf8(bytes) {
        Err(_) => "binary data".to_owned(),
        Ok(_) if matches!(serde_json::from_slice::<serde_json::Value>(bytes), Ok(serde_json::Value::Object(_))) => {
            "a JSON object of another shape".to_owned()
        }
        Ok(_) if root_element(bytes).is_some() => "an XML document of another kind".to_owned(),
        Ok(text) => format!("text in {} line(s)", text.lines().count()),
    };
    format!("{} bytes: {shape}", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON_REPORT: FileKind = FileKind::public("JSON report", Recognise::JsonObjectWith(&["checks", "api"]));
    const JUNIT: FileKind = FileKind::public("JUnit report", Recognise::XmlRoot(&["testsuites", "testsuite"]));

    #[test]
    fn an_absent_file_is_created_and_an_own_file_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.json");
        replace(&path, &JSON_REPORT, br#"{"checks": [], "api": "v2"}"#).unwrap();
        replace(&path, &JSON_REPORT, br#"{"checks": [1], "api": "v2"}"#).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), br#"{"checks": [1], "api": "v2"}"#);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["report.json"], "no temporary file is left behind");
    }

    #[test]
    fn anything_else_is_left_byte_for_byte_and_the_error_says_what_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 4] = [
            ("Cargo.toml", b"[package]\nname = \"s3cr3t\"\n", "26 bytes: text in 2 line(s)"),
            ("other.json", br#"{"name": "s3cr3t package"}"#, "26 bytes: a JSON object of another shape"),
            ("blob", &[0xff, 0xfe, 0, 1], "4 bytes: binary data"),
            ("junit.xml", b"<?xml version=\"1.0\"?>\n<s3cr3t/>", "31 bytes: an XML document of another kind"),
        ];
        for (name, bytes, found) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let kind = if name.ends_with(".xml") { JUNIT } else { JSON_REPORT };
            let error = replace(&path, &kind, b"{}").unwrap_err().to_string();
            assert!(error.contains(found) && error.contains("left as it is"), "{name}: {error}");
            // The file may be a key or a credential: none of its content is in the message.
            assert!(!error.contains("s3cr3t") && !error.contains("package"), "{name}: the message echoes the file: {error}");
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} unchanged");
        }
        let error = replace(dir.path(), &JSON_REPORT, b"{}").unwrap_err().to_string();
        assert!(error.contains("a directory"), "{error}");
    }

    #[test]
    fn xml_roots_are_found_after_the_declaration_and_comments() {
        assert!(JUNIT.recognises(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!-- kms-lab -->\n<testsuites name=\"x\">"));
        assert!(JUNIT.recognises(b"<testsuite/>"));
        assert!(!JUNIT.recognises(b"<html>"));
        assert!(!JUNIT.recognises(b"testsuites"));
    }

    #[test]
    fn a_symbolic_link_keeps_pointing_at_the_replaced_file_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.json");
        std::fs::write(&real, br#"{"checks": [], "api": "v1beta1"}"#).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        replace(&link, &JSON_REPORT, br#"{"checks": [2], "api": "v2"}"#).unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), br#"{"checks": [2], "api": "v2"}"#);
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
