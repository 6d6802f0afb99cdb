//! `kms-lab decode`: explain a raw etcd value (provider, key id, annotations) and, given the
//! key side, print the object it holds.

use std::fmt::Write as _;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use kms_wire::decode::{self, DecodeError, KeyRing, StaticKey};
use kms_wire::envelope::{Envelope, EnvelopeError};
use kms_wire::{ClientError, PluginClient};
use serde::Serialize;
use zeroize::Zeroizing;

/// How the raw value is encoded in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputEncoding {
    /// The bytes as etcd holds them (`etcdctl get --print-value-only`).
    Raw,
    /// Hexadecimal (whitespace ignored).
    Hex,
    /// Base64 (as `etcdctl get -w json` prints values).
    Base64,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// For people.
    Text,
    /// One JSON object.
    Json,
}

/// `kms-lab decode` arguments.
#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// The raw etcd value: a file, or `-` for stdin.
    #[arg(default_value = "-")]
    pub input: PathBuf,
    /// How the input is encoded.
    #[arg(long, value_enum, default_value_t = InputEncoding::Raw)]
    pub input_encoding: InputEncoding,
    /// The etcd key the value was stored under (authenticated data of AES-GCM), e.g. /registry/secrets/default/db.
    #[arg(long, value_name = "KEY")]
    pub etcd_key: Option<String>,
    /// A KMS plugin socket to unwrap the DEK with, e.g. unix:///run/kms.sock.
    #[arg(long, value_name = "ENDPOINT")]
    pub plugin: Option<String>,
    /// A static key for aescbc/aesgcm/secretbox values, as NAME=BASE64 (repeatable).
    #[arg(long = "key", value_name = "NAME=BASE64")]
    pub keys: Vec<String>,
    /// Deadline of each plugin call.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Why `decode` failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeCommandError {
    /// The input could not be read.
    #[error("cannot read `{path}`: {source}")]
    Read {
        /// The input path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The input is not in the declared encoding.
    #[error("the input is not valid {0}: check --input-encoding")]
    Encoding(&'static str),
    /// A `--key` is not NAME=BASE64.
    #[error("--key `{0}` is not NAME=BASE64 (the name and secret of an aescbc/aesgcm/secretbox key)")]
    BadKey(String),
    /// The value is malformed.
    #[error("the value is not a valid kube-apiserver envelope: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The plugin could not be reached.
    #[error(transparent)]
    Plugin(#[from] ClientError),
    /// Opening needs the etcd key.
    #[error("opening this value needs the etcd key it was stored under: pass --etcd-key /registry/<resource>/<namespace>/<name>")]
    NeedEtcdKey,
    /// The value did not open.
    #[error("the value did not open: {0}")]
    Open(#[from] DecodeError),
    /// The input holds nothing.
    #[error(
        "the input is empty (0 bytes): did etcdctl find the key? (`etcdctl get KEY --print-value-only` prints nothing for a missing key)"
    )]
    Empty,
    /// The input is larger than any value etcd accepts.
    #[error(
        "the input is larger than etcd's request limit ({} bytes, `--max-request-bytes` default): it is not a value etcd stored",
        ETCD_MAX_REQUEST_BYTES
    )]
    TooLarge,
    /// No encryption prefix, and not a Kubernetes object either.
    #[error(
        "the value has no encryption prefix (`k8s:enc:…`) and is not a Kubernetes object (neither protobuf `k8s\\x00…` nor JSON `{{…`): it is not a value kube-apiserver stored ({0} bytes)"
    )]
    NotAnObject(usize),
}

/// etcd's default `--max-request-bytes` (1.5 MiB): no stored value is larger.
pub const ETCD_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// The most characters of an opened object `decode` prints; the rest is counted, not shown.
pub const MAX_PLAINTEXT_CHARS: usize = 64 * 1024;

/// What `decode` found, as printed.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Provider kind (`identity`, `aescbc`, …, `kms-v2`).
    pub provider: String,
    /// Key or provider name from the prefix.
    pub name: Option<String>,
    /// KMS v2 key id.
    pub key_id: Option<String>,
    /// KMS v2 DEK source type.
    pub dek_source_type: Option<String>,
    /// KMS v2 annotations (values as escaped text).
    pub annotations: Vec<(String, String)>,
    /// Length of the wrapped DEK or seed, for KMS values.
    pub encrypted_dek_bytes: Option<usize>,
    /// Length of the sealed data.
    pub sealed_bytes: usize,
    /// The object, as escaped text, when it could be opened.
    pub plaintext: Option<String>,
    /// Why it was not opened, when keys were given but did not work.
    pub not_opened: Option<String>,
}

fn read_input(args: &DecodeArgs) -> Result<Vec<u8>, DecodeCommandError> {
    let mut raw = Vec::new();
    // Hex and base64 text is at most about twice the value: read no more than that could need.
    let cap = (ETCD_MAX_REQUEST_BYTES as u64) * 2 + 4096;
    let read = if args.input.as_os_str() == "-" {
        std::io::stdin().take(cap + 1).read_to_end(&mut raw)
    } else {
        std::fs::File::open(&args.input).and_then(|f| f.take(cap + 1).read_to_end(&mut raw))
    };
    read.map_err(|source| DecodeCommandError::Read { path: args.input.clone(), source })?;
    if raw.len() as u64 > cap {
        return Err(DecodeCommandError::TooLarge);
    }
    let value = decode_input(args, raw)?;
    if value.is_empty() {
        return Err(DecodeCommandError::Empty);
    }
    if value.len() > ETCD_MAX_REQUEST_BYTES {
        return Err(DecodeCommandError::TooLarge);
    }
    Ok(value)
}

