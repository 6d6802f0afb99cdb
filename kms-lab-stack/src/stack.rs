//! The stack: etcd, kube-apiserver(s), kms-plugin(s) (and, when asked, kube-controller-manager
//! for StorageVersionMigration), started in order with bounded readiness waits, driven by
//! scenarios and tests, and torn down completely.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::apiserver::{self, ApiServer, ApiServerOptions, Readiness, SharedFiles};
use crate::certs::Pki;
use crate::component::{Component, WaitFor};
use crate::controller_manager::ControllerManager;
use crate::encryption::{EncryptionConfiguration, KmsProvider, Provider};
use crate::error::StackError;
use crate::etcd::{Etcd, EtcdTlsFiles};
use crate::etcd_client::EtcdClient;
use crate::mockkms::{MockKmsCluster, MockKmsOptions};
use crate::own::OwnBinary;
use crate::plugin::{PluginKek, PluginSlot, PluginSpec};
use crate::runtime::{Launcher, Runtime};
use kms_lab_provision::Binaries;

/// The grace period between SIGTERM and SIGKILL when stopping a component.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// The KMS v2 provider name the default configuration uses.
pub const DEFAULT_PROVIDER: &str = "lab-kms";

/// How to build a stack. Defaults: one local-KEK plugin `plugin-0`, Secrets encrypted by a KMS
/// v2 provider `lab-kms` on it (then identity), plugins started before the apiserver.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The run's name (used in the run directory's name).
    pub name: String,
    /// The provisioned upstream binaries.
    pub binaries: Binaries,
    /// Where run directories with every component's log are created.
    pub run_root: PathBuf,
    /// The plugins.
    pub plugins: Vec<PluginSpec>,
    /// The EncryptionConfiguration of apiserver-0 (None: the default above).
    pub encryption: Option<EncryptionConfiguration>,
    /// Builds apiserver-0's EncryptionConfiguration from the plugins' sockets (which exist only
    /// once the stack has its work directory); used when `encryption` is None.
    pub encryption_builder: Option<EncryptionBuilder>,
    /// Start the plugins before the apiserver (false: the apiserver starts first).
    pub start_plugins_first: bool,
    /// Start the plugins at all (false: they start only when asked, e.g. by a scenario step).
    pub start_plugins: bool,
    /// What "apiserver started" means.
    pub readiness: Readiness,
    /// Pass `--feature-gates=KMSv1=true`.
    pub kms_v1_gate: bool,
    /// Extra kube-apiserver flags for apiserver-0 (e.g. `--watch-cache=false`), appended last.
    pub apiserver_args: Vec<String>,
    /// Run the mock KMS (started after etcd, before the plugins).
    pub mock_kms: Option<MockKmsOptions>,
    /// Where the components run (default: `KMS_LAB_RUNTIME`, else processes).
    pub runtime: Runtime,
    /// Run etcd with mutual TLS, as real clusters do: the apiservers present a client
    /// certificate; [`Stack::etcd_client`] and [`Stack::etcd_tls`] give readers theirs.
    pub etcd_mtls: bool,
    /// Run kube-controller-manager (only the StorageVersionMigration controller and the garbage
    /// collector) beside apiserver-0, provisioned at launch (built on first use, ~2 minutes)
    /// and started after it; below v1.37 the apiserver gets StorageVersionMigration's feature
    /// gate and beta API ([`crate::controller_manager::apiserver_flags`]).
    pub controller_manager: bool,
}

impl StackOptions {
    /// The defaults, for `binaries`, with run directories under `run_root`.
    pub fn new(name: &str, binaries: Binaries, run_root: &Path) -> Self {
        Self {
            name: name.to_owned(),
            binaries,
            run_root: run_root.to_owned(),
            plugins: vec![PluginSpec::local("plugin-0")],
            encryption: None,
            encryption_builder: None,
            start_plugins_first: true,
            start_plugins: true,
            readiness: Readiness::Ready,
            kms_v1_gate: true,
            apiserver_args: Vec::new(),
            mock_kms: None,
            etcd_mtls: false,
            controller_manager: false,
            runtime: Runtime::configured().unwrap_or_else(|error| {
                eprintln!("kms-lab: {error}; using the process runtime");
                Runtime::Process
            }),
        }
    }

