//! `kms-lab lint` on the EncryptionConfiguration in force, from a step.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kms_lab_lint::{ApiserverFlags, LintContext};
use serde::Deserialize;

use super::{Scope, StepFuture, StepKind};
use crate::error::StepError;
use crate::model::Dur;
use crate::world::World;

/// A finding id of `kms-lab lint`; a misspelt one is a load error listing every id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingId(pub &'static str);

impl<'de> Deserialize<'de> for FindingId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        kms_lab_lint::FINDING_IDS.iter().find(|id| **id == text).map(|id| FindingId(id)).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown finding id `{text}` (known: {})", kms_lab_lint::FINDING_IDS.join(", ")))
        })
    }
}

/// `lint`: runs `kms-lab lint` on an apiserver's EncryptionConfiguration as written now.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lint {
    /// The apiserver whose file is linted.
    #[serde(default)]
    pub apiserver: usize,
    /// The apiserver flags the linter is told about (`--feature-gates=KMSv1=true`, …; default: none known).
    #[serde(default)]
    pub flags: Option<Vec<String>>,
    /// The cluster's Secret count (`--secrets`).
    #[serde(default)]
    pub secrets: Option<u64>,
    /// The measured KMS p99 latency (`--kms-p99`).
    #[serde(default)]
    pub kms_p99: Option<Dur>,
    /// Other apiservers whose files are compared with this one (HA drift, `--against`).
    #[serde(default)]
    pub against: Vec<usize>,
    /// Finding ids that must be reported.
    #[serde(default)]
    pub expect: Vec<FindingId>,
    /// Finding ids that must not be reported.
    #[serde(default)]
    pub absent: Vec<FindingId>,
}

impl StepKind for Lint {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.apiserver(self.apiserver)?;
        for other in &self.against {
            scope.apiserver(*other)?;
        }
        if self.expect.is_empty() && self.absent.is_empty() {
            return Err("`lint` needs `expect: [finding ids]` or `absent: [finding ids]`".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        format!(
            "kms-lab lint apiserver-{}'s EncryptionConfiguration{}",
            self.apiserver,
            if self.against.is_empty() { String::new() } else { format!(" against apiserver-{:?}", self.against) }
        )
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            // The files go to the run directory, beside the apiserver's own copy (findings never print key bytes).
            let write = |index: usize| -> Result<PathBuf, StepError> {
                let text = world.stack.encryption_config_text(index)?;
                let path = world.stack.run_dir().join(format!("lint-apiserver-{index}.yaml"));
                kms_lab_stack::fsutil::write_private(&path, text.as_bytes())
                    .map_err(|e| StepError::Failed(format!("cannot write {}: {e}", path.display())))?;
                Ok(path)
            };
            let main = write(self.apiserver)?;
            let against = self.against.iter().map(|i| write(*i)).collect::<Result<Vec<_>, _>>()?;
            let flags = match &self.flags {
                Some(flags) => Some(ApiserverFlags::parse(&flags.join("\n")).map_err(|e| StepError::Failed(format!("lint flags: {e}")))?),
                None => None,
            };
            let context = LintContext { flags, secrets: self.secrets, kms_p99: self.kms_p99.map(|d| d.0) };
            let report =
                kms_lab_lint::lint_files(&main, &against, &context).map_err(|e| StepError::Failed(format!("kms-lab lint: {e}")))?;
            let found: BTreeSet<&str> = report.findings.iter().map(|f| f.id).collect();
            let listed =
                report.findings.iter().map(|f| format!("{} {} at {}", f.severity.as_str(), f.id, f.path)).collect::<Vec<_>>().join("; ");
            let missing: Vec<&str> = self.expect.iter().map(|id| id.0).filter(|id| !found.contains(id)).collect();
            let unwanted: Vec<&str> = self.absent.iter().map(|id| id.0).filter(|id| found.contains(id)).collect();
            let text = if listed.is_empty() { "no findings".to_owned() } else { format!("findings: {listed}") };
            if !missing.is_empty() || !unwanted.is_empty() {
                return Err(StepError::Failed(format!("{text}; expected {missing:?} to be reported and {unwanted:?} not to be")));
            }
            // The first finding's reason and fix, so the report shows what lint tells an operator.
            let advice = report
                .findings
                .iter()
                .find(|f| self.expect.iter().any(|id| id.0 == f.id))
                .map(|f| format!(" — {} Fix: {}", f.reason, f.fix));
            Ok(format!("{text}{}", advice.unwrap_or_default()))
        })
    }
}
