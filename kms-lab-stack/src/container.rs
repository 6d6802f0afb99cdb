//! The container backend of the stack's components: one Docker container per component,
//! started through testcontainers from an image built offline ([`crate::images`]), on the host
//! network, with the stack's directories bind-mounted at their own paths, running as this
//! user, under `docker-init` (so the component is not PID 1 and signals keep their default
//! meaning). stop = SIGTERM, grace, SIGKILL (`docker stop -t`); kill = SIGKILL (`docker kill`).
//!
//! Every container carries [`MANAGED_LABEL`] and the owner's pid; testcontainers removes it
//! when it is dropped (success, failure, panic, Ctrl-C), and [`clean`] (`kms-lab clean`)
//! removes those whose owner is gone (a run killed with SIGKILL).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use testcontainers::bollard::Docker;
use testcontainers::bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
};
use testcontainers::core::logs::LogFrame;
use testcontainers::core::{ImageExt, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};

use crate::error::StackError;
use crate::images::{self, MANAGED_LABEL};

/// The label holding the pid of the process that started the container.
pub const OWNER_LABEL: &str = "org.kms-lab.owner-pid";
/// The label holding the component's name in its stack.
pub const COMPONENT_LABEL: &str = "org.kms-lab.component";
/// The label holding the run's name.
pub const RUN_LABEL: &str = "org.kms-lab.run";

/// How long one Docker API call may take before the component counts as failed.
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Numbers containers of this process, for unique readable names.
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// What to run in one container.
#[derive(Debug)]
pub(crate) struct ContainerSpec<'a> {
    pub name: &'a str,
    pub program: &'a Path,
    /// Run this image as it is (its own entrypoint) instead of one made from `program`.
    pub image: Option<&'a images::ImageRef>,
    pub version: &'a str,
    pub args: &'a [String],
    pub envs: &'a [(String, String)],
    pub log: &'a Path,
    pub mounts: &'a [PathBuf],
    pub run: &'a str,
}

fn docker_error(what: &str) -> impl FnOnce(String) -> StackError + '_ {
    move |error| StackError::Container(format!("{what}: {error}"))
}

/// The Docker client testcontainers uses (`DOCKER_HOST`, else `/var/run/docker.sock`), checked with a ping.
pub async fn docker() -> Result<Docker, StackError> {
    let hint = "is dockerd running? (`dockerd --iptables=false --bridge=none &`, or run with `--runtime process`)";
    let docker = testcontainers::core::client::docker_client_instance()
        .await
        .map_err(|e| StackError::Container(format!("cannot reach the Docker daemon: {e}; {hint}")))?;
    match tokio::time::timeout(Duration::from_secs(10), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(StackError::Container(format!("the Docker daemon does not answer a ping: {e}; {hint}"))),
        Err(_) => Err(StackError::Container(format!("the Docker daemon did not answer a ping within 10 s; {hint}"))),
    }
}

/// A running (or exited, not yet removed) component container.
pub struct Container {
    inner: Option<ContainerAsync<GenericImage>>,
    id: String,
    pid: Option<u32>,
    image: String,
    docker: Docker,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("id", &self.id).field("image", &self.image).field("pid", &self.pid).finish_non_exhaustive()
    }
}

/// An exit code as the process backend would report it: above 128 is a signal (137 = SIGKILL).
fn exit_status(code: i64) -> ExitStatus {
    match code {
        129..=159 => ExitStatus::from_raw((code - 128) as i32),
        _ => ExitStatus::from_raw(((code & 0xff) as i32) << 8),
    }
}

