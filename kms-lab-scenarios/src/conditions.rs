//! Conditions for waits and expectations: `wait_until` polls a [`Condition`] until it holds,
//! `expect` requires it now, `expect_throughout` at every look over a window. Each condition is
//! a type in its family's module beside its steps, owning its load-time check, its label and its
//! observation ([`ConditionKind`]); the [`Condition`] enum only names them and delegates: adding
//! a condition is one type in its family module plus one line in the `conditions!` list below.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Deserialize;

use crate::model::FigureName;
use crate::steps::{Needs, Scope, etcd, health, kms, load, objects, sync};
use crate::world::World;

/// How often a wait looks again, unless the condition says otherwise.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The future a condition's observation returns.
pub type ObserveFuture<'a> = Pin<Box<dyn Future<Output = Seen> + Send + 'a>>;

/// One kind of condition: what it needs of the scenario (checked before anything starts), how it
/// is labelled, and what it sees when it looks at a running [`World`].
pub trait ConditionKind: Send + Sync {
    /// Checks references (plugins, apiservers, marks, the mock KMS) and value ranges; the error
    /// says what is wrong and how to fix it (the loader adds file, line and step number).
    fn check(&self, scope: &Scope<'_>) -> Result<(), String>;
    /// A short label (`apiserver-0 /readyz is healthy`).
    fn label(&self) -> String;
    /// Looks at the world once. `baseline` is what [`Self::baseline`] returned when the step
    /// began, so relative conditions count from there.
    fn observe<'a>(&'a self, world: &'a mut World, baseline: u64) -> ObserveFuture<'a>;
    /// What a plugin under test must be able to do for the condition to mean anything.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// How long a wait pauses between two observations.
    fn poll_interval(&self) -> Duration {
        POLL_INTERVAL
    }
    /// What relative conditions count from when their step begins.
    fn baseline(&self, _world: &World) -> u64 {
        0
    }
    /// Whether the condition only makes sense waited for (`wait_until`), never checked at once.
    fn wait_only(&self) -> bool {
        false
    }
    /// Why the running stack cannot show whether the condition holds (a third-party component
    /// that records nothing to look at), if it cannot: the step is then reported as not observed.
    fn unobservable(&self, _world: &World) -> Option<String> {
        None
    }
}

/// One observation: whether the condition holds, what was seen and, for a counting condition
/// whose author named a figure, the value judged (recorded as that figure when it holds).
#[derive(Debug, Clone)]
pub struct Seen {
    /// Whether it holds.
    pub ok: bool,
    /// What was seen, for the progress line or the failure.
    pub text: String,
    /// The figure to record if it holds: the value that was judged, not a second observation.
    figure: Option<(String, f64)>,
}

impl Seen {
    /// An observation.
    pub fn new(ok: bool, text: impl Into<String>) -> Self {
        Self { ok, text: text.into(), figure: None }
    }

    /// The same observation, recording `value` as figure `name` (if the author named one) when it holds.
    pub fn counted(self, name: Option<&FigureName>, value: f64) -> Self {
        Self { figure: name.map(|name| (name.to_string(), value)), ..self }
    }
}

/// Declares the [`Condition`] enum and its delegation to each condition type.
macro_rules! conditions {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )*) => {
        /// Something about the running stack that holds or not: in YAML a one-key map
        /// (`healthy: {…}`).
        #[derive(Debug, Clone, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Condition {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Condition {
            /// The condition's type, behind the one trait every condition implements.
            pub fn kind(&self) -> &dyn ConditionKind {
                match self {
                    $( Condition::$variant(condition) => condition, )*
                }
            }
        }
    };
}

conditions! {
    /// An apiserver health endpoint answers as described.
    Health(health::HealthCheck),
    /// A plugin's Status answers as described.
    PluginStatus(health::PluginStatusExpect),
    /// An apiserver has seen a plugin's current Status key id (its key id hash metric).
    ApiserverKeyId(health::ApiserverKeyId),
    /// The sum of an apiserver metric's samples is within bounds.
    Metric(health::MetricExpect),
    /// A fresh write (one new object per probe) answers as described.
    Write(objects::WriteProbe),
    /// Mock KMS audit records since a mark are within bounds.
    Audit(kms::AuditCount),
    /// A mock Vault node's `sys/health` answers with a status (200 active, 429 standby, 503 sealed).
    VaultHealth(kms::VaultHealth),
    /// The mock KMS key: its current version against a mark's, its version counts.
    KmsKey(kms::KmsKey),
    /// The raw values in etcd are as described.
    Etcd(etcd::EtcdExpect),
    /// No generated plaintext is in etcd now, nor in any revision written since the stack started
    /// (or since a mark).
    NoPlaintextInEtcd(etcd::NoPlaintext),
    /// A plugin's socket file exists or not (a crash leaves it behind; SIGTERM removes it).
    Socket(health::SocketExpect),
    /// A LIST of a kind returns every object the scenario wrote.
    Listed(objects::Listed),
    /// The surrounding `load` stored at least this many writes since this step began.
    Writes(load::WritesCount),
    /// A synced Secret holds the latest (or previous) value put to a remote secret.
    Synced(sync::Synced),
    /// An ExternalSecret's `Ready` condition.
    ExternalSecret(sync::ExternalSecretReady),
    /// What `kms-lab inspect` (reading etcd directly, headers only) counts for a kind.
    Inspect(etcd::InspectExpect),
}

impl Condition {
    /// Looks at the world once and records the figure a counting condition judged, if it holds.
    pub async fn observe(&self, world: &mut World, baseline: u64) -> Seen {
        let seen = self.kind().observe(world, baseline).await;
        if let (true, Some((name, value))) = (seen.ok, &seen.figure) {
            world.figure(name.clone(), *value);
        }
        seen
    }
}
