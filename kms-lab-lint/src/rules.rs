//! The checks. Each pushes [`Finding`]s with a stable id; the ids are listed in
//! [`crate::FINDING_IDS`] and each has a fixture under `kms-lab-lint/tests/fixtures/`.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::duration::{parse_go_duration, show};
use crate::flags::ApiserverFlags;
use crate::model::{RawConfig, RawKeys, RawKms, RawProvider};
use crate::report::{Finding, Severity};

/// The apiserver's default KMS call timeout.
pub const DEFAULT_KMS_TIMEOUT: Duration = Duration::from_secs(3);
/// The apiserver's default KMS v1 DEK cache size.
pub const DEFAULT_CACHESIZE: i64 = 1000;
/// A timeout more than this many times the measured p99 is "far above" it.
pub const FAR_ABOVE_FACTOR: u32 = 10;

/// What the linter knows besides the file.
#[derive(Debug, Clone, Default)]
pub struct LintContext {
    /// The apiserver flags (`--apiserver-flags` / `--feature-gates`); `None` when neither was given.
    pub flags: Option<ApiserverFlags>,
    /// How many Secrets the cluster holds (`--secrets`).
    pub secrets: Option<u64>,
    /// The measured p99 latency of one KMS plugin call (`--kms-p99`).
    pub kms_p99: Option<Duration>,
}

struct Sink<'a> {
    file: &'a str,
    findings: Vec<Finding>,
}

impl Sink<'_> {
    fn push(&mut self, id: &'static str, severity: Severity, path: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) {
        self.findings.push(Finding { id, severity, file: self.file.to_owned(), path: path.into(), reason: reason.into(), fix: fix.into() });
    }

    fn unknown(&mut self, path: &str, unknown: &BTreeMap<String, serde_yaml::Value>, known: &str) {
        for key in unknown.keys() {
            let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            self.push(
                "unknown-field",
                Severity::Warning,
                at,
                format!("`{key}` is not a field of an EncryptionConfiguration here; the apiserver ignores it or refuses the file, and whatever it was meant to do does not happen"),
                format!("remove it or correct the spelling (known here: {known})"),
            );
        }
    }
}

/// Lints one configuration.
pub fn lint_config(config: &RawConfig, file: &str, context: &LintContext) -> Vec<Finding> {
    let mut sink = Sink { file, findings: Vec::new() };
    header(config, &mut sink);
    let groups = config.resources.as_deref().unwrap_or_default();
    let mut seen_resources: BTreeMap<String, String> = BTreeMap::new();
    let mut kms_names: Vec<(String, String, &RawKms)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let at = format!("resources[{g}]");
        sink.unknown(&at, &group.unknown, "`resources`, `providers`");
        let names = group.resources.as_deref().unwrap_or_default();
        if names.is_empty() {
            sink.push(
                "no-resources",
                Severity::Error,
                format!("{at}.resources"),
                "a resource group without `resources` is refused by the apiserver",
                "list the resources, e.g. `resources: [secrets]`",
            );
        }
        for (r, name) in names.iter().enumerate() {
            let here = format!("{at}.resources[{r}]");
            if let Some(first) = seen_resources.get(name) {
                sink.push(
                    "duplicate-resource",
                    Severity::Warning,
                    here.clone(),
                    format!("`{name}` is listed again (first at {first}); only one list of providers applies to it, so the other is dead configuration that drifts unnoticed"),
                    format!("keep `{name}` in one resource group"),
                );
            } else {
                seen_resources.insert(name.clone(), here);
            }
        }
        let providers = group.providers.as_deref().unwrap_or_default();
        if providers.is_empty() {
            sink.push(
                "no-providers",
                Severity::Error,
                format!("{at}.providers"),
                "a resource group without providers is refused by the apiserver",
                "add providers: the one that writes first, e.g. `- kms: {…}` then `- identity: {}`",
            );
        }
        let what = names.join(", ");
        for (p, provider) in providers.iter().enumerate() {
            let here = format!("{at}.providers[{p}]");
            check_provider(provider, &here, p, &what, context, &mut sink);
            if let Some(kms) = &provider.kms
                && let Some(name) = kms.name.as_deref().filter(|n| !n.is_empty())
            {
                kms_names.push((name.to_owned(), format!("{here}.kms.name"), kms));
            }
        }
    }
    duplicate_names(&kms_names, context, &mut sink);
    reload(context, &mut sink);
    let mut findings = sink.findings;
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    findings
}