fn decode_input(args: &DecodeArgs, raw: Vec<u8>) -> Result<Vec<u8>, DecodeCommandError> {
    match args.input_encoding {
        InputEncoding::Raw => Ok(raw),
        InputEncoding::Hex => {
            let text: String = String::from_utf8_lossy(&raw).split_whitespace().collect();
            hex::decode(text).map_err(|_| DecodeCommandError::Encoding("hex"))
        }
        InputEncoding::Base64 => {
            let text: String = String::from_utf8_lossy(&raw).split_whitespace().collect();
            base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| DecodeCommandError::Encoding("base64"))
        }
    }
}

fn parse_keys(keys: &[String]) -> Result<Vec<StaticKey>, DecodeCommandError> {
    keys.iter()
        .map(|spec| {
            let (name, secret) = spec.split_once('=').ok_or_else(|| DecodeCommandError::BadKey(redact(spec)))?;
            let secret = base64::engine::general_purpose::STANDARD.decode(secret).map_err(|_| DecodeCommandError::BadKey(redact(spec)))?;
            Ok(StaticKey { name: name.to_owned(), secret: Zeroizing::new(secret) })
        })
        .collect()
}

/// Shows a `--key` argument without its secret.
fn redact(spec: &str) -> String {
    match spec.split_once('=') {
        Some((name, _)) => format!("{name}=<redacted>"),
        None => "<redacted>".to_owned(),
    }
}

/// Describes `envelope` without opening it.
pub fn describe(envelope: &Envelope) -> Report {
    let mut report = Report {
        provider: envelope.kind().to_string(),
        name: envelope.name().map(str::to_owned),
        key_id: None,
        dek_source_type: None,
        annotations: Vec::new(),
        encrypted_dek_bytes: None,
        sealed_bytes: 0,
        plaintext: None,
        not_opened: None,
    };
    match envelope {
        Envelope::Identity { data } => report.sealed_bytes = data.len(),
        Envelope::Static { sealed, .. } => report.sealed_bytes = sealed.len(),
        Envelope::KmsV1 { encrypted_dek, sealed, .. } => {
            report.encrypted_dek_bytes = Some(encrypted_dek.len());
            report.sealed_bytes = sealed.len();
        }
        Envelope::KmsV2 { object, .. } => {
            report.key_id = Some(object.key_id.clone());
            report.dek_source_type = Some(object.encrypted_dek_source_type().as_str_name().to_owned());
            report.annotations = object.annotations.iter().map(|(k, v)| (k.clone(), v.escape_ascii().to_string())).collect();
            report.encrypted_dek_bytes = Some(object.encrypted_dek_source.len());
            report.sealed_bytes = object.encrypted_data.len();
        }
    }
    report
}

/// Runs `kms-lab decode`: returns the report, opened when keys (or identity) allow.
pub async fn run(args: &DecodeArgs) -> Result<Report, DecodeCommandError> {
    let raw = read_input(args)?;
    let envelope = Envelope::parse(&raw)?;
    if let Envelope::Identity { data } = &envelope
        && !(data.starts_with(b"k8s\x00") || data.trim_ascii_start().starts_with(b"{"))
    {
        return Err(DecodeCommandError::NotAnObject(data.len()));
    }
    let mut report = describe(&envelope);
    let keys = KeyRing {
        plugin: match &args.plugin {
            Some(endpoint) => Some(PluginClient::connect(endpoint, args.timeout).await?),
            None => None,
        },
        static_keys: parse_keys(&args.keys)?,
    };
    let can_open = matches!(envelope, Envelope::Identity { .. }) || keys.plugin.is_some() || !keys.static_keys.is_empty();
    if can_open {
        let etcd_key = match (&envelope, &args.etcd_key) {
            (_, Some(key)) => key.clone(),
            (Envelope::Identity { .. }, None) => String::new(),
            _ => return Err(DecodeCommandError::NeedEtcdKey),
        };
        let opened = decode::open(&envelope, etcd_key.as_bytes(), &keys).await?;
        let mut text = opened.escape_ascii().to_string();
        if let Some((end, _)) = text.char_indices().nth(MAX_PLAINTEXT_CHARS) {
            let rest = text.len() - end;
            text.truncate(end);
            text.push_str(&format!("… ({rest} more characters not shown)"));
        }
        report.plaintext = Some(text);
    }
    Ok(report)
}

/// Renders a report for people.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "provider:        {}", report.provider);
    // Names, key ids and annotation keys come from the value: control characters are shown
    // escaped, never sent to the terminal.
    if let Some(name) = &report.name {
        let _ = writeln!(out, "name:            {}", name.escape_debug());
    }
    if let Some(key_id) = &report.key_id {
        let _ = writeln!(out, "key id:          {}", key_id.escape_debug());
    }
    if let Some(kind) = &report.dek_source_type {
        let _ = writeln!(out, "DEK source type: {kind}");
    }
    for (key, value) in &report.annotations {
        let _ = writeln!(out, "annotation:      {} = {value}", key.escape_debug());
    }
    if let Some(len) = report.encrypted_dek_bytes {
        let _ = writeln!(out, "wrapped DEK:     {len} bytes");
    }
    let _ = writeln!(out, "data:            {} bytes", report.sealed_bytes);
    match &report.plaintext {
        Some(plaintext) => {
            let _ = writeln!(out, "plaintext:       {plaintext}");
        }
        None if report.provider != "identity" => {
            let _ = writeln!(
                out,
                "plaintext:       (not opened: give --plugin for KMS values, --key NAME=BASE64 for static keys, and --etcd-key)"
            );
        }
        None => {}
    }
    out
}
