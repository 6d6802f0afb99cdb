//! Go-built test subjects: the binaries kms-lab runs as the plugin (or remote KMS) under
//! test rather than as its control plane — the Go peer of `kms-lab-conformance/go-plugin`, mock-kms's
//! SDK probes (`mock-kms/sdk-probes/*`: the clouds' own Go SDKs against its dialects) and the
//! third-party plugins and emulator of `../shared/thirdparty` (see its README for the
//! upstream commits). One locator for all of them: [`locate_go_subject`].
//!
//! # Lookup order
//!
//! 1. the environment variable naming the binary ([`GoSubject::env_var`], e.g.
//!    `KMS_LAB_AWS_ENCRYPTION_PROVIDER`): an executable file, used as it is;
//! 2. the cache, `<cache>/bin/<name>-<key>/<name>` (the same `<cache>` as the control-plane
//!    binaries), where `<key>` is the pinned upstream commit for a third-party subject and a
//!    hash of the sources for the Go peer and the probes (so an edited one is rebuilt);
//! 3. a build with Go from the source folder into the cache, if
//!    [`ProvisionOptions::allow_build`]: under the same lock, with the same progress and log
//!    (`<cache>/gobuild/<name>-<key>/build-<name>.log`) and the same temporary-then-rename
//!    install as the control-plane binaries.
//!
//! A subject whose copy lacks its upstream main package (gcp-kms-emulator) is built from a
//! small main of kms-lab's (`kms-lab-provision/go/`) in a generated module under `<cache>/gobuild/` that
//! `replace`s the subject's module by its unmodified source folder; its cache key adds a hash of
//! that main to the commit.
//!
//! Third-party sources are looked for in `$KMS_LAB_THIRDPARTY/<folder>`, then
//! `<workspace>/../shared/thirdparty/<folder>` (CI clones the repository with `shared/` beside
//! it). Builds are static (`CGO_ENABLED=0`, `-trimpath`) with the subject's `GOFLAGS`
//! (`-mod=mod` where the upstream `go.sum` is incomplete; empty for trousseau, whose `go.work`
//! is used).

use std::fmt;
use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::error::{Attempt, BuildFailure, ProvisionError};
use super::gobuild::{self, StepError, Steps, TAIL_LINES};
use super::workspace::workspace_root;
use super::{Env, ProvisionOptions, absolute};

/// The environment variable naming a folder that holds the third-party sources.
pub const THIRDPARTY_ENV: &str = "KMS_LAB_THIRDPARTY";

/// The module files whose content keys a workspace subject's cache entry, before its `.go` files.
const MODULE_FILES: &[&str] = &["go.mod", "go.sum"];

/// A Go-built binary kms-lab runs as a test subject; [`GoSubject::ALL`] follows from the
/// variants, in the order they are declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::VariantArray)]
pub enum GoSubject {
    /// `kms-go-plugin`: the Go peer, a KMS v2 plugin on upstream's `k8s.io/kms/pkg/service`
    /// (`kms-lab-conformance/go-plugin`).
    GoPeer,
    /// `jdcloud-sdk-probe`: mock-kms's probe of its `jdcloud` dialect on JD Cloud's Go SDK
    /// (`mock-kms/sdk-probes/jdcloud`, jdcloud-sdk-go v1.16.0).
    JdcloudSdkProbe,
    /// `aliyun-sdk-probe`: mock-kms's probe of its `aliyun` dialect on alibaba-cloud-sdk-go
    /// v1.61.18, signature v1 (`mock-kms/sdk-probes/aliyun`).
    AliyunSdkProbe,
    /// `alibabacloud-sdk-probe`: mock-kms's probe of its `aliyun` dialect on
    /// alibabacloud-go/kms-20160120/v3, ACS3-HMAC-SHA256 (`mock-kms/sdk-probes/alibabacloud`).
    AlibabacloudSdkProbe,
    /// `aws-encryption-provider`: EKS's plugin (v2 and v1beta1 on one socket), AWS KMS.
    AwsEncryptionProvider,
    /// `k8s-cloudkms-plugin`: GKE's plugin (`--kms v2|v1`), Cloud KMS.
    CloudKmsPlugin,
    /// `trousseau`: trousseau's core plugin (v1beta1), talking to provider processes.
    Trousseau,
    /// `trousseau-awskms`: trousseau's AWS KMS provider process.
    TrousseauAwsKms,
    /// `trousseau-vault`: trousseau's Vault Transit provider process.
    TrousseauVault,
    /// `trousseau-debug`: trousseau's base64 provider (no encryption: a negative control).
    TrousseauDebug,
    /// `gcp-kms-emulator`: a Cloud KMS emulator's REST server. Upstream's `cmd/server-rest` is
    /// missing from the copy here, so kms-lab's own main (`kms-lab-provision/go/gcp-kms-emulator-rest`)
    /// serves the emulator's REST gateway over its storage, built against the unmodified folder.
    GcpKmsEmulator,
}

/// Where a subject's source folder lives.
#[derive(Debug, Clone, Copy)]
enum Folder<'a> {
    /// Inside this workspace, relative to its root.
    Workspace(&'a str),
    /// Under the third-party folder.
    ThirdParty(&'a str),
}

/// Everything that describes one subject: a [`GoSubject`]'s row of the table below, or a
/// [`GoRecipe`] from a plugin manifest.
#[derive(Debug, Clone, Copy)]
struct Spec<'a> {
    name: &'a str,
    env_var: &'a str,
    folder: Folder<'a>,
    /// The main package, relative to the folder (`go build` runs in the folder); for a subject
    /// with a [`Wrapper`], upstream's main package (what `go install` names outside this
    /// environment), which the copy here lacks.
    package: &'a str,
    /// The Go module at the root of the folder (the repository's module).
    module: &'a str,
    /// The pinned upstream commit (`None` for the Go peer, which lives here).
    commit: Option<&'a str>,
    goflags: &'a str,
    /// Whether the folder's `go.work` is used (else `GOWORK=off`).
    go_work: bool,
    estimate: &'a str,
    /// kms-lab's own `main`, for a subject whose copy lacks its upstream main package.
    wrapper: Option<Wrapper>,
    /// A `go.mod` to build with, for a folder that has none (a dep-managed repository): written
    /// into a build copy of the folder, never into the folder.
    go_mod: Option<&'a str>,
    /// Modules the build takes from other third-party folders (`replace` directives added to the
    /// build copy's `go.mod`, never to the folder's).
    replace: &'a [GoReplace],
}

impl Spec<'_> {
    /// `go install MODULE/PACKAGE@COMMIT`, for a third-party subject.
    fn go_install(&self) -> Option<String> {
        let package = self.package.trim_start_matches('.').trim_start_matches('/');
        let path = if package.is_empty() { self.module.to_owned() } else { format!("{}/{package}", self.module) };
        self.commit.map(|commit| format!("go install {path}@{commit}"))
    }

    fn is_third_party(&self) -> bool {
        matches!(self.folder, Folder::ThirdParty(_))
    }

    fn folder(&self) -> &str {
        match self.folder {
            Folder::Workspace(path) | Folder::ThirdParty(path) => path,
        }
    }
}

/// A third-party Go plugin as its manifest describes it (`go_build:` with `module:` and
/// `commit:`): built by the same locator, cache and lock as a [`GoSubject`], with no entry in
/// kms-lab's tables. Adding a third-party Go plugin is a manifest plus its source folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoRecipe {
    /// The binary's name in the cache (the manifest's name, e.g. `ack-kms-plugin`).
    pub name: String,
    /// The variable naming a prebuilt binary (`KMS_LAB_ACK_KMS_PLUGIN`).
    pub env_var: String,
    /// The source folder's name under the third-party folder.
    pub folder: String,
    /// The main package, relative to the folder (`.`, `./cmd/server`).
    pub package: String,
    /// The Go module of the folder.
    pub module: String,
    /// The pinned upstream commit (40 hex digits).
    pub commit: String,
    /// `GOFLAGS` of the build (`-mod=mod`, or empty).
    pub goflags: String,
    /// Whether the folder's `go.work` is used (else `GOWORK=off`).
    pub go_work: bool,
    /// A `go.mod` for a folder that has none: written into a build copy, never into the folder.
    pub go_mod: Option<String>,
    /// Modules taken from other third-party folders: `replace` directives in the build copy's
    /// `go.mod` (for a module the module proxy refuses and no served version replaces).
    pub replace: Vec<GoReplace>,
}

/// A `replace MODULE => <third-party folder>` of a build copy's `go.mod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoReplace {
    /// The module path replaced.
    pub module: String,
    /// The folder under the third-party folder that holds it, unmodified.
    pub folder: String,
}

