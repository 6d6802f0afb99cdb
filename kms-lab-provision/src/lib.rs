//! Provisioning of the pinned upstream binaries the stack runs: `kube-apiserver` and
//! `kubectl` ([`KUBERNETES_VERSION`]), `etcd` and `etcdctl` ([`ETCD_VERSION`]); and, only when
//! a scenario or command asks for it, `kube-controller-manager` ([`find_or_build`]).
//!
//! # Lookup order
//!
//! Like controller-runtime's envtest, each binary is looked for in these places, first
//! match wins ([`Source`] records which one):
//!
//! 1. the environment variable naming the binary itself: `KMS_LAB_KUBE_APISERVER`,
//!    `KMS_LAB_KUBECTL`, `KMS_LAB_ETCD`, `KMS_LAB_ETCDCTL`, `KMS_LAB_KUBE_CONTROLLER_MANAGER`
//!    ([`Upstream::env_var`]);
//! 2. [`ProvisionOptions::bin_dir`] (`--bin-dir DIR`), as `DIR/<binary>`;
//! 3. `$KMS_LAB_ASSETS/<binary>`;
//! 4. `$KUBEBUILDER_ASSETS/<binary>` (an envtest asset directory; it has no `etcdctl`);
//! 5. the cache, `<cache>/bin/<binary>-<version>/<binary>`, where `<cache>` is
//!    [`ProvisionOptions::cache_dir`], else `$KMS_LAB_CACHE`, else `~/.cache/kms-lab`;
//! 6. a build with Go from the Go module proxy into the cache, if
//!    [`ProvisionOptions::allow_build`].
//!
//! A binary found in places 1–4 is run with its version flag. A version other than the
//! requested one is accepted with a warning (the user chose it), but a kube-apiserver older
//! than v1.29 (no KMS v2 GA) is an error. A place that is unset, missing or unusable is
//! skipped; if every place fails, the error lists each one with the reason and the fix. A
//! binary in the cache must report exactly the requested version, else it is rebuilt.
//!
//! # Building
//!
//! `kube-apiserver` and `kubectl` come from the module `k8s.io/kubernetes`, through a
//! wrapper module in `<cache>/gobuild/k8s-<version>/` whose `go.mod` requires
//! `k8s.io/kubernetes` and replaces each of its `./staging/` modules by the published
//! `k8s.io/<module> v0.X.Y` (generated from Kubernetes' own `go.mod`, then `go mod tidy`).
//! Both are built in that one directory, so the second build reuses Go's build cache.
//! `kube-controller-manager` (the StorageVersionMigration controller) needs modules the
//! apiserver does not, so it has its own wrapper module, generated the same way, in
//! `<cache>/gobuild/k8s-<version>-controller-manager/`; it is built only on demand, about
//! 2 minutes on 2 cores once kube-apiserver's packages are in Go's build cache.
//! `etcd` and `etcdctl` come from `<cache>/gobuild/etcd-<version>/` the same way. Builds are
//! static (`CGO_ENABLED=0`, `-trimpath`), without debug information (`-s -w`, and none
//! compiled: `-gcflags=all=-dwarf=false`) and stamped with the version, like upstream's;
//! otherwise Go's environment (`GOPROXY`, `GOFLAGS`, `GOTOOLCHAIN`, ...) is respected. Go's
//! whole output goes to `<cache>/gobuild/<module>/build-<binary>.log`.
//!
//! A build holds an exclusive lock on `<cache>/.lock`, so concurrent test processes build
//! once: whoever waited finds the binary in the cache. A binary is built to
//! `<dest>.tmp-<pid>`, checked, then renamed into place, so the cache never holds a partial
//! binary. The first build of `kube-apiserver` takes about 8 minutes on 2 cores.
//!
//! # Go-built test subjects
//!
//! The Go binaries kms-lab runs as the plugin (or remote KMS) under test — the Go peer and
//! the third-party plugins of `../shared/thirdparty` — are found the same way by
//! [`locate_go_subject`] ([`GoSubject`]): `$KMS_LAB_<NAME>`, the cache, a build with Go.

mod error;
mod gobuild;
mod gomod;
mod lookup;
mod subject;
mod version;
pub mod workspace;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

pub use error::{Attempt, BuildFailure, FIX, ProvisionError};
pub use subject::{
    GoInstall, GoRecipe, GoReplace, GoSubject, REQUIRE_THIRDPARTY_ENV, THIRDPARTY_ENV, go_recipe_source, locate_go_install,
    locate_go_recipe, locate_go_subject, thirdparty_source_or_skip,
};
pub use version::{KubeMinor, resolve_supported_kubernetes};

