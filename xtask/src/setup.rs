//! What `cargo xtask test` needs beside Rust and Go, checked and — where it may — installed:
//! Python's boto3, moto[server] and hvac in a venv under the cache (never into the system's
//! Python), headless Chromium and docker.io with `apt-get` when running as root on Debian or
//! Ubuntu, and a dockerd started for the run (and stopped after it) when none answers.
//! Elsewhere, or with `--no-install`, it stops at once with the exact commands to run.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::outcome::{Failure, Outcome, Phase, quietly};

/// The Python packages the suite's real clients need, pinned as the tests expect them.
const PYTHON_PACKAGES: [&str; 3] = ["moto[server]==5.2.5", "boto3", "hvac==2.4.0"];
/// The import check of those packages (moto's version is what the differential tests were written against).
const PYTHON_CHECK: &str = "import boto3, hvac, moto; assert moto.__version__ == '5.2.5', moto.__version__";
/// Debian's registry (`docker-registry`, Distribution 2.8) for the registry tier.
const REGISTRY_PROGRAM: &str = "docker-registry";

/// What the suite may do to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Install what is missing where it can (root on Debian/Ubuntu; the venv anywhere).
    Missing,
    /// Check only: name what is missing and the commands, then stop.
    Never,
}

/// The environment the suite runs in once set up: `PATH` with the venv first, and the dockerd
/// this run started (stopped when this is dropped).
pub struct Environment {
    /// `PATH` for every child (the venv's `bin/` first when one is used).
    pub path: OsString,
    /// Kept to be dropped (stopped) with the environment.
    _dockerd: Option<Dockerd>,
}

/// Checks everything first; where something is missing that this run may not install (not
/// root, no apt-get, `--no-install`), stops at once with every command to run. Otherwise installs
/// what is missing and starts dockerd if none answers.
pub fn prepare(install: Install, cache: &Path, run_dir: &Path) -> Result<Environment, Failure> {
    let apt = Apt::detect();
    let mut apt_packages: Vec<&str> = Vec::new();
    if !runs("sh", &["-c", "command -v chromium || command -v chromium-browser || command -v google-chrome"]) {
        apt_packages.push("chromium");
    }
    if !runs("sh", &["-c", "command -v dockerd"]) {
        apt_packages.push("docker.io");
    }
    if !runs("sh", &["-c", &format!("command -v {REGISTRY_PROGRAM}")]) {
        apt_packages.push("docker-registry");
    }
    let venv = cache.join("python-venv");
    let python = python_state(&venv);
    if python == Python::NoVenvModule {
        apt_packages.push("python3-venv");
    }
    let needs_venv = matches!(python, Python::Missing | Python::NoVenvModule);
    let needs_dockerd = !runs("docker", &["info"]);

    let may_install_packages = install == Install::Missing && apt == Apt::AsRoot;
    if (!apt_packages.is_empty() || needs_dockerd) && !may_install_packages {
        let why = match (install, apt) {
            (Install::Never, _) => "--no-install",
            (_, Apt::NotRoot) => "not root, so nothing is installed",
            (_, Apt::Absent) => "no apt-get on this machine (the packages are named as Debian names them)",
            (_, Apt::AsRoot) => unreachable!("root with apt-get may install"),
        };
        let mut commands = Vec::new();
        if !apt_packages.is_empty() {
            commands.push(format!("apt-get update && apt-get install -y {}", apt_packages.join(" ")));
        }
        if needs_venv {
            commands.push(venv_commands(&venv));
        }
        if needs_dockerd {
            commands.push("dockerd --iptables=false --bridge=none &   # as root; the container tiers need a running daemon".to_owned());
        }
        return Err(Failure::message(format!(
            "the suite needs more than Rust and Go ({why}); run:\n  {}\nthen `cargo xtask test` again",
            commands.join("\n  ")
        )));
    }

    if !apt_packages.is_empty() {
        let packages = apt_packages.join(" ");
        let phase = Phase::start(format!("installing {packages} (apt-get, as root)"));
        phase.end(apt_install(&apt_packages))?;
    }
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if needs_venv && install == Install::Never {
        return Err(Failure::message(format!(
            "the suite needs Python's boto3, hvac and moto[server] (--no-install); run:\n  {}\nthen `cargo xtask test` again",
            venv_commands(&venv)
        )));
    }
    if needs_venv {
        let phase = Phase::start(format!("installing {} into the venv {}", PYTHON_PACKAGES.join(" "), venv.display()));
        phase.end(make_venv(&venv))?;
    }
    match python_state(&venv) {
        Python::System => eprintln!("==> Python: the system's python3 has boto3, hvac and moto 5.2.5"),
        _ => {
            eprintln!("==> Python: {} (boto3, hvac, moto 5.2.5)", venv.display());
            path = prefixed(&venv.join("bin"), &path);
        }
    }

    let dockerd = if needs_dockerd {
        let phase = Phase::start(
            "starting dockerd for this run (--iptables=false --bridge=none; containers use the host network; stopped at the end)",
        );
        Some(phase.end(Dockerd::start(run_dir))?)
    } else {
        eprintln!("==> Docker: a dockerd answers");
        None
    };
    Ok(Environment { path, _dockerd: dockerd })
}

