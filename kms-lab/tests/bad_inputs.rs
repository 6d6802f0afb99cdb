//! Issue 14's fixture suite of bad inputs, across every kms-lab binary: one case per file under
//! `tests/bad-inputs/`. The header says:
//!
//! - `# run:` the command line; its first word is the binary (`kms-lab`, `kms-plugin`,
//!   `mock-kms`, `kms-faulty-plugin`, `kms-lab-bench`). `{input}` is the case's input file, `{dir}` a scratch
//!   directory of the case, `{socket}` the socket `# serve:` listens on (`{dir}/plugin.sock`),
//!   `{fixtures}` the lint fixtures.
//! - `# exit:` the exit code (the one table: 0, 1, 2, 130).
//! - `# match:` text the output must contain (repeatable); `# never:` strings that must NOT
//!   appear anywhere in it (every secret used; repeatable).
//! - `# serve:` a plugin to start first, on `{socket}` (the case waits until it accepts a
//!   connection, and stops it afterwards).
//! - `# interrupt-after:` send SIGINT (Ctrl-C) once the output contains this text.
//! - `# file-match: PATH :: TEXT`: after the run, the file PATH contains TEXT (a partial report).
//! - `# input:` a generated input (`empty | zeros N | xline N | longvalue N`); else the input is
//!   what follows `# ---`.
//!
//! Every case also checks that the output (a pipe, not a terminal) carries no ANSI colour codes.
//! Every command is bounded (no bad input may hang a command): a case that has not ended after
//! [`DEADLINE`] is killed and fails.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kms_lab_stack::own::OwnBinary;

/// The longest a case's command may run.
const DEADLINE: Duration = Duration::from_secs(90);
/// How often a running case is looked at (its exit, its output).
const POLL: Duration = Duration::from_millis(50);

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-inputs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn directives<'a>(header: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("# {name}:");
    header.lines().filter_map(|line| line.strip_prefix(&prefix).map(str::trim)).collect()
}

fn generate(spec: &str, body: &str) -> Vec<u8> {
    let (kind, size) = spec.split_once(' ').unwrap_or((spec, "0"));
    let size: usize = size.parse().expect("`# input:` size is a number");
    match kind {
        "empty" => Vec::new(),
        "zeros" => vec![0u8; size],
        "xline" => format!("kind: {}\n", "x".repeat(size)).into_bytes(),
        "longvalue" => format!(
            "apiVersion: {}\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: lab-kms\n          endpoint: unix:///tmp/p.sock\n      - identity: {{}}\n",
            "k".repeat(size)
        )
        .into_bytes(),
        "" => body.as_bytes().to_vec(),
        other => panic!("unknown `# input:` generator `{other}`"),
    }
}

/// The binary a command line's first word names.
fn binary(name: &str) -> PathBuf {
    let own = match name {
        "kms-lab" => return PathBuf::from(env!("CARGO_BIN_EXE_kms-lab")),
        "kms-plugin" => OwnBinary::KmsPlugin,
        "mock-kms" => OwnBinary::MockKms,
        "kms-faulty-plugin" => OwnBinary::FaultyPlugin,
        "kms-lab-bench" => OwnBinary::Bench,
        other => panic!("unknown binary `{other}` (known: kms-lab, kms-plugin, mock-kms, kms-faulty-plugin, kms-lab-bench)"),
    };
    own.locate().unwrap_or_else(|error| panic!("{error}"))
}

/// Placeholders of a case, substituted in its command lines.
struct Places {
    input: PathBuf,
    dir: PathBuf,
    fixtures: PathBuf,
}

impl Places {
    fn fill(&self, text: &str) -> String {
        text.replace("{input}", self.input.to_str().unwrap())
            .replace("{socket}", self.dir.join("plugin.sock").to_str().unwrap())
            .replace("{dir}", self.dir.to_str().unwrap())
            .replace("{fixtures}", self.fixtures.to_str().unwrap())
    }

