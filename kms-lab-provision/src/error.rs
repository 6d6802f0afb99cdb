//! What can go wrong while provisioning, worded so the reader knows the fix.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::Upstream;

/// The fix suggested whenever a binary could not be found or built.
pub const FIX: &str = "install Go (apt-get install golang-go) and rerun, or pass --bin-dir DIR with \
                       kube-apiserver, kubectl, etcd, etcdctl, or set KUBEBUILDER_ASSETS";

/// The fix suggested when Go ran and failed building a control-plane binary.
pub(crate) const BUILD_FIX: &str = "fix what Go reports above and rerun, or pass --bin-dir DIR with kube-apiserver, \
                         kubectl, etcd, etcdctl, or set KUBEBUILDER_ASSETS";

/// One place where a binary was looked for, and why it was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The place, e.g. `$KMS_LAB_ETCD` or `cache /root/.cache/kms-lab/bin/etcd-v3.6.16/etcd`.
    pub place: String,
    /// Why it was skipped, e.g. `not set` or `no such file`.
    pub skipped: String,
}

impl Attempt {
    pub(crate) fn new(place: impl Into<String>, skipped: impl Into<String>) -> Self {
        Self { place: place.into(), skipped: skipped.into() }
    }
}

/// Numbered, one place a line.
fn list(tried: &[Attempt]) -> String {
    let mut out = String::new();
    for (i, attempt) in tried.iter().enumerate() {
        let _ = write!(out, "\n  {}. {}: {}", i + 1, attempt.place, attempt.skipped);
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("\n    | {l}")).collect()
}

/// Why [`provision`](super::provision) or [`find_or_build`](super::find_or_build) failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A requested version is malformed or unsupported.
    #[error("invalid {what} version {value:?}: {reason} (for example {example})")]
    InvalidVersion {
        /// `Kubernetes` or `etcd`.
        what: &'static str,
        /// The version as given.
        value: String,
        /// A well-formed example.
        example: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A Kubernetes version outside the supported matrix was asked for.
    #[error("kms-lab runs its scenarios on Kubernetes {}, not {value:?}: pass one of them to --kubernetes-version (or its minor, e.g. v1.36)", supported.join(", "))]
    UnsupportedKubernetes {
        /// The version as given.
        value: String,
        /// The supported versions, newest first.
        supported: Vec<String>,
    },

    /// A kube-apiserver older than v1.29 was found (KMS v2 is GA from v1.29).
    #[error(
        "the kube-apiserver at {} (from {from}) reports {found}, older than v1.29 where KMS v2 went GA; \
         fix: {fix}",
        path.display()
    )]
    TooOld {
        /// The binary found.
        path: PathBuf,
        /// Where it came from, e.g. `$KMS_LAB_KUBE_APISERVER`.
        from: String,
        /// The version it reports.
        found: String,
        /// How to get rid of it.
        fix: String,
    },

    /// The binary is nowhere and could not be built (building disallowed or Go missing).
    #[error("no usable {component} {version}; tried, in order:{}\nfix: {FIX}", list(.tried))]
    NotFound {
        /// The binary.
        component: Upstream,
        /// The version wanted.
        version: String,
        /// Every place tried, the build last.
        tried: Vec<Attempt>,
    },

    /// A Go-built test subject ([`GoSubject`](super::GoSubject)) is nowhere and could not be built (no source
    /// folder, building disallowed or Go missing).
    #[error("no usable {subject} ({key}); tried, in order:{}\nfix: {fix}", list(.tried))]
    SubjectNotFound {
        /// The subject's name (a [`GoSubject`](super::GoSubject)'s, or a manifest's plugin).
        subject: String,
        /// What pins it: `commit <sha>` or `source hash <hash>`.
        key: String,
        /// Every place tried, the build last.
        tried: Vec<Attempt>,
        /// What to do: which variable to set, or how to install it elsewhere.
        fix: String,
    },

    /// Go was run and failed.
    #[error("{0}")]
    BuildFailed(Box<BuildFailure>),

    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The details of [`ProvisionError::BuildFailed`].
#[derive(Debug, thiserror::Error)]
#[error(
    "building {binary} {version} with Go failed at `{step}`: {detail}\nfull log: {}; its last {} lines:{}\n\
     before building, tried in order:{}\nfix: {fix}",
    log.display(), tail.len(), indent(&tail.join("\n")), list(.tried)
)]
pub struct BuildFailure {
    /// The binary's name, e.g. `kube-apiserver` or `aws-encryption-provider`.
    pub binary: String,
    /// The version wanted: `v1.37.2`, or what pins a Go subject (`at commit <sha>`).
    pub version: String,
    /// The Go command that failed, e.g. `go build k8s.io/kubernetes/cmd/kube-apiserver`.
    pub step: String,
    /// How it failed, e.g. `exit status: 1`.
    pub detail: String,
    /// The full output of Go.
    pub log: PathBuf,
    /// The last lines (at most 30) of `log`.
    pub tail: Vec<String>,
    /// The places tried before building.
    pub tried: Vec<Attempt>,
    /// What to do about it.
    pub fix: String,
}

impl ProvisionError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_lists_every_place_and_the_fix() {
        let err = ProvisionError::NotFound {
            component: Upstream::Etcd,
            version: "v3.6.16".into(),
            tried: vec![
                Attempt::new("$KMS_LAB_ETCD", "not set"),
                Attempt::new("--bin-dir", "none given"),
                Attempt::new("$KMS_LAB_ASSETS", "not set"),
                Attempt::new("$KUBEBUILDER_ASSETS", "not set"),
                Attempt::new("cache /c/bin/etcd-v3.6.16/etcd", "no such file"),
                Attempt::new("build with Go", "not allowed (allow_build is false)"),
            ],
        };
        let text = err.to_string();
        let expected = "no usable etcd v3.6.16; tried, in order:\n  \
            1. $KMS_LAB_ETCD: not set\n  \
            2. --bin-dir: none given\n  \
            3. $KMS_LAB_ASSETS: not set\n  \
            4. $KUBEBUILDER_ASSETS: not set\n  \
            5. cache /c/bin/etcd-v3.6.16/etcd: no such file\n  \
            6. build with Go: not allowed (allow_build is false)\n\
            fix: install Go (apt-get install golang-go) and rerun, or pass --bin-dir DIR with \
            kube-apiserver, kubectl, etcd, etcdctl, or set KUBEBUILDER_ASSETS";
        assert_eq!(text, expected);
    }

    #[test]
    fn build_failure_shows_the_log_tail_and_path() {
        let err = ProvisionError::BuildFailed(Box::new(BuildFailure {
            binary: "kube-apiserver".into(),
            version: "v1.37.2".into(),
            step: "go build".into(),
            detail: "exit status: 1".into(),
            log: "/c/gobuild/k8s-v1.37.2/build-kube-apiserver.log".into(),
            tail: vec!["# k8s.io/foo".into(), "foo.go:1: oops".into()],
            tried: vec![Attempt::new("$KMS_LAB_KUBE_APISERVER", "not set")],
            fix: BUILD_FIX.into(),
        }));
        let text = err.to_string();
        assert!(text.contains("failed at `go build`: exit status: 1"), "{text}");
        assert!(text.contains("full log: /c/gobuild/k8s-v1.37.2/build-kube-apiserver.log; its last 2 lines:"), "{text}");
        assert!(text.contains("\n    | # k8s.io/foo\n    | foo.go:1: oops\n"), "{text}");
        assert!(text.contains("1. $KMS_LAB_KUBE_APISERVER: not set"), "{text}");
        assert!(text.ends_with(BUILD_FIX), "{text}");
    }
}