/// The Kubernetes version of `kube-apiserver` and `kubectl` kms-lab is tested against.
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The Kubernetes versions `kms-lab scenarios` and `kms-lab report` run on
/// (`--kubernetes-version`): the pinned patch release of each of the three newest minors,
/// newest first. Each is built from the Go module proxy into the cache on first use.
pub const SUPPORTED_KUBERNETES_VERSIONS: [&str; 3] = ["v1.37.2", "v1.36.3", "v1.35.4"];

/// The etcd version of `etcd` and `etcdctl` kms-lab is tested against.
pub const ETCD_VERSION: &str = "v3.6.16";

/// One of the upstream binaries; [`Upstream::name`] follows from the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum Upstream {
    /// `kube-apiserver`, from `k8s.io/kubernetes`.
    KubeApiserver,
    /// `kubectl`, from `k8s.io/kubernetes`.
    Kubectl,
    /// `etcd`, from `go.etcd.io/etcd/server/v3`.
    Etcd,
    /// `etcdctl`, from `go.etcd.io/etcd/etcdctl/v3`.
    Etcdctl,
    /// `kube-controller-manager`, from `k8s.io/kubernetes`: only on demand ([`find_or_build`]),
    /// never by [`provision`] (so not in [`Upstream::PROVISIONED`]).
    KubeControllerManager,
}

impl Upstream {
    /// What [`provision`] provides, in its order (every binary a stack always needs).
    pub const PROVISIONED: [Upstream; 4] = [Self::KubeApiserver, Self::Kubectl, Self::Etcd, Self::Etcdctl];

    /// The binary's file name, e.g. `kube-apiserver`.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The environment variable that names the binary, e.g. `KMS_LAB_KUBE_APISERVER`.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::KubeApiserver => "KMS_LAB_KUBE_APISERVER",
            Self::Kubectl => "KMS_LAB_KUBECTL",
            Self::Etcd => "KMS_LAB_ETCD",
            Self::Etcdctl => "KMS_LAB_ETCDCTL",
            Self::KubeControllerManager => "KMS_LAB_KUBE_CONTROLLER_MANAGER",
        }
    }

    /// Whether it comes from Kubernetes (else from etcd).
    fn is_kubernetes(self) -> bool {
        matches!(self, Self::KubeApiserver | Self::Kubectl | Self::KubeControllerManager)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to provision, and how.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// A directory holding the binaries (`--bin-dir`), looked in after the per-binary
    /// environment variables.
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version, `v1.X.Y` (X ≥ 29); default [`KUBERNETES_VERSION`].
    pub kubernetes_version: String,
    /// The etcd version, `v3.X.Y`; default [`ETCD_VERSION`].
    pub etcd_version: String,
    /// The cache; `None` means `$KMS_LAB_CACHE`, else `~/.cache/kms-lab`.
    pub cache_dir: Option<PathBuf>,
    /// Whether a missing binary may be built with Go.
    pub allow_build: bool,
    /// Whether to explain a build and show its progress on stderr.
    pub progress: bool,
    /// kube-apiserver and etcd run from upstream images pulled from a registry (the container
    /// runtime with `KMS_LAB_IMAGES=registry`): they are neither looked for nor built on this
    /// host; kubectl and etcdctl are used where found and otherwise provisioned by the step
    /// that first needs them on the host ([`Binary::on_host`]). No Go build for the demo.
    pub pulled_images: bool,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        Self {
            bin_dir: None,
            kubernetes_version: KUBERNETES_VERSION.to_owned(),
            etcd_version: ETCD_VERSION.to_owned(),
            cache_dir: None,
            allow_build: true,
            progress: true,
            pulled_images: false,
        }
    }
}

impl ProvisionOptions {
    /// The cache directory these options use: [`Self::cache_dir`], else `$KMS_LAB_CACHE`,
    /// else `~/.cache/kms-lab`; `None` if neither that nor `$HOME` is set.
    pub fn effective_cache_dir(&self) -> Option<PathBuf> {
        Env::from_process().cache_dir(self)
    }

    /// The requested version of `component`.
    pub fn version_of(&self, component: Upstream) -> &str {
        if component.is_kubernetes() { &self.kubernetes_version } else { &self.etcd_version }
    }
}

