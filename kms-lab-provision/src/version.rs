//! Version strings: the requested versions (validated, with the pieces the Go build needs)
//! and the versions the binaries report.

use super::Upstream;
use super::error::ProvisionError;

/// The oldest kube-apiserver kms-lab accepts: KMS v2 went GA in v1.29.
pub const MIN_KUBE_APISERVER: (u64, u64) = (1, 29);

/// A requested Kubernetes version `v1.X.Y[-pre]`, with what the Go build derives from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KubeVersion {
    /// As given, e.g. `v1.37.2`.
    pub full: String,
    /// The minor number, e.g. `37` (the `gitMinor` ldflag).
    pub minor: u64,
    /// The matching version of the `k8s.io/*` staging modules, e.g. `v0.37.2`.
    pub staging: String,
}

/// A requested etcd version `v3.X.Y[-pre]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EtcdVersion {
    /// As given, e.g. `v3.6.16`.
    pub full: String,
}

/// Splits `vM.m.p[-pre]` into numbers and the optional pre-release; `None` if malformed.
fn split_semver(s: &str) -> Option<(u64, u64, u64, Option<&str>)> {
    let rest = s.strip_prefix('v')?;
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    if let Some(pre) = pre
        && (pre.is_empty() || !pre.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
    {
        return None;
    }
    let mut parts = core.split('.');
    let mut number = || -> Option<u64> {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || (p.len() > 1 && p.starts_with('0')) {
            return None;
        }
        p.parse().ok()
    };
    let (major, minor, patch) = (number()?, number()?, number()?);
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch, pre))
}

fn malformed(what: &'static str, value: &str, example: &str, reason: String) -> ProvisionError {
    ProvisionError::InvalidVersion { what, value: value.to_owned(), example: example.to_owned(), reason }
}

/// Validates a requested Kubernetes version (`--k8s-version`).
pub(crate) fn parse_kubernetes_version(value: &str) -> Result<KubeVersion, ProvisionError> {
    const EXAMPLE: &str = super::KUBERNETES_VERSION;
    let hint = |v: &str| {
        if !v.starts_with('v') && split_semver(&format!("v{v}")).is_some() {
            format!("missing the leading `v` (did you mean v{v}?)")
        } else {
            "expected v1.MINOR.PATCH[-PRERELEASE]".to_owned()
        }
    };
    let Some((major, minor, patch, pre)) = split_semver(value) else {
        return Err(malformed("Kubernetes", value, EXAMPLE, hint(value)));
    };
    if major != 1 {
        return Err(malformed("Kubernetes", value, EXAMPLE, "only Kubernetes v1.x exists".to_owned()));
    }
    if (major, minor) < MIN_KUBE_APISERVER {
        return Err(malformed(
            "Kubernetes",
            value,
            EXAMPLE,
            format!("kms-lab needs v{}.{} or later (KMS v2 went GA in v1.29)", MIN_KUBE_APISERVER.0, MIN_KUBE_APISERVER.1),
        ));
    }
    let staging = match pre {
        Some(pre) => format!("v0.{minor}.{patch}-{pre}"),
        None => format!("v0.{minor}.{patch}"),
    };
    Ok(KubeVersion { full: value.to_owned(), minor, staging })
}

/// A Kubernetes minor version, `(1, 37)`, ordered; parsed from `v1.37`, `1.37` or `v1.37.2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeMinor(pub u64, pub u64);

impl KubeMinor {
    /// Parses `v1.37`, `1.37`, `v1.37.2` or `v1.38.0-beta.0` (the patch and pre-release are ignored).
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim().strip_prefix('v').unwrap_or(text.trim());
        let mut parts = rest.split(['.', '-', '+']);
        let number = |p: Option<&str>| p.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?.parse().ok();
        let (major, minor) = (number(parts.next())?, number(parts.next())?);
        Some(Self(major, minor))
    }
}

impl std::fmt::Display for KubeMinor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}", self.0, self.1)
    }
}

/// The supported Kubernetes version `value` names: one of
/// [`SUPPORTED_KUBERNETES_VERSIONS`](super::SUPPORTED_KUBERNETES_VERSIONS) exactly, or its minor
/// (`v1.36`, `1.36`). Anything else is refused with the list.
pub fn resolve_supported_kubernetes(value: &str) -> Result<&'static str, ProvisionError> {
    let supported = super::SUPPORTED_KUBERNETES_VERSIONS;
    let trimmed = value.trim();
    let with_v = if trimmed.starts_with('v') { trimmed.to_owned() } else { format!("v{trimmed}") };
    if let Some(exact) = supported.iter().find(|v| **v == with_v) {
        return Ok(exact);
    }
    let is_minor_only = with_v.matches('.').count() == 1;
    if is_minor_only
        && let Some(minor) = KubeMinor::parse(&with_v)
        && let Some(found) = supported.iter().find(|v| KubeMinor::parse(v) == Some(minor))
    {
        return Ok(found);
    }
    Err(ProvisionError::UnsupportedKubernetes { value: value.to_owned(), supported: supported.iter().map(|v| (*v).to_owned()).collect() })
}

