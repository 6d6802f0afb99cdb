//! kms-plugin processes in the stack: each has a name, a socket and a persistent KEK file, so
//! it can be killed and restarted without losing keys.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kms_wire::PluginClient;

use crate::error::StackError;
use crate::mockkms::MockKmsCluster;
use crate::process::Supervised;
use crate::runtime::Launcher;

/// How long a plugin may take to answer on its socket.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Where a plugin's KEK lives.
#[derive(Debug, Clone)]
pub enum PluginKek {
    /// An in-process KEK kept in a key file in the run's work dir.
    Local,
    /// A remote KMS, given as the seed-format `config.json` content (the socket is filled in).
    Remote(serde_json::Value),
    /// The stack's own mock KMS (its config is filled in when the plugin starts).
    MockKms,
    /// Not kms-plugin at all: a program of its own (a plugin manifest, see the
    /// `kms-lab-catalog` crate), which reaches its KEK itself, e.g. in the stack's mock KMS.
    Program(Arc<dyn PluginProgram>),
}

/// What a [`PluginProgram`] gets when the stack starts it.
#[derive(Debug)]
pub struct ProgramContext<'a> {
    /// The plugin's name in the stack (`plugin-0`).
    pub name: &'a str,
    /// The stack's one way to start processes (its runtime).
    pub launcher: &'a Launcher,
    /// The socket the apiserver will dial; the program must listen there.
    pub socket: &'a Path,
    /// A private (0700) directory of this plugin's own, for its files and extra sockets.
    pub work_dir: &'a Path,
    /// Where the plugin's logs go (the run directory): `<name>.log` and one per extra process.
    pub log_dir: &'a Path,
    /// The stack's mock KMS, if it runs one.
    pub mock_kms: Option<&'a MockKmsCluster>,
}

/// The processes a [`PluginProgram`] started: the plugin itself, and the extra processes it needs
/// (started first, stopped after it).
#[derive(Debug)]
pub struct ProgramProcesses {
    /// The process that serves the socket.
    pub main: Supervised,
    /// Extra processes (trousseau's providers), in start order.
    pub extras: Vec<Supervised>,
    /// The command (argv) that rotates this running plugin's KEK, when the program has one.
    pub rotate: Option<Vec<String>>,
}

/// A plugin the stack runs from a description other than kms-plugin's flags: it starts its
/// processes through [`ProgramContext::launcher`] and returns once the socket is ready.
pub trait PluginProgram: std::fmt::Debug + Send + Sync {
    /// Starts the plugin (extra processes first) and waits, bounded, until it is ready.
    fn start<'a>(&'a self, context: ProgramContext<'a>) -> Pin<Box<dyn Future<Output = Result<ProgramProcesses, StackError>> + Send + 'a>>;
}

/// How to run one plugin.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Its name in the stack, e.g. `plugin-0`.
    pub name: String,
    /// Its KEK.
    pub kek: PluginKek,
    /// Extra `kms-plugin` flags (e.g. `--health-ttl 1s`).
    pub extra_args: Vec<String>,
    /// Defects to switch on: non-empty runs `kms-faulty-plugin` (the reference plugin with
    /// `--defect NAME` flags) instead of `kms-plugin`.
    pub defects: Vec<String>,
}

impl PluginSpec {
    /// A plugin with a local KEK.
    pub fn local(name: &str) -> Self {
        Self { name: name.to_owned(), kek: PluginKek::Local, extra_args: Vec::new(), defects: Vec::new() }
    }
}

/// A plugin slot: its spec, files, and the process while it runs.
#[derive(Debug)]
pub struct PluginSlot {
    /// How it runs.
    pub spec: PluginSpec,
    /// Its socket.
    pub socket: PathBuf,
    /// Its KEK file (local KEK) or config file (remote).
    pub state_file: PathBuf,
    /// The process, while running.
    pub process: Option<Supervised>,
    /// A [`PluginKek::Program`]'s extra processes, while running (stopped after `process`).
    pub extras: Vec<Supervised>,
    /// A [`PluginKek::Program`]'s command (argv) that rotates the running plugin's KEK.
    pub rotate_command: Option<Vec<String>>,
}