/// A binary ready to run.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Which binary.
    pub component: Upstream,
    /// Its absolute path.
    pub path: PathBuf,
    /// The version it reports, with a leading `v` (`v1.37.2`, `v3.6.16`).
    pub version: String,
    /// Where it was found.
    pub source: Source,
}

impl Binary {
    /// This binary on the host: itself, or — when only its image was provisioned
    /// ([`Source::Image`]) — found or built now at its version. Blocking: a build takes minutes.
    pub fn on_host(&self) -> Result<Binary, ProvisionError> {
        if self.source != Source::Image {
            return Ok(self.clone());
        }
        let mut options = ProvisionOptions::default();
        if self.component.is_kubernetes() {
            options.kubernetes_version = self.version.clone();
        } else {
            options.etcd_version = self.version.clone();
        }
        find_or_build(self.component, &options)
    }
}

/// Where a [`Binary`] was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The environment variable naming it, e.g. `KMS_LAB_ETCD`.
    EnvVar(&'static str),
    /// [`ProvisionOptions::bin_dir`].
    BinDir,
    /// The asset directory named by this variable: `KMS_LAB_ASSETS` or `KUBEBUILDER_ASSETS`.
    Assets(&'static str),
    /// The cache, built earlier.
    Cache,
    /// Built now, in this many seconds.
    Built {
        /// Wall-clock seconds the build took.
        seconds: u64,
    },
    /// Not on this host: its upstream image is pulled from the registry
    /// ([`ProvisionOptions::pulled_images`]); the path is the bare program name.
    Image,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EnvVar(var) | Self::Assets(var) => write!(f, "${var}"),
            Self::BinDir => f.write_str("--bin-dir"),
            Self::Cache => f.write_str("the cache"),
            Self::Built { seconds } => write!(f, "a build ({seconds} s)"),
            Self::Image => f.write_str("the registry's image (not on this host)"),
        }
    }
}

/// The four binaries the stack runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `kube-apiserver`.
    pub kube_apiserver: Binary,
    /// `kubectl`.
    pub kubectl: Binary,
    /// `etcd`.
    pub etcd: Binary,
    /// `etcdctl`.
    pub etcdctl: Binary,
}

impl Binaries {
    /// All four, in [`Upstream::PROVISIONED`] order.
    pub fn all(&self) -> [&Binary; 4] {
        [&self.kube_apiserver, &self.kubectl, &self.etcd, &self.etcdctl]
    }

    /// The binary for `component`; `None` for kube-controller-manager, which is provisioned
    /// only on demand ([`find_or_build`]).
    pub fn get(&self, component: Upstream) -> Option<&Binary> {
        match component {
            Upstream::KubeApiserver => Some(&self.kube_apiserver),
            Upstream::Kubectl => Some(&self.kubectl),
            Upstream::Etcd => Some(&self.etcd),
            Upstream::Etcdctl => Some(&self.etcdctl),
            Upstream::KubeControllerManager => None,
        }
    }
}

/// Finds (or builds) all four binaries; see the [module docs](self) for where it looks.
/// Blocking: a first build takes minutes.
pub fn provision(options: &ProvisionOptions) -> Result<Binaries, ProvisionError> {
    provision_with(options, &Env::from_process())
}

/// Finds (or builds) one binary; see the [module docs](self) for where it looks. Blocking.
pub fn find_or_build(component: Upstream, options: &ProvisionOptions) -> Result<Binary, ProvisionError> {
    find_or_build_with(component, options, &Env::from_process())
}

fn provision_with(options: &ProvisionOptions, env: &Env) -> Result<Binaries, ProvisionError> {
    // Reject bad versions before anything slow.
    let versions = Versions::parse(options)?;
    let one = |component: Upstream| -> Result<Binary, ProvisionError> {
        if !options.pulled_images {
            return find_or_build_with(component, options, env);
        }
        let image = Binary { component, path: component.name().into(), version: versions.of(component).to_owned(), source: Source::Image };
        match component {
            // Run from the registry's images, never from the host.
            Upstream::KubeApiserver | Upstream::Etcd | Upstream::KubeControllerManager => Ok(image),
            // Used on the host by some steps: where found, else when first needed.
            Upstream::Kubectl | Upstream::Etcdctl => {
                Ok(find_or_build_with(component, &ProvisionOptions { allow_build: false, ..options.clone() }, env).unwrap_or(image))
            }
        }
    };
    Ok(Binaries {
        kube_apiserver: one(Upstream::KubeApiserver)?,
        kubectl: one(Upstream::Kubectl)?,
        etcd: one(Upstream::Etcd)?,
        etcdctl: one(Upstream::Etcdctl)?,
    })
}

