//! kube-apiserver on loopback: flags for a single control-plane node without kubelets, an
//! admin token, and a kubeconfig.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::StackError;
use crate::ports;
use crate::process::Supervised;
use crate::runtime::Launcher;

/// How long the apiserver may take to become ready (or live).
pub const READY_DEADLINE: Duration = Duration::from_secs(90);

/// What "started" means for an apiserver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `/readyz` answers 200: everything, KMS providers included, is healthy.
    Ready,
    /// `/livez` answers 200: serving, though a KMS provider may be failing (startup-ordering tests).
    Live,
    /// `/livez/ping` answers 200: the server answers requests, whatever its other checks say
    /// (e.g. an apiserver that cannot decrypt stored Secrets, whose post-start hooks wait).
    Serving,
}

impl Readiness {
    /// The endpoint checked.
    pub fn path(self) -> &'static str {
        match self {
            Self::Ready => "/readyz",
            Self::Live => "/livez",
            Self::Serving => "/livez/ping",
        }
    }
}

/// Files the apiservers of one stack share.
#[derive(Debug, Clone)]
pub struct SharedFiles {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The serving certificate (PEM).
    pub serving_cert: PathBuf,
    /// The serving key (PEM).
    pub serving_key: PathBuf,
    /// The service-account signing key (PEM).
    pub service_account_key: PathBuf,
    /// The service-account public key (PEM).
    pub service_account_public: PathBuf,
    /// The static token file (`token,user,uid,groups`).
    pub token_file: PathBuf,
    /// The admin bearer token.
    pub admin_token: String,
}

/// How to start one apiserver.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Its name in the stack (`apiserver-0`, …).
    pub name: String,
    /// The etcd client URL.
    pub etcd_url: String,
    /// The client certificate for an etcd that requires mutual TLS.
    pub etcd_tls: Option<crate::etcd::EtcdTlsFiles>,
    /// The EncryptionConfiguration file.
    pub encryption_config: PathBuf,
    /// Whether to pass `--feature-gates=KMSv1=true`.
    pub kms_v1_gate: bool,
    /// Extra flags, appended last.
    pub extra_args: Vec<String>,
}

/// A running kube-apiserver.
pub struct ApiServer {
    /// The process (`None` while it restarts).
    pub process: Option<Supervised>,
    /// Its HTTPS port on 127.0.0.1.
    pub port: u16,
    /// How it was started (to restart it the same way).
    pub options: ApiServerOptions,
    /// An admin client for it.
    pub client: kube::Client,
}

fn args(options: &ApiServerOptions, files: &SharedFiles, port: u16, cert_dir: &Path) -> Vec<String> {
    let mut args = vec![
        format!("--etcd-servers={}", options.etcd_url),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--tls-cert-file={}", files.serving_cert.display()),
        format!("--tls-private-key-file={}", files.serving_key.display()),
        format!("--client-ca-file={}", files.ca_cert.display()),
        format!("--token-auth-file={}", files.token_file.display()),
        "--authorization-mode=RBAC".to_owned(),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
        format!("--service-account-key-file={}", files.service_account_public.display()),
        format!("--service-account-signing-key-file={}", files.service_account_key.display()),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        // Several apiservers on 127.0.0.1 share one etcd; none reconciles the kubernetes Service endpoints.
        "--endpoint-reconciler-type=none".to_owned(),
        format!("--encryption-provider-config={}", options.encryption_config.display()),
        "--encryption-provider-config-automatic-reload=true".to_owned(),
    ];
    if let Some(tls) = &options.etcd_tls {
        args.extend([
            format!("--etcd-cafile={}", tls.ca_cert.display()),
            format!("--etcd-certfile={}", tls.client_cert.display()),
            format!("--etcd-keyfile={}", tls.client_key.display()),
        ]);
    }
    if options.kms_v1_gate {
        args.push("--feature-gates=KMSv1=true".to_owned());
    }
    args.extend(options.extra_args.iter().cloned());
    args
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("process", &self.process)
            .field("port", &self.port)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// Starts an apiserver from `binary` and waits until `GET <readiness path>` answers 200
    /// (`None`: only until the process is spawned).
    /// The admin client it waits with (trusting `ca_pem`) is kept for every later call.
    #[allow(clippy::too_many_arguments, reason = "one argument per thing the stack shares with its apiservers")]
    pub async fn start(
        launcher: &Launcher,
        binary: &Path,
        options: ApiServerOptions,
        files: &SharedFiles,
        ca_pem: &str,
        work_dir: &Path,
        log: &Path,
        readiness: Option<Readiness>,
    ) -> Result<Self, StackError> {
        let port = ports::free_port()?;
        let client = client_for(&format!("https://127.0.0.1:{port}"), ca_pem, &files.admin_token).await?;
        let cert_dir = work_dir.join(format!("{}-certs", options.name));
        crate::fsutil::private_dir(&cert_dir).map_err(StackError::io(format!("create {}", cert_dir.display())))?;
        let mut process = launcher.spawn(&options.name, binary, &args(&options, files, port, &cert_dir), log, &[]).await?;
        // `None`: started, nothing awaited (the caller observes it with its own bounded waits).
        let Some(readiness) = readiness else {
            return Ok(Self { process: Some(process), port, options, client });
        };
        process
            .wait_ready(&format!("GET https://127.0.0.1:{port}{} to answer 200", readiness.path()), READY_DEADLINE, || async {
                matches!(raw_get(&client, readiness.path()).await, Ok((200, _)))
            })
            .await?;
        Ok(Self { process: Some(process), port, options, client })
    }

    /// The server URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

/// A kubeconfig for the admin token against `server`.
pub fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kms-lab\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: kms-lab\n  context:\n    cluster: kms-lab\n    user: admin\ncurrent-context: kms-lab\n"
    )
}

/// A Kubernetes client for `server`, trusting `ca_pem`, authenticating with `token`.
pub async fn client_for(server: &str, ca_pem: &str, token: &str) -> Result<kube::Client, StackError> {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&kubeconfig_yaml(server, ca_pem, token)).map_err(|e| StackError::Kubeconfig(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await.map_err(|e| StackError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(config)?)
}

/// `GET path` with `client`: status code and body, whatever the status.
pub async fn raw_get(client: &kube::Client, path: &str) -> Result<(u16, String), StackError> {
    let request = http::Request::get(path).body(kube::client::Body::empty()).map_err(|e| StackError::Kubeconfig(e.to_string()))?;
    let response = client.send(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect_bytes().await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
