//! Starting a plugin from its manifest in the stack: [`ManifestPlugin`] is a
//! [`PluginProgram`], so the stack starts (and stops, kills, restarts) it like its own plugins,
//! through its one launcher. The templates are rendered from the stack's mock KMS (the endpoint of
//! the plugin's dialect, key and credentials) and the plugin's socket and work dir; extra processes
//! start first, each waited for on its socket; then the plugin, waited for until its socket answers
//! (and a Status call says `ok`), raced against its exit, bounded, with its last log lines in the error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use kms_lab_stack::mockkms::{DialectCredentials, MockKmsCluster, MockKmsOptions};
use kms_lab_stack::process::Supervised;
use kms_lab_stack::{PluginKek, PluginProgram, PluginSpec, ProgramContext, ProgramProcesses, StackError};
use kms_wire::PluginClient;
use mock_kms::dialects::Dialect;

use crate::build::{self, Located};
use crate::error::PluginError;
use crate::manifest::{Manifest, Rotation};
use crate::template::{Placeholder, Template, Values};

/// The region every AWS-speaking plugin names (the mock KMS takes any).
pub const REGION: &str = "us-east-1";

/// A plugin from a manifest with its binaries located: ready to hand to the stack.
#[derive(Debug, Clone)]
pub struct ManifestPlugin {
    manifest: Manifest,
    binary: PathBuf,
    extras: Vec<PathBuf>,
}