impl Container {
    /// Builds (or finds) the image of `spec.program`, starts the container, and follows its
    /// output into `spec.log`.
    pub(crate) async fn start(spec: &ContainerSpec<'_>) -> Result<Self, StackError> {
        let docker = docker().await?;
        let (image, entrypoint) = match spec.image {
            Some(given) => {
                if docker.inspect_image(&given.to_string()).await.is_err() {
                    return Err(StackError::Container(format!(
                        "{}: image `{given}` is not in the local image store (no registry is asked): `docker load` or `docker build -t {given}` it first",
                        spec.name
                    )));
                }
                (given.clone(), None)
            }
            None => match images::from_registry(&docker, spec.program, spec.version).await? {
                Some((image, entrypoint)) => (image, Some(entrypoint)),
                None => (images::ensure(&docker, spec.program, spec.version).await?, None),
            },
        };
        let open_log = || crate::fsutil::append_private(spec.log);
        let log = open_log().map_err(StackError::io(format!("open log {}", spec.log.display())))?;
        let number = STARTED.fetch_add(1, Ordering::Relaxed);
        let owner = std::process::id();
        let container_name = format!("kms-lab-{}-{owner}-{number}", spec.name);
        // SAFETY: getuid/getgid cannot fail and touch no memory.
        let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
        let mut generic = GenericImage::new(&image.name, &image.tag);
        if let Some(entrypoint) = &entrypoint {
            // Upstream images name no entrypoint: static pods give the command.
            generic = generic.with_entrypoint(entrypoint);
        }
        let mut request = generic
            .with_cmd(spec.args.iter().cloned())
            .with_container_name(&container_name)
            .with_user(user)
            .with_label(MANAGED_LABEL, "true")
            .with_label(OWNER_LABEL, owner.to_string())
            .with_label(COMPONENT_LABEL, spec.name)
            .with_label(RUN_LABEL, spec.run)
            .with_startup_timeout(API_TIMEOUT)
            .with_host_config_modifier(|host| {
                // Host networking through the host config works on Docker and Podman alike
                // (`with_network("host")` does not on Podman).
                host.network_mode = Some("host".to_owned());
                host.init = Some(true);
            })
            .with_log_consumer(move |frame: &LogFrame| {
                use std::io::Write;
                let bytes = match frame {
                    LogFrame::StdOut(bytes) | LogFrame::StdErr(bytes) => bytes,
                };
                let _ = (&log).write_all(bytes);
            });
        for (key, value) in spec.envs {
            request = request.with_env_var(key, value);
        }
        for dir in spec.mounts {
            let path = dir.display().to_string();
            request = request.with_mount(Mount::bind_mount(path.clone(), path));
        }
        let inner = request
            .start()
            .await
            .map_err(|e| StackError::Container(format!("cannot start {} in a container from `{image}`: {e}", spec.name)))?;
        let id = inner.id().to_owned();
        let pid = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|info| info.state)
            .and_then(|state| state.pid)
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|pid| *pid > 0);
        tracing::debug!(component = spec.name, container = %container_name, image = %image, ?pid, "started");
        Ok(Self { inner: Some(inner), id, pid, image: image.to_string(), docker })
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of the container's init (it lives exactly as long as the component).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The exit status once the container has exited; `None` while it runs.
    pub async fn exited(&self) -> Option<ExitStatus> {
        let info = self.docker.inspect_container(&self.id, None::<InspectContainerOptions>).await.ok()?;
        let state = info.state?;
        if state.running.unwrap_or(false) {
            return None;
        }
        // Created but not yet running counts as running; exited, dead or removed as exited.
        use testcontainers::bollard::models::ContainerStateStatusEnum as Status;
        match state.status {
            Some(Status::CREATED) => None,
            _ => Some(exit_status(state.exit_code.unwrap_or_default())),
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then the container is removed.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let seconds = i32::try_from(grace.as_secs().max(1)).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(seconds).build();
        if let Err(error) = self.docker.stop_container(&self.id, Some(options)).await {
            tracing::warn!(container = %self.id, %error, "docker stop failed");
        }
        self.remove().await
    }

    /// SIGKILL at once, as a crash would; then the container is removed.
    pub async fn kill(mut self) -> Option<ExitStatus> {
        let options = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
        if let Err(error) = self.docker.kill_container(&self.id, Some(options)).await {
            // Already exited: nothing to kill.
            tracing::debug!(container = %self.id, %error, "docker kill");
        }
        self.remove().await
    }

    /// Waits until the container is no longer running (bounded), reads its status, removes it.
    async fn remove(&mut self) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + API_TIMEOUT;
        let status = loop {
            if let Some(status) = self.exited().await {
                break Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(container = %self.id, "still running a minute after stop/kill; removing it by force");
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if let Some(inner) = self.inner.take()
            && let Err(error) = inner.rm().await
        {
            tracing::warn!(container = %self.id, %error, "docker rm failed; `kms-lab clean` removes it");
        }
        status
    }

    /// Sends `signal` (e.g. SIGHUP) to the component without waiting for it to arrive.
    pub fn signal(&self, signal: libc::c_int) {
        let name = match signal {
            libc::SIGHUP => "SIGHUP",
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGKILL => "SIGKILL",
            libc::SIGUSR1 => "SIGUSR1",
            libc::SIGUSR2 => "SIGUSR2",
            libc::SIGSTOP => "SIGSTOP",
            libc::SIGCONT => "SIGCONT",
            _ => "SIGTERM",
        };
        let docker = self.docker.clone();
        let id = self.id.clone();
        let send = async move {
            let options = KillContainerOptionsBuilder::new().signal(name).build();
            if let Err(error) = docker.kill_container(&id, Some(options)).await {
                tracing::warn!(container = %id, signal = name, %error, "docker kill --signal failed");
            }
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(send);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // testcontainers removes a dropped container (force: SIGKILL); it needs a Tokio runtime.
        if let Some(inner) = self.inner.take()
            && tokio::runtime::Handle::try_current().is_err()
            && let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build()
        {
            runtime.block_on(async move { drop(inner) });
        }
    }
}

/// What [`clean`] removed.
#[derive(Debug, Default, Clone)]
pub struct CleanReport {
    /// Containers removed (name and component).
    pub containers: Vec<String>,
    /// Containers left because their owner still runs.
    pub kept: Vec<String>,
    /// Images removed.
    pub images: Vec<String>,
}

fn owner_alive(pid: &str) -> bool {
    let Ok(pid) = pid.parse::<libc::pid_t>() else { return false };
    // SAFETY: signal 0 only checks for existence.
    pid > 0 && unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Removes every container kms-lab started whose owning process is gone (all of them with
/// `all`), and with `images` also every image kms-lab built that no container uses.
pub async fn clean(all: bool, images: bool) -> Result<CleanReport, StackError> {
    let docker = docker().await?;
    let filter = std::collections::HashMap::from([("label".to_owned(), vec![format!("{MANAGED_LABEL}=true")])]);
    let list = ListContainersOptionsBuilder::new().all(true).filters(&filter).build();
    let containers = docker.list_containers(Some(list)).await.map_err(|e| docker_error("list containers")(e.to_string()))?;
    let mut report = CleanReport::default();
    for container in containers {
        let labels = container.labels.unwrap_or_default();
        let name = container.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default();
        let owner = labels.get(OWNER_LABEL).cloned().unwrap_or_default();
        if !all && owner_alive(&owner) {
            report.kept.push(format!("{name} (owner pid {owner} still runs)"));
            continue;
        }
        let Some(id) = container.id else { continue };
        let remove = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        docker.remove_container(&id, Some(remove)).await.map_err(|e| docker_error(&format!("remove container {name}"))(e.to_string()))?;
        report.containers.push(name);
    }
    if images {
        let list = ListImagesOptionsBuilder::new().filters(&filter).build();
        let found = docker.list_images(Some(list)).await.map_err(|e| docker_error("list images")(e.to_string()))?;
        for image in found {
            let names = if image.repo_tags.is_empty() { vec![image.id.clone()] } else { image.repo_tags.clone() };
            for name in names {
                let remove = RemoveImageOptionsBuilder::new().build();
                match docker.remove_image(&name, Some(remove), None).await {
                    Ok(_) => report.images.push(name),
                    Err(error) => report.kept.push(format!("image {name} ({error})")),
                }
            }
        }
    }
    Ok(report)
}
