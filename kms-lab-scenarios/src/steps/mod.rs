//! Steps and conditions, one family per module, each step a type that owns its load-time check,
//! its label and its run ([`StepKind`]), each condition one that owns its check, label and
//! observation ([`ConditionKind`](crate::conditions::ConditionKind)). The [`Step`] enum only names
//! them and delegates: adding a step is one type in its family module plus one line in the
//! `steps!` list below (a condition: one line in `conditions!`).
//!
//! - [`process`]: the stack's components and configuration (start, stop, kill, restart, a second
//!   apiserver, the EncryptionConfiguration).
//! - [`health`]: what the components answer (conditions: apiserver health and metrics, plugin
//!   Status, its socket).
//! - [`objects`]: objects through the API (create, update, read, delete, list; conditions: a
//!   write probe, a LIST returning everything written).
//! - [`migration`]: rewriting every object (the `kubectl` procedure, `kms-lab migrate`).
//! - [`recover`]: `kms-lab recover --unsafe-delete` (the objects a lost KEK left undecryptable).
//! - [`load`]: background write load around nested steps (condition: a load's writes).
//! - [`etcd`]: what etcd holds, read directly (conditions: raw values, plaintext in any
//!   revision, `kms-lab inspect`'s counts).
//! - [`kms`]: the mock remote KMS (faults, rotation, key versions, seal, credentials; condition:
//!   audit counts).
//! - [`observe`]: narration, marks, waits and expectations on one [`Condition`](crate::conditions::Condition).
//! - [`measure`]: measurements over a window (health sampling, DEK sources, KMS call rates).
//! - [`lint`]: `kms-lab lint` on the configuration in force.
//! - [`show`]: the demo's `show` (asserts nothing).
//! - [`sync`]: secret sync (conditions: synced, external_secret).

pub mod etcd;
pub mod health;
pub mod kms;
pub mod lint;
pub mod load;
pub mod measure;
pub mod migration;
pub mod objects;
pub mod observe;
pub mod process;
pub mod recover;
pub mod show;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use serde::Deserialize;

use crate::error::StepError;
use crate::model::{Component, KeyIdExpect, Scenario};
use crate::world::World;

/// What a finished step reports: one line for the progress log.
pub type StepResult = Result<String, StepError>;

/// The future a step's run returns (boxed: `load` runs nested steps).
pub type StepFuture<'a> = Pin<Box<dyn Future<Output = StepResult> + Send + 'a>>;

/// One kind of step: what it needs of the scenario (checked before anything starts), how it is
/// labelled in progress lines and reports, and what it does on a running [`World`].
pub trait StepKind: Send + Sync {
    /// Checks references (plugins, apiservers, marks, the mock KMS) and value ranges; the error
    /// says what is wrong and how to fix it (the loader adds file, line and step number).
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String>;
    /// A short label (`create 200 secrets s-*`).
    fn label(&self) -> String;
    /// Carries the step out.
    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a>;
    /// What a plugin under test (`--plugin`) must be able to do for this step to mean anything:
    /// capabilities its manifest must list, or why only kms-lab's own plugin can take the step.
    fn needs(&self) -> Needs {
        Needs::default()
    }
    /// Whether the step is narration: its result is printed as a chapter heading, not a step line.
    fn narrates(&self) -> bool {
        false
    }
    /// Why the running stack cannot show what the step looks at, if it cannot (a condition
    /// [`crate::conditions::ConditionKind::unobservable`] there): the step is then not run and is
    /// reported as not observed, with the reason.
    fn unobservable(&self, _world: &World) -> Option<String> {
        None
    }
}

/// What a step needs of the plugin under test ([`StepKind::needs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Capabilities the plugin's manifest must list.
    pub capabilities: Vec<kms_lab_catalog::Capability>,
    /// Set when only kms-lab's own plugin can take the step: why.
    pub own_plugin_only: Option<&'static str>,
}

impl Needs {
    /// The capabilities the KMS providers of `spec` call for (v1 → `v1beta1`, v2 → `v2`).
    pub fn of_encryption(spec: &crate::model::EncryptionSpec) -> Self {
        use crate::model::{KmsApi, ProviderSpec};
        let mut capabilities = Vec::new();
        for provider in spec.values().flatten() {
            if let ProviderSpec::Kms(kms) = provider {
                let needed = match kms.api {
                    KmsApi::V1 => kms_lab_catalog::Capability::V1beta1,
                    KmsApi::V2 => kms_lab_catalog::Capability::V2,
                };
                if !capabilities.contains(&needed) {
                    capabilities.push(needed);
                }
            }
        }
        Self { capabilities, own_plugin_only: None }
    }