impl PluginSlot {
    /// A slot whose files live in `work_dir`.
    pub fn new(spec: PluginSpec, work_dir: &Path) -> Self {
        let socket = work_dir.join(format!("{}.sock", spec.name));
        let state_file = work_dir.join(match spec.kek {
            PluginKek::Local => format!("{}.kek", spec.name),
            PluginKek::Remote(_) | PluginKek::MockKms => format!("{}.json", spec.name),
            PluginKek::Program(_) => spec.name.clone(),
        });
        Self { spec, socket, state_file, process: None, extras: Vec::new(), rotate_command: None }
    }

    /// Starts a [`PluginKek::Program`] plugin: its own directory (the slot's state file path,
    /// 0700) and processes.
    pub async fn start_program(
        &mut self,
        program: &dyn PluginProgram,
        launcher: &Launcher,
        log_dir: &Path,
        mock_kms: Option<&MockKmsCluster>,
    ) -> Result<(), StackError> {
        crate::fsutil::private_dir(&self.state_file).map_err(StackError::io(format!("create {}", self.state_file.display())))?;
        let context =
            ProgramContext { name: &self.spec.name, launcher, socket: &self.socket, work_dir: &self.state_file, log_dir, mock_kms };
        let processes = program.start(context).await?;
        self.process = Some(processes.main);
        self.extras = processes.extras;
        self.rotate_command = processes.rotate;
        Ok(())
    }

    /// Stops the plugin's process, then its extra processes (`kill`: SIGKILL at once).
    pub async fn end(&mut self, kill: bool, grace: Duration) {
        self.rotate_command = None;
        let processes = self.process.take().into_iter().chain(self.extras.drain(..));
        for process in processes.collect::<Vec<_>>() {
            if kill {
                process.kill().await;
            } else {
                process.stop(grace).await;
            }
        }
    }

    /// Starts kms-plugin and waits until it answers a v2 Status call on its socket;
    /// `mock_kms_config` is the config of the stack's mock KMS, for [`PluginKek::MockKms`].
    pub async fn start(
        &mut self,
        launcher: &Launcher,
        binary: &Path,
        log: &Path,
        mock_kms_config: Option<serde_json::Value>,
    ) -> Result<(), StackError> {
        let mut args = vec!["--socket".to_owned(), self.socket.display().to_string()];
        let remote = match &self.spec.kek {
            PluginKek::Local => None,
            PluginKek::Program(_) => {
                return Err(StackError::MockKms(format!(
                    "plugin `{}` is a program of its own: start it with start_program",
                    self.spec.name
                )));
            }
            PluginKek::Remote(config) => Some(config.clone()),
            PluginKek::MockKms => {
                let missing = || StackError::MockKms(format!("plugin `{}` uses the mock KMS, but the stack runs none", self.spec.name));
                Some(mock_kms_config.ok_or_else(missing)?)
            }
        };
        match remote {
            None => args.extend(["--kms".to_owned(), "local".to_owned(), "--kek-file".to_owned(), self.state_file.display().to_string()]),
            Some(config) => {
                let text = serde_json::to_string_pretty(&config)
                    .map_err(|e| StackError::io(format!("write {}", self.state_file.display()))(std::io::Error::other(e)))?;
                // It holds the KMS secret key: readable by this user only.
                crate::fsutil::write_private(&self.state_file, text.as_bytes())
                    .map_err(StackError::io(format!("write {}", self.state_file.display())))?;
                args.extend(["-f".to_owned(), self.state_file.display().to_string()]);
            }
        }
        args.extend(self.spec.extra_args.iter().cloned());
        for defect in &self.spec.defects {
            args.extend(["--defect".to_owned(), defect.clone()]);
        }
        let mut process = launcher.spawn(&self.spec.name, binary, &args, log, &[]).await?;
        let endpoint = format!("unix://{}", self.socket.display());
        process
            .wait_ready(&format!("a gRPC answer on {endpoint}"), READY_DEADLINE, || {
                let endpoint = endpoint.clone();
                async move { PluginClient::answers_at(&endpoint, Duration::from_secs(2)).await }
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
