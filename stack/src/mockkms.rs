//! The mock remote KMS as a process of the stack: started with a key and a credential, and
//! driven through its admin API (rotate, faults, audit log).

use std::path::Path;
use std::time::Duration;

use crate::error::StackError;
use crate::process::Supervised;
use crate::{http, ports};

/// How long the mock KMS may take to answer its health endpoint.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Deadline of one admin call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How to run the mock KMS.
#[derive(Debug, Clone)]
pub struct MockKmsOptions {
    /// The key the plugins use (created if missing).
    pub key_id: String,
    /// The credential's access key.
    pub access_key: String,
    /// The credential's secret key.
    pub secret_key: String,
    /// Extra `mock-kms` flags (e.g. `--seed 7`, `--sealed`).
    pub extra_args: Vec<String>,
}

impl Default for MockKmsOptions {
    fn default() -> Self {
        use rand::RngCore;
        let mut secret = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        Self {
            key_id: "lab-key".to_owned(),
            access_key: "lab-access-key".to_owned(),
            secret_key: secret.iter().map(|b| format!("{b:02x}")).collect(),
            extra_args: Vec::new(),
        }
    }
}

/// A running mock KMS.
#[derive(Debug)]
pub struct MockKms {
    /// The process (`None` while stopped).
    pub process: Option<Supervised>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// How it was started.
    pub options: MockKmsOptions,
}

impl MockKms {
    /// Starts `mock-kms` with its state in `data_dir` and waits until `/admin/health` answers.
    pub async fn start(binary: &Path, data_dir: &Path, log: &Path, options: MockKmsOptions) -> Result<Self, StackError> {
        let port = ports::free_port()?;
        let mut kms = Self { process: None, port, options };
        kms.restart(binary, data_dir, log).await?;
        Ok(kms)
    }

    /// (Re)starts the process on the same port and data dir.
    pub async fn restart(&mut self, binary: &Path, data_dir: &Path, log: &Path) -> Result<(), StackError> {
        std::fs::create_dir_all(data_dir).map_err(StackError::io(format!("create {}", data_dir.display())))?;
        let mut args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{}", self.port),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--key-id".to_owned(),
            self.options.key_id.clone(),
            "--access-key".to_owned(),
            self.options.access_key.clone(),
        ];
        args.extend(self.options.extra_args.iter().cloned());
        // The secret goes through the environment, not argv, so `ps` does not show it.
        let env = [("MOCK_KMS_SECRET_KEY".to_owned(), self.options.secret_key.clone())];
        let mut process = Supervised::spawn("mock-kms", binary, &args, log, &env)?;
        let port = self.port;
        process
            .wait_ready(&format!("GET http://127.0.0.1:{port}/admin/health to answer"), READY_DEADLINE, || async move {
                http::get(port, "/admin/health", Duration::from_secs(1)).await.is_some()
            })
            .await?;
        self.process = Some(process);
        Ok(())
    }

    /// The seed-format plugin config (`-f config.json`) for this KMS.
    pub fn plugin_config(&self) -> serde_json::Value {
        serde_json::json!({
            "AccessKey": self.options.access_key,
            "SecretKey": self.options.secret_key,
            "KmsEndpoint": format!("127.0.0.1:{}", self.port),
            "KmsKeyId": self.options.key_id,
            "KmsSchema": "http",
        })
    }

    async fn admin(&self, method_post: bool, path: &str, body: &str) -> Result<String, StackError> {
        let answer = if method_post {
            http::post_json(self.port, path, body, ADMIN_TIMEOUT).await
        } else {
            http::get(self.port, path, ADMIN_TIMEOUT).await
        };
        match answer {
            Some((status, body)) if (200..300).contains(&status) => Ok(body),
            Some((status, body)) => Err(StackError::MockKms(format!("{path} answered {status}: {}", body.trim()))),
            None => Err(StackError::MockKms(format!("{path}: no answer from mock-kms on 127.0.0.1:{}", self.port))),
        }
    }

    /// Adds a key version and makes it current (`POST /admin/keys/<id>/rotate`).
    pub async fn rotate_key(&self) -> Result<String, StackError> {
        self.admin(true, &format!("/admin/keys/{}/rotate", self.options.key_id), "").await
    }

    /// Audit records with a sequence number above `since_seq` (`GET /admin/audit`), as JSON values.
    pub async fn audit(&self, since_seq: u64) -> Result<Vec<serde_json::Value>, StackError> {
        let body = self.admin(false, &format!("/admin/audit?since_seq={since_seq}"), "").await?;
        Ok(body.lines().filter_map(|line| serde_json::from_str(line).ok()).collect())
    }
}
