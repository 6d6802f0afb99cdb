//! Control over time: narration, marks, and waits and expectations on one [`Condition`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

use super::health::plugin_status_now;
use super::process::seconds;
use super::{Scope, StepFuture, StepKind};
use crate::conditions::Condition;
use crate::error::StepError;
use crate::model::{Dur, FigureName};
use crate::world::{Mark as MarkState, World};

/// `say: TEXT`: a line of narration.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Say(pub String);

impl StepKind for Say {
    fn narrates(&self) -> bool {
        true
    }

    fn check(&self, _: &mut Scope<'_>) -> Result<(), String> {
        if self.0.trim().is_empty() {
            return Err("`say` needs some text".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        "say".into()
    }

    fn run<'a>(&'a self, _: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move { Ok(self.0.trim().to_owned()) })
    }
}

/// `mark: NAME`: remembers this moment, the audit log position and each plugin's Status key id.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Mark(pub String);

impl StepKind for Mark {
    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        scope.set_mark(&self.0);
        Ok(())
    }

    fn label(&self) -> String {
        format!("mark `{}`", self.0)
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let at = Instant::now();
            let audit_seq = match world.stack.mock_kms() {
                Some(kms) => {
                    let since = world.marks.values().map(|m| m.audit_seq).max().unwrap_or(0);
                    kms.audit_records(since).await?.iter().map(|r| r.seq).max().unwrap_or(since)
                }
                None => 0,
            };
            let etcd_revision = world.stack.etcd_revision().await?;
            // Best effort: a sealed or stopped mock KMS does not describe its key, and a mark
            // must not fail for that.
            let kms_current_version = match world.stack.mock_kms() {
                Some(kms) => kms.describe_key().await.ok().map(|k| k.current_key_version_id),
                None => None,
            };
            let mut key_ids = BTreeMap::new();
            for plugin in world.stack.plugin_names() {
                if let Ok(status) = plugin_status_now(world, &plugin).await {
                    key_ids.insert(plugin, status.key_id);
                }
            }
            let text = format!(
                "etcd revision {etcd_revision}, audit position {audit_seq}; key ids: {}",
                key_ids.iter().map(|(p, k)| format!("{p} `{k}`")).collect::<Vec<_>>().join(", ")
            );
            world.marks.insert(self.0.clone(), MarkState { at, etcd_revision, audit_seq, key_ids, kms_current_version });
            Ok(text)
        })
    }
}

/// `wait_until: {within, condition, figure, since, must_happen}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// The deadline.
    pub within: Dur,
    /// What must hold.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub condition: Condition,
    /// Record how long it took (seconds) as this figure.
    #[serde(default)]
    pub figure: Option<FigureName>,
    /// Measure the figure from this mark instead of from the start of the step.
    #[serde(default)]
    pub since: Option<String>,
    /// Whether the condition must hold within `within` (default true). With `false` the step is a
    /// measurement: if it never held, it passes, says so, and records `<figure>.held = 0`.
    #[serde(default = "yes")]
    pub must_happen: bool,
}

fn yes() -> bool {
    true
}

impl StepKind for WaitUntil {
    fn needs(&self) -> super::Needs {
        self.condition.kind().needs()
    }

    fn unobservable(&self, world: &World) -> Option<String> {
        self.condition.kind().unobservable(world)
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        self.condition.kind().check(scope)?;
        if let Some(mark) = &self.since {
            scope.mark(mark)?;
            if self.figure.is_none() {
                return Err("`since` says where the figure is measured from: add `figure: NAME`".into());
            }
        }
        if !self.must_happen && self.figure.is_none() {
            return Err("`must_happen: false` makes the wait a measurement: add `figure: NAME`".into());
        }
        Ok(())
    }