/// Validates a requested etcd version (`--etcd-version`).
pub(crate) fn parse_etcd_version(value: &str) -> Result<EtcdVersion, ProvisionError> {
    const EXAMPLE: &str = super::ETCD_VERSION;
    let Some((major, ..)) = split_semver(value) else {
        let reason = if !value.starts_with('v') && split_semver(&format!("v{value}")).is_some() {
            format!("missing the leading `v` (did you mean v{value}?)")
        } else {
            "expected v3.MINOR.PATCH[-PRERELEASE]".to_owned()
        };
        return Err(malformed("etcd", value, EXAMPLE, reason));
    };
    if major != 3 {
        return Err(malformed("etcd", value, EXAMPLE, "only etcd v3.x can be built (Go modules go.etcd.io/etcd/*/v3)".to_owned()));
    }
    Ok(EtcdVersion { full: value.to_owned() })
}

/// The arguments that make `component` print its version.
pub(crate) fn version_args(component: Upstream) -> &'static [&'static str] {
    match component {
        Upstream::KubeApiserver | Upstream::KubeControllerManager => &["--version"],
        Upstream::Kubectl => &["version", "--client"],
        Upstream::Etcd => &["--version"],
        Upstream::Etcdctl => &["version"],
    }
}

/// Extracts the version from the output of [`version_args`], normalised to start with `v`
/// (`etcd Version: 3.6.16` gives `v3.6.16`). `None` if the output is not recognised.
pub(crate) fn parse_reported_version(component: Upstream, output: &str) -> Option<String> {
    let value_after = |prefix: &str| output.lines().find_map(|line| line.trim().strip_prefix(prefix).map(str::trim));
    let raw = match component {
        // `Kubernetes v1.37.2`
        Upstream::KubeApiserver | Upstream::KubeControllerManager => value_after("Kubernetes ")?.split_whitespace().next()?,
        // `Client Version: v1.37.2`, or before v1.28:
        // `Client Version: version.Info{Major:"1", ..., GitVersion:"v1.27.3", ...}`
        Upstream::Kubectl => {
            let rest = value_after("Client Version:")?;
            match rest.split_once("GitVersion:\"") {
                Some((_, tail)) => tail.split('"').next()?,
                None => rest.split_whitespace().next()?,
            }
        }
        // `etcd Version: 3.6.16`
        Upstream::Etcd => value_after("etcd Version:")?.split_whitespace().next()?,
        // `etcdctl version: 3.6.16`
        Upstream::Etcdctl => value_after("etcdctl version:")?.split_whitespace().next()?,
    };
    let normalised = if raw.starts_with('v') { raw.to_owned() } else { format!("v{raw}") };
    let looks_like_version = normalised[1..].starts_with(|c: char| c.is_ascii_digit()) && normalised.contains('.');
    looks_like_version.then_some(normalised)
}

