//! The crate's errors. Messages name the problem and the fix; none carries a secret value, a
//! secret key or a token (at most a name, an access key, an endpoint, a code).

use std::time::Duration;

use mock_kms::api::{Action, ErrorCode};

/// Why a call to the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Nothing answered, or no usable answer came (connection refused, timeout, a bare HTTP error).
    #[error("the store at {endpoint} is unavailable for {action}: {problem}")]
    Unavailable {
        /// The action.
        action: Action,
        /// The endpoint.
        endpoint: String,
        /// What happened.
        problem: String,
    },
    /// Over the store's request quota.
    #[error("the store throttled {action}{}", retry_after.map(|d| format!(" (retry after {d:?})")).unwrap_or_default())]
    Throttled {
        /// The action.
        action: Action,
        /// When to retry, as the store said.
        retry_after: Option<Duration>,
    },
    /// The credential may not make the call (an access policy, or a `deny` fault).
    #[error("the store denied {action}: {message}")]
    Denied {
        /// The action.
        action: Action,
        /// The store's message (names the access key, action and resource).
        message: String,
    },
    /// The remote secret (or version, or stage) does not exist, or is scheduled for deletion.
    #[error("{message}")]
    NotFound {
        /// The action.
        action: Action,
        /// The store's message.
        message: String,
    },
    /// Any other error answer.
    #[error("the store refused {action} with {code:?}: {message}")]
    Failed {
        /// The action.
        action: Action,
        /// The error code.
        code: ErrorCode,
        /// The store's message.
        message: String,
        /// Whether retrying can help.
        retryable: bool,
    },
    /// The answer was not what the API defines.
    #[error("the store's answer to {action} is malformed: {problem}")]
    Protocol {
        /// The action.
        action: Action,
        /// What is wrong.
        problem: String,
    },
}

impl StoreError {
    /// The outcome label of the `store_calls` metric (`Unavailable`, `Throttled`, `Denied`, …).
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "Unavailable",
            Self::Throttled { .. } => "Throttled",
            Self::Denied { .. } => "Denied",
            Self::NotFound { .. } => "NotFound",
            Self::Failed { .. } => "Failed",
            Self::Protocol { .. } => "Protocol",
        }
    }
}

/// Why a reconcile failed in a way the status cannot express (the API server refused a write).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object is malformed in a way the API server should have refused.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// A closure wrapping a kube error with what was being done.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}

/// Why the lab helpers ([`crate::lab`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A Kubernetes call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bounded wait ran out.
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
        /// The last observation (never a secret value).
        last: String,
    },
    /// A third-party file (ack-secret-manager's chart) could not be read or used.
    #[error("`{path}`: {problem}")]
    ThirdParty {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig `{path}`: {problem}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

impl LabError {
    /// A closure wrapping a kube error with what was being done.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }
}
