//! What failed in a `cargo test` run, picked out of its output line by line, so the end of a
//! long run (all a CI log's tail may show) names each failed test, its test binary and the first
//! line of its panic, rather than "see the output above".

/// The failures seen so far in one `cargo test` run's merged output.
#[derive(Debug, Default)]
pub struct TestFailures {
    /// The test binary running now: `Running tests/vault.rs (target/debug/deps/vault-…)`.
    binary: String,
    /// `binary: test` for each test that ended `... FAILED`, in order.
    failed: Vec<String>,
    /// The first line of each panic's message, by test name.
    panics: Vec<(String, String)>,
    /// A panic whose message is on the next line.
    panicking: Option<(String, String)>,
    /// cargo's own `error: …` lines (a crate that does not compile runs no tests).
    errors: Vec<String>,
}

impl TestFailures {
    /// Takes one line of the run's output.
    pub fn observe(&mut self, line: &str) {
        if let Some((test, at)) = self.panicking.take() {
            self.panics.push((test, format!("{at}: {}", line.trim())));
            return;
        }
        let trimmed = line.trim_start();
        if let Some(running) = trimmed.strip_prefix("Running ") {
            self.binary = running.split(" (").next().unwrap_or(running).to_owned();
        } else if trimmed.starts_with("Doc-tests ") {
            self.binary = trimmed.to_owned();
        } else if let Some(test) = line.strip_prefix("test ").and_then(|rest| rest.strip_suffix(" ... FAILED")) {
            self.failed.push(format!("{}: {test}", self.binary));
        } else if let Some(panic) = line.strip_prefix("thread '") {
            // thread 'name' (1234) panicked at path/to/file.rs:52:85:
            if let (Some((test, _)), Some((_, at))) = (panic.split_once('\''), panic.split_once(" panicked at ")) {
                self.panicking = Some((test.to_owned(), at.trim_end_matches(':').to_owned()));
            }
        } else if line.starts_with("error:") || line.starts_with("error[") {
            self.errors.push(line.to_owned());
        }
    }

    /// One line per failed test (with its panic's place and message when there was one), or,
    /// when no test failed, cargo's error lines; empty when nothing failed.
    pub fn lines(&self) -> Vec<String> {
        if self.failed.is_empty() {
            return self.errors.iter().take(8).cloned().collect();
        }
        self.failed
            .iter()
            .map(|failed| {
                let test = failed.rsplit(": ").next().unwrap_or(failed);
                match self.panics.iter().find(|(name, _)| name == test) {
                    Some((_, panic)) => format!("{failed} — panicked at {panic}"),
                    None => failed.clone(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::TestFailures;

    fn observed(output: &str) -> Vec<String> {
        let mut failures = TestFailures::default();
        output.lines().for_each(|line| failures.observe(line));
        failures.lines()
    }

    #[test]
    fn names_each_failed_test_with_its_binary_and_panic() {
        let output = "\
     Running tests/vault.rs (target/debug/deps/vault-5d1c)

running 2 tests
test hvac_unseals ... FAILED
test a_token_runs_down ... ok
thread 'hvac_unseals' (14364) panicked at mock-kms/tests/vault.rs:113:5:
the hvac script failed: ModuleNotFoundError: No module named 'hvac'
stack backtrace:

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 10.46s
     Running tests/plugin_image.rs (target/debug/deps/plugin_image-0a1b)
test a_manifests_image_runs ... FAILED
";
        assert_eq!(
            observed(output),
            [
                "tests/vault.rs: hvac_unseals — panicked at mock-kms/tests/vault.rs:113:5: the hvac script failed: ModuleNotFoundError: No module named 'hvac'",
                "tests/plugin_image.rs: a_manifests_image_runs",
            ]
        );
    }

    #[test]
    fn without_failed_tests_gives_cargos_errors_and_nothing_when_all_passed() {
        let broken = "   Compiling xtask v0.1.0\nerror[E0425]: cannot find value `x` in this scope\nerror: could not compile `xtask` (bin \"xtask\") due to 1 previous error\n";
        assert_eq!(observed(broken).len(), 2);
        assert!(observed("test a ... ok\ntest result: ok. 1 passed\n").is_empty());
    }
}