fn header(config: &RawConfig, sink: &mut Sink) {
    sink.unknown("", &config.unknown, "`apiVersion`, `kind`, `resources`");
    match config.api_version.as_deref() {
        Some("apiserver.config.k8s.io/v1") => {}
        other => sink.push(
            "wrong-api-version",
            Severity::Error,
            "apiVersion",
            format!(
                "apiVersion is `{}`; kube-apiserver reads only `apiserver.config.k8s.io/v1` here and refuses to start",
                other.unwrap_or("")
            ),
            "set `apiVersion: apiserver.config.k8s.io/v1`",
        ),
    }
    match config.kind.as_deref() {
        Some("EncryptionConfiguration") => {}
        other => sink.push(
            "wrong-kind",
            Severity::Error,
            "kind",
            format!("kind is `{}`; the apiserver expects `EncryptionConfiguration` and refuses the file", other.unwrap_or("")),
            "set `kind: EncryptionConfiguration`",
        ),
    }
    if config.resources.as_deref().unwrap_or_default().is_empty() {
        sink.push(
            "no-resources",
            Severity::Error,
            "resources",
            "no resource groups: the apiserver refuses the file (at least one is required)",
            "add `resources: [{resources: [secrets], providers: [...]}]`",
        );
    }
}

fn check_provider(provider: &RawProvider, at: &str, position: usize, resources: &str, context: &LintContext, sink: &mut Sink) {
    sink.unknown(at, &provider.unknown, "`kms`, `aescbc`, `aesgcm`, `secretbox`, `identity`");
    let kinds = provider.kinds();
    if kinds.len() != 1 {
        sink.push(
            "provider-not-one",
            Severity::Error,
            at,
            format!(
                "a provider entry must set exactly one provider type; this one sets {}",
                if kinds.is_empty() { "none".to_owned() } else { kinds.join(" and ") }
            ),
            "split it into one list item per provider (`- kms: {…}`, `- identity: {}`)",
        );
    }
    if position == 0 && provider.identity.is_some() && kinds.len() == 1 {
        sink.push(
            "identity-first",
            Severity::Error,
            at,
            format!("`identity` is the first provider for {resources}: the first provider writes, so every new or updated object is stored in plaintext in etcd (the providers after it only read)"),
            "put the encrypting provider first and `identity: {}` last; keep identity first only while deliberately decrypting everything (then rewrite all objects and drop the old provider)",
        );
    }
    if let Some(keys) = &provider.aescbc {
        sink.push(
            "aescbc-not-recommended",
            Severity::Info,
            format!("{at}.aescbc"),
            "aescbc is not recommended upstream: AES-CBC with PKCS#7 padding is open to padding-oracle attacks, and static keys live on disk beside the apiserver",
            "prefer a `kms` v2 provider (or aesgcm with frequent key rotation); keep aescbc only as a read provider during migration",
        );
        static_keys(keys, &format!("{at}.aescbc"), &[16, 24, 32], sink);
    }
    if let Some(keys) = &provider.aesgcm {
        static_keys(keys, &format!("{at}.aesgcm"), &[16, 24, 32], sink);
    }
    if let Some(keys) = &provider.secretbox {
        static_keys(keys, &format!("{at}.secretbox"), &[32], sink);
    }
    if let Some(kms) = &provider.kms {
        check_kms(kms, &format!("{at}.kms"), context, sink);
    }
}