fn find_or_build_with(component: Upstream, options: &ProvisionOptions, env: &Env) -> Result<Binary, ProvisionError> {
    let versions = Versions::parse(options)?;
    let wanted = options.version_of(component);
    let cache = env.cache_dir(options);
    let mut tried = Vec::new();
    if let Some(binary) = lookup::find(component, wanted, options.bin_dir.as_deref(), env, cache.as_deref(), &mut tried)? {
        tracing::debug!(%component, path = %binary.path.display(), version = %binary.version, source = %binary.source, "found");
        return Ok(binary);
    }

    let place = match &cache {
        Some(cache) => format!("build with Go into {}", cache.display()),
        None => "build with Go".to_owned(),
    };
    let not_found = |mut tried: Vec<Attempt>, why: String| {
        tried.push(Attempt::new(place.clone(), why));
        Err(ProvisionError::NotFound { component, version: wanted.to_owned(), tried })
    };
    if !options.allow_build {
        return not_found(tried, "not allowed (allow_build is false)".to_owned());
    }
    let Some(cache) = cache else {
        return not_found(tried, "no cache directory to build into: set KMS_LAB_CACHE or HOME".to_owned());
    };
    if let Err(why) = gobuild::go_version(&env.go) {
        return not_found(tried, why);
    }
    gobuild::build(&gobuild::Build { component, versions: &versions, cache: &cache, env, progress: options.progress, tried })
}

/// The validated requested versions.
#[derive(Debug, Clone)]
struct Versions {
    kubernetes: version::KubeVersion,
    etcd: version::EtcdVersion,
}

impl Versions {
    fn parse(options: &ProvisionOptions) -> Result<Self, ProvisionError> {
        Ok(Self {
            kubernetes: version::parse_kubernetes_version(&options.kubernetes_version)?,
            etcd: version::parse_etcd_version(&options.etcd_version)?,
        })
    }

    fn of(&self, component: Upstream) -> &str {
        if component.is_kubernetes() { &self.kubernetes.full } else { &self.etcd.full }
    }
}

/// The part of the environment provisioning reads, captured once so tests can supply
/// their own without touching the process environment.
#[derive(Debug, Clone)]
struct Env {
    vars: HashMap<&'static str, OsString>,
    /// The `go` command to run.
    go: OsString,
}

impl Env {
    const VARS: [&'static str; 10] = [
        "KMS_LAB_KUBE_APISERVER",
        "KMS_LAB_KUBE_CONTROLLER_MANAGER",
        "KMS_LAB_KUBECTL",
        "KMS_LAB_ETCD",
        "KMS_LAB_ETCDCTL",
        "KMS_LAB_ASSETS",
        "KUBEBUILDER_ASSETS",
        "KMS_LAB_CACHE",
        "HOME",
        subject::THIRDPARTY_ENV,
    ];

    fn from_process() -> Self {
        let subjects: Vec<&str> = GoSubject::ALL.iter().map(|s| s.env_var()).collect();
        let vars = Self::VARS.iter().chain(subjects.iter()).filter_map(|&name| std::env::var_os(name).map(|value| (name, value))).collect();
        Self { vars, go: "go".into() }
    }

    /// The variable's value; an empty one counts as unset.
    fn var(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(name).map(OsString::as_os_str).filter(|v| !v.is_empty())
    }

    fn cache_dir(&self, options: &ProvisionOptions) -> Option<PathBuf> {
        if let Some(dir) = &options.cache_dir {
            return Some(absolute(dir));
        }
        if let Some(dir) = self.var("KMS_LAB_CACHE") {
            return Some(absolute(Path::new(dir)));
        }
        self.var("HOME").map(|home| Path::new(home).join(".cache").join("kms-lab"))
    }

    /// `path` with `$HOME` shown as `~`, for messages.
    fn tilde(&self, path: &Path) -> String {
        match self.var("HOME").and_then(|home| path.strip_prefix(home).ok()) {
            Some(rest) if rest.as_os_str().is_empty() => "~".to_owned(),
            Some(rest) => format!("~/{}", rest.display()),
            None => path.display().to_string(),
        }
    }
}

/// `path` made absolute against the current directory (unchanged if that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
