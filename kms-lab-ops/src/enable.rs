//! `kms-lab enable`: the files an operator reviews before turning a KMS plugin on for a
//! kubeadm-style control plane. Nothing is applied; everything is written under `--out`.
//!
//! The plugin side is a [`PluginDeployment`]: its image, arguments and config file. Ours comes
//! from [`kms_plugin`]; another plugin (e.g. from the plugin catalog) only has to build one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HostPathVolumeSource, Pod, PodSpec, Volume, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kms_lab_stack::encryption::{EncryptionConfiguration, KmsProvider, Provider};

use kms_lab_cli_common::files::{FileKind, Recognise};

use crate::error::OpsError;

/// The plugins `enable` can describe by name.
pub const KNOWN_PLUGINS: [&str; 1] = ["kms-plugin"];

/// The plugin's own config file, mounted read-only into its pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfigFile {
    /// File name inside the config directory, e.g. `config.json`.
    pub file_name: String,
    /// Its contents (no credentials: the runbook says where to add them).
    pub contents: String,
}

/// How a plugin runs on a control-plane node: what its static pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDeployment {
    /// The plugin's name (the pod's and the container's).
    pub name: String,
    /// The container image.
    pub image: String,
    /// The command and arguments (paths as seen inside the pod).
    pub command: Vec<String>,
    /// The config file, if the plugin reads one.
    pub config: Option<PluginConfigFile>,
    /// The socket file's name inside the socket directory.
    pub socket_file: String,
}

/// Where things go on each control-plane node, and the provider's settings.
#[derive(Debug, Clone)]
pub struct EnableOptions {
    /// The KMS v2 provider's name (it appears in every stored prefix: choose it once).
    pub provider_name: String,
    /// The per-call timeout (e.g. what `kms-lab tune` recommends); default 3 s.
    pub timeout: Option<Duration>,
    /// The resources to encrypt.
    pub resources: Vec<String>,
    /// The host directory of the plugin's socket (shared by the plugin and the apiserver).
    pub socket_dir: PathBuf,
    /// The host directory of the EncryptionConfiguration (mounted into the apiserver).
    pub config_dir: PathBuf,
    /// The host directory of the plugin's config and KMS credentials (mounted into the plugin
    /// only: the apiserver never sees the credentials).
    pub plugin_config_dir: PathBuf,
    /// The control-plane nodes, in the order the runbook takes them.
    pub nodes: Vec<String>,
}

impl Default for EnableOptions {
    fn default() -> Self {
        Self {
            provider_name: "kms-plugin".into(),
            timeout: None,
            resources: vec!["secrets".into()],
            socket_dir: "/var/run/kmsplugin".into(),
            config_dir: "/etc/kubernetes/kms".into(),
            plugin_config_dir: "/etc/kubernetes/kms-plugin".into(),
            nodes: vec!["control-plane-1".into()],
        }
    }
}

/// Settings of our kms-plugin: the seed-format config it reads with `-f`.
#[derive(Debug, Clone)]
pub struct KmsPluginSettings {
    /// The image that holds `kms-plugin`.
    pub image: String,
    /// `host:port` of the remote KMS.
    pub kms_endpoint: String,
    /// The KEK's id in the KMS.
    pub kms_key_id: String,
    /// `https` (or `http` for a lab KMS).
    pub kms_schema: String,
}

/// Our kms-plugin as a [`PluginDeployment`].
pub fn kms_plugin(settings: &KmsPluginSettings, options: &EnableOptions) -> PluginDeployment {
    let socket_file = "kms-plugin.sock".to_owned();
    let config_path = options.plugin_config_dir.join("kms-plugin.json");
    let socket_path = options.socket_dir.join(&socket_file);
    let config = serde_json::json!({
        "KmsEndpoint": settings.kms_endpoint,
        "KmsKeyId": settings.kms_key_id,
        "KmsSchema": settings.kms_schema,
        "GRPCSocketPath": socket_path,
    });
    PluginDeployment {
        name: "kms-plugin".into(),
        image: settings.image.clone(),
        command: vec!["kms-plugin".into(), "-f".into(), config_path.display().to_string(), "--api".into(), "v2".into()],
        config: Some(PluginConfigFile {
            file_name: "kms-plugin.json".into(),
            contents: serde_json::to_string_pretty(&config).unwrap_or_default() + "\n",
        }),
        socket_file,
    }
}