    fn label(&self) -> String {
        let figure = self.figure.as_ref().map(|f| format!(" → `{f}`")).unwrap_or_default();
        format!("wait ≤ {} until {}{figure}", humantime::format_duration(self.within.0), self.condition.kind().label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let origin = match &self.since {
                Some(mark) => world.marks.get(mark).map_or(started, |m| m.at),
                None => started,
            };
            let baseline = self.condition.kind().baseline(world);
            loop {
                let seen = self.condition.observe(world, baseline).await;
                let elapsed = started.elapsed();
                if seen.ok {
                    let took = seconds(origin.elapsed());
                    if let Some(figure) = &self.figure {
                        world.figure(figure.to_string(), took);
                        if !self.must_happen {
                            world.figure(format!("{figure}.held"), 1.0);
                        }
                    }
                    let figure = self.figure.as_ref().map(|f| format!("`{f}` = {took} s; ")).unwrap_or_default();
                    return Ok(format!("{figure}after {:.1} s: {}", elapsed.as_secs_f64(), seen.text));
                }
                if elapsed > self.within.0 {
                    if let (false, Some(figure)) = (self.must_happen, &self.figure) {
                        world.figure(format!("{figure}.held"), 0.0);
                        world.figure(figure.to_string(), seconds(origin.elapsed()));
                        return Ok(format!(
                            "did NOT happen within {}; `{figure}` records the window; last: {}",
                            humantime::format_duration(self.within.0),
                            seen.text
                        ));
                    }
                    return Err(StepError::Timeout {
                        seconds: self.within.0.as_secs_f64(),
                        what: self.condition.kind().label(),
                        last: seen.text,
                    });
                }
                tokio::time::sleep(self.condition.kind().poll_interval()).await;
            }
        })
    }
}

/// `expect: CONDITION`: the condition must hold now.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct Expect(#[serde(with = "serde_yaml::with::singleton_map_recursive")] pub Condition);

impl StepKind for Expect {
    fn needs(&self) -> super::Needs {
        self.0.kind().needs()
    }

    fn unobservable(&self, world: &World) -> Option<String> {
        self.0.kind().unobservable(world)
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if self.0.kind().wait_only() {
            return Err("`write` and `writes` are conditions to wait for: use `wait_until`".into());
        }
        self.0.kind().check(scope)
    }

    fn label(&self) -> String {
        format!("expect {}", self.0.kind().label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let seen = self.0.observe(world, 0).await;
            if seen.ok { Ok(seen.text) } else { Err(StepError::Failed(seen.text)) }
        })
    }
}

/// `expect_throughout: {for, condition}`: the condition holds at every observation over a stated
/// window (a measurement, not a wait: it fails at the first observation that does not hold).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectThroughout {
    /// How long it must keep holding.
    #[serde(rename = "for")]
    pub duration: Dur,
    /// What must hold.
    #[serde(with = "serde_yaml::with::singleton_map_recursive")]
    pub condition: Condition,
}

impl StepKind for ExpectThroughout {
    fn needs(&self) -> super::Needs {
        self.condition.kind().needs()
    }

    fn unobservable(&self, world: &World) -> Option<String> {
        self.condition.kind().unobservable(world)
    }

    fn check(&self, scope: &mut Scope<'_>) -> Result<(), String> {
        if self.condition.kind().wait_only() {
            return Err("`write` and `writes` are conditions to wait for: use `wait_until`".into());
        }
        if self.duration.0.is_zero() {
            return Err("`for: 0s` observes nothing: give the window, e.g. `for: 6s`, or use `expect`".into());
        }
        self.condition.kind().check(scope)
    }

    fn label(&self) -> String {
        format!("expect for {}: {}", humantime::format_duration(self.duration.0), self.condition.kind().label())
    }

    fn run<'a>(&'a self, world: &'a mut World) -> StepFuture<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let mut observations = 0;
            loop {
                let seen = self.condition.observe(world, 0).await;
                observations += 1;
                if !seen.ok {
                    return Err(StepError::Failed(format!("after {:.1} s: {}", started.elapsed().as_secs_f64(), seen.text)));
                }
                if started.elapsed() >= self.duration.0 {
                    return Ok(format!(
                        "held at all {observations} observations over {:.1} s: {}",
                        started.elapsed().as_secs_f64(),
                        seen.text
                    ));
                }
                tokio::time::sleep(self.condition.kind().poll_interval()).await;
            }
        })
    }
}
