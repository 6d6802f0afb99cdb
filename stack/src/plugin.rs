//! kms-plugin processes in the stack: each has a name, a socket and a persistent KEK file, so
//! it can be killed and restarted without losing keys.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_wire::PluginClient;
use kms_wire::proto::v2;

use crate::error::StackError;
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
}

impl PluginSlot {
    /// A slot whose files live in `work_dir`.
    pub fn new(spec: PluginSpec, work_dir: &Path) -> Self {
        let socket = work_dir.join(format!("{}.sock", spec.name));
        let state_file = work_dir.join(match spec.kek {
            PluginKek::Local => format!("{}.kek", spec.name),
            PluginKek::Remote(_) | PluginKek::MockKms => format!("{}.json", spec.name),
        });
        Self { spec, socket, state_file, process: None }
    }

    /// Starts the plugin and waits until it answers a v2 Status call on its socket;
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
            .wait_ready(&format!("a v2 Status answer on {endpoint}"), READY_DEADLINE, || {
                let endpoint = endpoint.clone();
                async move {
                    match PluginClient::connect(&endpoint, Duration::from_secs(2)).await {
                        // A v1beta1-only plugin answers Unimplemented: it is listening all the same.
                        Ok(client) => match client.v2().status(v2::StatusRequest {}).await {
                            Ok(_) => true,
                            Err(status) => status.code() == tonic::Code::Unimplemented,
                        },
                        Err(_) => false,
                    }
                }
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