/// One generated file: its path relative to `--out`, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative path.
    pub path: PathBuf,
    /// Contents.
    pub contents: String,
}

/// The apiserver flags the generated configuration needs.
pub fn apiserver_flags(options: &EnableOptions) -> Vec<String> {
    vec![
        format!("--encryption-provider-config={}", options.config_dir.join("encryption-config.yaml").display()),
        "--encryption-provider-config-automatic-reload=true".into(),
    ]
}

/// The EncryptionConfiguration: the KMS v2 provider first, identity last (reads what is still plaintext).
pub fn encryption_config(plugin: &PluginDeployment, options: &EnableOptions) -> EncryptionConfiguration {
    let socket = options.socket_dir.join(&plugin.socket_file);
    let timeout = options.timeout.unwrap_or(Duration::from_secs(3));
    let resources: Vec<&str> = options.resources.iter().map(String::as_str).collect();
    EncryptionConfiguration::new(
        &resources,
        vec![Provider::Kms(KmsProvider::v2(&options.provider_name, &socket, timeout)), Provider::Identity(Default::default())],
    )
}

fn host_path(name: &str, path: &Path, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.display().to_string(), type_: Some(kind.into()) }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &Path, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.display().to_string(), read_only: Some(read_only), ..Default::default() }
}

/// A static pod in kube-system with `container`, the socket directory and `config_dir` mounted
/// (the config read-only).
fn static_pod(name: &str, mut container: Container, options: &EnableOptions, config_dir: &Path, spec: PodSpec) -> Pod {
    container.volume_mounts = Some(vec![mount("kms-socket", &options.socket_dir, false), mount("kms-config", config_dir, true)]);
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some("kube-system".into()), ..Default::default() },
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![
                host_path("kms-socket", &options.socket_dir, "DirectoryOrCreate"),
                host_path("kms-config", config_dir, "Directory"),
            ]),
            ..spec
        }),
        ..Default::default()
    }
}

/// The plugin's static pod (for `/etc/kubernetes/manifests/`).
pub fn plugin_pod(plugin: &PluginDeployment, options: &EnableOptions) -> Pod {
    let container = Container {
        name: plugin.name.clone(),
        image: Some(plugin.image.clone()),
        command: Some(plugin.command.clone()),
        ..Default::default()
    };
    let spec = PodSpec { host_network: Some(true), priority_class_name: Some("system-cluster-critical".into()), ..Default::default() };
    let mut pod = static_pod(&plugin.name, container, options, &options.plugin_config_dir, spec);
    pod.metadata.labels = Some([("component".to_owned(), plugin.name.clone()), ("tier".to_owned(), "control-plane".to_owned())].into());
    pod
}

/// The kube-apiserver static pod patch (kubeadm `--patches` format, `kube-apiserver+strategic.yaml`):
/// the socket directory and the configuration directory mounted; the flags are in
/// [`apiserver_flags`] (a strategic patch would replace the whole `command` list).
pub fn apiserver_patch(options: &EnableOptions) -> Pod {
    let container = Container { name: "kube-apiserver".into(), ..Default::default() };
    static_pod("kube-apiserver", container, options, &options.config_dir, PodSpec::default())
}

fn yaml<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, OpsError> {
    serde_yaml::to_string(value).map_err(|source| OpsError::Yaml { what, source })
}

/// Every file `enable` writes (relative paths).
pub fn generate(plugin: &PluginDeployment, options: &EnableOptions) -> Result<Vec<GeneratedFile>, OpsError> {
    let header = format!("{HEADER}: review before copying to each control-plane node\n");
    let mut files = vec![
        GeneratedFile {
            path: "encryption-config.yaml".into(),
            contents: format!("{header}{}", yaml("the EncryptionConfiguration", &encryption_config(plugin, options))?),
        },
        GeneratedFile {
            path: format!("manifests/{}.yaml", plugin.name).into(),
            contents: format!("{header}{}", yaml("the plugin's static pod", &plugin_pod(plugin, options))?),
        },
        GeneratedFile {
            path: "patches/kube-apiserver+strategic.yaml".into(),
            contents: format!("{header}{}", yaml("the kube-apiserver patch", &apiserver_patch(options))?),
        },
        GeneratedFile { path: "kube-apiserver-flags.txt".into(), contents: apiserver_flags(options).join("\n") + "\n" },
        GeneratedFile { path: "RUNBOOK.md".into(), contents: runbook(plugin, options) },
    ];
    if let Some(config) = &plugin.config {
        files.push(GeneratedFile { path: config.file_name.clone().into(), contents: config.contents.clone() });
    }
    Ok(files)
}

