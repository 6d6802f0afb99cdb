//! Place 6 of the lookup order: building a binary with Go from the Go module proxy into
//! the cache (see the [module docs](super) for the layout): the cache lock, the progress bar, and
//! the Go commands of a build ([`Steps`]), in a wrapper module whose `go.mod` [`super::gomod`] writes.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::{Attempt, BUILD_FIX, BuildFailure, ProvisionError};
use super::gomod::{etcd_wrapper_gomod, kubernetes_tools, kubernetes_wrapper_gomod, module_dir};
use super::lookup::{cache_path, check, find_in_cache};
use super::{Binary, Env, Source, Upstream, Versions};

/// How many lines of Go's output a build error quotes.
pub(crate) const TAIL_LINES: usize = 30;

/// `go version`, or why Go cannot be used (with how to install it).
pub(crate) fn go_version(go: &OsStr) -> Result<String, String> {
    let install = "install Go: apt-get install golang-go, or a release from https://go.dev/dl/ \
                   (an older Go fetches the newer one the build needs unless GOTOOLCHAIN=local)";
    match Command::new(go).arg("version").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => {
            Err(format!("`{} version` failed ({}): {}; {install}", go.display(), out.status, String::from_utf8_lossy(&out.stderr).trim()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!("`{}` is not on PATH; {install}", go.display())),
        Err(e) => Err(format!("cannot run `{}`: {e}; {install}", go.display())),
    }
}

/// The Go import path of the binary's main package.
fn package(component: Upstream) -> &'static str {
    match component {
        Upstream::KubeApiserver => "k8s.io/kubernetes/cmd/kube-apiserver",
        Upstream::Kubectl => "k8s.io/kubernetes/cmd/kubectl",
        Upstream::Etcd => "go.etcd.io/etcd/server/v3",
        Upstream::Etcdctl => "go.etcd.io/etcd/etcdctl/v3",
        Upstream::KubeControllerManager => "k8s.io/kubernetes/cmd/kube-controller-manager",
    }
}

/// The `-ldflags` stamping the version in, as upstream's release builds do.
fn ldflags(component: Upstream, versions: &Versions, build_date: &str) -> String {
    if component.is_kubernetes() {
        let k = &versions.kubernetes;
        let pkg = "k8s.io/component-base/version";
        format!(
            "-s -w -X {pkg}.gitVersion={} -X {pkg}.gitMajor=1 -X {pkg}.gitMinor={} \
             -X {pkg}.gitTreeState=clean -X {pkg}.buildDate={build_date}",
            k.full, k.minor
        )
    } else {
        format!("-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA={}", versions.etcd.full)
    }
}

/// The last `n` lines of a file (fewer if it is shorter or unreadable).
pub(crate) fn tail(path: &Path, n: usize) -> Vec<String> {
    let text = fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| (*l).to_owned()).collect()
}

/// What to build.
pub(crate) struct Build<'a> {
    pub component: Upstream,
    pub versions: &'a Versions,
    pub cache: &'a Path,
    pub env: &'a Env,
    pub progress: bool,
    /// The places tried before building, for the error.
    pub tried: Vec<Attempt>,
}

/// A failed step: which command, and how.
pub(crate) struct StepError {
    pub(crate) step: String,
    pub(crate) detail: String,
}

impl StepError {
    fn new(step: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self { step: step.into(), detail: detail.to_string() }
    }
}

/// Takes the exclusive build lock `<cache>/.lock` (creating `cache`), waiting for another
/// process that holds it. Released when the file is dropped.
pub(crate) fn lock_cache(cache: &Path, env: &Env, progress: bool) -> Result<File, ProvisionError> {
    fs::create_dir_all(cache).map_err(ProvisionError::io(format!("cannot create {}", cache.display())))?;
    let lock_path = cache.join(".lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(ProvisionError::io(format!("cannot open {}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            if progress {
                eprintln!("waiting for another kms-lab process building into {} (lock {})", env.tilde(cache), lock_path.display());
            }
            lock.lock().map_err(ProvisionError::io(format!("cannot lock {}", lock_path.display())))?;
        }
        Err(TryLockError::Error(e)) => {
            return Err(ProvisionError::io(format!("cannot lock {}", lock_path.display()))(e));
        }
    }
    Ok(lock)
}