fn static_keys(keys: &RawKeys, at: &str, sizes: &[usize], sink: &mut Sink) {
    sink.unknown(at, &keys.unknown, "`keys`");
    let list = keys.keys.as_deref().unwrap_or_default();
    if list.is_empty() {
        sink.push(
            "static-key-invalid",
            Severity::Error,
            format!("{at}.keys"),
            "a static-key provider without keys is refused by the apiserver",
            "add `keys: [{name: key1, secret: <base64 of random bytes>}]`",
        );
    }
    for (k, key) in list.iter().enumerate() {
        let here = format!("{at}.keys[{k}]");
        sink.unknown(&here, &key.unknown, "`name`, `secret`");
        let decoded = key.secret.as_deref().and_then(|s| base64::engine::general_purpose::STANDARD.decode(s.trim()).ok());
        let problem = match (&key.name, &decoded) {
            (None, _) => Some("has no name".to_owned()),
            (_, None) => Some("has a secret that is missing or not base64".to_owned()),
            (_, Some(bytes)) if !sizes.contains(&bytes.len()) => Some(format!("has a {}-byte secret", bytes.len())),
            _ => None,
        };
        if let Some(problem) = problem {
            let sizes: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
            sink.push(
                "static-key-invalid",
                Severity::Error,
                here,
                format!("the key {problem}; the apiserver refuses it"),
                format!("give every key a name and a base64 secret of {} bytes (`head -c 32 /dev/urandom | base64`)", sizes.join(" or ")),
            );
        }
    }
}

fn check_kms(kms: &RawKms, at: &str, context: &LintContext, sink: &mut Sink) {
    sink.unknown(at, &kms.unknown, "`apiVersion`, `name`, `endpoint`, `cachesize`, `timeout`");
    let name = kms.name.as_deref().unwrap_or("");
    let version = kms.effective_api_version();
    if name.is_empty() {
        sink.push(
            "kms-missing-name",
            Severity::Error,
            format!("{at}.name"),
            "a kms provider needs a name: it is written into every stored value (`k8s:enc:kms:<version>:<name>:`)",
            "set `name:` to a stable, unique name; never rename it while data uses it",
        );
    }
    match version {
        "v1" => kms_v1(kms, at, context, sink),
        "v2" => {
            if let Some(size) = kms.cachesize {
                sink.push(
                    "cachesize-on-v2",
                    Severity::Error,
                    format!("{at}.cachesize"),
                    format!("`cachesize: {size}` on a KMS v2 provider: v2 has no DEK cache size (it reuses one DEK seed for all writes and caches decrypted seeds for 24 h), and the apiserver's validation refuses it (\"cachesize is not supported in v2\")"),
                    "remove `cachesize` from v2 providers",
                );
            }
        }
        other => sink.push(
            "kms-api-version-invalid",
            Severity::Error,
            format!("{at}.apiVersion"),
            format!("kms apiVersion `{other}` is not known; the apiserver accepts `v1` and `v2`"),
            "set `apiVersion: v2`",
        ),
    }
    match kms.endpoint.as_deref() {
        Some(endpoint) if endpoint.starts_with("unix://") && endpoint.len() > "unix://".len() => {}
        other => sink.push(
            "kms-endpoint-not-unix",
            Severity::Error,
            format!("{at}.endpoint"),
            format!(
                "endpoint is `{}`: kube-apiserver talks to a KMS plugin only over a Unix domain socket given as `unix:///path`",
                other.unwrap_or("")
            ),
            "set `endpoint: unix:///var/run/kmsplugin/socket.sock` (the plugin's socket path, absolute)",
        ),
    }
    timeout(kms, at, context, sink);
}

