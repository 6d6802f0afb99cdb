//! A single-member etcd on loopback with a temporary data dir, on plain HTTP or, as real
//! clusters run it, with mutual TLS (clients must present a certificate the stack's CA signed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StackError;
use crate::etcd_client::{EtcdClient, EtcdTls};
use crate::process::Supervised;
use crate::runtime::Launcher;
use crate::{http, ports};

/// The files of an etcd that requires mutual TLS.
#[derive(Debug, Clone)]
pub struct EtcdTlsFiles {
    /// The CA certificate both sides trust.
    pub ca_cert: PathBuf,
    /// etcd's serving certificate.
    pub server_cert: PathBuf,
    /// etcd's serving key.
    pub server_key: PathBuf,
    /// The client certificate (the apiservers' `--etcd-certfile`).
    pub client_cert: PathBuf,
    /// Its key (`--etcd-keyfile`).
    pub client_key: PathBuf,
}

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
    /// Plain-HTTP port of `/health` and `/metrics` (the client port may require TLS).
    metrics_port: u16,
    tls: Option<EtcdTlsFiles>,
    binary: PathBuf,
    launcher: Launcher,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Etcd {
    /// The client URL, e.g. `http://127.0.0.1:2379` (`https://` with mutual TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The mutual-TLS files, if etcd requires client certificates.
    pub fn tls(&self) -> Option<&EtcdTlsFiles> {
        self.tls.as_ref()
    }

    /// A read-only client with the stack's client certificate when etcd requires one.
    pub fn client(&self) -> Result<EtcdClient, StackError> {
        let tls = self.tls.as_ref().map(|t| EtcdTls::from_files(&t.ca_cert, &t.client_cert, &t.client_key)).transpose()?;
        EtcdClient::new(&[self.url()], tls.as_ref())
    }

    /// Starts etcd from `binary`, keeping its data in `data_dir` (with mutual TLS when `tls` is
    /// given), and waits until `/health` says true.
    pub async fn start(
        launcher: &Launcher,
        binary: &Path,
        data_dir: &Path,
        log: &Path,
        tls: Option<EtcdTlsFiles>,
    ) -> Result<Self, StackError> {
        let mut etcd = Self {
            process: None,
            client_port: ports::free_port()?,
            peer_port: ports::free_port()?,
            metrics_port: ports::free_port()?,
            tls,
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
        let metrics_port = self.metrics_port;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.url();
        let mut args = vec![
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
            // Health on plain HTTP whatever the client port requires.
            format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"),
        ];
        if let Some(tls) = &self.tls {
            args.extend([
                format!("--cert-file={}", tls.server_cert.display()),
                format!("--key-file={}", tls.server_key.display()),
                format!("--trusted-ca-file={}", tls.ca_cert.display()),
                "--client-cert-auth=true".to_owned(),
            ]);
        }
        let mut process = self.launcher.spawn("etcd", &self.binary, &args, &self.log, &[]).await?;
        process
            .wait_ready(&format!("GET http://127.0.0.1:{metrics_port}/health to report health true"), READY_DEADLINE, || async move {
                matches!(http::get(metrics_port, "/health", Duration::from_secs(1)).await, Some((200, body)) if body.contains("\"health\":\"true\""))
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }
}