impl ManifestPlugin {
    /// Locates every binary `manifest` needs; with `allow_build`, builds what is missing (blocking:
    /// minutes for a first Go build), else a missing one is an error naming `kms-lab plugins build`.
    pub fn prepare(manifest: Manifest, allow_build: bool) -> Result<Self, PluginError> {
        let mut paths = Vec::new();
        for needed in build::needed(&manifest) {
            let path = if allow_build {
                build::build(&manifest, &needed.label, needed.build, true)?
            } else {
                match build::locate_as(&manifest, &needed.label, needed.build)? {
                    Located::Built(path) => path,
                    Located::Missing(where_) => return Err(PluginError::NotBuilt { plugin: needed.label, where_ }),
                }
            };
            paths.push(path);
        }
        let binary = paths.pop().unwrap_or_default();
        Ok(Self { manifest, binary, extras: paths })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The plugin's binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// A stack plugin named `name` that runs this.
    pub fn spec(&self, name: &str) -> PluginSpec {
        PluginSpec { kek: PluginKek::Program(std::sync::Arc::new(self.clone())), ..PluginSpec::local(name) }
    }

    /// Mock KMS options that serve this plugin's dialect (besides the native API).
    pub fn mock_kms_options(&self) -> MockKmsOptions {
        let mut options = MockKmsOptions::default();
        self.serve_dialect_on(&mut options);
        options
    }

    /// Makes `options` (a scenario's own mock KMS) serve this plugin's dialect too.
    pub fn serve_dialect_on(&self, options: &mut MockKmsOptions) {
        if let Some(dialect) = self.manifest.dialect {
            options.serve_dialect(dialect);
        }
    }

    async fn start_processes(&self, context: ProgramContext<'_>) -> Result<ProgramProcesses, StackError> {
        let manifest = &self.manifest;
        let failed = |message: String| StackError::MockKms(format!("plugin `{}` ({}): {message}", context.name, manifest.path.display()));
        let mut values = values(manifest.dialect, context.mock_kms).map_err(failed)?;
        values
            .set(Placeholder::Socket, context.socket.display().to_string())
            .set(Placeholder::WorkDir, context.work_dir.display().to_string())
            .set(Placeholder::HealthPort, kms_lab_stack::ports::free_port()?.to_string())
            .set(Placeholder::MetricsPort, kms_lab_stack::ports::free_port()?.to_string())
            .unavailable(Placeholder::Pid, "the plugin is not running yet: `{pid}` is for `rotation: {command}` only");
        for (name, content) in &manifest.files {
            let path = context.work_dir.join(name);
            let text = content.render(&values).map_err(failed)?;
            if let Some(parent) = path.parent() {
                kms_lab_stack::fsutil::private_dir(parent).map_err(StackError::io(format!("create {}", parent.display())))?;
            }
            kms_lab_stack::fsutil::write_private(&path, text.as_bytes()).map_err(StackError::io(format!("write {}", path.display())))?;
        }
        let render_all =
            |templates: &[Template], values: &Values| templates.iter().map(|t| t.render(values)).collect::<Result<Vec<_>, _>>();
        let render_env = |env: &std::collections::BTreeMap<String, Template>, values: &Values| {
            env.iter().map(|(k, v)| v.render(values).map(|v| (k.clone(), v))).collect::<Result<Vec<_>, _>>()
        };

        let mut extras: Vec<Supervised> = Vec::new();
        for (extra, binary) in manifest.extra_processes.iter().zip(&self.extras) {
            let socket = PathBuf::from(extra.socket.render(&values).map_err(failed)?);
            if let Some(parent) = socket.parent() {
                kms_lab_stack::fsutil::private_dir(parent).map_err(StackError::io(format!("create {}", parent.display())))?;
            }
            let mut own = values.clone();
            own.set(Placeholder::Socket, socket.display().to_string());
            let args = render_all(&extra.command, &own).map_err(failed)?;
            let env = render_env(&extra.env, &own).map_err(failed)?;
            let name = format!("{}-{}", context.name, extra.name);
            let log = context.log_dir.join(format!("{name}.log"));
            let mut process = context.launcher.spawn(&name, binary, &args, &log, &env).await?;
            let ready = process
                .wait_ready(&format!("its socket {} to accept connections", socket.display()), extra.within, || {
                    let socket = socket.clone();
                    async move { tokio::net::UnixStream::connect(socket).await.is_ok() }
                })
                .await;
            extras.push(process);
            if let Err(error) = ready {
                stop_all(extras).await;
                return Err(error);
            }
        }

        let args = render_all(&manifest.command, &values).map_err(failed)?;
        let env = render_env(&manifest.env, &values).map_err(failed)?;
        let log = context.log_dir.join(format!("{}.log", context.name));
        let spawned = match (manifest.image_ref(), context.launcher.runtime()) {
            (Some(image), kms_lab_stack::Runtime::Container) => context.launcher.spawn_image(context.name, &image, &args, &log, &env).await,
            _ => context.launcher.spawn(context.name, &self.binary, &args, &log, &env).await,
        };
        let mut main = match spawned {
            Ok(process) => process,
            Err(error) => {
                stop_all(extras).await;
                return Err(error);
            }
        };
        let endpoint = format!("unix://{}", context.socket.display());
        let status = manifest.readiness.status;
        let awaited = if status {
            format!("a gRPC answer (healthy or not) on {endpoint}")
        } else {
            format!("{} to accept connections", context.socket.display())
        };
        let ready = main
            .wait_ready(&awaited, manifest.readiness.within, || {
                let endpoint = endpoint.clone();
                let socket = context.socket.to_owned();
                async move {
                    if status {
                        PluginClient::answers_at(&endpoint, Duration::from_secs(2)).await
                    } else {
                        tokio::net::UnixStream::connect(socket).await.is_ok()
                    }
                }
            })
            .await;
        if let Err(error) = ready {
            main.kill().await;
            stop_all(extras).await;
            return Err(error);
        }
        let rotate = match (&manifest.rotation, main.pid()) {
            (Rotation::Command(argv), Some(pid)) => {
                values.set(Placeholder::Pid, pid.to_string());
                match render_all(argv, &values) {
                    Ok(argv) => Some(argv),
                    Err(message) => {
                        main.kill().await;
                        stop_all(extras).await;
                        return Err(failed(format!("rotation: {message}")));
                    }
                }
            }
            _ => None,
        };
        Ok(ProgramProcesses { main, extras, rotate })
    }
}

async fn stop_all(processes: Vec<Supervised>) {
    for process in processes.into_iter().rev() {
        process.kill().await;
    }
}

impl PluginProgram for ManifestPlugin {
    fn start<'a>(&'a self, context: ProgramContext<'a>) -> Pin<Box<dyn Future<Output = Result<ProgramProcesses, StackError>> + Send + 'a>> {
        Box::pin(self.start_processes(context))
    }
}

/// The placeholder values the stack's mock KMS gives a plugin of `dialect`.
fn values(dialect: Option<Dialect>, kms: Option<&MockKmsCluster>) -> Result<Values, String> {
    let mut values = Values::default();
    values.set(Placeholder::Region, REGION);
    let kms_placeholders = [
        Placeholder::KmsEndpoint,
        Placeholder::KmsEndpoints,
        Placeholder::KmsPort,
        Placeholder::KmsCaFile,
        Placeholder::KeyId,
        Placeholder::AccessKey,
        Placeholder::SecretKey,
        Placeholder::VaultToken,
        Placeholder::VaultRoleId,
        Placeholder::VaultSecretId,
    ];
    let (Some(kms), Some(dialect)) = (kms, dialect) else {
        let why = if dialect.is_none() { "the manifest names no `dialect:`" } else { "the stack runs no mock KMS: start it with one" };
        for placeholder in kms_placeholders {
            values.unavailable(placeholder, why);
        }
        return Ok(values);
    };
    let endpoint = kms.dialect_endpoint(dialect).map_err(|e| format!("{e} (start it with `ManifestPlugin::mock_kms_options`)"))?;
    let ports: Vec<&str> = endpoint.urls.iter().map(|u| u.rsplit(':').next().unwrap_or_default()).collect();
    values
        .set(Placeholder::KmsEndpoint, endpoint.url().to_owned())
        .set(Placeholder::KmsEndpoints, endpoint.urls.join(","))
        .set(Placeholder::KmsPort, ports[0].to_owned())
        .set(Placeholder::KeyId, kms.options.key_id.clone());
    match &endpoint.ca_file {
        Some(ca_file) => values.set(Placeholder::KmsCaFile, ca_file.display().to_string()),
        None => values.unavailable(Placeholder::KmsCaFile, format!("the mock KMS serves the `{dialect}` dialect over plain HTTP")),
    };
    let not_vault = format!("the plugin's dialect is `{dialect}`, not `vault`");
    let vault_only = [Placeholder::VaultToken, Placeholder::VaultRoleId, Placeholder::VaultSecretId];
    match endpoint.credentials {
        DialectCredentials::AccessKey(credential) => {
            values.set(Placeholder::AccessKey, credential.access_key).set(Placeholder::SecretKey, credential.secret_key.as_str());
            for placeholder in vault_only {
                values.unavailable(placeholder, not_vault.clone());
            }
        }
        DialectCredentials::VaultToken(token) => {
            for placeholder in [Placeholder::AccessKey, Placeholder::SecretKey] {
                values.unavailable(placeholder, "the `vault` dialect takes a token, not an access key");
            }
            values
                .set(Placeholder::VaultToken, token)
                .set(Placeholder::VaultRoleId, kms.options.vault_approle_role_id.clone())
                .set(Placeholder::VaultSecretId, kms.options.vault_approle_secret_id.clone());
        }
        DialectCredentials::None => {
            for placeholder in [Placeholder::AccessKey, Placeholder::SecretKey] {
                values.unavailable(placeholder, format!("the `{dialect}` dialect takes no access key"));
            }
            for placeholder in vault_only {
                values.unavailable(placeholder, not_vault.clone());
            }
        }
    }
    Ok(values)
}