impl GoRecipe {
    /// ack-secret-manager (AliyunContainerService/ack-secret-manager, Apache-2.0, commit 223ebff):
    /// the seed's secret sync controller, `./cmd/manager`. Its go.mod wants
    /// `ack-ram-tool/pkg/credentials/provider` v0.17.0, which the module proxy refuses and no
    /// served version replaces: the build copy takes it from the third-party folder
    /// `ack-ram-tool-credentials-provider` (that module, unmodified, at its v0.17.0 tag).
    pub fn ack_secret_manager() -> Self {
        let name = "ack-secret-manager";
        Self {
            name: name.into(),
            env_var: Self::env_var_for(name),
            folder: name.into(),
            package: "./cmd/manager".into(),
            module: "github.com/AliyunContainerService/ack-secret-manager".into(),
            commit: "223ebffe3633f9c2f59a7202850493dedab18f24".into(),
            goflags: "-mod=mod".into(),
            go_work: false,
            go_mod: None,
            replace: vec![GoReplace {
                module: "github.com/AliyunContainerService/ack-ram-tool/pkg/credentials/provider".into(),
                folder: "ack-ram-tool-credentials-provider".into(),
            }],
        }
    }

    /// The variable naming a prebuilt binary of the plugin `name`: `KMS_LAB_` and the name in
    /// upper case with `_` for `-` (`ack-kms-plugin` → `KMS_LAB_ACK_KMS_PLUGIN`).
    pub fn env_var_for(name: &str) -> String {
        format!("KMS_LAB_{}", name.to_ascii_uppercase().replace(['-', '.'], "_"))
    }

    fn spec(&self) -> Spec<'_> {
        Spec {
            name: &self.name,
            env_var: &self.env_var,
            folder: Folder::ThirdParty(&self.folder),
            package: &self.package,
            module: &self.module,
            commit: Some(&self.commit),
            goflags: &self.goflags,
            go_work: self.go_work,
            estimate: "about 1 minute on 2 cores",
            wrapper: None,
            go_mod: self.go_mod.as_deref(),
            replace: &self.replace,
        }
    }

    /// How to get it outside this environment: `go install MODULE/PACKAGE@COMMIT`.
    pub fn go_install(&self) -> String {
        self.spec().go_install().unwrap_or_default()
    }
}

/// A plugin a manifest gets by `go install MODULE/PACKAGE@VERSION` (`go_install:`), as a user
/// outside this environment would: for a module whose source is not (or may not be) in the
/// third-party folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoInstall {
    /// The binary's name in the cache (the manifest's name).
    pub name: String,
    /// The variable naming a built binary, or a checkout of the module to build from.
    pub env_var: String,
    /// `MODULE/PACKAGE@VERSION`.
    pub target: String,
}

/// The binary of `install`: the file its variable names, or a build of the checkout it names
/// (the package `go build`s there), then the cache (`<cache>/bin/<name>-<version>/<name>`), then
/// `go install` into the cache if [`ProvisionOptions::allow_build`]. An error lists each place
/// tried and says what to set. Blocking.
pub fn locate_go_install(install: &GoInstall, options: &ProvisionOptions) -> Result<PathBuf, ProvisionError> {
    locate_install_with(install, options, &Env::from_process())
}

pub(crate) fn locate_install_with(install: &GoInstall, options: &ProvisionOptions, env: &Env) -> Result<PathBuf, ProvisionError> {
    let (package, version) = install.target.split_once('@').unwrap_or((&install.target, "latest"));
    let name = install.name.as_str();
    let var = install.env_var.as_str();
    let not_found = |tried: Vec<Attempt>, why: &str| ProvisionError::SubjectNotFound {
        subject: name.to_owned(),
        key: format!("version {version}"),
        tried,
        fix: format!("{why}set {var} to a built {name}, or to a checkout of its module at {version} to build it from"),
    };
    let mut tried = Vec::new();
    let cache = env.cache_dir(options);
    let build_env = |goflags: &str| vec![("CGO_ENABLED", "0".into()), ("GOFLAGS", goflags.into()), ("GOWORK", "off".into())];
    if let Some(value) = env.var(var) {
        let path = absolute(Path::new(value));
        if path.is_dir() {
            // A checkout: the package's folder is the target's path after the checkout's module.
            let module = fs::read_to_string(path.join("go.mod"))
                .ok()
                .and_then(|text| text.lines().find_map(|l| l.trim().strip_prefix("module ").map(|m| m.trim().to_owned())));
            let relative = module.as_deref().and_then(|m| package.strip_prefix(m)).map(|rest| format!(".{rest}"));
            let (Some(relative), Some(cache)) = (relative, &cache) else {
                tried.push(Attempt::new(
                    format!("${var}={}", path.display()),
                    format!("not a checkout of the module of {package} (its go.mod names another module), or no cache to build into"),
                ));
                return Err(not_found(tried, ""));
            };
            let dest = cache.join("bin").join(format!("{name}-checkout")).join(name);
            let logs = cache.join("gobuild").join(format!("{name}-checkout"));
            fs::create_dir_all(&logs).map_err(ProvisionError::io(format!("cannot create {}", logs.display())))?;
            let log_path = logs.join(format!("build-{name}.log"));
            let log = File::create(&log_path).map_err(ProvisionError::io(format!("cannot create {}", log_path.display())))?;
            let _lock = gobuild::lock_cache(cache, env, options.progress)?;
            let bar = gobuild::progress_bar(options.progress);
            let steps = Steps::new(&env.go, &log, &bar, options.progress, build_env("-mod=mod"));
            let built = steps.build_package(&path, &relative, "-s -w", &dest, usable);
            bar.finish_and_clear();
            return built.map(|()| dest).map_err(|StepError { step, detail }| {
                ProvisionError::BuildFailed(Box::new(BuildFailure {
                    binary: name.to_owned(),
                    version: format!("(checkout {})", path.display()),
                    step,
                    detail,
                    tail: gobuild::tail(&log_path, TAIL_LINES),
                    log: log_path,
                    tried: tried.clone(),
                    fix: format!("fix what Go reports above, or set {var} to a built {name}"),
                }))
            });
        }
        match usable(&path) {
            Ok(()) => return Ok(path),
            Err(why) => tried.push(Attempt::new(format!("${var}={}", path.display()), why)),
        }
    } else {
        tried.push(Attempt::new(format!("${var}"), "not set"));
    }
    let Some(cache) = cache else {
        tried.push(Attempt::new("cache", "no cache directory: set KMS_LAB_CACHE or HOME"));
        return Err(not_found(tried, ""));
    };
    let dest = cache_path_of(&cache, name, version);
    match usable(&dest) {
        Ok(()) => return Ok(dest),
        Err(why) => tried.push(Attempt::new(format!("cache {}", dest.display()), why)),
    }
    let place = format!("go install {} into {}", install.target, cache.display());
    if !options.allow_build {
        tried.push(Attempt::new(place, "not allowed (allow_build is false)"));
        return Err(not_found(tried, ""));
    }
    if let Err(why) = gobuild::go_version(&env.go) {
        tried.push(Attempt::new(place, why));
        return Err(not_found(tried, ""));
    }
    let logs = cache.join("gobuild").join(format!("{name}-{version}"));
    fs::create_dir_all(&logs).map_err(ProvisionError::io(format!("cannot create {}", logs.display())))?;
    let log_path = logs.join(format!("build-{name}.log"));
    let log = File::create(&log_path).map_err(ProvisionError::io(format!("cannot create {}", log_path.display())))?;
    let _lock = gobuild::lock_cache(&cache, env, options.progress)?;
    let bar = gobuild::progress_bar(options.progress);
    let steps = Steps::new(&env.go, &log, &bar, options.progress, build_env("-mod=mod"));
    let installed = steps.install(&install.target, &dest);
    bar.finish_and_clear();
    installed.map(|()| dest).map_err(|StepError { step, detail }| {
        let tail = gobuild::tail(&log_path, TAIL_LINES);
        let refused = tail.iter().any(|l| l.contains("403") || l.contains("410") || l.contains("404 Not Found"));
        let why = if refused { "the Go module proxy refuses this module (see Go's output above); " } else { "" };
        ProvisionError::BuildFailed(Box::new(BuildFailure {
            binary: name.to_owned(),
            version: format!("({version})"),
            step,
            detail,
            tail,
            log: log_path,
            tried,
            fix: format!("{why}set {var} to a built {name}, or to a checkout of its module at {version} to build it from"),
        }))
    })
}

