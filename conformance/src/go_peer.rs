//! The Go peer: a KMS v2 plugin built on upstream's own server framework
//! (`k8s.io/kms/pkg/service`, `NewGRPCService`) with an AES-256-GCM KEK, kept in
//! `conformance/go-plugin/`. Conformance must pass it: a cross-check on code we did not write.
//!
//! [`locate_or_build`] finds the binary: `KMS_LAB_GO_PLUGIN` (a prebuilt binary) first, then a
//! build cache keyed by a hash of `go.mod`, `go.sum` and `main.go`, else `go build` once into it.
//!
//! The binary takes `--socket PATH` (required) and `--key-name NAME`; SIGHUP adds a new KEK
//! version (a rotation), SIGTERM stops it and removes the socket.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The environment variable naming a prebuilt Go peer binary.
pub const ENV_PREBUILT: &str = "KMS_LAB_GO_PLUGIN";
/// The files whose content keys the build cache.
const SOURCES: &[&str] = &["go.mod", "go.sum", "main.go"];
/// The binary's name.
const BINARY: &str = "kms-go-plugin";

/// Why the Go peer could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum GoPeerError {
    /// `KMS_LAB_GO_PLUGIN` names a file that does not exist.
    #[error("{ENV_PREBUILT}=`{0}` does not exist: point it at a built kms-go-plugin, or unset it to build from source")]
    MissingPrebuilt(PathBuf),
    /// A source file could not be read.
    #[error("cannot read the Go peer source `{path}`: {source}")]
    Source {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cache directory could not be written.
    #[error("cannot write the build cache `{path}`: {source}")]
    Cache {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `go` could not be run.
    #[error("cannot run `go`: {0} (install Go 1.26+ and put it on PATH, or set {ENV_PREBUILT} to a prebuilt binary)")]
    NoGo(#[source] std::io::Error),
    /// `go build` failed.
    #[error(
        "`go build` in `{dir}` failed ({status}); last output lines:\n{output}\n(it needs the Go module proxy once to fetch k8s.io/kms; set {ENV_PREBUILT} to use a prebuilt binary)"
    )]
    Build {
        /// The source directory.
        dir: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its output.
        output: String,
    },
}

/// The Go peer's source directory (`conformance/go-plugin`).
pub fn source_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/go-plugin"))
}

/// kms-lab's cache directory: `KMS_LAB_CACHE`, else `~/.cache/kms-lab`, else `/tmp/kms-lab-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KMS_LAB_CACHE") {
        return dir.into();
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cache").join("kms-lab"),
        None => PathBuf::from("/tmp/kms-lab-cache"),
    }
}

/// A hash of the Go peer's sources: the cache key.
pub fn source_hash() -> Result<String, GoPeerError> {
    let dir = source_dir();
    let mut hasher = Sha256::new();
    for name in SOURCES {
        let path = dir.join(name);
        let content = std::fs::read(&path).map_err(|source| GoPeerError::Source { path, source })?;
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(&content);
    }
    Ok(hex::encode(&hasher.finalize()[..8]))
}

/// The Go peer binary: `KMS_LAB_GO_PLUGIN` if set, else the one cached under `cache_dir` for the
/// current sources, else built there now with `go build` (once; concurrent callers are safe).
pub fn locate_or_build(cache_dir: &Path) -> Result<PathBuf, GoPeerError> {
    if let Some(prebuilt) = std::env::var_os(ENV_PREBUILT) {
        let prebuilt = PathBuf::from(prebuilt);
        return if prebuilt.is_file() { Ok(prebuilt) } else { Err(GoPeerError::MissingPrebuilt(prebuilt)) };
    }
    let dir = cache_dir.join("go-plugin").join(source_hash()?);
    let binary = dir.join(BINARY);
    if binary.is_file() {
        return Ok(binary);
    }
    std::fs::create_dir_all(&dir).map_err(|source| GoPeerError::Cache { path: dir.clone(), source })?;
    let partial = dir.join(format!("{BINARY}.partial-{}", std::process::id()));
    let source = source_dir();
    let output = Command::new("go")
        .args(["build", "-trimpath", "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(&source)
        .output()
        .map_err(GoPeerError::NoGo)?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = text.lines().collect();
        let output_tail = lines[lines.len().saturating_sub(15)..].join("\n");
        let _ = std::fs::remove_file(&partial);
        return Err(GoPeerError::Build { dir: source, status: output.status, output: output_tail });
    }
    // rename(2) is atomic: a concurrent build of the same sources just replaces it with an equal file.
    std::fs::rename(&partial, &binary).map_err(|source| GoPeerError::Cache { path: binary.clone(), source })?;
    Ok(binary)
}
