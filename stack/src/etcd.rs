//! A single-member etcd on loopback with a temporary data dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StackError;
use crate::process::Supervised;
use crate::runtime::Launcher;
use crate::{http, ports};

/// How long etcd may take to report healthy.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    /// The process (`None` while stopped).
    pub process: Option<Supervised>,
    /// The client port on 127.0.0.1 (kept across restarts, so apiservers find it again).
    pub client_port: u16,
    peer_port: u16,
    binary: PathBuf,
    launcher: Launcher,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Etcd {
    /// The client URL, e.g. `http://127.0.0.1:2379`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd from `binary`, keeping its data in `data_dir`, and waits until `/health` says true.
    pub async fn start(launcher: &Launcher, binary: &Path, data_dir: &Path, log: &Path) -> Result<Self, StackError> {
        let mut etcd = Self {
            process: None,
            client_port: ports::free_port()?,
            peer_port: ports::free_port()?,
            binary: binary.to_owned(),
            launcher: launcher.clone(),
            data_dir: data_dir.to_owned(),
            log: log.to_owned(),
        };
        etcd.restart().await?;
        Ok(etcd)
    }

    /// Starts the stopped process again on the same ports and data dir.
    pub async fn restart(&mut self) -> Result<(), StackError> {
        if self.process.is_some() {
            return Ok(());
        }
        let client_port = self.client_port;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = format!("http://127.0.0.1:{client_port}");
        let args = [
            "--name=lab".to_owned(),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=lab={peer}"),
            "--log-level=warn".to_owned(),
            // A lab etcd favours speed; its data dies with the run.
            "--unsafe-no-fsync".to_owned(),
        ];
        let mut process = self.launcher.spawn("etcd", &self.binary, &args, &self.log, &[]).await?;
        process
            .wait_ready(&format!("GET {client}/health to report health true"), READY_DEADLINE, || async move {
                matches!(http::get(client_port, "/health", Duration::from_secs(1)).await, Some((200, body)) if body.contains("\"health\":\"true\""))
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