/// A spinner on stderr while `progress`, else hidden.
pub(crate) fn progress_bar(progress: bool) -> ProgressBar {
    let bar = if progress { ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {wide_msg}").expect("valid progress template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The environment every control-plane build runs Go with: static, and our wrapper module
/// stands alone whatever workspace the user has.
const COMPONENT_ENV: &[(&str, &str)] = &[("CGO_ENABLED", "0"), ("GOWORK", "off")];

/// Builds `build.component` into the cache, under the cache lock.
pub(crate) fn build(build: &Build<'_>) -> Result<Binary, ProvisionError> {
    let Build { component, versions, cache, env, progress, .. } = *build;
    let wanted = versions.of(component);
    // One build at a time per cache; whoever waited then finds the binary in the cache.
    let _lock = lock_cache(cache, env, progress)?;
    if let Some(binary) = find_in_cache(component, wanted, cache, &mut Vec::new())? {
        return Ok(binary);
    }

    let module = module_dir(cache, component, versions);
    fs::create_dir_all(&module).map_err(ProvisionError::io(format!("cannot create {}", module.display())))?;
    let log_path = module.join(format!("build-{component}.log"));
    let log = File::create(&log_path).map_err(ProvisionError::io(format!("cannot create {}", log_path.display())))?;

    if progress {
        let estimate = match component {
            Upstream::KubeApiserver => "about 8 minutes on 2 cores",
            Upstream::Kubectl => "about 1 minute on 2 cores after kube-apiserver",
            Upstream::Etcd => "about 1 minute on 2 cores",
            Upstream::Etcdctl => "a few seconds after etcd",
            Upstream::KubeControllerManager => "about 2 minutes on 2 cores after kube-apiserver",
        };
        eprintln!(
            "building {component} {wanted} from the Go module proxy: first run only, {estimate}; \
             later runs use {}",
            env.tilde(cache)
        );
    }
    let bar = progress_bar(progress);
    let steps = Steps::new(&env.go, &log, &bar, progress, COMPONENT_ENV.iter().map(|&(k, v)| (k, v.into())).collect());

    let started = Instant::now();
    let dest = cache_path(cache, component, wanted);
    let result = steps.run(component, versions, &module, &dest);
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs();
    match result {
        Ok(()) => {
            if progress {
                eprintln!("built {component} {wanted} in {seconds} s: {}", dest.display());
            }
            tracing::info!(%component, version = wanted, seconds, path = %dest.display(), "built");
            Ok(Binary { component, path: dest, version: wanted.to_owned(), source: Source::Built { seconds } })
        }
        Err(StepError { step, detail }) => Err(ProvisionError::BuildFailed(Box::new(BuildFailure {
            binary: component.name().to_owned(),
            version: wanted.to_owned(),
            step,
            detail,
            tail: tail(&log_path, TAIL_LINES),
            log: log_path,
            tried: build.tried.clone(),
            fix: BUILD_FIX.to_owned(),
        }))),
    }
    // `_lock` is released when dropped.
}

/// Runs the Go commands of one build, logging their output.
pub(crate) struct Steps<'a> {
    go: &'a OsStr,
    log: &'a File,
    bar: &'a ProgressBar,
    /// Print each step as a line (stderr is not a terminal, so there is no progress bar).
    narrate: bool,
    /// Environment set on every Go command (the rest of Go's environment is inherited).
    env: Vec<(&'static str, OsString)>,
}

impl<'a> Steps<'a> {
    /// Steps logging to `log`, shown on `bar` (and narrated as lines when `progress` and stderr
    /// is not a terminal), running `go` with `env` added.
    pub(crate) fn new(go: &'a OsStr, log: &'a File, bar: &'a ProgressBar, progress: bool, env: Vec<(&'static str, OsString)>) -> Self {
        Self { go, log, bar, narrate: progress && !std::io::stderr().is_terminal(), env }
    }

    fn run(&self, component: Upstream, versions: &Versions, module: &Path, dest: &Path) -> Result<(), StepError> {
        if !module.join("go.mod").is_file() {
            self.prepare_module(component, versions, module)?;
        }

        let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let flags = ldflags(component, versions, &date);
        let wanted = versions.of(component);
        self.build_package(module, package(component), &flags, dest, |tmp| match check(component, tmp) {
            Ok(version) if version == wanted => Ok(()),
            Ok(version) => Err(format!("it reports {version}, not {wanted}")),
            Err(why) => Err(why),
        })
    }

    /// `go build -v -trimpath -gcflags=all=-dwarf=false -ldflags FLAGS -o <dest>.tmp-<pid> PKG`
    /// in `dir` (counting the packages first for the bar), `check` on the result, then renamed
    /// to `dest`; the temporary file never stays behind. The binaries are stripped (`-s -w`), so
    /// the compiler need not write debug information for the linker to drop: a cold build of
    /// etcd took 10% less CPU without it (64 → 58 CPU-seconds), and the binary is exactly as
    /// large.
    pub(crate) fn build_package(
        &self,
        dir: &Path,
        pkg: &str,
        flags: &str,
        dest: &Path,
        check: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(), StepError> {
        self.step(&format!("go list -deps {pkg}"));
        let deps = self.go(dir, &["list", "-deps", pkg], true)?;
        let total = String::from_utf8_lossy(&deps).lines().filter(|l| !l.trim().is_empty()).count() as u64;

        let out_dir = dest.parent().expect("a cache path has a parent");
        fs::create_dir_all(out_dir).map_err(|e| StepError::new(format!("mkdir {}", out_dir.display()), e))?;
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        remove_stale_temporaries(out_dir, &name);
        let tmp = out_dir.join(format!("{name}.tmp-{}", std::process::id()));
        let tmp_arg = tmp.to_string_lossy().into_owned();
        let args = ["build", "-v", "-trimpath", "-gcflags=all=-dwarf=false", "-ldflags", flags, "-o", &tmp_arg, pkg];
        self.step(&format!("go build {pkg} ({total} packages)"));
        let built = self
            .go_build(dir, &args, total)
            // Check what was built before it goes into the cache.
            .and_then(|()| check(&tmp).map_err(|why| StepError::new("check the built binary", why)));
        let installed = built.and_then(|()| {
            fs::rename(&tmp, dest).map_err(|e| StepError::new(format!("rename {} to {}", tmp.display(), dest.display()), e))
        });
        if installed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        installed
    }

    /// `go install -trimpath TARGET` (`MODULE/PACKAGE@VERSION`, from the module proxy) with
    /// `GOBIN` a temporary folder beside `dest`, then the binary renamed to `dest`.
    pub(crate) fn install(&self, target: &str, dest: &Path) -> Result<(), StepError> {
        let out_dir = dest.parent().expect("a cache path has a parent");
        let gobin = out_dir.join(format!(".gobin-{}", std::process::id()));
        fs::create_dir_all(&gobin).map_err(|e| StepError::new(format!("mkdir {}", gobin.display()), e))?;
        let neutral = tempfile::tempdir().map_err(|e| StepError::new("create a temporary directory", e))?;
        self.step(&format!("go install {target}"));
        let mut command = self.command(neutral.path(), &["install", "-trimpath", target]);
        let _ = writeln!(&*self.log, "$ GOBIN={} go install -trimpath {target}", gobin.display());
        let status = command
            .env("GOBIN", &gobin)
            .stdout(self.log_stdio())
            .stderr(self.log_stdio())
            .status()
            .map_err(|e| StepError::new(format!("go install {target}"), format!("cannot run {}: {e}", self.go.display())));
        let installed = status.and_then(|status| {
            if !status.success() {
                return Err(StepError::new(format!("go install {target}"), status));
            }
            let package = target.split('@').next().unwrap_or(target);
            let built = gobin.join(package.rsplit('/').next().unwrap_or(package));
            fs::rename(&built, dest).map_err(|e| StepError::new(format!("rename {} to {}", built.display(), dest.display()), e))
        });
        let _ = fs::remove_dir_all(&gobin);
        installed
    }

    /// `go mod tidy` in `dir` (downloads what the module needs on the first run).
    pub(crate) fn tidy(&self, dir: &Path) -> Result<(), StepError> {
        self.step("go mod tidy (downloads the modules on the first run)");
        self.go(dir, &["mod", "tidy"], false).map(drop)
    }

    /// Writes the wrapper module's `go.mod` and `go.sum`: generated and tidied in a staging
    /// directory, then renamed into `module` (`go.mod` last, so its presence means ready).
    fn prepare_module(&self, component: Upstream, versions: &Versions, module: &Path) -> Result<(), StepError> {
        // Stale staging directories of crashed runs (we hold the cache lock).
        if let Ok(entries) = fs::read_dir(module) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".prepare-") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let gomod = if component.is_kubernetes() {
            let k8s = &versions.kubernetes;
            let upstream = self.download_gomods(&[format!("k8s.io/kubernetes@{}", k8s.full)])?;
            kubernetes_wrapper_gomod(&upstream[0], k8s, kubernetes_tools(component)).map_err(|e| StepError::new("generate go.mod", e))?
        } else {
            let etcd = &versions.etcd;
            let upstream = self.download_gomods(&[
                format!("go.etcd.io/etcd/server/v3@{}", etcd.full),
                format!("go.etcd.io/etcd/etcdctl/v3@{}", etcd.full),
            ])?;
            etcd_wrapper_gomod(&upstream, etcd).map_err(|e| StepError::new("generate go.mod", e))?
        };

        let staging = module.join(format!(".prepare-{}", std::process::id()));
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| StepError::new(what, e)
        };
        fs::create_dir_all(&staging).map_err(io(&format!("mkdir {}", staging.display())))?;
        fs::write(staging.join("go.mod"), gomod).map_err(io("write go.mod"))?;
        self.step("go mod tidy (downloads the modules on the first run)");
        self.go(&staging, &["mod", "tidy"], false)?;
        for file in ["go.sum", "go.mod"] {
            let from = staging.join(file);
            let to = module.join(file);
            fs::rename(&from, &to).map_err(io(&format!("rename {} to {}", from.display(), to.display())))?;
        }
        let _ = fs::remove_dir_all(&staging);
        Ok(())
    }

    /// `go mod download -json MODULE@VERSION...` in a neutral directory; the `go.mod` texts.
    fn download_gomods(&self, modules: &[String]) -> Result<Vec<String>, StepError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Download {
            path: String,
            go_mod: Option<String>,
            error: Option<String>,
        }
        let step = format!("go mod download -json {}", modules.join(" "));
        self.step(&step);
        let neutral = tempfile::tempdir().map_err(|e| StepError::new("create a temporary directory", e))?;
        let mut args = vec!["mod", "download", "-json"];
        args.extend(modules.iter().map(String::as_str));
        let (status, stdout) = self.go_status(neutral.path(), &args, true)?;
        let _ = { self.log }.write_all(&stdout);
        let mut downloads = Vec::new();
        for item in serde_json::Deserializer::from_slice(&stdout).into_iter::<Download>() {
            let item = item.map_err(|e| StepError::new(&step, format!("unexpected output: {e}")))?;
            if let Some(error) = item.error {
                return Err(StepError::new(&step, error));
            }
            downloads.push(item);
        }
        if !status.success() {
            return Err(StepError::new(&step, status));
        }
        let mut texts = Vec::new();
        for item in downloads {
            let path = item.go_mod.ok_or_else(|| StepError::new(&step, format!("no GoMod for {}", item.path)))?;
            let text = fs::read_to_string(&path).map_err(|e| StepError::new(&step, format!("cannot read {path}: {e}")))?;
            texts.push(text);
        }
        if texts.len() != modules.len() {
            return Err(StepError::new(&step, format!("{} go.mod files for {} modules", texts.len(), modules.len())));
        }
        Ok(texts)
    }

    /// Shows and logs the start of a step.
    fn step(&self, what: &str) {
        self.bar.set_message(what.to_owned());
        if self.narrate {
            eprintln!("  {what}");
        }
        let _ = writeln!(&*self.log, "\n### {what}");
    }

    fn command(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.go);
        cmd.args(args).current_dir(dir).stdin(Stdio::null());
        // Go takes its working directory from $PWD when that names the same folder, else from
        // getcwd (the canonical path). Without this, a folder reached through a symlink is seen
        // by its canonical path while GOWORK names the symlinked one, and Go refuses the build
        // ("directory … is contained in a module that is not one of the workspace modules").
        if dir.is_absolute() {
            cmd.env("PWD", dir);
        }
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    fn log_stdio(&self) -> Stdio {
        self.log.try_clone().map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// Runs go; its stderr (and stdout unless `capture`) goes to the log.
    fn go_status(&self, dir: &Path, args: &[&str], capture: bool) -> Result<(std::process::ExitStatus, Vec<u8>), StepError> {
        let step = format!("go {}", args.join(" "));
        let _ = writeln!(&*self.log, "$ cd {} && {step}", dir.display());
        let out = self
            .command(dir, args)
            .stdout(if capture { Stdio::piped() } else { self.log_stdio() })
            .stderr(self.log_stdio())
            .output()
            .map_err(|e| StepError::new(&step, format!("cannot run {}: {e}", self.go.display())))?;
        Ok((out.status, out.stdout))
    }

    fn go(&self, dir: &Path, args: &[&str], capture: bool) -> Result<Vec<u8>, StepError> {
        let (status, stdout) = self.go_status(dir, args, capture)?;
        if !status.success() {
            return Err(StepError::new(format!("go {}", args.join(" ")), status));
        }
        Ok(stdout)
    }

    /// `go build -v ...`, advancing the bar by each package Go reports on stderr.
    fn go_build(&self, dir: &Path, args: &[&str], total: u64) -> Result<(), StepError> {
        let step = format!("go build {}", args.last().copied().unwrap_or_default());
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={} ", shell_words(&[&v.to_string_lossy()]))).collect();
        let _ = writeln!(&*self.log, "$ cd {} && {env}go {}", dir.display(), shell_words(args));
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_style(
            ProgressStyle::with_template("  {spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos:>4}/{len} packages {wide_msg}")
                .expect("valid progress template")
                .progress_chars("=> "),
        );
        let mut child = self
            .command(dir, args)
            .stdout(self.log_stdio())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StepError::new(&step, format!("cannot run {}: {e}", self.go.display())))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(&*self.log, "{line}");
            let is_package = !line.is_empty() && !line.starts_with('#') && !line.contains(char::is_whitespace);
            if is_package {
                if self.bar.position() < total {
                    self.bar.inc(1);
                }
                self.bar.set_message(line);
            }
        }
        let status = child.wait().map_err(|e| StepError::new(&step, e))?;
        if !status.success() {
            return Err(StepError::new(&step, status));
        }
        self.bar.set_position(total);
        Ok(())
    }
}