/// The plugin binary `recipe` describes, found or built as a [`GoSubject`] is (see the [module
/// docs](self)). Blocking: a first build takes minutes.
pub fn locate_go_recipe(recipe: &GoRecipe, options: &ProvisionOptions) -> Result<PathBuf, ProvisionError> {
    locate_spec(&recipe.spec(), options, &Env::from_process(), &workspace_root())
}

/// The source folder of `recipe` (its third-party folder), for what a run reads beside the binary
/// (a chart's RBAC). The error names the places tried and the fix.
pub fn go_recipe_source(recipe: &GoRecipe) -> Result<PathBuf, ProvisionError> {
    let spec = recipe.spec();
    let mut tried = Vec::new();
    find_source(&spec, &Env::from_process(), &workspace_root(), &mut tried).ok_or_else(|| ProvisionError::SubjectNotFound {
        subject: spec.name.to_owned(),
        key: "its source folder".to_owned(),
        tried,
        fix: fix(&spec, Missing::Source),
    })
}

/// Set (as `cargo xtask test` sets it) to fail, not skip, a test whose third-party source is missing.
pub const REQUIRE_THIRDPARTY_ENV: &str = "KMS_LAB_REQUIRE_THIRDPARTY";

/// For tests against a third-party subject: [`go_recipe_source`] of `recipe`, or `None` after
/// printing why (the test then returns, skipped) — unless [`REQUIRE_THIRDPARTY_ENV`] is set,
/// where a missing source fails the test with the places tried and the fix.
pub fn thirdparty_source_or_skip(recipe: &GoRecipe) -> Option<PathBuf> {
    match go_recipe_source(recipe) {
        Ok(source) => Some(source),
        Err(error) => {
            assert!(std::env::var_os(REQUIRE_THIRDPARTY_ENV).is_none(), "{error}");
            eprintln!("skipped: {error}");
            None
        }
    }
}

/// kms-lab's own `main.go` for a third-party subject whose copy lacks its main package: built in
/// a generated module (under `<cache>/gobuild/`) whose path lies under the subject's module, so
/// it may import the subject's `internal/` packages, and whose `go.mod` `replace`s the subject's
/// module by the source folder, which stays unmodified.
#[derive(Debug, Clone, Copy)]
struct Wrapper {
    /// The generated module's path.
    module: &'static str,
    /// The main package's source.
    main_go: &'static str,
    /// The packages of the source folder it imports (relative paths), checked before a build.
    needs: &'static [&'static str],
}

/// gcp-kms-emulator's copy lost `cmd/` and `internal/server` to a `.gitignore` line `server`:
/// this main serves its REST gateway over its storage (see the file's comment).
const GCP_EMULATOR_WRAPPER: Wrapper = Wrapper {
    module: "github.com/blackwell-systems/gcp-kms-emulator/cmd/kms-lab-rest",
    main_go: include_str!("../go/gcp-kms-emulator-rest/main.go"),
    needs: &["internal/gateway", "internal/storage"],
};

const AWS_COMMIT: &str = "6d4f71e96480b186ff19ea3c1ba4f9d90c2b6b9e";
const CLOUDKMS_COMMIT: &str = "a88bafe6cfcc8727e6a7243dfa16f978b1c9a468";
const TROUSSEAU_COMMIT: &str = "83a8c6eb1518ad13e3e5de7428233b33c29db6de";
const GCP_EMULATOR_COMMIT: &str = "f9ecb45348410c104b10d13324ff4f6f93cdbd4d";

impl GoSubject {
    /// All of them.
    pub const ALL: &'static [GoSubject] = <Self as strum::VariantArray>::VARIANTS;

    fn spec(self) -> Spec<'static> {
        let trousseau = |name, env_var, package, estimate| Spec {
            name,
            env_var,
            folder: Folder::ThirdParty("trousseau"),
            package,
            module: "github.com/ondat/trousseau",
            commit: Some(TROUSSEAU_COMMIT),
            goflags: "",
            go_work: true,
            estimate,
            wrapper: None,
            go_mod: None,
            replace: &[],
        };
        // mock-kms's SDK probes: kms-lab's own small mains on the clouds' SDKs, one Go module
        // (their shared `internal/probe`), keyed like the Go peer.
        let probe = |name, env_var, package| Spec {
            name,
            env_var,
            folder: Folder::Workspace("mock-kms/sdk-probes"),
            package,
            module: "kms-lab.io/mock-kms/sdk-probes",
            commit: None,
            goflags: "-mod=mod",
            go_work: false,
            estimate: "about 1 minute on 2 cores",
            wrapper: None,
            go_mod: None,
            replace: &[],
        };
        match self {
            Self::GoPeer => Spec {
                name: "kms-go-plugin",
                env_var: "KMS_LAB_GO_PLUGIN",
                folder: Folder::Workspace("kms-lab-conformance/go-plugin"),
                package: ".",
                module: "kms-lab.io/conformance/go-plugin",
                commit: None,
                goflags: "",
                go_work: false,
                estimate: "about 1 minute on 2 cores",
                wrapper: None,
                go_mod: None,
                replace: &[],
            },
            Self::JdcloudSdkProbe => probe("jdcloud-sdk-probe", "KMS_LAB_JDCLOUD_SDK_PROBE", "./jdcloud"),
            Self::AliyunSdkProbe => probe("aliyun-sdk-probe", "KMS_LAB_ALIYUN_SDK_PROBE", "./aliyun"),
            Self::AlibabacloudSdkProbe => probe("alibabacloud-sdk-probe", "KMS_LAB_ALIBABACLOUD_SDK_PROBE", "./alibabacloud"),
            Self::AwsEncryptionProvider => Spec {
                name: "aws-encryption-provider",
                env_var: "KMS_LAB_AWS_ENCRYPTION_PROVIDER",
                folder: Folder::ThirdParty("aws-encryption-provider"),
                package: "./cmd/server",
                module: "sigs.k8s.io/aws-encryption-provider",
                commit: Some(AWS_COMMIT),
                goflags: "-mod=mod",
                go_work: false,
                estimate: "about 3 minutes on 2 cores",
                wrapper: None,
                go_mod: None,
                replace: &[],
            },
            Self::CloudKmsPlugin => Spec {
                name: "k8s-cloudkms-plugin",
                env_var: "KMS_LAB_K8S_CLOUDKMS_PLUGIN",
                folder: Folder::ThirdParty("k8s-cloudkms-plugin"),
                package: "./cmd/k8s-cloudkms-plugin",
                module: "github.com/GoogleCloudPlatform/k8s-cloudkms-plugin",
                commit: Some(CLOUDKMS_COMMIT),
                goflags: "-mod=mod",
                go_work: false,
                estimate: "about 90 s on 2 cores",
                wrapper: None,
                go_mod: None,
                replace: &[],
            },
            Self::Trousseau => trousseau("trousseau", "KMS_LAB_TROUSSEAU", "./trousseau", "about 2 minutes on 2 cores"),
            Self::TrousseauAwsKms => {
                trousseau("trousseau-awskms", "KMS_LAB_TROUSSEAU_AWSKMS", "./providers/awskms", "about 1 minute on 2 cores")
            }
            Self::TrousseauVault => {
                trousseau("trousseau-vault", "KMS_LAB_TROUSSEAU_VAULT", "./providers/vault", "about 1 minute on 2 cores")
            }
            Self::TrousseauDebug => trousseau("trousseau-debug", "KMS_LAB_TROUSSEAU_DEBUG", "./providers/debug", "about 30 s on 2 cores"),
            Self::GcpKmsEmulator => Spec {
                name: "gcp-kms-emulator",
                env_var: "KMS_LAB_GCP_KMS_EMULATOR",
                folder: Folder::ThirdParty("gcp-kms-emulator"),
                package: "./cmd/server-rest",
                module: "github.com/blackwell-systems/gcp-kms-emulator",
                commit: Some(GCP_EMULATOR_COMMIT),
                goflags: "-mod=mod",
                go_work: false,
                estimate: "about 1 minute on 2 cores",
                wrapper: Some(GCP_EMULATOR_WRAPPER),
                go_mod: None,
                replace: &[],
            },
        }
    }

    /// The binary's file name in the cache, e.g. `aws-encryption-provider`.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The environment variable naming a prebuilt binary, e.g. `KMS_LAB_AWS_ENCRYPTION_PROVIDER`
    /// (`KMS_LAB_GO_PLUGIN` for the Go peer).
    pub fn env_var(self) -> &'static str {
        self.spec().env_var
    }

    /// The source folder: relative to the workspace root for the Go peer
    /// (`kms-lab-conformance/go-plugin`), else the folder's name under the third-party folder
    /// (`aws-encryption-provider`).
    pub fn folder(self) -> &'static str {
        match self.spec().folder {
            Folder::Workspace(path) | Folder::ThirdParty(path) => path,
        }
    }

    /// Whether it is third-party code (from `../shared/thirdparty`), not kms-lab's.
    pub fn is_third_party(self) -> bool {
        matches!(self.spec().folder, Folder::ThirdParty(_))
    }

    /// The main package, relative to [`Self::folder`], e.g. `./cmd/server`.
    pub fn main_package(self) -> &'static str {
        self.spec().package
    }

    /// The Go module at the root of the source folder, e.g. `sigs.k8s.io/aws-encryption-provider`.
    pub fn module(self) -> &'static str {
        self.spec().module
    }

    /// The pinned upstream commit (40 hex digits); `None` for the Go peer, which lives here.
    pub fn commit(self) -> Option<&'static str> {
        self.spec().commit
    }

    /// The `GOFLAGS` its build needs: `-mod=mod`, or empty.
    pub fn goflags(self) -> &'static str {
        self.spec().goflags
    }

    /// How to get it outside this environment: `go install MODULE/PACKAGE@COMMIT`; `None` for
    /// the Go peer.
    pub fn go_install(self) -> Option<String> {
        self.spec().go_install()
    }
}

