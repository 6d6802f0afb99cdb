//! `cargo xtask lab`: the whole stack up locally, a narrated demo of envelope encryption on
//! the real kube-apiserver and etcd, then a running lab until Ctrl-C.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kms_lab_stack::provision::{self, Binaries, ProvisionOptions};
use kms_lab_stack::{Stack, StackError, StackOptions};
use kms_wire::envelope::Envelope;

/// How long the demo waits for the apiserver to pick up a rotated key id (it polls Status each minute).
const ROTATION_DEADLINE: Duration = Duration::from_secs(150);

/// Options of the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Where upstream binaries are looked for first (`--bin-dir`).
    pub bin_dir: Option<PathBuf>,
    /// The Kubernetes version to provision.
    pub kubernetes_version: String,
    /// Run the demo, then stop everything and exit.
    pub demo_only: bool,
    /// Where `lab.env` and run directories go (`target/kms-lab`).
    pub state_dir: PathBuf,
}

/// Why the lab failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The stack failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A demo step failed.
    #[error("demo step failed: {0}")]
    Demo(String),
    /// Writing lab files failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn step(number: usize, total: usize, text: &str) {
    println!("\n==> [{number}/{total}] {text}");
}

/// Runs a program and returns its stdout, or a demo error naming the command.
fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Vec<u8>, LabError> {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .map_err(|e| LabError::Demo(format!("cannot run {}: {e}", program.display())))?;
    if !output.status.success() {
        return Err(LabError::Demo(format!(
            "`{} {}` failed: {}",
            program.display(),
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// A `hexdump -C` style dump of the first `limit` bytes.
pub fn hexdump(bytes: &[u8], limit: usize) -> String {
    let mut out = String::new();
    for (row, chunk) in bytes[..bytes.len().min(limit)].chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk.iter().map(|b| if b.is_ascii_graphic() || *b == b' ' { *b as char } else { '.' }).collect();
        let _ = writeln!(out, "{:08x}  {:<48}  |{ascii}|", row * 16, hex.join(" "));
    }
    if bytes.len() > limit {
        let _ = writeln!(out, "… {} more bytes", bytes.len() - limit);
    }
    out
}

/// Writes `lab.env` so `set -a; source lab.env` points a shell's kubectl and etcdctl at the lab.
fn write_env_file(path: &Path, stack: &Stack, binaries: &Binaries) -> Result<(), LabError> {
    let contents = format!(
        "# kms-lab: `set -a; source {}` points kubectl and etcdctl at the running lab.\nKUBECONFIG={}\nKUBECTL={}\nETCDCTL={}\nETCDCTL_API=3\nETCDCTL_ENDPOINTS={}\nKMS_PLUGIN_SOCKET={}\n",
        path.display(),
        stack.kubeconfig_path(0).display(),
        binaries.kubectl.path.display(),
        binaries.etcdctl.path.display(),
        stack.etcd_url(),
        stack.plugin_socket("plugin-0").map(|p| p.display().to_string()).unwrap_or_default(),
    );
    std::fs::write(path, contents).map_err(|source| LabError::Io { path: path.to_owned(), source })
}

async fn stored_key_id(stack: &Stack, name: &str) -> Result<String, LabError> {
    let raw = stack
        .etcd_get(&format!("/registry/secrets/default/{name}"))
        .await?
        .ok_or_else(|| LabError::Demo(format!("Secret {name} is not in etcd")))?;
    match Envelope::parse(&raw) {
        Ok(Envelope::KmsV2 { object, .. }) => Ok(object.key_id),
        Ok(other) => Err(LabError::Demo(format!("Secret {name} was stored by {}, not kms-v2", other.kind()))),
        Err(e) => Err(LabError::Demo(format!("Secret {name} in etcd does not parse: {e}"))),
    }
}

/// Brings the stack up, runs the demo, and (unless `demo_only`) waits for Ctrl-C.
pub async fn run_lab(options: &LabOptions) -> Result<(), LabError> {
    let total = 6;
    step(1, total, "provisioning kube-apiserver, kubectl and etcd (pinned upstream releases; built from the Go module proxy on first run)");
    let provision_options = ProvisionOptions {
        bin_dir: options.bin_dir.clone(),
        kubernetes_version: options.kubernetes_version.clone(),
        ..ProvisionOptions::default()
    };
    let binaries = tokio::task::spawn_blocking(move || provision::provision(&provision_options))
        .await
        .map_err(|e| LabError::Demo(format!("provisioning panicked: {e}")))?
        .map_err(StackError::from)?;
    for binary in [&binaries.kube_apiserver, &binaries.kubectl, &binaries.etcd, &binaries.etcdctl] {
        println!("    {:<15} {:<10} {}", binary.component.name(), binary.version, binary.path.display());
    }

    step(2, total, "starting etcd, the mock remote KMS, the kms-lab reference plugin and kube-apiserver with a KMS v2 provider");
    let started = Instant::now();
    let mut stack_options = StackOptions::new("lab", binaries.clone(), &options.state_dir.join("runs")).with_mock_kms();
    // Re-probe the KEK every 5 s, so a rotation shows in the plugin's Status quickly.
    stack_options.plugins[0].extra_args = vec!["--health-ttl".into(), "5s".into()];
    let stack = tokio::select! {
        stack = Stack::launch(stack_options) => stack?,
        // Dropping the half-started stack kills what it started and removes its work dir.
        _ = wait_for_stop_signal() => return Ok(()),
    };
    let bring_up = started.elapsed();
    println!(
        "    stack up in {:.1} s: apiserver {}  etcd {}  plugin {}  mock KMS http://127.0.0.1:{}",
        bring_up.as_secs_f64(),
        stack.apiserver_url(0)?,
        stack.etcd_url(),
        stack.plugin_endpoint("plugin-0").unwrap_or_default(),
        stack.mock_kms().map(|k| k.port()).unwrap_or_default()
    );
    let env_file = options.state_dir.join("lab.env");
    write_env_file(&env_file, &stack, &binaries)?;

    let (result, interrupted) = tokio::select! {
        result = demo(&stack, &binaries, total) => (result, false),
        _ = wait_for_stop_signal() => (Ok(()), true),
    };
    if let Err(error) = &result {
        let kept = stack.shutdown(true).await;
        let _ = std::fs::remove_file(&env_file);
        eprintln!("error: {error}\nlogs of every component: {}", kept.map(|p| p.display().to_string()).unwrap_or_default());
        return result;
    }

    if interrupted {
        println!("\n==> interrupted: stopping the lab");
    } else if options.demo_only {
        println!("\n==> demo finished; stopping the lab (--demo-only). Bring-up took {:.1} s.", bring_up.as_secs_f64());
    } else {
        println!(
            "\n==> the lab is up (bring-up took {:.1} s). In another shell:\n    set -a; source {}; set +a\n    \"$KUBECTL\" get secrets\n    \"$ETCDCTL\" get /registry/secrets/default/demo-secret --print-value-only | hexdump -C | head\n    cargo run -q -p kms-lab -- decode --plugin unix://$KMS_PLUGIN_SOCKET --etcd-key /registry/secrets/default/demo-secret <(\"$ETCDCTL\" get /registry/secrets/default/demo-secret --print-value-only)\nPress Ctrl-C to stop everything.",
            bring_up.as_secs_f64(),
            env_file.display()
        );
        wait_for_stop_signal().await;
        println!("\n==> stopping the lab");
    }
    stack.shutdown(false).await;
    let _ = std::fs::remove_file(&env_file);
    Ok(())
}

async fn wait_for_stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

async fn demo(stack: &Stack, binaries: &Binaries, total: usize) -> Result<(), LabError> {
    let kubeconfig = stack.kubeconfig_path(0);
    let kubeconfig = kubeconfig.to_string_lossy();
    let kube_env = [("KUBECONFIG", kubeconfig.as_ref())];
    let etcd_url = stack.etcd_url();
    let etcdctl = |key: &str| run(&binaries.etcdctl.path, &["--endpoints", &etcd_url, "get", key, "--print-value-only"], &[]);

    step(3, total, "kubectl creates a Secret; etcd holds only ciphertext");
    println!("    $ kubectl create secret generic demo-secret --from-literal=password=s3cr3t-from-the-lab");
    run(&binaries.kubectl.path, &["create", "secret", "generic", "demo-secret", "--from-literal=password=s3cr3t-from-the-lab"], &kube_env)?;
    println!("    $ etcdctl get /registry/secrets/default/demo-secret --print-value-only | hexdump -C");
    let raw = etcdctl("/registry/secrets/default/demo-secret")?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw).to_vec();
    print!("{}", indent(&hexdump(&raw, 160)));
    if !raw.starts_with(b"k8s:enc:kms:v2:lab-kms:") {
        return Err(LabError::Demo("the Secret in etcd does not start with k8s:enc:kms:v2:lab-kms:".into()));
    }
    if raw.windows(b"s3cr3t-from-the-lab".len()).any(|w| w == b"s3cr3t-from-the-lab") {
        return Err(LabError::Demo("the plaintext password is visible in etcd".into()));
    }
    let first_key_id = stored_key_id(stack, "demo-secret").await?;
    println!("    prefix k8s:enc:kms:v2:lab-kms: then a protobuf EncryptedObject; key id {first_key_id}; the password is nowhere in it");

    step(4, total, "kubectl reads the Secret back: the apiserver asks the plugin to unwrap the DEK");
    println!("    $ kubectl get secret demo-secret -o jsonpath='{{.data.password}}' | base64 -d");
    let encoded = run(&binaries.kubectl.path, &["get", "secret", "demo-secret", "-o", "jsonpath={.data.password}"], &kube_env)?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, String::from_utf8_lossy(&encoded).trim())
        .map_err(|e| LabError::Demo(format!("kubectl printed no base64: {e}")))?;
    println!("    {}", String::from_utf8_lossy(&decoded));

    step(
        5,
        total,
        "rotating the KEK in the mock KMS: the plugin's Status reports the new key version, the apiserver sees it at its next Status poll",
    );
    let kms = stack.mock_kms().ok_or_else(|| LabError::Demo("the lab runs no mock KMS".into()))?;
    println!("    $ curl -X POST http://127.0.0.1:{}/admin/keys/{}/rotate", kms.port(), kms.options.key_id);
    kms.rotate_key().await?;
    let plugin = kms_wire::PluginClient::connect(&stack.plugin_endpoint("plugin-0").unwrap_or_default(), Duration::from_secs(5))
        .await
        .map_err(|e| LabError::Demo(e.to_string()))?;
    let started = Instant::now();
    let new_key_id = loop {
        let status = plugin
            .v2()
            .status(kms_wire::proto::v2::StatusRequest {})
            .await
            .map_err(|e| LabError::Demo(format!("plugin Status failed: {e}")))?
            .into_inner();
        if status.key_id != first_key_id {
            break status.key_id;
        }
        if started.elapsed() > ROTATION_DEADLINE {
            return Err(LabError::Demo("the plugin's Status still reports the old key id".into()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("    plugin Status now reports key id {new_key_id}; waiting for the apiserver's next Status poll…");
    // The apiserver exports the sha256 of every key id it saw in Status.
    let hash = format!("sha256:{}", hex::encode(<sha2::Sha256 as sha2::Digest>::digest(new_key_id.as_bytes())));
    loop {
        let (_, metrics) = stack.apiserver_get(0, "/metrics").await?;
        if metrics
            .lines()
            .any(|l| l.starts_with("apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds") && l.contains(&hash))
        {
            break;
        }
        if started.elapsed() > ROTATION_DEADLINE {
            return Err(LabError::Demo(format!("the apiserver did not see key id {new_key_id} within {} s", ROTATION_DEADLINE.as_secs())));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("    the apiserver saw the new key id {} s after the rotation", started.elapsed().as_secs());
    run(&binaries.kubectl.path, &["create", "secret", "generic", "demo-secret-2", "--from-literal=password=after-rotation"], &kube_env)?;
    let rotated_key_id = stored_key_id(stack, "demo-secret-2").await?;
    println!("    $ kubectl create secret generic demo-secret-2 …  → stored under key id {rotated_key_id}");
    if rotated_key_id != new_key_id {
        return Err(LabError::Demo(format!("demo-secret-2 carries key id {rotated_key_id}, expected {new_key_id}")));
    }
    let old = run(&binaries.kubectl.path, &["get", "secret", "demo-secret", "-o", "jsonpath={.data.password}"], &kube_env)?;
    let old = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, String::from_utf8_lossy(&old).trim()).unwrap_or_default();
    println!("    demo-secret (key id {first_key_id}) still reads: {}", String::from_utf8_lossy(&old));

    step(6, total, "what the apiserver reports, and the mock KMS audit log of the calls it caused");
    let (status, body) = stack.apiserver_get(0, "/healthz/kms-providers").await?;
    println!("    GET /healthz/kms-providers -> {status} {body}");
    let (_, metrics) = stack.apiserver_get(0, "/metrics").await?;
    for line in metrics.lines().filter(|l| {
        l.starts_with("apiserver_envelope_encryption_key_id_hash_total")
            || l.starts_with("apiserver_envelope_encryption_kms_operations_latency_seconds_count")
    }) {
        println!("    {line}");
    }
    let audit = kms.audit(0).await?;
    let count = |action: &str| audit.iter().filter(|r| r["action"] == action).count();
    println!("    mock KMS audit log: {} calls ({} Encrypt, {} Decrypt); the last ones:", audit.len(), count("Encrypt"), count("Decrypt"));
    for record in audit.iter().rev().take(4).rev() {
        println!("    {record}");
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}