/// Whether `program args…` runs and exits 0 (output discarded).
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `dir` in front of `path`.
fn prefixed(dir: &Path, path: &OsString) -> OsString {
    let mut joined = OsString::from(dir.as_os_str());
    if !path.is_empty() {
        joined.push(":");
        joined.push(path);
    }
    joined
}

/// May this process install Debian packages?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Apt {
    /// apt-get is there and we are root.
    AsRoot,
    /// apt-get is there, we are not root.
    NotRoot,
    /// Not a Debian-like system.
    Absent,
}

impl Apt {
    fn detect() -> Self {
        if !runs("sh", &["-c", "command -v apt-get"]) {
            return Self::Absent;
        }
        // `id -u` rather than a libc dependency for one call.
        let uid = Command::new("id").arg("-u").output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if uid.as_deref() == Some("0") { Self::AsRoot } else { Self::NotRoot }
    }
}

fn apt_install(packages: &[&str]) -> Outcome {
    let apt_get = || {
        let mut command = Command::new("apt-get");
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    quietly(apt_get().args(["update", "-qq"]), "run apt-get update", Failure::message)?;
    quietly(apt_get().args(["install", "-y", "-qq", "--no-install-recommends"]).args(packages), "run apt-get install", Failure::message)
}

/// Where the suite's Python packages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Python {
    /// The system's python3 has them (nothing to install).
    System,
    /// The cache's venv has them.
    Venv,
    /// Neither; a venv can be made.
    Missing,
    /// Neither, and python3 cannot make a venv (Debian: `python3-venv`).
    NoVenvModule,
}

fn python_state(venv: &Path) -> Python {
    let venv_python = venv.join("bin").join("python3");
    if venv_python.exists() && runs(&venv_python.to_string_lossy(), &["-c", PYTHON_CHECK]) {
        return Python::Venv;
    }
    if runs("python3", &["-c", PYTHON_CHECK]) {
        return Python::System;
    }
    if runs("python3", &["-c", "import venv, ensurepip"]) { Python::Missing } else { Python::NoVenvModule }
}

fn venv_commands(venv: &Path) -> String {
    let venv = venv.display();
    format!(
        "python3 -m venv {venv} && {venv}/bin/pip install {}",
        PYTHON_PACKAGES.iter().map(|p| format!("'{p}'")).collect::<Vec<_>>().join(" ")
    )
}

fn make_venv(venv: &Path) -> Outcome {
    let by_hand = |failure: Failure| match failure {
        Failure::Message { text, code } => Failure::Message { text: format!("{text}\nby hand: {}", venv_commands(venv)), code },
        child => child,
    };
    if !venv.join("bin").join("python3").exists() {
        quietly(Command::new("python3").arg("-m").arg("venv").arg(venv), "make the venv", Failure::message).map_err(by_hand)?;
    }
    quietly(
        Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", "--disable-pip-version-check"]).args(PYTHON_PACKAGES),
        "install the Python packages",
        Failure::message,
    )
    .map_err(by_hand)?;
    if runs(&venv.join("bin").join("python3").to_string_lossy(), &["-c", PYTHON_CHECK]) {
        Ok(())
    } else {
        Err(Failure::message(format!("the venv {} was made but `{PYTHON_CHECK}` still fails there", venv.display())))
    }
}

/// A dockerd this run started; stopped (SIGTERM, then waited for) when dropped or on a signal.
struct Dockerd {
    child: Child,
    _on_signal: crate::interrupt::CleanupGuard,
}

impl Dockerd {
    /// How long dockerd may take to answer `docker info`.
    const READY_WITHIN: Duration = Duration::from_secs(60);
    /// How long dockerd may take to stop its containers after SIGTERM.
    const STOP_WITHIN: Duration = Duration::from_secs(30);

    fn start(run_dir: &Path) -> Result<Self, Failure> {
        std::fs::create_dir_all(run_dir).map_err(|e| Failure::message(format!("cannot create {}: {e}", run_dir.display())))?;
        let log_path: PathBuf = run_dir.join("dockerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Failure::message(format!("cannot create {}: {e}", log_path.display())))?;
        let err = log.try_clone().map_err(|e| Failure::message(format!("cannot open {}: {e}", log_path.display())))?;
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Failure::message(format!("cannot start dockerd: {e} (is docker.io installed?)")))?;
        let pid = child.id();
        let on_signal = crate::interrupt::on_signal(move || crate::interrupt::stop_pid(pid, Self::STOP_WITHIN));
        let mut dockerd = Self { child, _on_signal: on_signal };
        let deadline = Instant::now() + Self::READY_WITHIN;
        loop {
            if runs("docker", &["info"]) {
                return Ok(dockerd);
            }
            if let Ok(Some(status)) = dockerd.child.try_wait() {
                return Err(Failure::message(format!("dockerd exited ({status}) before it answered; see {}", log_path.display())));
            }
            if Instant::now() > deadline {
                return Err(Failure::message(format!(
                    "dockerd did not answer `docker info` within {} s; see {}",
                    Self::READY_WITHIN.as_secs(),
                    log_path.display()
                )));
            }
            // Polling a daemon's readiness: the wait is bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        eprintln!("==> stopping the dockerd this run started");
        crate::interrupt::stop_pid(self.child.id(), Self::STOP_WITHIN);
        let _ = self.child.wait();
    }
}