impl fmt::Display for GoSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Go-built test subject's binary, found or built; see the [module docs](self) for where
/// it looks. Uses [`ProvisionOptions::cache_dir`], [`ProvisionOptions::allow_build`] and
/// [`ProvisionOptions::progress`]. Blocking: a first build takes minutes.
pub fn locate_go_subject(subject: GoSubject, options: &ProvisionOptions) -> Result<PathBuf, ProvisionError> {
    locate_with(subject, options, &Env::from_process(), &workspace_root())
}

/// Why a candidate binary cannot be used.
fn usable(path: &Path) -> Result<(), String> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".to_owned()),
        Err(e) => Err(format!("cannot stat it: {e}")),
        Ok(meta) if meta.is_dir() => Err("is a directory, not a binary".to_owned()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(format!("not executable (chmod +x {})", path.display())),
        Ok(_) => Ok(()),
    }
}

/// A workspace subject's cache key (the Go peer, the SDK probes): a hash of its sources — `go.mod`,
/// `go.sum`, then every `.go` file below the folder by relative path — (16 hex digits).
fn source_hash(dir: &Path) -> Result<String, String> {
    let mut names: Vec<String> = MODULE_FILES.iter().map(|n| (*n).to_owned()).collect();
    names.extend(go_files(dir, "")?);
    let mut hasher = Sha256::new();
    for name in &names {
        let path = dir.join(name);
        let content = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hasher.update(name.as_bytes());
        hasher.update((content.len() as u64).to_be_bytes());
        hasher.update(&content);
    }
    Ok(hex(&hasher.finalize()[..8]))
}

/// The `.go` files below `dir` (relative paths with `/`, sorted), `prefix` naming `dir` itself.
fn go_files(dir: &Path, prefix: &str) -> Result<Vec<String>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = format!("{prefix}{name}");
        let kind = entry.file_type().map_err(|e| format!("cannot stat {}: {e}", entry.path().display()))?;
        if kind.is_dir() {
            out.extend(go_files(&entry.path(), &format!("{relative}/"))?);
        } else if name.ends_with(".go") {
            out.push(relative);
        }
    }
    out.sort();
    Ok(out)
}

/// A wrapper main's cache key part: a hash of its text (8 hex digits), so an edit rebuilds.
fn text_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes())[..4])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The source folder, recording each place tried that does not hold it.
fn find_source(spec: &Spec<'_>, env: &Env, workspace: &Path, tried: &mut Vec<Attempt>) -> Option<PathBuf> {
    let candidates: Vec<(String, PathBuf)> = match spec.folder {
        Folder::Workspace(path) => vec![("source".to_owned(), workspace.join(path))],
        Folder::ThirdParty(folder) => {
            let mut out = Vec::new();
            match env.var(THIRDPARTY_ENV) {
                None => tried.push(Attempt::new(format!("${THIRDPARTY_ENV}"), "not set")),
                Some(dir) => out.push((format!("${THIRDPARTY_ENV}"), absolute(Path::new(dir)).join(folder))),
            }
            let beside = workspace.parent().unwrap_or(workspace).join("shared").join("thirdparty");
            out.push(("beside the workspace".to_owned(), beside.join(folder)));
            out
        }
    };
    for (label, dir) in candidates {
        if dir.is_dir() {
            return Some(dir);
        }
        tried.push(Attempt::new(format!("{label} {}", dir.display()), "no such directory"));
    }
    None
}

/// What kept the subject from being built, for the fix.
enum Missing {
    /// No source folder anywhere.
    Source,
    /// A source folder without the main package.
    Incomplete,
    /// Building not allowed, no cache or no Go.
    Build,
}

fn fix(spec: &Spec<'_>, missing: Missing) -> String {
    let var = spec.env_var;
    let name = spec.name;
    let first = match missing {
        Missing::Source if spec.is_third_party() => format!(
            "set {var} to a built {name}, or {THIRDPARTY_ENV} to a folder holding {}/ (upstream {} at commit {})",
            spec.folder(),
            spec.module,
            spec.commit.unwrap_or_default()
        ),
        Missing::Source => format!("set {var} to a built {name} (its source folder {} is part of kms-lab)", spec.folder()),
        Missing::Incomplete => format!(
            "the source folder lacks {}: use a complete copy (set {THIRDPARTY_ENV}), or set {var} to a built {name}",
            match spec.wrapper {
                Some(wrapper) => wrapper.needs.join(" and "),
                None => format!("the main package {}", spec.package),
            }
        ),
        Missing::Build => format!("install Go (apt-get install golang-go) and rerun, or set {var} to a built {name}"),
    };
    match spec.go_install() {
        Some(install) => format!("{first}; outside this environment: `{install}`, then set {var} to the installed binary"),
        None => first,
    }
}

pub(crate) fn locate_with(subject: GoSubject, options: &ProvisionOptions, env: &Env, workspace: &Path) -> Result<PathBuf, ProvisionError> {
    locate_spec(&subject.spec(), options, env, workspace)
}

fn locate_spec(spec: &Spec<'_>, options: &ProvisionOptions, env: &Env, workspace: &Path) -> Result<PathBuf, ProvisionError> {
    let subject = spec.name;
    let mut tried = Vec::new();

    // 1. $KMS_LAB_<NAME>
    match env.var(spec.env_var) {
        None => tried.push(Attempt::new(format!("${}", spec.env_var), "not set")),
        Some(value) => {
            let path = absolute(Path::new(value));
            match usable(&path) {
                Ok(()) => {
                    tracing::debug!(%subject, path = %path.display(), "found through {}", spec.env_var);
                    return Ok(path);
                }
                Err(why) => {
                    tracing::warn!(%subject, "ignoring ${}={}: {why}", spec.env_var, path.display());
                    tried.push(Attempt::new(format!("${}={}", spec.env_var, path.display()), why));
                }
            }
        }
    }

    // The source folder (the Go peer's cache key depends on it).
    let mut source_tried = Vec::new();
    let source = find_source(spec, env, workspace, &mut source_tried);
    let copy_edits = copy_edits(spec);
    let key = match (spec.commit, spec.wrapper, &copy_edits) {
        (Some(commit), Some(wrapper), _) => Ok(format!("{commit}-{}", text_hash(wrapper.main_go))),
        (Some(commit), None, Some(edits)) => Ok(format!("{commit}-{}", text_hash(edits))),
        (Some(commit), None, None) => Ok(commit.to_owned()),
        (None, _, _) => source.as_deref().map_or_else(|| Err("no source folder to hash".to_owned()), source_hash),
    };
    let shown_key = match (spec.commit, &key) {
        (Some(commit), _) if spec.wrapper.is_some() => format!("commit {commit} with kms-lab's main"),
        (Some(commit), _) if spec.go_mod.is_some() => format!("commit {commit} with its manifest's go.mod"),
        (Some(commit), _) if !spec.replace.is_empty() => {
            let modules: Vec<&str> = spec.replace.iter().map(|r| r.module.as_str()).collect();
            format!("commit {commit} with {} from the third-party folder", modules.join(", "))
        }
        (Some(commit), _) => format!("commit {commit}"),
        (None, Ok(hash)) => format!("source hash {hash}"),
        (None, Err(_)) => "source hash unknown".to_owned(),
    };
    let not_found = |tried: Vec<Attempt>, missing: Missing| ProvisionError::SubjectNotFound {
        subject: subject.to_owned(),
        key: shown_key.clone(),
        tried,
        fix: fix(spec, missing),
    };

    // 2. the cache
    let cache = env.cache_dir(options);
    let dest = match (&cache, &key) {
        (None, _) => {
            tried.push(Attempt::new("cache", "no cache directory: set KMS_LAB_CACHE or HOME"));
            None
        }
        (Some(cache), Err(why)) => {
            tried.push(Attempt::new(format!("cache {}", cache.display()), why.clone()));
            None
        }
        (Some(cache), Ok(key)) => {
            let dest = cache_path_of(cache, subject, key);
            match usable(&dest) {
                Ok(()) => {
                    tracing::debug!(%subject, path = %dest.display(), "found in the cache");
                    return Ok(dest);
                }
                Err(why) => tried.push(Attempt::new(format!("cache {}", dest.display()), why)),
            }
            Some(dest)
        }
    };

    // 3. a build
    tried.extend(source_tried);
    let Some(source) = source else {
        tried.push(Attempt::new("build with Go", "no source folder (see above)"));
        return Err(not_found(tried, Missing::Source));
    };
    let needed: Vec<&str> = match spec.wrapper {
        Some(wrapper) => wrapper.needs.to_vec(),
        None => vec![spec.package],
    };
    if let Some(missing) = needed.iter().map(|package| source.join(package)).find(|dir| !dir.is_dir()) {
        let what = if spec.wrapper.is_some() { "a package kms-lab's main imports" } else { "the main package" };
        tried.push(Attempt::new(
            format!("build with Go from {}", source.display()),
            format!("{what} is missing (no directory {}): this copy is incomplete", missing.display()),
        ));
        return Err(not_found(tried, Missing::Incomplete));
    }
    let (Some(cache), Some(dest), Ok(key)) = (cache, dest, key) else {
        tried.push(Attempt::new(format!("build with Go from {}", source.display()), "no cache directory to build into"));
        return Err(not_found(tried, Missing::Build));
    };
    let place = format!("build with Go from {} into {}", source.display(), cache.display());
    if !options.allow_build {
        tried.push(Attempt::new(place, "not allowed (allow_build is false)"));
        return Err(not_found(tried, Missing::Build));
    }
    if let Err(why) = gobuild::go_version(&env.go) {
        tried.push(Attempt::new(place, why));
        return Err(not_found(tried, Missing::Build));
    }
    build(&SubjectBuild {
        spec,
        key: &key,
        shown_key: &shown_key,
        source: &source,
        cache: &cache,
        dest: &dest,
        env,
        progress: options.progress,
        tried,
    })
}