    /// Adds what `other` needs (the first own-plugin-only reason stays).
    pub fn absorb(&mut self, other: Needs) {
        self.capabilities.extend(other.capabilities);
        self.own_plugin_only = self.own_plugin_only.or(other.own_plugin_only);
    }
}

/// Declares the [`Step`] enum and its delegation to each step type.
macro_rules! steps {
    ($( $(#[$doc:meta])* $variant:ident($ty:ty), )*) => {
        /// One step of a scenario: in YAML a one-key map (`- create: {…}`).
        #[derive(Debug, Clone, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum Step {
            $( $(#[$doc])* $variant($ty), )*
        }

        impl Step {
            /// The step's type, behind the one trait every step implements.
            pub fn kind(&self) -> &dyn StepKind {
                match self {
                    $( Step::$variant(step) => step, )*
                }
            }
        }
    };
}

steps! {
    /// Narration: prints a line (the demo's chapters, a scenario's intent).
    Say(observe::Say),
    /// Starts a component that is not running; a running one is refused (use `restart`).
    Start(process::Start),
    /// Stops a component gracefully (SIGTERM, then SIGKILL after the grace period).
    Stop(process::Stop),
    /// Kills a component with SIGKILL, whatever its kind, as a crash would.
    Kill(process::Kill),
    /// Stops and starts a component and waits for it (`ready`, `serving`, `live` or `none`).
    Restart(process::Restart),
    /// Sends SIGHUP to a plugin: it re-reads its KEK file.
    Reload(process::Reload),
    /// Starts one more apiserver on the same etcd with its own EncryptionConfiguration.
    AddApiserver(process::AddApiserver),
    /// Writes an apiserver's EncryptionConfiguration and applies it by reload (or only writes it).
    Encryption(process::Encryption),
    /// Writes an EncryptionConfiguration the apiserver cannot load: the reload fails, the old one stays.
    BrokenEncryption(process::BrokenEncryption),
    /// Creates objects.
    Create(objects::Create),
    /// Updates objects with new values.
    Update(objects::Update),
    /// Reads objects and compares each with the value last written.
    Read(objects::Read),
    /// Deletes objects.
    Delete(objects::Delete),
    /// Lists every object of a kind through the API, timed, and checks the answer.
    List(objects::List),
    /// Rewrites every object of a kind: `kubectl get <kind> -A -o json | kubectl replace -f -`.
    Rewrite(migration::Rewrite),
    /// Rewrites every object of a kind the way `kms-lab migrate` does (paged, retried).
    Migrate(migration::Migrate),
    /// Finds the objects the plugin cannot decrypt and deletes them with the unsafe delete (`kms-lab recover`).
    Recover(recover::Recover),
    /// Writes objects from several writers (with retries) while nested steps run.
    Load(load::Load),
    /// Puts a mock KMS fault profile in force.
    Faults(kms::Faults),
    /// Clears every mock KMS fault on every node (key version states stay).
    ClearFaults(kms::ClearFaults),
    /// Rotates the KEK in the mock KMS (a new key version becomes current).
    RotateKek(kms::RotateKek),
    /// Disables, in the mock KMS, the key version a plugin reported at a mark.
    DisableKeyVersion(kms::DisableKeyVersion),
    /// Destroys, in the mock KMS, the key version a plugin reported at a mark (material wiped, for good).
    DestroyKeyVersion(kms::DestroyKeyVersion),
    /// Enables again a key version `disable_key_version` disabled.
    EnableKeyVersion(kms::EnableKeyVersion),
    /// Makes the key version a plugin reported at a mark current again (a rollback A→B→A).
    SetCurrentKeyVersion(kms::SetCurrentKeyVersion),
    /// Gives the sealed mock KMS more unseal shares (threshold 3 of 5).
    Unseal(kms::Unseal),
    /// Replaces the mock KMS's accepted credential.
    SetCredentials(kms::SetCredentials),
    /// Remembers this moment: time, audit log position and each plugin's Status key id.
    Mark(observe::Mark),
    /// Waits until a condition holds, at most `within`; may record how long it took as a figure.
    WaitUntil(observe::WaitUntil),
    /// Checks a condition now.
    Expect(observe::Expect),
    /// Checks that a condition keeps holding over a stated window.
    ExpectThroughout(observe::ExpectThroughout),
    /// Samples an apiserver health endpoint for a stated duration and counts its transitions.
    ObserveHealth(measure::ObserveHealth),
    /// Counts the distinct wrapped DEKs (v1) or DEK sources (v2) in etcd: a figure and bounds.
    CountDekSources(measure::CountDekSources),
    /// Counts mock KMS calls since a mark, per object and per second (figures and bounds).
    KmsCalls(measure::KmsCalls),
    /// Lints an apiserver's EncryptionConfiguration with `kms-lab lint` and checks the finding ids.
    Lint(lint::Lint),
    /// Puts a new version of a remote secret into the mock KMS's secrets manager.
    PutRemoteSecret(sync::PutRemoteSecret),
    /// Applies an ExternalSecret the secret sync controller turns into a Secret.
    ExternalSecret(sync::ExternalSecretStep),
    /// Stops and starts the secret sync controller (optionally switching `--disable-polling`).
    RestartSecretSync(sync::RestartSecretSync),
    /// Replaces the secret sync controller's access policy in the mock KMS.
    SecretSyncAccess(sync::SecretSyncAccess),
    /// Shows something to a person (raw etcd bytes, a Secret as read back, KMS state): the demo.
    Show(show::Show),
}

/// A step as it appears in a list: a one-key map (`- create: {…}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct StepItem(#[serde(with = "serde_yaml::with::singleton_map")] pub Step);

impl std::ops::Deref for StepItem {
    type Target = Step;

    fn deref(&self) -> &Step {
        &self.0
    }
}

/// Runs one step.
pub fn run<'a>(world: &'a mut World, step: &'a Step) -> StepFuture<'a> {
    step.kind().run(world)
}

/// The step's label.
pub fn label(step: &Step) -> String {
    step.kind().label()
}

/// What exists at a point of a scenario, for the load-time checks: plugins, apiservers added so
/// far, marks set so far, the mock KMS, and whether a `load` is running around the step.
pub struct Scope<'a> {
    scenario: &'a Scenario,
    plugins: BTreeSet<String>,
    apiservers: usize,
    marks: BTreeSet<String>,
    in_load: bool,
    /// What earlier steps made by name, per kind ([`Named::what`]).
    named: BTreeMap<&'static str, BTreeSet<String>>,
}

/// A kind of thing a step makes by name and later steps name (a remote secret, an
/// ExternalSecret): declared by its family, checked at load time by [`Scope::declared`].
#[derive(Debug, Clone, Copy)]
pub struct Named {
    /// What it is (`remote secret`).
    pub what: &'static str,
    /// What the step that makes it does (`put`).
    pub verb: &'static str,
    /// The step that makes it (`put_remote_secret`).
    pub by: &'static str,
}

impl<'a> Scope<'a> {
    /// The scope at the first step of `scenario`.
    pub fn new(scenario: &'a Scenario) -> Self {
        Self {
            scenario,
            plugins: scenario.stack.plugins.iter().map(|p| p.name.clone()).collect(),
            apiservers: 1,
            marks: BTreeSet::new(),
            in_load: false,
            named: BTreeMap::new(),
        }
    }

    /// The stack runs component `C` (`what` names the step that needs it).
    pub fn runs<C: crate::components::StackComponent>(&self, what: &str) -> Result<(), String> {
        match C::spec(&self.scenario.stack) {
            Some(_) => Ok(()),
            None => Err(format!("`{what}` needs {}: add `{}` under `stack:`", C::NAME, C::HOW_TO_ADD)),
        }
    }

    /// `name` of `kind` exists from here on.
    pub fn declare(&mut self, kind: &Named, name: &str) {
        self.named.entry(kind.what).or_default().insert(name.to_owned());
    }

    /// `name` of `kind` was made by an earlier step.
    pub fn declared(&self, kind: &Named, name: &str) -> Result<(), String> {
        let made = self.named.get(kind.what);
        if made.is_some_and(|names| names.contains(name)) {
            return Ok(());
        }
        let known = made.map(|names| names.iter().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
        Err(format!("{} `{name}` is not {} by an earlier `{}` step ({} so far: {known})", kind.what, kind.verb, kind.by, kind.verb))
    }

    /// The scenario being checked.
    pub fn scenario(&self) -> &Scenario {
        self.scenario
    }

    /// `name` is a plugin of the stack.
    pub fn plugin(&self, name: &str) -> Result<(), String> {
        if self.plugins.contains(name) {
            return Ok(());
        }
        let known = self.plugins.iter().cloned().collect::<Vec<_>>().join(", ");
        Err(format!("no plugin named `{name}` in `stack.plugins` (known: {known})"))
    }

    /// Apiserver `index` exists at this point.
    pub fn apiserver(&self, index: usize) -> Result<(), String> {
        if index < self.apiservers {
            return Ok(());
        }
        Err(format!("apiserver-{index} does not exist here (apiservers 0..{}; add one with `add_apiserver`)", self.apiservers))
    }

    /// One more apiserver exists from here on.
    pub fn add_apiserver(&mut self) {
        self.apiservers += 1;
    }

    /// Mark `name` was set by an earlier step.
    pub fn mark(&self, name: &str) -> Result<(), String> {
        if self.marks.contains(name) {
            return Ok(());
        }
        Err(format!("mark `{name}` is not set by an earlier `mark:` step"))
    }

    /// Mark `name` exists from here on.
    pub fn set_mark(&mut self, name: &str) {
        self.marks.insert(name.to_owned());
    }

    /// The stack runs the mock KMS (`what` names the step or field that needs it).
    pub fn mock_kms(&self, what: &str) -> Result<(), String> {
        match &self.scenario.stack.mock_kms {
            Some(_) => Ok(()),
            None => Err(format!("`{what}` needs the mock KMS: add `mock_kms: {{}}` under `stack:`")),
        }
    }

    /// The mock KMS is a HashiCorp Vault (`what` names the step or condition that needs it).
    pub fn vault(&self, what: &str) -> Result<(), String> {
        match self.scenario.stack.mock_kms.as_ref().and_then(|k| k.vault.as_ref()) {
            Some(_) => Ok(()),
            None => Err(format!("`{what}` needs the mock KMS as a Vault: `mock_kms: {{vault: {{}}}}`")),
        }
    }

    /// The component exists.
    pub fn component(&self, component: &Component) -> Result<(), String> {
        match component {
            Component::Etcd => Ok(()),
            Component::Apiserver(index) => self.apiserver(*index),
            Component::MockKms => self.mock_kms("mock-kms"),
            Component::MockKmsNode(index) => {
                self.mock_kms("mock-kms-N")?;
                let nodes = self.scenario.stack.mock_kms.as_ref().map_or(0, |k| k.nodes);
                if *index >= nodes {
                    return Err(format!("mock-kms-{index} does not exist (the mock KMS has {nodes} node(s))"));
                }
                Ok(())
            }
            Component::Plugin(name) => self.plugin(name),
        }
    }

    /// A key id comparison names a plugin and exactly one earlier mark.
    pub fn key_id(&self, expect: &KeyIdExpect) -> Result<(), String> {
        self.plugin(&expect.plugin)?;
        match (&expect.same_as, &expect.differs_from) {
            (Some(mark), None) | (None, Some(mark)) => self.mark(mark),
            _ => Err("`key_id` needs exactly one of `same_as: MARK` or `differs_from: MARK`".into()),
        }
    }

    /// Whether the step is nested in a `load` (`writes` conditions count that load's writes).
    pub fn in_load(&self) -> bool {
        self.in_load
    }

    /// Checks `steps` as nested in a `load`.
    pub fn check_nested(&mut self, steps: &[StepItem]) -> Result<(), String> {
        let outer = std::mem::replace(&mut self.in_load, true);
        let result =
            steps.iter().try_for_each(|step| step.kind().check(self).map_err(|e| format!("in `during`, `{}`: {e}", step.kind().label())));
        self.in_load = outer;
        result
    }
}

/// `at_least`/`at_most` bounds on a count, checked and described in one place.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// At least this many.
    #[serde(default)]
    pub at_least: Option<f64>,
    /// At most this many.
    #[serde(default)]
    pub at_most: Option<f64>,
}

impl Bounds {
    /// Whether `value` is within the bounds.
    pub fn holds(&self, value: f64) -> bool {
        self.at_least.is_none_or(|min| value >= min) && self.at_most.is_none_or(|max| value <= max)
    }

    /// `expected 3 to 5`, `expected at least 3`, …
    pub fn describe(&self) -> String {
        match (self.at_least, self.at_most) {
            (Some(min), Some(max)) => format!("expected {min} to {max}"),
            (Some(min), None) => format!("expected at least {min}"),
            (None, Some(max)) => format!("expected at most {max}"),
            (None, None) => "no bound".into(),
        }
    }

    /// A load-time check: `at_least` is not above `at_most`, and `required` demands a bound.
    pub fn check(&self, what: &str, required: bool) -> Result<(), String> {
        if let (Some(min), Some(max)) = (self.at_least, self.at_most)
            && min > max
        {
            return Err(format!("`{what}`: `at_least: {min}` is above `at_most: {max}`"));
        }
        if required && self.at_least.is_none() && self.at_most.is_none() {
            return Err(format!("`{what}` needs `at_least` or `at_most` (a count without a bound checks nothing)"));
        }
        Ok(())
    }
}
