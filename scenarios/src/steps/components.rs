//! Steps on the stack's processes and configuration: start, stop, kill, add an apiserver, write
//! an EncryptionConfiguration and wait until it is in force.

use std::time::{Duration, Instant};

use kms_lab_stack::{Readiness, WaitFor};

use super::StepResult;
use super::expect::metric_sum;
use crate::error::StepError;
use crate::model::{AddApiserver, Apply, Component, EncryptionStep};
use crate::world::World;

/// How long an apiserver may take to load a rewritten EncryptionConfiguration.
const RELOAD_DEADLINE: Duration = Duration::from_secs(120);
/// The counter of the apiserver's automatic reloads of its EncryptionConfiguration.
const RELOADS_METRIC: &str = "apiserver_encryption_config_controller_automatic_reloads_total";

pub(super) async fn start(world: &mut World, component: &Component) -> StepResult {
    let started = Instant::now();
    // A running component is refused with the fix (`restart`); `mock-kms` starts the nodes that are down.
    world.stack.start(component, WaitFor::Ready).await?;
    Ok(format!("{component} is up after {:.1} s", started.elapsed().as_secs_f64()))
}

pub(super) async fn stop(world: &mut World, component: &Component, kill: bool) -> StepResult {
    if kill {
        world.stack.kill(component).await?;
    } else {
        world.stack.stop(component).await?;
    }
    Ok(format!("{component} is {}", if kill { "killed (SIGKILL)" } else { "stopped (SIGTERM)" }))
}

pub(super) async fn add_apiserver(world: &mut World, add: &AddApiserver) -> StepResult {
    let config = world.encryption_config(&add.encryption)?;
    let index = world.stack.add_apiserver(&config, true, Readiness::Ready, Vec::new()).await?;
    Ok(format!("apiserver-{index} is ready on {}", world.stack.apiserver_url(index)?))
}

pub(super) async fn encryption(world: &mut World, step: &EncryptionStep) -> StepResult {
    let config = world.encryption_config(&step.resources)?;
    let targets: Vec<usize> = match step.apiserver {
        Some(index) => vec![index],
        None => (0..world.stack.apiserver_count()).collect(),
    };
    let mut seen = Vec::new();
    let text = config.to_yaml().map_err(kms_lab_stack::StackError::from)?;
    for index in targets {
        if world.stack.encryption_config_text(index)? == text && step.apply == Apply::Reload {
            seen.push(format!("apiserver-{index}: unchanged"));
            continue;
        }
        let before = reload_counts(world, index).await;
        world.stack.write_encryption_config(index, &config)?;
        match step.apply {
            Apply::WriteOnly => seen.push(format!("apiserver-{index}: written")),
            Apply::Restart => {
                world.stack.restart(&kms_lab_stack::Component::Apiserver(index), WaitFor::Ready).await?;
                seen.push(format!("apiserver-{index}: restarted and ready"));
            }
            Apply::RestartServing => {
                world.stack.restart(&kms_lab_stack::Component::Apiserver(index), WaitFor::Serving).await?;
                seen.push(format!("apiserver-{index}: restarted and answering requests"));
            }
            Apply::Reload => {
                let took = wait_for_reload(world, index, before).await?;
                seen.push(format!("apiserver-{index}: reloaded after {:.1} s", took.as_secs_f64()));
            }
        }
    }
    Ok(seen.join("; "))
}

/// `(successes, failures)` of the apiserver's automatic reloads so far.
async fn reload_counts(world: &World, index: usize) -> (f64, f64) {
    let Ok((_, metrics)) = world.stack.apiserver_get(index, "/metrics").await else {
        return (0.0, 0.0);
    };
    let count = |status: &str| metric_sum(&metrics, RELOADS_METRIC, &[("status", status)]);
    (count("success"), count("failure"))
}

/// Waits until the apiserver counts one more successful reload; a counted failure ends the wait
/// with the apiserver's reason.
async fn wait_for_reload(world: &World, index: usize, (successes, failures): (f64, f64)) -> Result<Duration, StepError> {
    let started = Instant::now();
    loop {
        let (now_ok, now_failed) = reload_counts(world, index).await;
        if now_ok > successes {
            return Ok(started.elapsed());
        }
        if now_failed > failures {
            return Err(StepError::Failed(format!(
                "apiserver-{index} refused the new EncryptionConfiguration (reload failure counted in {RELOADS_METRIC}); see apiserver-{index}.log in the run directory"
            )));
        }
        if started.elapsed() > RELOAD_DEADLINE {
            return Err(StepError::Timeout {
                seconds: RELOAD_DEADLINE.as_secs_f64(),
                what: format!("apiserver-{index} to reload its EncryptionConfiguration"),
                last: format!("{RELOADS_METRIC}: {now_ok} successes, {now_failed} failures"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