fn kms_v1(kms: &RawKms, at: &str, context: &LintContext, sink: &mut Sink) {
    let implicit = if kms.api_version.is_none() { " (no `apiVersion` means v1)" } else { "" };
    match &context.flags {
        Some(flags) if flags.gate("KMSv1") => sink.push(
            "kms-v1-deprecated",
            Severity::Info,
            format!("{at}.apiVersion"),
            format!("KMS v1{implicit} is deprecated since 1.28 and only runs behind the `KMSv1` feature gate, which is set; it calls the plugin on every write"),
            "migrate to `apiVersion: v2` (add a v2 provider first, rewrite all Secrets, then drop v1)",
        ),
        Some(_) => sink.push(
            "kms-v1-without-gate",
            Severity::Error,
            format!("{at}.apiVersion"),
            format!("a KMS v1 provider{implicit} without `--feature-gates=KMSv1=true`: v1 is deprecated and disabled by default since 1.29, so the apiserver refuses to start"),
            "use `apiVersion: v2`, or (to keep v1 during a migration) add `--feature-gates=KMSv1=true` to kube-apiserver",
        ),
        None => sink.push(
            "kms-v1-without-gate",
            Severity::Warning,
            format!("{at}.apiVersion"),
            format!("a KMS v1 provider{implicit}: v1 is disabled by default since 1.29 and needs `--feature-gates=KMSv1=true` (no flags were given to check)"),
            "use `apiVersion: v2`, or pass the apiserver's flags (`--apiserver-flags FILE`) to check the gate",
        ),
    }
    let size = kms.cachesize.unwrap_or(DEFAULT_CACHESIZE);
    let shown = if kms.cachesize.is_none() { format!("{size} (the default)") } else { size.to_string() };
    if size == 0 {
        sink.push(
            "cachesize-zero",
            Severity::Error,
            format!("{at}.cachesize"),
            "`cachesize: 0` is refused by the apiserver (it must be positive, or negative to disable the cache)",
            "remove it (default 1000) or set it above the number of Secrets",
        );
    } else if size < 0 {
        sink.push(
            "cachesize-disabled",
            Severity::Warning,
            format!("{at}.cachesize"),
            "a negative cachesize disables the DEK cache: every read of every object calls the plugin's Decrypt, so a list of N Secrets is N KMS calls",
            "set cachesize above the number of Secrets (see `kms-lab tune`)",
        );
    } else if let Some(secrets) = context.secrets
        && (size as u64) < secrets
    {
        sink.push(
            "cachesize-below-secrets",
            Severity::Warning,
            format!("{at}.cachesize"),
            format!("cachesize {shown} is below the {secrets} Secrets: the DEK cache is an LRU, and each v1 object has its own DEK, so a list of all Secrets evicts every entry before it is reused — every read misses and calls the KMS (lists slow down, throttled KMSs answer 429)"),
            format!("set cachesize to at least {} (Secrets + headroom; more if Secrets are rewritten often, each write adds a DEK: see `kms-lab tune`), or move to KMS v2", secrets + secrets / 5 + 1),
        );
    }
}