/// Where a cached subject lives: `<cache>/bin/<name>-<key>/<name>`.
#[cfg(test)]
pub(crate) fn subject_cache_path(cache: &Path, subject: GoSubject, key: &str) -> PathBuf {
    cache_path_of(cache, subject.name(), key)
}

fn cache_path_of(cache: &Path, name: &str, key: &str) -> PathBuf {
    cache.join("bin").join(format!("{name}-{key}")).join(name)
}

struct SubjectBuild<'a> {
    spec: &'a Spec<'a>,
    key: &'a str,
    shown_key: &'a str,
    source: &'a Path,
    cache: &'a Path,
    dest: &'a Path,
    env: &'a Env,
    progress: bool,
    tried: Vec<Attempt>,
}

fn build(b: &SubjectBuild<'_>) -> Result<PathBuf, ProvisionError> {
    let spec = b.spec;
    let name = spec.name;
    // One build at a time per cache; whoever waited then finds the binary in the cache.
    let _lock = gobuild::lock_cache(b.cache, b.env, b.progress)?;
    if usable(b.dest).is_ok() {
        return Ok(b.dest.to_path_buf());
    }
    let logs = b.cache.join("gobuild").join(format!("{name}-{}", b.key));
    fs::create_dir_all(&logs).map_err(ProvisionError::io(format!("cannot create {}", logs.display())))?;
    let log_path = logs.join(format!("build-{name}.log"));
    let log = File::create(&log_path).map_err(ProvisionError::io(format!("cannot create {}", log_path.display())))?;
    if b.progress {
        eprintln!(
            "building {name} ({}) from {}: first run only, {}; later runs use {}",
            b.shown_key,
            b.env.tilde(b.source),
            spec.estimate,
            b.env.tilde(b.cache)
        );
    }
    let go_work = if spec.go_work { b.source.join("go.work").into_os_string() } else { "off".into() };
    let go_env = vec![("CGO_ENABLED", "0".into()), ("GOFLAGS", spec.goflags.into()), ("GOWORK", go_work)];
    let bar = gobuild::progress_bar(b.progress);
    let steps = Steps::new(&b.env.go, &log, &bar, b.progress, go_env);
    let started = Instant::now();
    let result = match (spec.wrapper, spec.go_mod.is_some() || !spec.replace.is_empty()) {
        (None, false) => steps.build_package(b.source, spec.package, "-s -w", b.dest, usable),
        (None, true) => replacements(spec, b.source)
            .and_then(|replace| build_copy(b.source, spec.go_mod, &replace, &logs.join("src")))
            .and_then(|copy| steps.build_package(&copy, spec.package, "-s -w", b.dest, usable)),
        (Some(wrapper), _) => prepare_wrapper(&steps, &wrapper, spec.module, b.source, &logs.join("module"))
            .and_then(|module| steps.build_package(&module, ".", "-s -w", b.dest, usable)),
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs();
    match result {
        Ok(()) => {
            if b.progress {
                eprintln!("built {name} in {seconds} s: {}", b.dest.display());
            }
            tracing::info!(subject = name, seconds, path = %b.dest.display(), "built");
            Ok(b.dest.to_path_buf())
        }
        Err(StepError { step, detail }) => Err(ProvisionError::BuildFailed(Box::new(BuildFailure {
            binary: name.to_owned(),
            version: format!("({})", b.shown_key),
            step,
            detail,
            tail: gobuild::tail(&log_path, TAIL_LINES),
            log: log_path,
            tried: b.tried.clone(),
            fix: format!("fix what Go reports above and rerun, or set {} to a built {name}", spec.env_var),
        }))),
    }
}

/// What a build copy changes, as text (for the cache key): the manifest's `go.mod` and the
/// `replace` directives; `None` when the folder builds as it is.
fn copy_edits(spec: &Spec<'_>) -> Option<String> {
    if spec.go_mod.is_none() && spec.replace.is_empty() {
        return None;
    }
    let replaces: Vec<String> = spec.replace.iter().map(|r| format!("replace {} => <thirdparty>/{}", r.module, r.folder)).collect();
    Some(format!("{}{}", spec.go_mod.unwrap_or_default(), replaces.join("\n")))
}

/// The folder of each of `spec`'s replacements: beside `source`, in the third-party folder
/// [`find_source`] found it in.
fn replacements(spec: &Spec<'_>, source: &Path) -> Result<Vec<(String, PathBuf)>, StepError> {
    let thirdparty = source.parent().unwrap_or(source);
    spec.replace
        .iter()
        .map(|r| {
            let dir = thirdparty.join(&r.folder);
            if dir.join("go.mod").is_file() {
                Ok((r.module.clone(), dir))
            } else {
                Err(StepError {
                    step: format!("find {} for the replace of {}", r.folder, r.module),
                    detail: format!("{} has no go.mod: put the module's source there (see ../shared/thirdparty/README.md)", dir.display()),
                })
            }
        })
        .collect()
}

/// A fresh copy of `source` in `dir` with `go_mod` as its `go.mod` (or its own) and `replace`
/// directives added to it (the source folder stays unmodified); the copy's directory.
fn build_copy(source: &Path, go_mod: Option<&str>, replace: &[(String, PathBuf)], dir: &Path) -> Result<PathBuf, StepError> {
    let io = |what: String| move |e: std::io::Error| StepError { step: what, detail: e.to_string() };
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(io(format!("remove the old build copy {}", dir.display())))?;
    }
    copy_tree(source, dir).map_err(io(format!("copy {} to {}", source.display(), dir.display())))?;
    let mut text = match go_mod {
        Some(go_mod) => go_mod.to_owned(),
        None => fs::read_to_string(dir.join("go.mod")).map_err(io(format!("read {}/go.mod", dir.display())))?,
    };
    for (module, folder) in replace {
        text.push_str(&format!(
            "\n// kms-lab: the module proxy refuses {module}; its unmodified source is here\nreplace {module} => {}\n",
            folder.display()
        ));
    }
    fs::write(dir.join("go.mod"), text).map_err(io(format!("write {}/go.mod", dir.display())))?;
    Ok(dir.to_path_buf())
}

/// Copies the files and folders below `from` into `to` (symlinks as the files they name; `.git` left out).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == ".git" {
            continue;
        }
        if fs::metadata(&source)?.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            fs::copy(&source, &target)?;
        }
    }
    Ok(())
}