/// `(major, minor)` of a reported version such as `v1.37.2` or `v0.0.0-master+$Format:%H$`.
pub(crate) fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut it = version.strip_prefix('v').unwrap_or(version).split(['.', '-', '+']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Compares Go versions such as `1.24`, `1.26.0`, `1.21rc1` numerically by their dotted
/// numbers (pre-releases compare as their release).
pub(crate) fn go_version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let numbers = |v: &str| -> Vec<u64> {
        v.trim_start_matches("go")
            .split('.')
            .map(|p| {
                let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    };
    let (mut a, mut b) = (numbers(a), numbers(b));
    let len = a.len().max(b.len());
    a.resize(len, 0);
    b.resize(len, 0);
    a.cmp(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn kubernetes_version_derives_minor_and_staging() {
        let v = parse_kubernetes_version("v1.37.2").unwrap();
        assert_eq!(v, KubeVersion { full: "v1.37.2".into(), minor: 37, staging: "v0.37.2".into() });
        let beta = parse_kubernetes_version("v1.38.0-beta.0").unwrap();
        assert_eq!((beta.minor, beta.staging.as_str()), (38, "v0.38.0-beta.0"));
        assert!(parse_kubernetes_version("v1.29.0").is_ok());
    }

    #[test]
    fn malformed_kubernetes_versions_are_rejected_clearly() {
        for (bad, needle) in [
            ("1.37.2", "did you mean v1.37.2?"),
            ("v1.37", "expected v1.MINOR.PATCH"),
            ("v1.37.2.1", "expected v1.MINOR.PATCH"),
            ("v1.x.2", "expected v1.MINOR.PATCH"),
            ("v1.37.02", "expected v1.MINOR.PATCH"),
            ("v1.37.2-", "expected v1.MINOR.PATCH"),
            ("", "expected v1.MINOR.PATCH"),
            ("v2.0.0", "only Kubernetes v1.x"),
            ("v1.28.9", "KMS v2 went GA in v1.29"),
        ] {
            let err = parse_kubernetes_version(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn supported_versions_resolve_by_version_or_minor_and_others_list_them() {
        assert_eq!(resolve_supported_kubernetes("v1.36.3").unwrap(), "v1.36.3");
        assert_eq!(resolve_supported_kubernetes("v1.35").unwrap(), "v1.35.4");
        assert_eq!(resolve_supported_kubernetes("1.37").unwrap(), "v1.37.2");
        for bad in ["v1.36.1", "v1.34", "v1.38.0-beta.0", "latest", ""] {
            let error = resolve_supported_kubernetes(bad).unwrap_err().to_string();
            assert!(error.contains("v1.37.2, v1.36.3, v1.35.4"), "{bad:?}: {error}");
            assert!(error.contains(&format!("{bad:?}")), "{bad:?}: {error}");
        }
        assert!(KubeMinor::parse("v1.36.3") < KubeMinor::parse("v1.37"));
        assert_eq!(KubeMinor::parse("v1.38.0-beta.0"), Some(KubeMinor(1, 38)));
        assert_eq!(KubeMinor::parse("v1"), None);
        assert_eq!(KubeMinor(1, 37).to_string(), "v1.37");
    }

    #[test]
    fn etcd_versions() {
        assert_eq!(parse_etcd_version("v3.6.16").unwrap().full, "v3.6.16");
        assert!(parse_etcd_version("v3.6.0-rc.1").is_ok());
        let err = parse_etcd_version("3.6.16").unwrap_err().to_string();
        assert!(err.contains("did you mean v3.6.16?"), "{err}");
        let err = parse_etcd_version("v2.3.8").unwrap_err().to_string();
        assert!(err.contains("only etcd v3.x"), "{err}");
    }

    #[test]
    fn reported_versions_of_each_binary() {
        let cases = [
            (Upstream::KubeApiserver, "Kubernetes v1.37.2\n", "v1.37.2"),
            (Upstream::Kubectl, "Client Version: v1.37.2\nKustomize Version: v5.8.1\n", "v1.37.2"),
            (
                Upstream::Kubectl,
                "Client Version: version.Info{Major:\"1\", Minor:\"27\", GitVersion:\"v1.27.3\", GitCommit:\"x\"}\n",
                "v1.27.3",
            ),
            (Upstream::Etcd, "etcd Version: 3.6.16\nGit SHA: v3.6.16\nGo Version: go1.26.8\nGo OS/Arch: linux/amd64\n", "v3.6.16"),
            (Upstream::Etcdctl, "etcdctl version: 3.6.16\nAPI version: 3.6\n", "v3.6.16"),
            // A build without the version ldflags.
            (Upstream::KubeApiserver, "Kubernetes v0.0.0-master+$Format:%H$\n", "v0.0.0-master+$Format:%H$"),
        ];
        for (component, output, want) in cases {
            assert_eq!(parse_reported_version(component, output).as_deref(), Some(want), "{component}: {output:?}");
        }
        for (component, output) in [
            (Upstream::KubeApiserver, "Usage: kube-apiserver [flags]"),
            (Upstream::Etcd, "etcdctl version: 3.6.16"),
            (Upstream::Etcdctl, "etcd Version: 3.6.16"),
            (Upstream::Kubectl, "Client Version: unknown"),
            (Upstream::Etcd, ""),
        ] {
            assert_eq!(parse_reported_version(component, output), None, "{component}: {output:?}");
        }
    }

    #[test]
    fn major_minor_and_go_versions() {
        assert_eq!(major_minor("v1.28.3"), Some((1, 28)));
        assert_eq!(major_minor("v0.0.0-master+$Format:%H$"), Some((0, 0)));
        assert_eq!(major_minor("v3.6.16"), Some((3, 6)));
        assert_eq!(major_minor("nonsense"), None);
        assert_eq!(go_version_cmp("1.24", "1.26.0"), Ordering::Less);
        assert_eq!(go_version_cmp("1.26.0", "1.26"), Ordering::Equal);
        assert_eq!(go_version_cmp("1.10", "1.9.7"), Ordering::Greater);
        assert_eq!(go_version_cmp("go1.26.8", "1.26.0"), Ordering::Greater);
    }
}
