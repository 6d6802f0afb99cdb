//! Places 1–5 of the lookup order: environment variables, `--bin-dir`, asset directories
//! and the cache; and running a binary to learn its version.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{Attempt, ProvisionError};
use super::version::{MIN_KUBE_APISERVER, major_minor, parse_reported_version, version_args};
use super::{Binary, Env, Source, Upstream, absolute};

/// How long a binary may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a cached binary lives: `<cache>/bin/<component>-<version>/<component>`.
pub(crate) fn cache_path(cache: &Path, component: Upstream, version: &str) -> PathBuf {
    let name = component.name();
    cache.join("bin").join(format!("{name}-{version}")).join(name)
}

/// How strictly a place is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Configured for this binary by the user (`$KMS_LAB_<BINARY>`, `--bin-dir`): anything
    /// wrong with it is worth a warning.
    Explicit,
    /// An asset directory: may legitimately lack a binary (envtest's has no `etcdctl`).
    Assets,
    /// The cache: must hold exactly the requested version.
    Cache,
}

/// Looks in places 1–5, recording each place tried in `tried`. `Ok(None)`: not found.
pub(crate) fn find(
    component: Upstream,
    wanted: &str,
    bin_dir: Option<&Path>,
    env: &Env,
    cache: Option<&Path>,
    tried: &mut Vec<Attempt>,
) -> Result<Option<Binary>, ProvisionError> {
    let name = component.name();

    // 1. $KMS_LAB_<BINARY>
    let var = component.env_var();
    match env.var(var) {
        None => tried.push(Attempt::new(format!("${var}"), "not set")),
        Some(value) => {
            let path = absolute(Path::new(value));
            let place = format!("${var}={}", path.display());
            if let Some(b) = probe(component, wanted, &path, Source::EnvVar(var), Kind::Explicit, place, tried)? {
                return Ok(Some(b));
            }
        }
    }

    // 2. --bin-dir
    match bin_dir {
        None => tried.push(Attempt::new("--bin-dir", "none given")),
        Some(dir) => {
            let path = absolute(&dir.join(name));
            let place = format!("--bin-dir {}", path.display());
            if let Some(b) = probe(component, wanted, &path, Source::BinDir, Kind::Explicit, place, tried)? {
                return Ok(Some(b));
            }
        }
    }

    // 3., 4. asset directories
    for var in ["KMS_LAB_ASSETS", "KUBEBUILDER_ASSETS"] {
        match env.var(var) {
            None => tried.push(Attempt::new(format!("${var}"), "not set")),
            Some(dir) => {
                let path = absolute(&Path::new(dir).join(name));
                let place = format!("${var} {}", path.display());
                if let Some(b) = probe(component, wanted, &path, Source::Assets(var), Kind::Assets, place, tried)? {
                    return Ok(Some(b));
                }
            }
        }
    }

    // 5. the cache
    match cache {
        None => tried.push(Attempt::new("cache", "no cache directory: set KMS_LAB_CACHE or HOME")),
        Some(cache) => {
            if let Some(b) = find_in_cache(component, wanted, cache, tried)? {
                return Ok(Some(b));
            }
        }
    }
    Ok(None)
}

/// Place 5 alone (also re-checked after taking the build lock).
pub(crate) fn find_in_cache(
    component: Upstream,
    wanted: &str,
    cache: &Path,
    tried: &mut Vec<Attempt>,
) -> Result<Option<Binary>, ProvisionError> {
    let path = cache_path(cache, component, wanted);
    let place = format!("cache {}", path.display());
    probe(component, wanted, &path, Source::Cache, Kind::Cache, place, tried)
}

/// Checks one candidate: `Ok(Some)` to use it, `Ok(None)` after recording why not.
fn probe(
    component: Upstream,
    wanted: &str,
    path: &Path,
    source: Source,
    kind: Kind,
    place: String,
    tried: &mut Vec<Attempt>,
) -> Result<Option<Binary>, ProvisionError> {
    match check(component, path) {
        Err(why) => {
            let missing = why == NO_SUCH_FILE;
            if kind == Kind::Explicit || (kind == Kind::Assets && !missing) {
                tracing::warn!(%component, "ignoring {place}: {why}");
            } else {
                tracing::debug!(%component, "skipping {place}: {why}");
            }
            tried.push(Attempt::new(place, why));
            Ok(None)
        }
        Ok(version) => {
            if component == Upstream::KubeApiserver && major_minor(&version).is_none_or(|found| found < MIN_KUBE_APISERVER) {
                let from = source.to_string();
                let fix = match &source {
                    Source::EnvVar(var) | Source::Assets(var) => format!(
                        "point ${var} at a kube-apiserver v1.29 or later, or unset it to use the pinned {}",
                        super::KUBERNETES_VERSION
                    ),
                    Source::BinDir => format!(
                        "put a kube-apiserver v1.29 or later in {}, or drop --bin-dir to use the pinned {}",
                        path.parent().unwrap_or(path).display(),
                        super::KUBERNETES_VERSION
                    ),
                    Source::Cache | Source::Built { .. } | Source::Image => {
                        format!("delete {} and rerun", path.parent().unwrap_or(path).display())
                    }
                };
                return Err(ProvisionError::TooOld { path: path.to_path_buf(), from, found: version, fix });
            }
            if version != wanted {
                if kind == Kind::Cache {
                    let why = format!("reports {version}, not {wanted}; it will be rebuilt");
                    tracing::warn!(%component, "ignoring {place}: {why}");
                    tried.push(Attempt::new(place, why));
                    return Ok(None);
                }
                tracing::warn!(
                    %component,
                    "using {} from {source}: it reports {version}, not the pinned {wanted}",
                    path.display()
                );
            }
            Ok(Some(Binary { component, path: path.to_path_buf(), version, source }))
        }
    }
}

const NO_SUCH_FILE: &str = "no such file";

/// The version `path` reports, or why it cannot be used.
pub(crate) fn check(component: Upstream, path: &Path) -> Result<String, String> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(NO_SUCH_FILE.to_owned()),
        Err(e) => return Err(format!("cannot stat it: {e}")),
    };
    if meta.is_dir() {
        return Err(format!("is a directory, not the {component} binary"));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("not executable (chmod +x {})", path.display()));
    }
    let args = version_args(component);
    let shown = format!("`{} {}`", component.name(), args.join(" "));
    let output = run_version(path, args).map_err(|e| format!("{shown} {e}"))?;
    parse_reported_version(component, &output).ok_or_else(|| {
        let mut excerpt: String = output.trim().chars().take(200).collect();
        if excerpt.is_empty() {
            excerpt = "nothing".to_owned();
        }
        format!("{shown} printed no {component} version, but: {excerpt:?}")
    })
}

/// Runs `path args` and returns its stdout and stderr; `Err` says what went wrong (to follow
/// the command in a message).
fn run_version(path: &Path, args: &[&str]) -> Result<String, String> {
    let mut attempts = 0;
    let mut child = loop {
        let spawned = Command::new(path).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        match spawned {
            // A just-written file (a fresh build, a test's script) can still be open for
            // writing in a child forked meanwhile by another thread.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(format!("could not run: {e}")),
            Ok(child) => break child,
        }
    };
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + VERSION_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", VERSION_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("could not wait for it: {e}")),
        }
    };
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    let stdout = text(stdout.join().unwrap_or_default());
    let stderr = text(stderr.join().unwrap_or_default());
    if !status.success() {
        let first = stderr.lines().chain(stdout.lines()).find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("failed ({status}): {first}"));
    }
    Ok(format!("{stdout}\n{stderr}"))
}