/// Writes the wrapper's module into `dir` (`main.go`, a `go.mod` that `replace`s `module` by
/// `source`), then `go mod tidy` there; the module's directory.
fn prepare_wrapper(steps: &Steps<'_>, wrapper: &Wrapper, module: &str, source: &Path, dir: &Path) -> Result<PathBuf, StepError> {
    let io = |what: String| move |e: std::io::Error| StepError { step: what, detail: e.to_string() };
    fs::create_dir_all(dir).map_err(io(format!("mkdir {}", dir.display())))?;
    let gomod = format!(
        "// Generated by kms-lab (kms-lab-provision/src/subject.rs) for every build; do not edit.\n\
         module {}\n\ngo 1.24.0\n\nrequire {module} v0.0.0\n\nreplace {module} => {}\n",
        wrapper.module,
        source.display()
    );
    fs::write(dir.join("go.mod"), gomod).map_err(io("write go.mod".to_owned()))?;
    fs::write(dir.join("main.go"), wrapper.main_go).map_err(io("write main.go".to_owned()))?;
    steps.tidy(dir)?;
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::process::Command;

    use super::*;

    fn env(vars: &[(&'static str, &Path)], go: &Path) -> Env {
        Env { vars: vars.iter().map(|(k, v)| (*k, v.as_os_str().to_owned())).collect::<HashMap<_, _>>(), go: go.as_os_str().to_owned() }
    }

    fn options(cache: &Path, allow_build: bool) -> ProvisionOptions {
        ProvisionOptions { cache_dir: Some(cache.to_path_buf()), allow_build, progress: false, ..ProvisionOptions::default() }
    }

    fn script(path: &Path, body: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    const NO_GO: &str = "/nonexistent/go-for-kms-lab-tests";

    #[test]
    fn every_subject_is_described() {
        let rows: Vec<_> = GoSubject::ALL.iter().map(|s| (s.name(), s.env_var(), s.folder(), s.main_package(), s.goflags())).collect();
        assert_eq!(
            rows,
            [
                ("kms-go-plugin", "KMS_LAB_GO_PLUGIN", "kms-lab-conformance/go-plugin", ".", ""),
                ("jdcloud-sdk-probe", "KMS_LAB_JDCLOUD_SDK_PROBE", "mock-kms/sdk-probes", "./jdcloud", "-mod=mod"),
                ("aliyun-sdk-probe", "KMS_LAB_ALIYUN_SDK_PROBE", "mock-kms/sdk-probes", "./aliyun", "-mod=mod"),
                ("alibabacloud-sdk-probe", "KMS_LAB_ALIBABACLOUD_SDK_PROBE", "mock-kms/sdk-probes", "./alibabacloud", "-mod=mod"),
                ("aws-encryption-provider", "KMS_LAB_AWS_ENCRYPTION_PROVIDER", "aws-encryption-provider", "./cmd/server", "-mod=mod"),
                ("k8s-cloudkms-plugin", "KMS_LAB_K8S_CLOUDKMS_PLUGIN", "k8s-cloudkms-plugin", "./cmd/k8s-cloudkms-plugin", "-mod=mod"),
                ("trousseau", "KMS_LAB_TROUSSEAU", "trousseau", "./trousseau", ""),
                ("trousseau-awskms", "KMS_LAB_TROUSSEAU_AWSKMS", "trousseau", "./providers/awskms", ""),
                ("trousseau-vault", "KMS_LAB_TROUSSEAU_VAULT", "trousseau", "./providers/vault", ""),
                ("trousseau-debug", "KMS_LAB_TROUSSEAU_DEBUG", "trousseau", "./providers/debug", ""),
                ("gcp-kms-emulator", "KMS_LAB_GCP_KMS_EMULATOR", "gcp-kms-emulator", "./cmd/server-rest", "-mod=mod"),
            ]
        );
        assert!(GoSubject::ALL.iter().all(|s| s.is_third_party() == s.commit().is_some()));
        assert!(GoSubject::ALL.iter().filter_map(|s| s.commit()).all(|c| c.len() == 40 && c.chars().all(|c| c.is_ascii_hexdigit())));
        assert_eq!(
            GoSubject::AwsEncryptionProvider.go_install().unwrap(),
            "go install sigs.k8s.io/aws-encryption-provider/cmd/server@6d4f71e96480b186ff19ea3c1ba4f9d90c2b6b9e"
        );
        assert_eq!(GoSubject::GoPeer.go_install(), None);
        assert_eq!(
            subject_cache_path(Path::new("/c"), GoSubject::CloudKmsPlugin, CLOUDKMS_COMMIT),
            Path::new("/c/bin/k8s-cloudkms-plugin-a88bafe6cfcc8727e6a7243dfa16f978b1c9a468/k8s-cloudkms-plugin")
        );
    }

    #[test]
    fn the_variable_wins_then_the_cache_then_a_build() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let workspace = root.join("work/main");
        fs::create_dir_all(&workspace).unwrap();
        let cache = root.join("cache");
        let subject = GoSubject::AwsEncryptionProvider;
        let prebuilt = root.join("prebuilt/aws");
        script(&prebuilt, "exit 0");
        let cached = subject_cache_path(&cache, subject, AWS_COMMIT);
        script(&cached, "exit 0");
        let no_go = Path::new(NO_GO);

        let found =
            locate_with(subject, &options(&cache, false), &env(&[("KMS_LAB_AWS_ENCRYPTION_PROVIDER", &prebuilt)], no_go), &workspace);
        assert_eq!(found.unwrap(), prebuilt);

        // A variable naming nothing usable is passed over (with a warning): the cache wins.
        let missing = root.join("nowhere/aws");
        let found =
            locate_with(subject, &options(&cache, false), &env(&[("KMS_LAB_AWS_ENCRYPTION_PROVIDER", &missing)], no_go), &workspace);
        assert_eq!(found.unwrap(), cached);

        // Without the cache entry: the source folder, then a build (not allowed here).
        fs::remove_file(&cached).unwrap();
        let thirdparty = root.join("work/shared/thirdparty");
        fs::create_dir_all(thirdparty.join("aws-encryption-provider/cmd/server")).unwrap();
        let err = locate_with(subject, &options(&cache, false), &env(&[], no_go), &workspace).unwrap_err();
        let ProvisionError::SubjectNotFound { tried, .. } = &err else { panic!("{err}") };
        let places: Vec<_> = tried.iter().map(|a| format!("{}: {}", a.place, a.skipped)).collect();
        assert_eq!(
            places,
            [
                "$KMS_LAB_AWS_ENCRYPTION_PROVIDER: not set".to_owned(),
                format!("cache {}: no such file", cached.display()),
                "$KMS_LAB_THIRDPARTY: not set".to_owned(),
                format!(
                    "build with Go from {}/aws-encryption-provider into {}: not allowed (allow_build is false)",
                    thirdparty.display(),
                    cache.display()
                ),
            ]
        );
        // Allowed, but no Go: says how to install it.
        let err = locate_with(subject, &options(&cache, true), &env(&[], no_go), &workspace).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("is not on PATH") && text.contains("fix: install Go (apt-get install golang-go)"), "{text}");
    }

    #[test]
    fn an_absent_source_folder_lists_every_place_and_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let workspace = root.join("work/main");
        let cache = root.join("cache");
        let elsewhere = root.join("elsewhere");
        let err = locate_with(
            GoSubject::CloudKmsPlugin,
            &options(&cache, true),
            &env(&[("KMS_LAB_THIRDPARTY", &elsewhere)], Path::new(NO_GO)),
            &workspace,
        )
        .unwrap_err();
        let expected = [
            format!("no usable k8s-cloudkms-plugin (commit {CLOUDKMS_COMMIT}); tried, in order:"),
            "  1. $KMS_LAB_K8S_CLOUDKMS_PLUGIN: not set".to_owned(),
            format!("  2. cache {}: no such file", subject_cache_path(&cache, GoSubject::CloudKmsPlugin, CLOUDKMS_COMMIT).display()),
            format!("  3. $KMS_LAB_THIRDPARTY {}/k8s-cloudkms-plugin: no such directory", elsewhere.display()),
            format!("  4. beside the workspace {}/work/shared/thirdparty/k8s-cloudkms-plugin: no such directory", root.display()),
            "  5. build with Go: no source folder (see above)".to_owned(),
            format!(
                "fix: set KMS_LAB_K8S_CLOUDKMS_PLUGIN to a built k8s-cloudkms-plugin, or KMS_LAB_THIRDPARTY to a folder \
                 holding k8s-cloudkms-plugin/ (upstream github.com/GoogleCloudPlatform/k8s-cloudkms-plugin at commit \
                 {CLOUDKMS_COMMIT}); outside this environment: `go install \
                 github.com/GoogleCloudPlatform/k8s-cloudkms-plugin/cmd/k8s-cloudkms-plugin@{CLOUDKMS_COMMIT}`, then set \
                 KMS_LAB_K8S_CLOUDKMS_PLUGIN to the installed binary"
            ),
        ];
        let text = err.to_string();
        assert_eq!(text.lines().collect::<Vec<_>>(), expected, "{text}");
    }

    #[test]
    fn a_source_folder_without_the_main_package_is_called_incomplete() {
        let root = tempfile::tempdir().unwrap();
        let thirdparty = root.path().join("tp");
        fs::create_dir_all(thirdparty.join("k8s-cloudkms-plugin/cmd")).unwrap();
        fs::create_dir_all(thirdparty.join("gcp-kms-emulator/internal/storage")).unwrap();
        let locate = |subject| {
            locate_with(
                subject,
                &options(&root.path().join("cache"), true),
                &env(&[("KMS_LAB_THIRDPARTY", &thirdparty)], Path::new(NO_GO)),
                &root.path().join("ws/main"),
            )
            .unwrap_err()
            .to_string()
        };
        let text = locate(GoSubject::CloudKmsPlugin);
        assert!(text.contains("the main package is missing (no directory") && text.contains("this copy is incomplete"), "{text}");
        assert!(text.contains("fix: the source folder lacks the main package ./cmd/k8s-cloudkms-plugin"), "{text}");
        // The emulator is built with kms-lab's main: what that main imports must be there.
        let text = locate(GoSubject::GcpKmsEmulator);
        assert!(text.contains("a package kms-lab's main imports is missing (no directory") && text.contains("internal/gateway"), "{text}");
        assert!(text.contains("fix: the source folder lacks internal/gateway and internal/storage"), "{text}");
    }

    #[test]
    fn the_emulator_builds_kms_labs_main_against_the_unmodified_folder() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let go = fake_go(root);
        let thirdparty = root.join("tp");
        for package in GCP_EMULATOR_WRAPPER.needs {
            fs::create_dir_all(thirdparty.join("gcp-kms-emulator").join(package)).unwrap();
        }
        let cache = root.join("cache");
        let vars = [("KMS_LAB_THIRDPARTY", thirdparty.as_path())];
        let built = locate_with(GoSubject::GcpKmsEmulator, &options(&cache, true), &env(&vars, &go), &root.join("ws/main")).unwrap();
        let key = format!("{GCP_EMULATOR_COMMIT}-{}", text_hash(GCP_EMULATOR_WRAPPER.main_go));
        assert_eq!(built, subject_cache_path(&cache, GoSubject::GcpKmsEmulator, &key));
        let module = cache.join(format!("gobuild/gcp-kms-emulator-{key}/module"));
        let gomod = fs::read_to_string(module.join("go.mod")).unwrap();
        assert!(gomod.contains("module github.com/blackwell-systems/gcp-kms-emulator/cmd/kms-lab-rest\n"), "{gomod}");
        let replace =
            format!("replace github.com/blackwell-systems/gcp-kms-emulator => {}\n", thirdparty.join("gcp-kms-emulator").display());
        assert!(gomod.contains(&replace), "{gomod}");
        assert_eq!(fs::read_to_string(module.join("main.go")).unwrap(), GCP_EMULATOR_WRAPPER.main_go);
        let calls = fs::read_to_string(root.join("calls")).unwrap();
        assert_eq!(calls.trim(), format!("GOFLAGS=[-mod=mod] GOWORK=[off] CGO_ENABLED=[0] PWD=[{}]", module.display()));
    }

    /// A fake `go` that records its environment and "builds" a script at `-o PATH`.
    fn fake_go(dir: &Path) -> PathBuf {
        let go = dir.join("fake-go");
        script(
            &go,
            r#"case "$1" in
  version) echo "go version go1.26.8 linux/amd64" ;;
  list) echo a; echo b; echo c ;;
  build)
    echo "GOFLAGS=[$GOFLAGS] GOWORK=[$GOWORK] CGO_ENABLED=[$CGO_ENABLED] PWD=[$PWD]" >> "$(dirname "$0")/calls"
    while [ "$#" -gt 0 ]; do if [ "$1" = "-o" ]; then out="$2"; fi; shift; done
    printf '#!/bin/sh\necho built\n' > "$out"; chmod +x "$out"; echo a >&2; echo b >&2 ;;
