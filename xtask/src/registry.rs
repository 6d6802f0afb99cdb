//! The registry tier of `cargo xtask test`: the README's "with Docker" path as an air-gapped
//! cluster runs it. Debian's `docker-registry` (Distribution 2.8) serves on 127.0.0.1 as a
//! mirror of registry.k8s.io; the kube-apiserver and etcd images the container tier built
//! offline are pushed there under their upstream names and removed from the local image store;
//! then `kms-lab` runs with `--runtime container`, `KMS_LAB_IMAGES=registry` and
//! `KMS_LAB_REGISTRY=127.0.0.1:PORT`, so both images must be pulled from the mirror, and with
//! an empty cache (`KMS_LAB_CACHE`): no kube-apiserver, etcd or kubectl on the host, and none may
//! be built there. The registry and its storage are removed at the end, also when a step fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xshell::{Shell, cmd};

use crate::build;
use crate::outcome::{Failure, Outcome, delegate, quietly};

/// The binaries whose upstream images the stack pulls, with the label the offline images carry.
const UPSTREAM: [&str; 2] = ["kube-apiserver", "etcd"];

/// Runs `kms-lab ARGS…` against a local mirror holding the offline-built upstream images.
pub fn tier(sh: &Shell, run_dir: &Path, kms_lab_args: &[&str]) -> Outcome {
    let registry = Registry::start(run_dir)?;
    let mut pushed = Vec::new();
    for binary in UPSTREAM {
        let (local, version) = offline_image(sh, binary)?;
        let tag = if binary == "etcd" { format!("{}-0", version.trim_start_matches('v')) } else { version };
        let mirrored = format!("{}/{binary}:{tag}", registry.address);
        quietly(&mut cmd!(sh, "docker tag {local} {mirrored}").into(), "tag the image for the mirror", Failure::failed)?;
        quietly(&mut cmd!(sh, "docker push {mirrored}").into(), "push to the local registry", Failure::failed)?;
        quietly(&mut cmd!(sh, "docker rmi {mirrored}").into(), "remove the mirrored name from the local image store", Failure::failed)?;
        eprintln!("    {mirrored}: pushed from {local}, not in the local image store");
        pushed.push(mirrored);
    }
    let (subcommand, rest) = kms_lab_args.split_first().ok_or_else(|| Failure::message("the registry tier needs a kms-lab command"))?;
    let empty_cache = registry.root.join("empty-cache");
    std::fs::create_dir_all(&empty_cache).map_err(|e| Failure::failed(format!("cannot create {}: {e}", empty_cache.display())))?;
    let ran = {
        let _images = sh.push_env("KMS_LAB_IMAGES", "registry");
        let _registry = sh.push_env("KMS_LAB_REGISTRY", &registry.address);
        let _cache = sh.push_env("KMS_LAB_CACHE", &empty_cache);
        delegate(build::kms_lab(sh, subcommand, rest))
    };
    // Nothing was provisioned on the host: the images are all the run needed.
    let built_on_host = empty_cache.join("bin").exists() || empty_cache.join("gobuild").exists();
    // The run must have pulled each image from the mirror (KMS_LAB_IMAGES=registry refuses to build them).
    let mut not_pulled = Vec::new();
    for image in &pushed {
        if cmd!(sh, "docker image inspect {image}").quiet().ignore_stdout().ignore_stderr().run().is_err() {
            not_pulled.push(image.clone());
        }
        let _ = cmd!(sh, "docker rmi {image}").quiet().ignore_stdout().ignore_stderr().run();
    }
    ran?;
    if built_on_host {
        return Err(Failure::failed(format!(
            "the run built binaries on the host ({}): with KMS_LAB_IMAGES=registry the images are all it needs",
            empty_cache.display()
        )));
    }
    if !not_pulled.is_empty() {
        return Err(Failure::failed(format!("the run passed but never pulled {} from the mirror", not_pulled.join(", "))));
    }
    Ok(())
}

