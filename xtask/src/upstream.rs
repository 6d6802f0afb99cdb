//! `cargo xtask provision`, and the same beside the Rust build: the pinned upstream binaries
//! (kube-apiserver, kubectl, etcd, etcdctl) found, or built with Go from the module proxy into
//! the cache. On a fresh machine the Go build and the Rust build each take minutes; started
//! together, the Go build's downloads and single-threaded steps fill what the Rust build leaves
//! idle, and the lab or the suite finds the binaries in the cache when it starts.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kms_lab_provision::{ProvisionOptions, provision};

use crate::interrupt::CleanupGuard;
use crate::outcome::{Failure, Outcome, Phase, elapsed};

/// `cargo xtask provision`: finds or builds the four binaries, one line per binary.
pub fn run() -> Outcome {
    let binaries = provision(&ProvisionOptions::default()).map_err(|error| Failure::failed(error.to_string()))?;
    for binary in binaries.all() {
        eprintln!("{:<15} {:<10} {} ({})", binary.component.name(), binary.version, binary.path.display(), binary.source);
    }
    Ok(())
}

/// `cargo xtask provision` running as a child of this task, in its own process group (so a
/// signal to this task stops its Go builds too), its output in a log.
pub struct Beside {
    child: Child,
    log: PathBuf,
    started: Instant,
    _on_signal: CleanupGuard,
}

impl Beside {
    /// How long the Go builds may take to stop after SIGTERM.
    const STOP_WITHIN: Duration = Duration::from_secs(10);

    /// Starts `cargo xtask provision` (this executable) with its output in `run_dir/provision.log`.
    pub fn start(run_dir: &Path) -> Result<Self, Failure> {
        use std::os::unix::process::CommandExt;
        std::fs::create_dir_all(run_dir).map_err(|e| Failure::message(format!("cannot create {}: {e}", run_dir.display())))?;
        let log = run_dir.join("provision.log");
        let out = File::create(&log).map_err(|e| Failure::message(format!("cannot create {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| Failure::message(format!("cannot open {}: {e}", log.display())))?;
        let exe = std::env::current_exe().map_err(|e| Failure::message(format!("cannot find this task's own executable: {e}")))?;
        let child = Command::new(exe)
            .arg("provision")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::message(format!("cannot start `cargo xtask provision`: {e}")))?;
        let group = child.id();
        let on_signal = crate::interrupt::on_signal(move || crate::interrupt::stop_group(group, Self::STOP_WITHIN));
        eprintln!(
            "==> finding or building kube-apiserver, kubectl and etcd beside the Rust build (Go, first run only; log: {})",
            log.display()
        );
        Ok(Self { child, log, started: Instant::now(), _on_signal: on_signal })
    }

    /// Waits for it (saying so, and where its log is, if it is still building) and reports the
    /// binaries, or its error.
    pub fn finish(mut self) -> Outcome {
        let running = matches!(self.child.try_wait(), Ok(None));
        let phase = running.then(|| Phase::start(format!("waiting for the Go build of the upstream binaries ({})", self.log.display())));
        let status = self.child.wait().map_err(|e| Failure::message(format!("cannot wait for `cargo xtask provision`: {e}")));
        crate::interrupt::stop_if_interrupted();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let outcome = match status {
            Ok(status) if status.success() => {
                // `run` ends with one line per binary.
                let binaries = kms_lab_provision::Upstream::PROVISIONED.len();
                for line in text.lines().rev().take(binaries).collect::<Vec<_>>().into_iter().rev() {
                    eprintln!("    {line}");
                }
                eprintln!("    upstream binaries ready {} after they were started", elapsed(self.started));
                Ok(())
            }
            Ok(status) => {
                let tail: Vec<&str> = text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
                Err(Failure::failed(format!(
                    "`cargo xtask provision` failed ({status}); the end of {}:\n{}",
                    self.log.display(),
                    tail.join("\n")
                )))
            }
            Err(failure) => Err(failure),
        };
        match phase {
            Some(phase) => phase.end(outcome),
            None => outcome,
        }
    }
}

impl Drop for Beside {
    /// Stops the Go builds if the task ends before [`Beside::finish`] (a failed Rust build).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::interrupt::stop_group(self.child.id(), Self::STOP_WITHIN);
            let _ = self.child.wait();
        }
    }
}