esac"#,
        );
        go
    }

    #[test]
    fn a_build_installs_into_the_cache_with_the_subjects_go_environment() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let go = fake_go(root);
        let thirdparty = root.join("tp");
        fs::create_dir_all(thirdparty.join("trousseau/providers/awskms")).unwrap();
        fs::create_dir_all(thirdparty.join("aws-encryption-provider/cmd/server")).unwrap();
        let cache = root.join("cache");
        let vars = [("KMS_LAB_THIRDPARTY", thirdparty.as_path())];
        let workspace = root.join("ws/main");

        let built = locate_with(GoSubject::TrousseauAwsKms, &options(&cache, true), &env(&vars, &go), &workspace).unwrap();
        assert_eq!(built, subject_cache_path(&cache, GoSubject::TrousseauAwsKms, TROUSSEAU_COMMIT));
        assert_eq!(Command::new(&built).output().unwrap().stdout, b"built\n");
        let built = locate_with(GoSubject::AwsEncryptionProvider, &options(&cache, true), &env(&vars, &go), &workspace).unwrap();
        assert!(built.ends_with(format!("aws-encryption-provider-{AWS_COMMIT}/aws-encryption-provider")), "{}", built.display());
        let calls = fs::read_to_string(root.join("calls")).unwrap();
        let trousseau = thirdparty.join("trousseau");
        assert_eq!(
            calls.lines().collect::<Vec<_>>(),
            [
                format!("GOFLAGS=[] GOWORK=[{}/go.work] CGO_ENABLED=[0] PWD=[{}]", trousseau.display(), trousseau.display()),
                format!("GOFLAGS=[-mod=mod] GOWORK=[off] CGO_ENABLED=[0] PWD=[{}/aws-encryption-provider]", thirdparty.display()),
            ]
        );
        // No temporary left behind; the log is kept; a second lookup needs no Go.
        let leftovers: Vec<_> = fs::read_dir(built.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [OsString::from("aws-encryption-provider")]);
        let log = cache.join(format!("gobuild/aws-encryption-provider-{AWS_COMMIT}/build-aws-encryption-provider.log"));
        assert!(fs::read_to_string(log).unwrap().contains("go build -v -trimpath -gcflags=all=-dwarf=false -ldflags '-s -w' -o"));
        let again = locate_with(GoSubject::AwsEncryptionProvider, &options(&cache, false), &env(&vars, Path::new(NO_GO)), &workspace);
        assert_eq!(again.unwrap(), built);
    }

    #[test]
    fn a_manifests_recipe_builds_in_a_copy_with_its_go_mod_and_leaves_the_folder_alone() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let go = fake_go(root);
        let thirdparty = root.join("tp");
        let source = thirdparty.join("ack-kms-plugin");
        fs::create_dir_all(source.join("plugin")).unwrap();
        fs::write(source.join("main.go"), "package main\n").unwrap();
        let cache = root.join("cache");
        let recipe = GoRecipe {
            name: "ack-kms-plugin".into(),
            env_var: GoRecipe::env_var_for("ack-kms-plugin"),
            folder: "ack-kms-plugin".into(),
            package: ".".into(),
            module: "github.com/AliyunContainerService/ack-kms-plugin".into(),
            commit: "1339a03ba4197175ba54a34dbcddc7bb5d5942aa".into(),
            goflags: "-mod=mod".into(),
            go_work: false,
            go_mod: Some("module github.com/AliyunContainerService/ack-kms-plugin\n\ngo 1.13\n".into()),
            replace: Vec::new(),
        };
        assert_eq!(recipe.env_var, "KMS_LAB_ACK_KMS_PLUGIN");
        let vars = [("KMS_LAB_THIRDPARTY", thirdparty.as_path())];
        let built = locate_spec(&recipe.spec(), &options(&cache, true), &env(&vars, &go), &root.join("ws/main")).unwrap();
        let key = format!("{}-{}", recipe.commit, text_hash(recipe.go_mod.as_deref().unwrap()));
        assert_eq!(copy_edits(&recipe.spec()).as_deref(), recipe.go_mod.as_deref(), "the cache key of a go.mod-only recipe is unchanged");
        assert_eq!(built, cache.join(format!("bin/ack-kms-plugin-{key}/ack-kms-plugin")));
        let copy = cache.join(format!("gobuild/ack-kms-plugin-{key}/src"));
        assert_eq!(fs::read_to_string(copy.join("go.mod")).unwrap(), recipe.go_mod.clone().unwrap());
        assert!(copy.join("main.go").is_file() && copy.join("plugin").is_dir());
        assert!(!source.join("go.mod").exists(), "the go.mod was written into the source folder");
        let calls = fs::read_to_string(root.join("calls")).unwrap();
        assert_eq!(calls.trim(), format!("GOFLAGS=[-mod=mod] GOWORK=[off] CGO_ENABLED=[0] PWD=[{}]", copy.display()));
        assert_eq!(
            recipe.go_install(),
            "go install github.com/AliyunContainerService/ack-kms-plugin@1339a03ba4197175ba54a34dbcddc7bb5d5942aa"
        );
    }

    #[test]
    fn go_install_takes_the_binary_or_the_checkout_its_variable_names() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let go = fake_go(root);
        let cache = root.join("cache");
        let install = GoInstall {
            name: "jdcloud-kms-plugin".into(),
            env_var: "KMS_LAB_JDCLOUD_KMS_PLUGIN".into(),
            target: "github.com/jdcloud-sec/k8s-kms-plugin/main@8b2668a33f4bda57ae7de788790d256648d64513".into(),
        };
        // Nothing named, nothing cached, no build allowed: every place tried, and what to set.
        let err = locate_install_with(&install, &options(&cache, false), &env(&[], &go)).unwrap_err().to_string();
        assert!(err.contains("$KMS_LAB_JDCLOUD_KMS_PLUGIN: not set") && err.contains("not allowed"), "{err}");
        assert!(err.contains("set KMS_LAB_JDCLOUD_KMS_PLUGIN to a built jdcloud-kms-plugin, or to a checkout"), "{err}");
        // A built binary is used as it is.
        let binary = root.join("bin/k8s-kms-plugin");
        script(&binary, "echo prebuilt");
        let found = locate_install_with(&install, &options(&cache, false), &env(&[("KMS_LAB_JDCLOUD_KMS_PLUGIN", &binary)], &go));
        assert_eq!(found.unwrap(), binary);
        // A checkout of the module: its `main` package is built into the cache.
        let checkout = root.join("k8s-kms-plugin");
        fs::create_dir_all(checkout.join("main")).unwrap();
        fs::write(checkout.join("go.mod"), "module github.com/jdcloud-sec/k8s-kms-plugin\n\ngo 1.13\n").unwrap();
        let built =
            locate_install_with(&install, &options(&cache, false), &env(&[("KMS_LAB_JDCLOUD_KMS_PLUGIN", &checkout)], &go)).unwrap();
        assert_eq!(built, cache.join("bin/jdcloud-kms-plugin-checkout/jdcloud-kms-plugin"));
        assert_eq!(Command::new(&built).output().unwrap().stdout, b"built\n");
        let calls = fs::read_to_string(root.join("calls")).unwrap();
        assert_eq!(calls.trim(), format!("GOFLAGS=[-mod=mod] GOWORK=[off] CGO_ENABLED=[0] PWD=[{}]", checkout.display()));
        // A checkout of another module is refused, naming it.
        fs::write(checkout.join("go.mod"), "module example.com/other\n").unwrap();
        let err = locate_install_with(&install, &options(&cache, false), &env(&[("KMS_LAB_JDCLOUD_KMS_PLUGIN", &checkout)], &go));
        assert!(err.unwrap_err().to_string().contains("not a checkout of the module"));
    }

    #[test]
    fn the_go_peer_is_keyed_by_its_sources() {
        let root = tempfile::tempdir().unwrap();
        let workspace = root.path().join("main");
        let source = workspace.join("kms-lab-conformance/go-plugin");
        fs::create_dir_all(&source).unwrap();
        for name in ["go.mod", "go.sum", "main.go"] {
            fs::write(source.join(name), format!("// {name}\n")).unwrap();
        }
        let cache = root.path().join("cache");
        let first = source_hash(&source).unwrap();
        assert_eq!(first.len(), 16);
        let cached = subject_cache_path(&cache, GoSubject::GoPeer, &first);
        script(&cached, "exit 0");
        let found = locate_with(GoSubject::GoPeer, &options(&cache, false), &env(&[], Path::new(NO_GO)), &workspace);
        assert_eq!(found.unwrap(), cached);

        fs::create_dir_all(source.join("internal")).unwrap();
        fs::write(source.join("internal/shared.go"), "// a package of the module\n").unwrap();
        let with_package = source_hash(&source).unwrap();
        assert_ne!(first, with_package, "a file in a package is part of the key");
        fs::write(source.join("main.go"), "// edited\n").unwrap();
        let second = source_hash(&source).unwrap();
        assert_ne!(with_package, second, "an edit changes the key");
        let err = locate_with(GoSubject::GoPeer, &options(&cache, false), &env(&[], Path::new(NO_GO)), &workspace).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with(&format!("no usable kms-go-plugin (source hash {second})")), "{text}");
        assert!(text.contains(&format!("kms-go-plugin-{second}/kms-go-plugin: no such file")), "{text}");
    }

    /// A `go.work` subject reached through a symlink (a checkout under a symlinked home or work
    /// folder): trousseau's awskms provider, built with the real Go from `../shared/thirdparty`
    /// named through a symlink. Go had taken its working directory by the canonical path while
    /// GOWORK named the symlinked one, and refused the build.
    #[test]
    fn builds_a_go_work_subject_through_a_symlinked_folder() {
        let root = tempfile::tempdir().unwrap();
        let thirdparty = workspace_root().parent().unwrap().join("shared").join("thirdparty");
        assert!(thirdparty.join("trousseau").is_dir(), "{} holds no trousseau/ (see shared/thirdparty/README.md)", thirdparty.display());
        let link = root.path().join("thirdparty-through-a-link");
        std::os::unix::fs::symlink(&thirdparty, &link).unwrap();
        let cache = root.path().join("cache");
        let vars = [("KMS_LAB_THIRDPARTY", link.as_path())];
        let go = Env::from_process().go;
        let built = locate_with(GoSubject::TrousseauAwsKms, &options(&cache, true), &env(&vars, Path::new(&go)), &workspace_root())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(built, subject_cache_path(&cache, GoSubject::TrousseauAwsKms, TROUSSEAU_COMMIT));
        assert!(usable(&built).is_ok(), "{}", built.display());
    }

    /// The real thing, on the quickest third-party subject: `go build` of k8s-cloudkms-plugin
    /// from `../shared/thirdparty` into a fresh cache (about 90 s on 2 cores the first time; Go's
    /// own build cache makes later runs quicker).
    #[test]
    fn builds_the_real_cloudkms_plugin() {
        let cache = tempfile::tempdir().unwrap();
        let options = ProvisionOptions { cache_dir: Some(cache.path().to_path_buf()), ..ProvisionOptions::default() };
        let path = locate_go_subject(GoSubject::CloudKmsPlugin, &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path, subject_cache_path(cache.path(), GoSubject::CloudKmsPlugin, CLOUDKMS_COMMIT));
        let out = Command::new(&path).arg("--help").output().unwrap();
        let usage = String::from_utf8_lossy(&out.stderr);
        assert!(usage.contains("-fake-kms-port") && usage.contains("-integration-test"), "{usage}");
    }

    /// ack-secret-manager builds from `../shared/thirdparty` with the refused module taken from
    /// its third-party folder in the build copy (its own folder keeps its go.mod untouched), into
    /// the user's cache (later tests and scenarios reuse it; about 70 s of compiling the first time).
    #[test]
    fn builds_ack_secret_manager_with_the_refused_module_from_the_thirdparty_folder() {
        let recipe = GoRecipe::ack_secret_manager();
        let path = locate_go_recipe(&recipe, &ProvisionOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let out = Command::new(&path).arg("--help").output().unwrap();
        let usage = String::from_utf8_lossy(&out.stderr);
        for flag in ["-kms-endpoint", "-polling-interval", "-disable-polling", "-watch-namespaces", "-max-concurrent-kms-secret-pulls"] {
            assert!(usage.contains(flag), "{flag} missing from:\n{usage}");
        }
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut tried = Vec::new();
        let source = find_source(&recipe.spec(), &Env::from_process(), workspace, &mut tried).expect("the source folder");
        let go_mod = fs::read_to_string(source.join("go.mod")).unwrap();
        assert!(!go_mod.contains("replace"), "the third-party folder's go.mod was changed");
    }
}