/// The first line of every generated YAML file.
const HEADER: &str = "# generated by `kms-lab enable`";

/// How an earlier `enable`'s copy of a generated file is recognised (only that is replaced).
/// The plugin's own config file has no mark of ours: an existing one is kept only when it is
/// already what would be written (it may be the operator's real config).
fn kind_of(path: &Path) -> FileKind {
    let recognise = match path.to_str() {
        Some("kube-apiserver-flags.txt") => Recognise::FirstLine("--encryption-provider-config="),
        Some("RUNBOOK.md") => Recognise::FirstLine("# Enabling KMS v2 encryption with"),
        Some(yaml) if yaml.ends_with(".yaml") => Recognise::FirstLine(HEADER),
        _ => Recognise::By(|_| false),
    };
    FileKind::public("file written by `kms-lab enable`", recognise)
}

/// Writes the files under `out` (created if missing), each atomically; the paths written. An
/// existing file is replaced only if an earlier `enable` wrote it (or it already holds exactly
/// this); otherwise nothing at all is written and the error names it.
pub fn write(out: &Path, files: &[GeneratedFile]) -> Result<Vec<PathBuf>, OpsError> {
    let unchanged = |path: &Path, file: &GeneratedFile| std::fs::read(path).is_ok_and(|bytes| bytes == file.contents.as_bytes());
    for file in files {
        let path = out.join(&file.path);
        if !unchanged(&path, file) {
            kms_lab_cli_common::files::check_replaceable(&path, &kind_of(&file.path))?;
        }
    }
    let mut written = Vec::new();
    for file in files {
        let path = out.join(&file.path);
        if !unchanged(&path, file) {
            kms_lab_cli_common::files::replace(&path, &kind_of(&file.path), file.contents.as_bytes())?;
        }
        written.push(path);
    }
    Ok(written)
}

