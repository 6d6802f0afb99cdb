//! What a running scenario knows: its stack, every object it wrote (with the value it must read
//! back), its marks and the figures it measured. Values and static keys derive from the seed, so
//! the same seed writes the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use kms_lab_stack::Stack;
use kms_lab_stack::encryption::EncryptionConfiguration;
use sha2::{Digest, Sha256};

use crate::error::StepError;
use crate::model::{EncryptionSpec, Kind};
use crate::object_client::ObjectClient;
use crate::timeline::Timeline;

/// Every generated plaintext starts with this, so a scan of etcd finds any that leaked.
pub const PLAINTEXT_MARKER: &str = "kms-lab-plaintext:";

/// An object a scenario wrote.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    /// Secret or configmap.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ObjectRef {
    /// Its etcd key.
    pub fn etcd_key(&self) -> String {
        format!("/registry/{}/{}/{}", self.kind.resource(), self.namespace, self.name)
    }
}

/// What a mark remembered.
#[derive(Debug, Clone)]
pub struct Mark {
    /// When it was set (`wait_until {since: MARK}` measures from here).
    pub at: Instant,
    /// etcd's revision at the mark.
    pub etcd_revision: i64,
    /// The highest audit sequence number at the mark.
    pub audit_seq: u64,
    /// Each reachable plugin's Status key id.
    pub key_ids: BTreeMap<String, String>,
    /// The mock KMS's current key version at the mark (when the stack runs one): the version a
    /// plugin whose key id names the key, not a version (aws-encryption-provider), encrypted with.
    pub kms_current_version: Option<String>,
}

/// The state of a running scenario.
pub struct World {
    /// The stack.
    pub stack: Stack,
    seed: u64,
    /// Objects written and not deleted, with the generation of their current value.
    pub objects: BTreeMap<ObjectRef, u32>,
    /// Marks by name.
    pub marks: BTreeMap<String, Mark>,
    /// Figures measured by steps (name → value), reported with the result.
    pub figures: BTreeMap<String, f64>,
    /// Writes stored by the running `load`, if any (its `writes` conditions count them).
    load_writes: Option<Arc<AtomicU64>>,
    /// The next number of each write probe prefix.
    probes: BTreeMap<(Kind, String), usize>,
    /// Every revision written to etcd since the stack started, scanned for plaintext.
    history: Option<kms_lab_stack::etcd_watch::Recorder>,
    /// API calls over time.
    timeline: Timeline,
    /// The components the stack runs beside it (the secret sync controller, …).
    pub components: crate::components::Running,
}

impl World {
    /// A world around a started stack; `history` scans every etcd revision from the start.
    pub fn new(stack: Stack, seed: u64, history: Option<kms_lab_stack::etcd_watch::Recorder>) -> Self {
        Self {
            stack,
            seed,
            objects: BTreeMap::new(),
            marks: BTreeMap::new(),
            figures: BTreeMap::new(),
            load_writes: None,
            probes: BTreeMap::new(),
            history,
            timeline: Timeline::new(),
            components: Default::default(),
        }
    }

    /// The etcd revision recorder, when one runs.
    pub fn history(&self) -> Option<&kms_lab_stack::etcd_watch::Recorder> {
        self.history.as_ref()
    }

    /// Stops the etcd revision recorder (before the stack goes down).
    pub fn stop_history(&mut self) {
        if let Some(recorder) = self.history.take() {
            recorder.stop();
        }
    }

    /// Writes stored so far by the running `load` (0 outside a load).
    pub fn load_writes(&self) -> u64 {
        self.load_writes.as_ref().map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Makes `counter` the running load's write count (`None` when the load ends).
    pub fn set_load_writes(&mut self, counter: Option<Arc<AtomicU64>>) {
        self.load_writes = counter;
    }

    /// The name of the next write probe object under `prefix` (`<prefix>-NNN`): numbering goes
    /// on after the objects of that prefix written so far and every earlier probe, refused or not.
    pub fn next_probe_name(&mut self, kind: Kind, prefix: &str) -> String {
        let taken = self.objects.keys().filter(|o| o.kind == kind && o.name.starts_with(&format!("{prefix}-"))).count();
        let next = self.probes.entry((kind, prefix.to_owned())).or_insert(taken);
        let name = format!("{prefix}-{:03}", *next);
        *next += 1;
        name
    }

    /// The tracked objects of `kind` in `namespace` a LIST (`names`) did not return.
    pub fn missing_from(&self, kind: Kind, namespace: &str, names: &BTreeSet<String>) -> Vec<ObjectRef> {
        self.select(kind, namespace, None, None).into_iter().map(|(o, _)| o).filter(|o| !names.contains(&o.name)).collect()
    }

    /// The scenario's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The EncryptionConfiguration for `spec`, with plugin names resolved to their sockets.
    pub fn encryption_config(&self, spec: &EncryptionSpec) -> Result<EncryptionConfiguration, StepError> {
        crate::encryption::build_encryption(spec, self.seed, &|name| self.stack.plugin_socket(name).map(Path::to_owned))
    }

    /// The tracked objects of `kind` in `namespace` whose names start with `prefix`, in name order.
    pub fn select(&self, kind: Kind, namespace: &str, prefix: Option<&str>, count: Option<usize>) -> Vec<(ObjectRef, u32)> {
        let matching = self
            .objects
            .iter()
            .filter(|(o, _)| o.kind == kind && o.namespace == namespace && prefix.is_none_or(|p| o.name.starts_with(p)))
            .map(|(o, g)| (o.clone(), *g));
        match count {
            Some(n) => matching.take(n).collect(),
            None => matching.collect(),
        }
    }

    /// A client for apiserver `index` whose calls go on the scenario's timeline.
    pub async fn client(&self, index: usize) -> Result<ObjectClient, StepError> {
        Ok(ObjectClient::new(self.stack.kube_client(index).await?, self.timeline.clone()))
    }

    /// What happened when, for the report's timeline plot.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// Records a measured figure.
    pub fn figure(&mut self, name: impl Into<String>, value: f64) {
        self.figures.insert(name.into(), value);
    }
}

/// The value `object` holds at `generation` in a run with `seed`.
pub fn value_for(seed: u64, object: &ObjectRef, generation: u32) -> String {
    let digest = Sha256::new()
        .chain_update(seed.to_be_bytes())
        .chain_update(object.etcd_key().as_bytes())
        .chain_update(generation.to_be_bytes())
        .finalize();
    format!("{PLAINTEXT_MARKER}{}:{generation}:{}", object.name, hex::encode(&digest[..8]))
}