/// `args` as a shell would need them, for the log.
fn shell_words(args: &[&str]) -> String {
    let quote = |a: &&str| {
        if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c)) {
            (*a).to_owned()
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    };
    args.iter().map(quote).collect::<Vec<_>>().join(" ")
}

/// Removes `<name>.tmp-*` files of crashed builds from `dir` (we hold the cache lock).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!("{name}.tmp-");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::{parse_etcd_version, parse_kubernetes_version};

    #[test]
    fn ldflags_stamp_the_version() {
        let versions = Versions { kubernetes: parse_kubernetes_version("v1.37.2").unwrap(), etcd: parse_etcd_version("v3.6.16").unwrap() };
        assert_eq!(
            ldflags(Upstream::Kubectl, &versions, "2026-01-02T03:04:05Z"),
            "-s -w -X k8s.io/component-base/version.gitVersion=v1.37.2 \
             -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
             -X k8s.io/component-base/version.gitTreeState=clean \
             -X k8s.io/component-base/version.buildDate=2026-01-02T03:04:05Z"
        );
        assert_eq!(ldflags(Upstream::Etcdctl, &versions, "x"), "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v3.6.16");
    }

    #[test]
    fn tails() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        fs::write(&log, (1..=40).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        let last = tail(&log, TAIL_LINES);
        assert_eq!(last.len(), 30);
        assert_eq!((last[0].as_str(), last[29].as_str()), ("line 11", "line 40"));
        assert!(tail(&dir.path().join("missing"), 30).is_empty());
        assert_eq!(shell_words(&["build", "-ldflags", "-s -w", "it's"]), r"build -ldflags '-s -w' 'it'\''s'");
    }
}