/// The ordered runbook: lint → preflight → apply → wait → migrate → inspect, node by node.
pub fn runbook(plugin: &PluginDeployment, options: &EnableOptions) -> String {
    let config_dir = options.config_dir.display();
    let socket = options.socket_dir.join(&plugin.socket_file);
    let flags = apiserver_flags(options).join(" ");
    let mut out = format!(
        "# Enabling KMS v2 encryption with {plugin} (provider `{provider}`)\n\n\
         Generated by `kms-lab enable`. Nothing has been applied. Do one control-plane node at a time.\n\n\
         ## Before any node\n\n\
         1. Lint the configuration: `kms-lab lint encryption-config.yaml`\n\
         2. Inspect today's state: `kms-lab inspect --endpoints https://127.0.0.1:2379 --cacert /etc/kubernetes/pki/etcd/ca.crt \
         --cert /etc/kubernetes/pki/apiserver-etcd-client.crt --key /etc/kubernetes/pki/apiserver-etcd-client.key`\n\n",
        plugin = plugin.name,
        provider = options.provider_name,
    );
    for (i, node) in options.nodes.iter().enumerate() {
        out.push_str(&format!(
            "## Node {n}: {node}\n\n\
             1. Copy `encryption-config.yaml` to `{config_dir}/` (mode 0600, owner root){config}.\n\
             2. Copy `manifests/{plugin}.yaml` to `/etc/kubernetes/manifests/`; the kubelet starts the plugin.\n\
             3. Preflight the plugin: `kms-lab conformance --profile preflight --endpoint unix://{socket}` (exit 0 required).\n\
             4. Apply: add `kube-apiserver-flags.txt` ({flags}) to the command of `/etc/kubernetes/manifests/kube-apiserver.yaml` \
             and merge the mounts of `patches/kube-apiserver+strategic.yaml` (or pass that directory to kubeadm's `--patches`).\n\
             5. Wait until `kubectl get --raw /readyz/kms-providers` answers `ok` on this node's apiserver.\n\n",
            n = i + 1,
            config = plugin
                .config
                .as_ref()
                .map(|c| format!(
                    ", and `{}` to `{}/` (mode 0600) with the KMS credentials (AccessKey, SecretKey) added there, never in the generated directory",
                    c.file_name,
                    options.plugin_config_dir.display()
                ))
                .unwrap_or_default(),
            plugin = plugin.name,
            socket = socket.display(),
        ));
    }
    out.push_str(
        "## After every node runs the new configuration\n\n\
         1. Migrate: `kms-lab migrate --checkpoint migrate.json` (resumable; rerun after an interruption).\n\
         2. Inspect again with `--config encryption-config.yaml --expect-all kms-v2`: 0 objects under identity, and \
         identity reported safe to drop.\n\n\
         ## Changing the configuration later\n\n\
         With `--encryption-provider-config-automatic-reload=true` each apiserver re-reads `encryption-config.yaml` \
         on its own, at its next poll: about a minute after the write (kms-lab's `config-reload` scenario measures it). \
         It took when `apiserver_encryption_config_controller_automatic_reloads_total{status=\"success\"}` rose and the \
         `hash` label of `apiserver_encryption_config_controller_last_config_info` changed. A file it cannot load \
         counts `{status=\"failure\"}` (retried with backoff, so the count keeps rising) while the old configuration \
         keeps serving; writing back the very file in force counts nothing, so fix a broken file with a new one.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours() -> (PluginDeployment, EnableOptions) {
        let options =
            EnableOptions { timeout: Some(Duration::from_millis(2500)), nodes: vec!["cp-1".into(), "cp-2".into()], ..Default::default() };
        let settings = KmsPluginSettings {
            image: "registry.example/kms-plugin:0.1".into(),
            kms_endpoint: "kms.example:443".into(),
            kms_key_id: "kek-1".into(),
            kms_schema: "https".into(),
        };
        (kms_plugin(&settings, &options), options)
    }

    #[test]
    fn the_generated_configuration_passes_lint_and_puts_kms_v2_first() {
        let (plugin, options) = ours();
        let files = generate(&plugin, &options).unwrap();
        let config = files.iter().find(|f| f.path == Path::new("encryption-config.yaml")).unwrap();
        let report = kms_lab_lint::lint_str(&config.contents, "encryption-config.yaml", &Default::default()).unwrap();
        assert_eq!(report.worst(), None, "{}", report.render_text());
        let parsed: EncryptionConfiguration = serde_yaml::from_str(&config.contents).unwrap();
        let providers = &parsed.resources[0].providers;
        assert!(
            matches!(&providers[0], Provider::Kms(k) if k.timeout.as_deref() == Some("2500ms") && k.endpoint == "unix:///var/run/kmsplugin/kms-plugin.sock")
        );
        assert!(matches!(providers.last(), Some(Provider::Identity(_))));
    }

    #[test]
    fn the_static_pod_is_critical_on_the_host_network_with_a_read_only_config() {
        let (plugin, options) = ours();
        let files = generate(&plugin, &options).unwrap();
        let pod: Pod =
            serde_yaml::from_str(&files.iter().find(|f| f.path == Path::new("manifests/kms-plugin.yaml")).unwrap().contents).unwrap();
        let spec = pod.spec.unwrap();
        assert_eq!((spec.host_network, spec.priority_class_name.as_deref()), (Some(true), Some("system-cluster-critical")));
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        assert!(mounts.iter().any(|m| m.name == "kms-config" && m.read_only == Some(true) && m.mount_path == "/etc/kubernetes/kms-plugin"));
        // The apiserver mounts the EncryptionConfiguration's directory, never the plugin's credentials.
        let patch = apiserver_patch(&options).spec.unwrap();
        let paths: Vec<String> = patch.containers[0].volume_mounts.clone().unwrap().into_iter().map(|m| m.mount_path).collect();
        assert_eq!(paths, ["/var/run/kmsplugin", "/etc/kubernetes/kms"]);
        let plugin_config: serde_json::Value = serde_json::from_str(&plugin.config.unwrap().contents).unwrap();
        assert_eq!(plugin_config["GRPCSocketPath"], "/var/run/kmsplugin/kms-plugin.sock");
        let runbook = &files.iter().find(|f| f.path == Path::new("RUNBOOK.md")).unwrap().contents;
        let order =
            ["kms-lab lint", "--profile preflight", "kube-apiserver-flags.txt", "/readyz/kms-providers", "kms-lab migrate", "--expect-all"];
        let positions: Vec<usize> = order.iter().map(|step| runbook.find(step).unwrap_or_else(|| panic!("{step} missing"))).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "runbook order: {positions:?}");
        assert!(runbook.contains("## Node 2: cp-2"));
    }
}