/// The newest offline-built image of `binary` (`localhost/kms-lab/…`) and the version it carries.
fn offline_image(sh: &Shell, binary: &str) -> Result<(String, String), Failure> {
    let filter = format!("label=org.kms-lab.binary={binary}");
    let format = "{{.Repository}}:{{.Tag}}";
    let images = cmd!(sh, "docker images --filter {filter} --format {format}")
        .quiet()
        .read()
        .map_err(|e| Failure::failed(format!("cannot list the local images: {e}")))?;
    let image = images.lines().next().map(str::to_owned).ok_or_else(|| {
        Failure::failed(format!(
            "no offline-built {binary} image (label org.kms-lab.binary={binary}): the container tier builds it; run `kms-lab lab --demo-only --runtime container` first"
        ))
    })?;
    let format = "{{index .Config.Labels \"org.kms-lab.version\"}}";
    let version = cmd!(sh, "docker image inspect --format {format} {image}")
        .quiet()
        .read()
        .map_err(|e| Failure::failed(format!("cannot read the version label of {image}: {e}")))?;
    Ok((image, version.trim().to_owned()))
}

/// Debian's `docker-registry` on a free loopback port, its storage in the run directory; both
/// removed when dropped.
struct Registry {
    child: Child,
    address: String,
    root: PathBuf,
    _on_signal: crate::interrupt::CleanupGuard,
}

impl Registry {
    /// How long the registry may take to answer `GET /v2/`.
    const READY_WITHIN: Duration = Duration::from_secs(30);

    fn start(run_dir: &Path) -> Result<Self, Failure> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| Failure::failed(format!("no free port on 127.0.0.1 for the registry: {e}")))?
            .port();
        let address = format!("127.0.0.1:{port}");
        let root = run_dir.join(format!("registry-{}", std::process::id()));
        let storage = root.join("storage");
        std::fs::create_dir_all(&storage).map_err(|e| Failure::failed(format!("cannot create {}: {e}", storage.display())))?;
        let config = root.join("config.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {address}\n",
            storage.display()
        );
        std::fs::write(&config, text).map_err(|e| Failure::failed(format!("cannot write {}: {e}", config.display())))?;
        let log_path = root.join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Failure::failed(format!("cannot create {}: {e}", log_path.display())))?;
        let err = log.try_clone().map_err(|e| Failure::failed(format!("cannot open {}: {e}", log_path.display())))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| Failure::failed(format!("cannot start docker-registry: {e} (Debian package docker-registry)")))?;
        let (pid, storage_root) = (child.id(), root.clone());
        let on_signal = crate::interrupt::on_signal(move || {
            crate::interrupt::stop_pid(pid, Duration::from_secs(5));
            let _ = std::fs::remove_dir_all(storage_root);
        });
        let mut registry = Self { child, address, root, _on_signal: on_signal };
        eprintln!("    docker-registry on {} (log {})", registry.address, log_path.display());
        let deadline = Instant::now() + Self::READY_WITHIN;
        while !answers_v2(&registry.address) {
            if let Ok(Some(status)) = registry.child.try_wait() {
                return Err(Failure::failed(format!("docker-registry exited ({status}) before it answered; see {}", log_path.display())));
            }
            if Instant::now() > deadline {
                return Err(Failure::failed(format!(
                    "docker-registry did not answer GET /v2/ on {} within {} s; see {}",
                    registry.address,
                    Self::READY_WITHIN.as_secs(),
                    log_path.display()
                )));
            }
            // Polling the registry's readiness; bounded by the deadline above.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(registry)
    }
}

/// Whether a registry answers `GET /v2/` with 200 at `address`.
fn answers_v2(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The log stays beside the run's other logs; the storage (hundreds of MB) goes.
        if let Some(run_dir) = self.root.parent() {
            let _ = std::fs::copy(self.root.join("registry.log"), run_dir.join("registry.log"));
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