fn timeout(kms: &RawKms, at: &str, context: &LintContext, sink: &mut Sink) {
    let (timeout, shown) = match &kms.timeout {
        None => (DEFAULT_KMS_TIMEOUT, "3s (the default)".to_owned()),
        Some(text) => match parse_go_duration(text) {
            Some(d) if !d.is_zero() => (d, show(d)),
            _ => {
                sink.push(
                    "timeout-invalid",
                    Severity::Error,
                    format!("{at}.timeout"),
                    format!("timeout `{text}` is not a positive Go duration; the apiserver refuses it"),
                    "write it like `3s` or `500ms`",
                );
                return;
            }
        },
    };
    if let Some(p99) = context.kms_p99 {
        if timeout < p99 {
            sink.push(
                "timeout-below-p99",
                Severity::Error,
                format!("{at}.timeout"),
                format!("timeout {shown} is below the measured KMS p99 of {}: more than 1 % of plugin calls time out, so writes fail and health checks flap", show(p99)),
                format!("raise it to at least {} (2 × p99; see `kms-lab tune`)", show(p99 * 2)),
            );
        } else if timeout > p99 * FAR_ABOVE_FACTOR && timeout > DEFAULT_KMS_TIMEOUT {
            sink.push(
                "timeout-far-above-p99",
                Severity::Warning,
                format!("{at}.timeout"),
                format!(
                    "timeout {shown} is more than {FAR_ABOVE_FACTOR}× the measured KMS p99 of {}: when the KMS hangs, every write waits the full timeout and the health check reports the failure late",
                    show(p99)
                ),
                format!("lower it towards {}–{} (2–4 × p99, see `kms-lab tune`)", show(p99 * 2), show(p99 * 4)),
            );
        }
    }
    let request_timeout = context.flags.as_ref().map(ApiserverFlags::request_timeout).unwrap_or(crate::flags::DEFAULT_REQUEST_TIMEOUT);
    if timeout >= request_timeout {
        sink.push(
            "timeout-exceeds-request-timeout",
            Severity::Error,
            format!("{at}.timeout"),
            format!("timeout {shown} is not below the apiserver's request timeout of {}: a request gives up before its KMS call does, so a slow KMS shows as client timeouts instead of errors, and reloads keep old transformers for 2 × the timeouts", show(request_timeout)),
            "keep KMS timeouts to seconds (default 3s)",
        );
    }
}

fn duplicate_names(names: &[(String, String, &RawKms)], context: &LintContext, sink: &mut Sink) {
    let reload = context.flags.as_ref().is_some_and(|f| f.automatic_reload);
    for (i, (name, at, kms)) in names.iter().enumerate() {
        let Some((_, first_at, first)) = names[..i].iter().find(|(other, _, _)| other == name) else { continue };
        let v1_pair = kms.effective_api_version() == "v1" && first.effective_api_version() == "v1";
        let severity = if !v1_pair || reload {
            Severity::Error
        } else if kms.endpoint == first.endpoint {
            continue;
        } else {
            Severity::Warning
        };
        let why = if severity == Severity::Error {
            "the apiserver refuses duplicate KMS provider names (v2 always, v1 with automatic reload)"
        } else {
            "two v1 providers with one name but different endpoints write the same `k8s:enc:kms:v1:<name>:` prefix, so a value cannot say which plugin wrapped its DEK"
        };
        sink.push(
            "duplicate-kms-name",
            severity,
            at.clone(),
            format!(
                "kms provider name `{name}` is used again (first at {first_at}): the name goes into every stored value's prefix; {why}"
            ),
            "give every kms provider its own name (and never rename one that has data)",
        );
    }
}

fn reload(context: &LintContext, sink: &mut Sink) {
    if let Some(flags) = &context.flags
        && flags.from_file
        && !flags.automatic_reload
    {
        sink.push(
            "no-automatic-reload",
            Severity::Warning,
            "(apiserver flags)",
            "`--encryption-provider-config-automatic-reload` is not set: a changed EncryptionConfiguration (key rotation, a new provider) takes effect only after an apiserver restart, and the health check is per provider (`/healthz/kms-provider-<i>`)",
            "add `--encryption-provider-config-automatic-reload=true` to kube-apiserver: a changed file then takes effect at the apiserver's next poll (about a minute), counted in apiserver_encryption_config_controller_automatic_reloads_total{status}",
        );
    }
}