    fn command(&self, line: &str) -> Command {
        let words: Vec<String> = line.split_whitespace().map(|word| self.fill(word)).collect();
        let mut command = Command::new(binary(&words[0]));
        command.args(&words[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command
    }
}

/// A child whose stdout and stderr are collected as they come.
struct Running {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("the binary starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        for mut pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buffer = [0u8; 8192];
                while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                    output.lock().unwrap().extend_from_slice(&buffer[..n]);
                }
            });
        }
        Self { child, output }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for the exit, sending SIGINT once the output holds `interrupt_after`; `None` when
    /// it did not end within [`DEADLINE`] (then it is killed).
    fn finish(&mut self, interrupt_after: Option<&str>) -> Option<i32> {
        let started = Instant::now();
        let mut interrupted = false;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes: they end when the child's ends close.
                let drained = Instant::now();
                while Arc::strong_count(&self.output) > 1 && drained.elapsed() < Duration::from_secs(5) {
                    std::thread::sleep(POLL);
                }
                return Some(status.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)));
            }
            if let Some(text) = interrupt_after
                && !interrupted
                && self.text().contains(text)
            {
                self.signal(libc::SIGINT);
                interrupted = true;
            }
            if started.elapsed() > DEADLINE {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let stopping = Instant::now();
            while self.child.try_wait().ok().flatten().is_none() && stopping.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(POLL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `# serve:` and waits until its socket accepts a connection.
fn serve(places: &Places, line: &str) -> Result<Running, String> {
    let server = Running::start(places.command(line));
    let socket = places.dir.join("plugin.sock");
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("`# serve: {line}` did not accept connections on {} within 30 s:\n{}", socket.display(), server.text()));
        }
        std::thread::sleep(POLL);
    }
    Ok(server)
}

fn run_case(case: &Path, fixtures: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(case).unwrap();
    let (header, body) = text.split_once("# ---\n").ok_or("no `# ---` line")?;
    let run = *directives(header, "run").first().ok_or("no `# run:`")?;
    let exit: i32 = directives(header, "exit").first().and_then(|e| e.parse().ok()).ok_or("no `# exit:`")?;
    let dir = tempfile::tempdir().unwrap();
    let places = Places { input: dir.path().join("input"), dir: dir.path().to_owned(), fixtures: fixtures.to_owned() };
    std::fs::write(&places.input, generate(directives(header, "input").first().copied().unwrap_or(""), body)).unwrap();
    let _server = match directives(header, "serve").first() {
        Some(line) => Some(serve(&places, line)?),
        None => None,
    };
    let mut command = Running::start(places.command(run));
    let code = command.finish(directives(header, "interrupt-after").first().copied());
    let output = command.text();
    let mut problems = Vec::new();
    match code {
        None => problems.push(format!("still running after {DEADLINE:?}: killed")),
        Some(code) if code != exit => problems.push(format!("exit {code}, expected {exit}")),
        Some(_) => {}
    }
    for expected in directives(header, "match") {
        if !output.contains(&places.fill(expected)) {
            problems.push(format!("lacks `{expected}`"));
        }
    }
    for secret in directives(header, "never") {
        if output.contains(secret) {
            problems.push(format!("echoes `{secret}`"));
        }
    }
    for spec in directives(header, "file-match") {
        let (path, expected) = spec.split_once(" :: ").ok_or("`# file-match:` is `PATH :: TEXT`")?;
        let path = places.fill(path);
        match std::fs::read_to_string(&path) {
            Ok(contents) if contents.contains(expected) => {}
            Ok(_) => problems.push(format!("{path} lacks `{expected}`")),
            Err(error) => problems.push(format!("{path}: {error}")),
        }
    }
    // Output goes to a pipe here, as to a log file: colour codes only belong on a terminal.
    if output.contains('\x1b') {
        problems.push("ANSI escape codes in output that is not a terminal".to_owned());
    }
    if output.len() > 16 * 1024 {
        problems.push(format!("{} bytes of output", output.len()));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown: String = output.chars().take(2000).collect();
    Err(format!("({run}): {}\n{shown}", problems.join("; ")))
}

#[test]
fn every_bad_input_gets_its_exit_code_and_message_and_never_echoes_a_secret() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kms-lab-lint/tests/fixtures");
    let all = cases();
    assert!(all.len() >= 30, "the suite lost its cases: {all:?}");
    let mut failures = Vec::new();
    for case in all {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if let Err(problem) = run_case(&case, &fixtures) {
            failures.push(format!("{name} {problem}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