    /// The defaults, but the plugin's KEK is a key in the stack's mock KMS.
    pub fn with_mock_kms(mut self) -> Self {
        self.mock_kms = Some(MockKmsOptions::default());
        for plugin in &mut self.plugins {
            plugin.kek = crate::plugin::PluginKek::MockKms;
        }
        self
    }
}

/// Finds a plugin's socket path by the plugin's name.
pub type SocketLookup<'a> = &'a dyn Fn(&str) -> Option<PathBuf>;

/// Builds an EncryptionConfiguration given a lookup from plugin name to socket path.
#[derive(Clone)]
pub struct EncryptionBuilder(pub Arc<dyn Fn(SocketLookup<'_>) -> EncryptionConfiguration + Send + Sync>);

impl std::fmt::Debug for EncryptionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionBuilder(..)")
    }
}

/// A running stack. Made by [`Stack::launch`]; call [`Stack::shutdown`]; if it is dropped instead (a panic), every process
/// is killed and the run directory is kept for its logs.
#[derive(Debug)]
pub struct Stack {
    run_dir: PathBuf,
    work: tempfile::TempDir,
    launcher: Launcher,
    binaries: Binaries,
    etcd: Option<Etcd>,
    mock_kms: Option<MockKmsCluster>,
    apiservers: Vec<ApiServer>,
    plugins: BTreeMap<String, PluginSlot>,
    files: SharedFiles,
    /// etcd's certificates (used when etcd runs with mutual TLS).
    etcd_tls_files: EtcdTlsFiles,
    ca_pem: String,
    /// kube-controller-manager's binary, when the stack runs one ([`StackOptions::controller_manager`]).
    controller_manager_binary: Option<kms_lab_provision::Binary>,
    controller_manager: Option<ControllerManager>,
    shut_down: bool,
}

/// Every file the stack writes holds or sits beside credentials: mode 0600 (see [`crate::fsutil`]).
fn write(path: &Path, contents: &str) -> Result<(), StackError> {
    crate::fsutil::write_private(path, contents.as_bytes()).map_err(StackError::io(format!("write {}", path.display())))
}

/// Writes `contents` to `path` through a temporary file and a rename, so readers never see half a file.
fn write_atomically(path: &Path, contents: &str) -> Result<(), StackError> {
    let temp = path.with_extension("tmp");
    write(&temp, contents)?;
    std::fs::rename(&temp, path).map_err(StackError::io(format!("rename {} to {}", temp.display(), path.display())))
}

fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Stack {
    /// Launches a new stack: everything in order: etcd, the plugins (unless the apiserver goes
    /// first), the apiserver.
    pub async fn launch(options: StackOptions) -> Result<Self, StackError> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let run_dir = options.run_root.join(format!("{}-{stamp}-{}", options.name, std::process::id()));
        crate::fsutil::private_dir(&run_dir).map_err(StackError::io(format!("create run directory {}", run_dir.display())))?;
        // Sockets and data live in a short /tmp path: Unix socket paths are limited to 108 bytes.
        let work = tempfile::Builder::new().prefix("kms-lab-").tempdir().map_err(StackError::io("create a work directory in /tmp"))?;
        crate::fsutil::private_dir(work.path()).map_err(StackError::io("make the work directory 0700"))?;
        let pki = Pki::generate()?;
        let admin_token = random_token();
        let files = SharedFiles {
            ca_cert: work.path().join("ca.crt"),
            serving_cert: work.path().join("apiserver.crt"),
            serving_key: work.path().join("apiserver.key"),
            service_account_key: work.path().join("sa.key"),
            service_account_public: work.path().join("sa.pub"),
            token_file: work.path().join("tokens.csv"),
            admin_token: admin_token.clone(),
        };
        write(&files.ca_cert, &pki.ca_pem)?;
        write(&files.serving_cert, &pki.serving_cert_pem)?;
        write(&files.serving_key, &pki.serving_key_pem)?;
        write(&files.service_account_key, &pki.service_account_key_pem)?;
        write(&files.service_account_public, &pki.service_account_public_pem)?;
        write(&files.token_file, &format!("{admin_token},admin,admin-uid,system:masters\n"))?;
        let etcd_tls_files = EtcdTlsFiles {
            ca_cert: files.ca_cert.clone(),
            server_cert: work.path().join("etcd-server.crt"),
            server_key: work.path().join("etcd-server.key"),
            client_cert: work.path().join("etcd-client.crt"),
            client_key: work.path().join("etcd-client.key"),
        };
        write(&etcd_tls_files.server_cert, &pki.etcd_server_cert_pem)?;
        write(&etcd_tls_files.server_key, &pki.etcd_server_key_pem)?;
        write(&etcd_tls_files.client_cert, &pki.etcd_client_cert_pem)?;
        write(&etcd_tls_files.client_key, &pki.etcd_client_key_pem)?;

        let plugins = options.plugins.iter().map(|spec| (spec.name.clone(), PluginSlot::new(spec.clone(), work.path()))).collect();
        let mut stack = Self {
            run_dir,
            launcher: Launcher::for_stack(options.runtime, &options.name, work.path(), &options.binaries),
            work,
            binaries: options.binaries.clone(),
            etcd: None,
            mock_kms: None,
            apiservers: Vec::new(),
            plugins,
            files,
            etcd_tls_files,
            ca_pem: pki.ca_pem,
            controller_manager_binary: None,
            controller_manager: None,
            shut_down: false,
        };
        if let Err(error) = stack.bring_up(&options).await {
            // Stop what did start, keep the logs, and say where they are.
            let kept = stack.shutdown(true).await;
            tracing::error!(logs = %kept.map(|p| p.display().to_string()).unwrap_or_default(), "the stack did not come up");
            return Err(error);
        }
        Ok(stack)
    }

    /// Starts the components in order (see [`Stack::launch`]).
    async fn bring_up(&mut self, options: &StackOptions) -> Result<(), StackError> {
        let stack = self;
        let mut apiserver_args = options.apiserver_args.clone();
        if options.controller_manager {
            // Provisioned first: a missing binary (or a failed build) stops the launch early.
            let version = stack.binaries.kube_apiserver.version.clone();
            let wanted = kms_lab_provision::ProvisionOptions { kubernetes_version: version.clone(), ..Default::default() };
            let binary = tokio::task::spawn_blocking(move || {
                kms_lab_provision::find_or_build(kms_lab_provision::Upstream::KubeControllerManager, &wanted)
            })
            .await
            .map_err(|e| StackError::io("provision kube-controller-manager")(std::io::Error::other(e)))??;
            apiserver_args.splice(0..0, crate::controller_manager::apiserver_flags(&version));
            stack.controller_manager_binary = Some(binary);
        }
        let etcd_data = stack.work.path().join("etcd-data");
        let tls = options.etcd_mtls.then(|| stack.etcd_tls_files.clone());
        stack.etcd = Some(Etcd::start(&stack.launcher, &stack.binaries.etcd.path, &etcd_data, &stack.run_dir.join("etcd.log"), tls).await?);
        if let Some(kms_options) = options.mock_kms.clone() {
            let binary = OwnBinary::MockKms.locate()?;
            let data_dir = stack.work.path().join("mock-kms-data");
            stack.mock_kms = Some(MockKmsCluster::start(&stack.launcher, &binary, &data_dir, &stack.run_dir, kms_options).await?);
        }
        if options.start_plugins_first && options.start_plugins {
            for name in stack.plugin_names() {
                stack.start_plugin(&name).await?;
            }
        }
        let sockets = |name: &str| stack.plugin_socket(name).map(Path::to_owned);
        let encryption = match (&options.encryption, &options.encryption_builder) {
            (Some(encryption), _) => encryption.clone(),
            (None, Some(builder)) => (builder.0)(&sockets),
            (None, None) => stack.default_encryption(),
        };
        stack.add_apiserver(&encryption, options.kms_v1_gate, options.readiness, apiserver_args).await?;
        if !options.start_plugins_first && options.start_plugins {
            for name in stack.plugin_names() {
                stack.start_plugin(&name).await?;
            }
        }
        if options.controller_manager {
            stack.ensure_controller_manager().await?;
        }
        Ok(())
    }

    /// Secrets by KMS v2 provider `lab-kms` on the first plugin, then identity (reads old plaintext).
    pub fn default_encryption(&self) -> EncryptionConfiguration {
        let socket = self.plugins.values().next().map(|slot| slot.socket.clone()).unwrap_or_default();
        EncryptionConfiguration::new(
            &["secrets"],
            vec![Provider::Kms(KmsProvider::v2(DEFAULT_PROVIDER, &socket, Duration::from_secs(3))), Provider::Identity(Default::default())],
        )
    }

    /// Makes sure kube-controller-manager runs against apiserver-0 as it is now: started if it
    /// is not running, restarted if apiserver-0 was restarted on another port since (its
    /// kubeconfig is read once), then waited for until its garbage collector synced. Refused when
    /// the stack was launched without [`StackOptions::controller_manager`]. Returns whether it
    /// (re)started it.
    pub async fn ensure_controller_manager(&mut self) -> Result<bool, StackError> {
        let Some(binary) = self.controller_manager_binary.clone() else {
            return Err(StackError::ComponentState {
                verb: "use",
                component: "kube-controller-manager".into(),
                reason: "the stack runs none: launch it with `controller_manager` (a scenario: `stack: {controller_manager: true}`)".into(),
            });
        };
        let port = self.apiserver_slot(0)?.port;
        if let Some(running) = &mut self.controller_manager
            && running.apiserver_port == port
            && running.process.exited().await.is_none()
        {
            return Ok(false);
        }
        if let Some(old) = self.controller_manager.take() {
            old.process.stop(STOP_GRACE).await;
        }
        let log = self.run_dir.join("kube-controller-manager.log");
        let started = ControllerManager::start(&binary.path, &binary.version, &self.kubeconfig_path(0), port, &log).await?;
        self.controller_manager = Some(started);
        Ok(true)
    }

    /// The directory with every component's log.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The provisioned upstream binaries.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The etcd client URL.
    pub fn etcd_url(&self) -> String {
        self.etcd.as_ref().map(Etcd::url).unwrap_or_default()
    }

    /// Starts scanning every value written to etcd under `prefix` from revision 1 on for `needle`
    /// (see [`crate::etcd_watch`]): a plaintext written and later overwritten is still caught.
    pub async fn record_etcd_history(&self, prefix: &str, needle: &[u8]) -> Result<crate::etcd_watch::Recorder, StackError> {
        let port = self.etcd.as_ref().map(|e| e.client_port).unwrap_or_default();
        crate::etcd_watch::Recorder::start(port, prefix, needle, 1).await
    }

    /// The stack's mock KMS, if it runs one.
    pub fn mock_kms(&self) -> Option<&MockKmsCluster> {
        self.mock_kms.as_ref()
    }

    /// The stack's mock KMS, or an error saying the stack runs none.
    fn mock_kms_or_error(&mut self) -> Result<&mut MockKmsCluster, StackError> {
        self.mock_kms.as_mut().ok_or_else(|| StackError::NoSuchComponent {
            kind: "mock KMS",
            name: "mock-kms".into(),
            known: "none".into(),
        })
    }

    fn etcd_or_error(&mut self) -> Result<&mut Etcd, StackError> {
        self.etcd.as_mut().ok_or_else(|| StackError::NoSuchComponent { kind: "etcd", name: "etcd".into(), known: "none".into() })
    }

    /// The names of the plugins.
    pub fn plugin_names(&self) -> Vec<String> {
        self.plugins.keys().cloned().collect()
    }

    fn plugin(&mut self, name: &str) -> Result<&mut PluginSlot, StackError> {
        let known = self.plugins.keys().cloned().collect::<Vec<_>>().join(", ");
        self.plugins.get_mut(name).ok_or(StackError::NoSuchComponent { kind: "plugin", name: name.to_owned(), known })
    }

    /// A plugin's socket path.
    pub fn plugin_socket(&self, name: &str) -> Option<&Path> {
        self.plugins.get(name).map(|slot| slot.socket.as_path())
    }

    /// The command (argv) that rotates a running plugin's KEK, when its program has one (a
    /// manifest's `rotation: {command}`, rendered for this run).
    pub fn plugin_rotate_command(&self, name: &str) -> Option<&[String]> {
        self.plugins.get(name).and_then(|slot| slot.rotate_command.as_deref())
    }

    /// A plugin's `unix://` endpoint.
    pub fn plugin_endpoint(&self, name: &str) -> Option<String> {
        self.plugin_socket(name).map(|socket| format!("unix://{}", socket.display()))
    }

    /// Starts (or restarts after a stop/kill) a plugin and waits until it answers.
    async fn start_plugin(&mut self, name: &str) -> Result<(), StackError> {
        let log = self.run_dir.join(format!("{name}.log"));
        let mock_kms_config = self.mock_kms.as_ref().map(MockKmsCluster::plugin_config);
        let launcher = self.launcher.clone();
        let run_dir = self.run_dir.clone();
        let mock_kms = self.mock_kms.as_ref();
        let known = self.plugins.keys().cloned().collect::<Vec<_>>().join(", ");
        let slot = self.plugins.get_mut(name).ok_or(StackError::NoSuchComponent { kind: "plugin", name: name.to_owned(), known })?;
        if slot.process.is_none()
            && let PluginKek::Program(program) = &slot.spec.kek
        {
            let program = program.clone();
            return slot.start_program(program.as_ref(), &launcher, &run_dir, mock_kms).await;
        }
        if slot.process.is_none() {
            let binary = if slot.spec.defects.is_empty() { OwnBinary::KmsPlugin } else { OwnBinary::FaultyPlugin }.locate()?;
            slot.start(&launcher, &binary, &log, mock_kms_config).await?;
        }
        Ok(())
    }

    /// Sends SIGHUP to a plugin (it re-reads its KEK file).
    pub fn reload_plugin(&self, name: &str) -> Result<(), StackError> {
        let known = || self.plugins.keys().cloned().collect::<Vec<_>>().join(", ");
        let slot =
            self.plugins.get(name).ok_or_else(|| StackError::NoSuchComponent { kind: "plugin", name: name.to_owned(), known: known() })?;
        if let Some(process) = &slot.process {
            process.send_signal(libc::SIGHUP);
        }
        Ok(())
    }

    /// A running plugin's process id.
    pub fn plugin_pid(&self, name: &str) -> Option<u32> {
        self.plugins.get(name).and_then(|slot| slot.process.as_ref()).and_then(|p| p.pid())
    }

    /// A plugin's KEK file (local KEK) or config file (remote KMS).
    pub fn plugin_state_file(&self, name: &str) -> Option<&Path> {
        self.plugins.get(name).map(|slot| slot.state_file.as_path())
    }

    /// Starts one more apiserver on the same etcd, with its own EncryptionConfiguration.
    pub async fn add_apiserver(
        &mut self,
        encryption: &EncryptionConfiguration,
        kms_v1_gate: bool,
        readiness: Readiness,
        extra_args: Vec<String>,
    ) -> Result<usize, StackError> {
        let index = self.apiservers.len();
        let name = format!("apiserver-{index}");
        let config_path = self.work.path().join(format!("{name}-encryption.yaml"));
        write_atomically(&config_path, &encryption.to_yaml()?)?;
        let options = ApiServerOptions {
            name: name.clone(),
            etcd_url: self.etcd_url(),
            etcd_tls: self.etcd.as_ref().and_then(|e| e.tls().cloned()),
            encryption_config: config_path,
            kms_v1_gate: kms_v1_gate || encryption.uses_kms_v1(),
            extra_args,
        };
        let apiserver = self.launch_apiserver(options, Some(readiness)).await?;
        self.write_kubeconfig(index, apiserver.port)?;
        self.apiservers.push(apiserver);
        Ok(index)
    }

    async fn launch_apiserver(&self, options: ApiServerOptions, readiness: Option<Readiness>) -> Result<ApiServer, StackError> {
        let log = self.run_dir.join(format!("{}.log", options.name));
        ApiServer::start(
            &self.launcher,
            &self.binaries.kube_apiserver.path,
            options,
            &self.files,
            &self.ca_pem,
            self.work.path(),
            &log,
            readiness,
        )
        .await
    }

    fn apiserver_slot(&self, index: usize) -> Result<&ApiServer, StackError> {
        self.apiservers.get(index).ok_or_else(|| StackError::NoSuchComponent {
            kind: "apiserver",
            name: format!("apiserver-{index}"),
            known: (0..self.apiservers.len()).map(|i| format!("apiserver-{i}")).collect::<Vec<_>>().join(", "),
        })
    }

    /// Rewrites an apiserver's EncryptionConfiguration (it reloads it automatically).
    pub fn write_encryption_config(&self, index: usize, encryption: &EncryptionConfiguration) -> Result<(), StackError> {
        let path = &self.apiserver_slot(index)?.options.encryption_config;
        write_atomically(path, &encryption.to_yaml()?)
    }

    /// Writes `text` as an apiserver's EncryptionConfiguration file as it is, valid or not (a
    /// broken file: the apiserver's automatic reload fails and the old configuration stays).
    pub fn write_encryption_config_text(&self, index: usize, text: &str) -> Result<(), StackError> {
        let path = &self.apiserver_slot(index)?.options.encryption_config;
        write_atomically(path, text)
    }

    /// The EncryptionConfiguration file apiserver `index` reads, as it is now.
    pub fn encryption_config_text(&self, index: usize) -> Result<String, StackError> {
        let path = &self.apiserver_slot(index)?.options.encryption_config;
        std::fs::read_to_string(path).map_err(StackError::io(format!("read {}", path.display())))
    }

    /// How many apiservers the stack has (stopped ones included).
    pub fn apiserver_count(&self) -> usize {
        self.apiservers.len()
    }

    /// The admin kubeconfig of apiserver `index`.
    pub fn kubeconfig_path(&self, index: usize) -> PathBuf {
        self.run_dir.join(format!("kubeconfig-{index}"))
    }

    fn write_kubeconfig(&self, index: usize, port: u16) -> Result<(), StackError> {
        write(
            &self.kubeconfig_path(index),
            &apiserver::kubeconfig_yaml(&format!("https://127.0.0.1:{port}"), &self.ca_pem, &self.files.admin_token),
        )
    }

    /// The URL of apiserver `index`.
    pub fn apiserver_url(&self, index: usize) -> Result<String, StackError> {
        Ok(self.apiserver_slot(index)?.url())
    }

    /// A Kubernetes client for apiserver `index`, as the admin.
    pub async fn kube_client(&self, index: usize) -> Result<kube::Client, StackError> {
        Ok(self.apiserver_slot(index)?.client.clone())
    }

    /// `GET path` on apiserver `index` (e.g. `/healthz/kms-providers`): status code and body.
    pub async fn apiserver_get(&self, index: usize, path: &str) -> Result<(u16, String), StackError> {
        apiserver::raw_get(&self.apiserver_slot(index)?.client, path).await
    }

    /// The raw value etcd holds at `key`, as the apiserver wrote it.
    pub async fn etcd_get(&self, key: &str) -> Result<Option<Vec<u8>>, StackError> {
        let page = self.etcd_client()?.range(key.as_bytes(), None, 0, 0).await?;
        Ok(page.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Every key and raw value under `prefix` (read in pages).
    pub async fn etcd_list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StackError> {
        let kvs = self.etcd_client()?.list_prefix(prefix.as_bytes()).await?;
        Ok(kvs.into_iter().map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value)).collect())
    }

    /// etcd's current revision (a mark in its history).
    pub async fn etcd_revision(&self) -> Result<i64, StackError> {
        self.etcd_client()?.revision().await
    }

    /// A read-only etcd client (with the stack's client certificate when etcd requires mutual TLS).
    pub fn etcd_client(&self) -> Result<EtcdClient, StackError> {
        self.etcd.as_ref().ok_or_else(|| StackError::Etcd("the stack has no etcd".into()))?.client()
    }

    /// etcd's CA, client certificate and key files when it runs with mutual TLS (as etcdctl's
    /// `--cacert/--cert/--key` take them).
    pub fn etcd_tls(&self) -> Option<&EtcdTlsFiles> {
        self.etcd.as_ref().and_then(Etcd::tls)
    }

    /// Whether `component` has a running process (`mock-kms`: any of its nodes).
    pub fn is_running(&self, component: &Component) -> bool {
        match component {
            Component::Etcd => self.etcd.as_ref().is_some_and(|e| e.process.is_some()),
            Component::Apiserver(i) => self.apiservers.get(*i).is_some_and(|a| a.process.is_some()),
            Component::MockKms => self.mock_kms.as_ref().is_some_and(|k| k.nodes.iter().any(|n| n.process.is_some())),
            Component::MockKmsNode(i) => self.mock_kms.as_ref().and_then(|k| k.nodes.get(*i)).is_some_and(|n| n.process.is_some()),
            Component::Plugin(name) => self.plugins.get(name).is_some_and(|p| p.process.is_some()),
        }
    }

    /// Every component of the stack, by name (apiservers, plugins, etcd, each mock KMS node).
    pub fn components(&self) -> Vec<Component> {
        let mut all: Vec<Component> = (0..self.apiservers.len()).map(Component::Apiserver).collect();
        all.extend(self.plugins.keys().cloned().map(Component::Plugin));
        all.push(Component::Etcd);
        if let Some(kms) = &self.mock_kms {
            all.push(Component::MockKms);
            all.extend((0..kms.nodes.len()).map(Component::MockKmsNode));
        }
        all
    }

    /// Starts a stopped (or killed, or never started) component and waits for `wait`
    /// ([`WaitFor::applies_to`]). Starting a running component is refused: use [`Stack::restart`].
    pub async fn start(&mut self, component: &Component, wait: WaitFor) -> Result<(), StackError> {
        self.check_component(component)?;
        if !wait.applies_to(component) {
            return Err(StackError::ComponentState {
                verb: "start",
                component: component.to_string(),
                reason: format!("`wait: {wait}` applies to apiservers only; other components wait until `ready`"),
            });
        }
        let running = match component {
            // `mock-kms` starts the nodes that are down.
            Component::MockKms => self.mock_kms.as_ref().is_some_and(|k| k.nodes.iter().all(|n| n.process.is_some())),
            other => self.is_running(other),
        };
        if running {
            return Err(StackError::ComponentState {
                verb: "start",
                component: component.to_string(),
                reason: "it is running; `restart` stops and starts it, `stop`/`kill` first to start it later".into(),
            });
        }
        match component {
            Component::Etcd => self.etcd_or_error()?.restart().await,
            Component::Apiserver(index) => {
                let options = self.apiserver_slot(*index)?.options.clone();
                let readiness = match wait {
                    WaitFor::Ready => Some(Readiness::Ready),
                    WaitFor::Serving => Some(Readiness::Serving),
                    WaitFor::Live => Some(Readiness::Live),
                    WaitFor::None => None,
                };
                let fresh = self.launch_apiserver(options, readiness).await?;
                self.write_kubeconfig(*index, fresh.port)?;
                self.apiservers[*index] = fresh;
                Ok(())
            }
            Component::MockKms => {
                let kms = self.mock_kms_or_error()?;
                for index in 0..kms.nodes.len() {
                    if kms.nodes[index].process.is_none() {
                        kms.start_node(index).await?;
                    }
                }
                Ok(())
            }
            Component::MockKmsNode(index) => self.mock_kms_or_error()?.start_node(*index).await,
            Component::Plugin(name) => self.start_plugin(name).await,
        }
    }

    /// Stops a component gracefully: SIGTERM, then SIGKILL after the grace period (an apiserver
    /// drains, a plugin finishes in-flight calls and removes its socket). A stopped one stays stopped.
    pub async fn stop(&mut self, component: &Component) -> Result<(), StackError> {
        self.end(component, false).await
    }

    /// Kills a component with SIGKILL, as a crash would (a plugin's socket file stays behind).
    pub async fn kill(&mut self, component: &Component) -> Result<(), StackError> {
        self.end(component, true).await
    }

    /// Stops a component gracefully and starts it again, waiting for `wait`.
    pub async fn restart(&mut self, component: &Component, wait: WaitFor) -> Result<(), StackError> {
        self.check_component(component)?;
        if !wait.applies_to(component) {
            return Err(StackError::ComponentState {
                verb: "restart",
                component: component.to_string(),
                reason: format!("`wait: {wait}` applies to apiservers only; other components wait until `ready`"),
            });
        }
        self.stop(component).await?;
        self.start(component, wait).await
    }

    /// The error for a component this stack does not have.
    fn check_component(&self, component: &Component) -> Result<(), StackError> {
        let known = self.components().iter().map(Component::to_string).collect::<Vec<_>>().join(", ");
        let (kind, exists) = match component {
            Component::Etcd => ("etcd", self.etcd.is_some()),
            Component::Apiserver(i) => ("apiserver", *i < self.apiservers.len()),
            Component::MockKms => ("mock KMS", self.mock_kms.is_some()),
            Component::MockKmsNode(i) => ("mock KMS node", self.mock_kms.as_ref().is_some_and(|k| *i < k.nodes.len())),
            Component::Plugin(name) => ("plugin", self.plugins.contains_key(name)),
        };
        if exists { Ok(()) } else { Err(StackError::NoSuchComponent { kind, name: component.to_string(), known }) }
    }

    /// Stops (`kill`: SIGKILL at once) whatever runs of `component`.
    async fn end(&mut self, component: &Component, kill: bool) -> Result<(), StackError> {
        self.check_component(component)?;
        let end = |process: crate::process::Supervised| async move {
            if kill {
                process.kill().await;
            } else {
                process.stop(STOP_GRACE).await;
            }
        };
        match component {
            Component::Etcd => {
                if let Some(process) = self.etcd_or_error()?.process.take() {
                    end(process).await;
                }
            }
            Component::Apiserver(index) => {
                if let Some(process) = self.apiservers[*index].process.take() {
                    end(process).await;
                }
            }
            Component::MockKms | Component::MockKmsNode(_) => {
                let kms = self.mock_kms_or_error()?;
                let nodes: Vec<usize> = match component {
                    Component::MockKmsNode(index) => vec![*index],
                    _ => (0..kms.nodes.len()).collect(),
                };
                for index in nodes {
                    if kill {
                        kms.kill_node(index).await?;
                    } else {
                        kms.stop_node(index, STOP_GRACE).await?;
                    }
                }
            }
            Component::Plugin(name) => self.plugin(name)?.end(kill, STOP_GRACE).await,
        }
        Ok(())
    }

    /// The process ids of every running component.
    pub fn pids(&self) -> Vec<u32> {
        let apiservers = self.apiservers.iter().filter_map(|a| a.process.as_ref());
        let plugins = self.plugins.values().flat_map(|p| p.process.iter().chain(&p.extras));
        let etcd = self.etcd.iter().filter_map(|e| e.process.as_ref());
        let kms = self.mock_kms.iter().flat_map(MockKmsCluster::pids);
        let controller_manager = self.controller_manager.iter().map(|c| &c.process);
        apiservers.chain(plugins).chain(etcd).chain(controller_manager).filter_map(|p| p.pid()).chain(kms).collect()
    }

    /// What the stack's running processes have used so far, from `/proc`: CPU seconds (user +
    /// system) and the sum of their peak resident memory. A component restarted mid-run counts
    /// from its restart; in-process parts (the scenario runner) are not counted.
    pub fn resource_use(&self) -> ResourceUse {
        // SAFETY: sysconf has no preconditions; it reads a constant of the running kernel.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let mut total = ResourceUse::default();
        for pid in self.pids() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // `pid (comm) S ppid …`: utime and stime are the 12th and 13th fields after the `)`.
            let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0) as f64;
            total.cpu_seconds += (tick(11) + tick(12)) / ticks;
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let hwm_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            total.peak_rss_bytes += hwm_kib * 1024;
        }
        total
    }

    /// Stops everything (kube-controller-manager, apiservers, then plugins, then etcd). On success the run directory is
    /// removed; with `keep_logs` it stays and its path is returned.
    pub async fn shutdown(mut self, keep_logs: bool) -> Option<PathBuf> {
        self.shut_down = true;
        if let Some(controller_manager) = self.controller_manager.take() {
            controller_manager.process.stop(STOP_GRACE).await;
        }
        for apiserver in self.apiservers.drain(..) {
            if let Some(process) = apiserver.process {
                process.stop(STOP_GRACE).await;
            }
        }
        for slot in self.plugins.values_mut() {
            slot.end(false, STOP_GRACE).await;
        }
        if let Some(kms) = self.mock_kms.as_mut() {
            kms.stop_all(STOP_GRACE).await;
        }
        if let Some(process) = self.etcd.take().and_then(|etcd| etcd.process) {
            process.stop(STOP_GRACE).await;
        }
        if keep_logs {
            Some(self.run_dir.clone())
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
            None
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.shut_down {
            // The processes are killed by their own Drop; the work dir by TempDir's.
            eprintln!(
                "kms-lab: the stack was dropped without a shutdown; every process was killed; logs kept in {}",
                self.run_dir.display()
            );
        }
    }
}

/// What a stack's processes used ([`Stack::resource_use`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceUse {
    /// CPU seconds, user and system, of every running component.
    pub cpu_seconds: f64,
    /// The sum of each component's peak resident memory, in bytes.
    pub peak_rss_bytes: u64,
}