/// What an HA peer must agree on, per provider: type, name, version, endpoint, timeout,
/// cachesize, and key names with a hash of each secret (never the secret).
fn fingerprint(provider: &RawProvider) -> Vec<(String, String)> {
    let mut out = vec![("type".to_owned(), provider.kinds().join("+"))];
    if let Some(kms) = &provider.kms {
        out.push(("name".into(), kms.name.clone().unwrap_or_default()));
        out.push(("apiVersion".into(), kms.effective_api_version().to_owned()));
        out.push(("endpoint".into(), kms.endpoint.clone().unwrap_or_default()));
        out.push(("timeout".into(), kms.timeout.clone().unwrap_or_else(|| "3s".into())));
        out.push(("cachesize".into(), kms.cachesize.map(|c| c.to_string()).unwrap_or_default()));
    }
    for keys in [&provider.aescbc, &provider.aesgcm, &provider.secretbox].into_iter().flatten() {
        for (k, key) in keys.keys.iter().flatten().enumerate() {
            let digest = Sha256::digest(key.secret.as_deref().unwrap_or_default().trim().as_bytes());
            let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
            out.push((format!("keys[{k}]"), format!("{} (secret sha256 {short}…)", key.name.as_deref().unwrap_or(""))));
        }
    }
    out
}

/// Compares two HA peers' configurations by resource and provider position.
pub fn compare(main: &RawConfig, main_file: &str, other: &RawConfig, other_file: &str) -> Vec<Finding> {
    let mut sink = Sink { file: main_file, findings: Vec::new() };
    let mut differ = |at: String, what: String| {
        sink.push(
            "ha-mismatch",
            Severity::Error,
            at,
            format!("differs from `{other_file}`: {what}. Apiservers of one cluster must share one configuration: during the drift one writes what the other cannot read (or writes plaintext), and a provider name or order change strands data"),
            format!("make the files identical (roll the change to every control-plane node, readers first, then switch the writer on all of them); compare with `diff {main_file} {other_file}`"),
        );
    };
    let groups = |c: &RawConfig| -> BTreeMap<String, (usize, Vec<RawProvider>)> {
        let mut map = BTreeMap::new();
        for (g, group) in c.resources.iter().flatten().enumerate() {
            for name in group.resources.iter().flatten() {
                map.entry(name.clone()).or_insert((g, group.providers.clone().unwrap_or_default()));
            }
        }
        map
    };
    let (mine, theirs) = (groups(main), groups(other));
    let names: std::collections::BTreeSet<&String> = mine.keys().chain(theirs.keys()).collect();
    for name in names {
        match (mine.get(name), theirs.get(name)) {
            (Some((g, _)), None) => differ(format!("resources[{g}] ({name})"), format!("`{name}` is encrypted here but not listed there")),
            (None, Some((g, _))) => differ(format!("(resource {name})"), format!("`{name}` is listed there (resources[{g}]) but not here")),
            (Some((g, a)), Some((_, b))) => {
                for p in 0..a.len().max(b.len()) {
                    let at = format!("resources[{g}] ({name}) providers[{p}]");
                    match (a.get(p), b.get(p)) {
                        (Some(x), None) => differ(at, format!("{} here, nothing there", x.describe())),
                        (None, Some(y)) => differ(at, format!("nothing here, {} there", y.describe())),
                        (Some(x), Some(y)) => {
                            let (fx, fy) = (fingerprint(x), fingerprint(y));
                            if x.kinds() != y.kinds() {
                                differ(at, format!("{} here, {} there", x.describe(), y.describe()));
                            } else if fx != fy {
                                let diffs: Vec<String> = fx
                                    .iter()
                                    .chain(fy.iter())
                                    .map(|(k, _)| k.clone())
                                    .collect::<std::collections::BTreeSet<_>>()
                                    .into_iter()
                                    .filter_map(|key| {
                                        let get = |f: &Vec<(String, String)>| {
                                            f.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone()).unwrap_or_default()
                                        };
                                        let (vx, vy) = (get(&fx), get(&fy));
                                        (vx != vy).then(|| format!("{key} `{vx}` vs `{vy}`"))
                                    })
                                    .collect();
                                differ(at, format!("{} vs {}: {}", x.describe(), y.describe(), diffs.join(", ")));
                            }
                        }
                        (None, None) => {}
                    }
                }
            }
            (None, None) => {}
        }
    }
    sink.findings
}
