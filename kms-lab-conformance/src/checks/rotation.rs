//! v2 KEK rotation, driven by the author's `--rotate-command`: Status must report a new key id,
//! Encrypt must use it, and ciphertexts from before must still decrypt.

use std::time::{Duration, Instant};

use super::encrypt::{APISERVER_PAYLOAD, encrypt};
use super::status::{describe as describe_status, status};
use super::{CheckResult, unknown};
use crate::context::{Ctx, bytes, describe_decrypt, describe_encrypt, quote, random, uid};
use crate::report::Finding;

/// How often Status is polled while waiting for the new key id.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// What one rotation showed, shared by both rotation checks.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    key_id_changes: Result<String, Finding>,
    old_ciphertext_decrypts: Result<(), Finding>,
}

impl Rotation {
    fn both_failed(finding: Finding) -> Self {
        Self { key_id_changes: Err(finding.clone()), old_ciphertext_decrypts: Err(finding) }
    }
}

pub(crate) async fn run(ctx: &Ctx, id: &str) -> CheckResult {
    let Some(command) = ctx.options.rotate_command.clone() else {
        return CheckResult::skip(
            "no --rotate-command given: the suite cannot rotate this plugin's KEK by itself (give a shell command that rotates it, e.g. `kms-plugin rotate-kek --kek-file F && kill -HUP PID`)",
        );
    };
    let rotation = ctx.rotation.get_or_init(|| rotate(ctx, command)).await;
    match id {
        "v2.rotation.key-id-changes" => match &rotation.key_id_changes {
            Ok(note) => CheckResult::pass().note(note.clone()),
            Err(finding) => CheckResult::fail(finding.clone()),
        },
        "v2.rotation.old-ciphertext-decrypts" => rotation.old_ciphertext_decrypts.clone().into(),
        _ => unknown(id),
    }
}

async fn rotate(ctx: &Ctx, command: String) -> Rotation {
    let before = match status(ctx).await {
        Ok(before) => before,
        Err(finding) => return Rotation::both_failed(finding),
    };
    let plaintext = random(APISERVER_PAYLOAD);
    let uid = uid("rotation");
    let old = match encrypt(ctx, &plaintext, &uid).await {
        Ok(old) => old,
        Err(finding) => return Rotation::both_failed(finding),
    };
    let sent_command = format!("rotate command `{command}`");
    if let Err(received) = run_command(&command, &ctx.options.endpoint, ctx.options.rotate_wait).await {
        return Rotation::both_failed(Finding::new(
            sent_command,
            received,
            "the rotate command must succeed for the rotation checks to run",
        ));
    }
    let started = Instant::now();
    let mut last = before.clone();
    while last.key_id == before.key_id && started.elapsed() < ctx.options.rotate_wait {
        tokio::time::sleep(POLL_EVERY).await;
        if let Ok(now) = ctx.status().await {
            last = now;
        }
    }
    let key_id_changes = if last.key_id == before.key_id {
        Err(Finding::new(
            format!("{} → {}; {sent_command}; StatusRequest {{}} every {POLL_EVERY:?}", "StatusRequest {}", describe_status(&before)),
            format!("{} for {:?} after the command", describe_status(&last), ctx.options.rotate_wait),
            format!(
                "the KEK rotated but Status still reports key_id {}: the apiserver never learns of the rotation and keeps encrypting new objects under a DEK seed wrapped by the old key",
                quote(&before.key_id)
            ),
        ))
    } else {
        let new_uid = crate::context::uid("rotated");
        let probe = random(APISERVER_PAYLOAD);
        match encrypt(ctx, &probe, &new_uid).await {
            Ok(new) if new.key_id == last.key_id => {
                Ok(format!("key_id {} → {} after {:.1} s", quote(&before.key_id), quote(&last.key_id), started.elapsed().as_secs_f64()))
            }
            Ok(new) => Err(Finding::new(
                format!("{sent_command}; Status → {}; {}", describe_status(&last), describe_encrypt(&probe, &new_uid)),
                new.describe(),
                format!("after the rotation Encrypt's key_id {} differs from Status's {}", quote(&new.key_id), quote(&last.key_id)),
            )),
            Err(finding) => Err(finding),
        }
    };
    let sent_decrypt = format!(
        "{} → {} before the rotation; {sent_command}; then {}",
        describe_encrypt(&plaintext, &uid),
        old.describe(),
        describe_decrypt(&old.ciphertext, &uid, &old.key_id, &old.annotations)
    );
    let old_ciphertext_decrypts = match ctx.decrypt(&old.ciphertext, &uid, &old.key_id, &old.annotations).await {
        Ok(back) if back.as_ref() == plaintext.as_slice() => Ok(()),
        Ok(back) => Err(Finding::new(
            sent_decrypt,
            format!("DecryptResponse {{ plaintext: {} }}", bytes(&back)),
            "an old ciphertext decrypted to different bytes after the rotation",
        )),
        Err(error) => Err(Finding::new(
            sent_decrypt,
            error.to_string(),
            "an old ciphertext no longer decrypts after the rotation: every object stored before it becomes unreadable (keep old KEK versions for decryption)",
        )),
    };
    Rotation { key_id_changes, old_ciphertext_decrypts }
}

/// Runs `command` with `sh -c` in a process group of its own, bounded by `deadline`; `Err`
/// describes what came back. When it ends (or its bound passes, or the run is interrupted),
/// everything it started is stopped with it: a background helper cannot outlive the check.
async fn run_command(command: &str, endpoint: &str, deadline: Duration) -> Result<(), String> {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("KMS_PLUGIN_ENDPOINT", endpoint)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(|error| format!("cannot run `sh -c`: {error}"))?;
    let group = KillGroupOnDrop(child.id().map_or(0, |pid| pid as i32));
    let outcome = tokio::time::timeout(deadline, child.wait_with_output()).await;
    drop(group);
    match outcome {
        Err(_) => Err(format!("still running after {deadline:?} (--rotate-wait); killed")),
        Ok(Err(error)) => Err(format!("lost `sh -c`: {error}")),
        Ok(Ok(output)) if output.status.success() => Ok(()),
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            Err(format!("{}; last stderr lines: {}", output.status, tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
        }
    }
}

/// SIGKILL to a process group when dropped (the rotate command's, however its run ends).
struct KillGroupOnDrop(i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: kill(2) on the process group this check created has no memory effects.
            unsafe {
                libc::kill(-self.0, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotate_command_cannot_leave_a_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // It exits at once, leaving a background helper.
        let command = format!("sleep 600 >/dev/null 2>&1 & echo $! > {}", pid_file.display());
        run_command(&command, "unix:///nowhere", Duration::from_secs(30)).await.unwrap();
        let helper: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(
            kms_lab_stack::process::stopped_within(helper, Duration::from_secs(5)).await,
            "the rotate command's helper {helper} still runs"
        );

        // It outlives its bound: it is killed with its children, and the finding says so.
        let pid_file = dir.path().join("pid-2");
        let command = format!("sleep 600 >/dev/null 2>&1 & echo $! > {}; wait", pid_file.display());
        let error = run_command(&command, "unix:///nowhere", Duration::from_millis(500)).await.unwrap_err();
        assert!(error.contains("still running after"), "{error}");
        let helper: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(
            kms_lab_stack::process::stopped_within(helper, Duration::from_secs(5)).await,
            "the timed-out command's helper {helper} still runs"
        );
    }
}
