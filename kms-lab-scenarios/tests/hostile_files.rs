//! Issue 28: the scenario and plugin-manifest loaders read files users write. A generator takes
//! every real scenario (`scenarios/**/*.yaml`) and catalogue manifest (`catalog/*.yaml`)
//! and damages it the way hands and editors do: a line dropped, doubled or cut, a value replaced
//! by an odd one (a huge number, a negative duration, a tab, a NUL, a YAML anchor, a tag, a
//! thousand-deep list), the file truncated at any byte. Each load ends with a scenario or
//! manifest, or an error naming the file, never a panic.
//!
//! Cases: 256 per loader (`PROPTEST_CASES=N` for more).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

/// Every `*.yaml` below `dir` (recursively), sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_owned()
}

/// One damage to a file's text.
#[derive(Debug, Clone)]
enum Damage {
    /// Drop line N (modulo the line count).
    DropLine(usize),
    /// Repeat line N.
    DoubleLine(usize),
    /// Replace what follows the first `: ` on line N with this value.
    Value(usize, String),
    /// Insert this text at the start of line N.
    Insert(usize, String),
    /// Keep only the first N bytes (at a character boundary).
    Truncate(usize),
}

fn odd_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "~",
            "null",
            "-1",
            "0",
            "-1s",
            "1e400s",
            "99999999999999999999",
            "1.5.5s",
            "\"\\u0000\"",
            "\t",
            "'",
            "\"",
            "[",
            "{",
            "&a x",
            "*a",
            "*nope",
            "!!binary AAAA",
            "!!str",
            "<<: *a",
            "[[[[[[[[",
            "? x",
            "| ",
            "> ",
            "yes",
            "NaN",
            ".inf",
            "0x10",
            "/etc/passwd",
            "../../../x",
            "unix:///",
            "é🔑\u{202e}",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,30}",
        (1usize..2_000).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n))),
        (1usize..200).prop_map(|n| (0..n).map(|i| format!("\n  - k{i}: v")).collect()),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        1 => any::<usize>().prop_map(Damage::DropLine),
        1 => any::<usize>().prop_map(Damage::DoubleLine),
        4 => (any::<usize>(), odd_value()).prop_map(|(line, value)| Damage::Value(line, value)),
        1 => (any::<usize>(), odd_value()).prop_map(|(line, text)| Damage::Insert(line, text)),
        1 => any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn apply(text: &str, damages: &[Damage]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for damage in damages {
        let count = lines.len().max(1);
        match damage {
            Damage::DropLine(n) if !lines.is_empty() => drop(lines.remove(n % count)),
            Damage::DoubleLine(n) if !lines.is_empty() => {
                let line = lines[n % count].clone();
                lines.insert(n % count, line);
            }
            Damage::Value(n, value) if !lines.is_empty() => {
                let line = &mut lines[n % count];
                if let Some(at) = line.find(": ") {
                    line.truncate(at + 2);
                    line.push_str(value);
                }
            }
            Damage::Insert(n, text) if !lines.is_empty() => lines[n % count].insert_str(0, text),
            Damage::Truncate(n) => {
                let joined = lines.join("\n");
                let cut = (0..=n % (joined.len() + 1)).rev().find(|i| joined.is_char_boundary(*i)).unwrap_or(0);
                lines = joined[..cut].lines().map(str::to_owned).collect();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

/// A load that failed must name the file it read.
fn names_the_file<T, E: std::fmt::Display>(file: &Path, loaded: Result<T, E>) -> Result<(), TestCaseError> {
    if let Err(error) = loaded {
        let message = error.to_string();
        let name = file.file_name().expect("a file name").to_string_lossy().into_owned();
        prop_assert!(message.contains(&name), "the error names the file: {message}");
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_damaged_scenario_loads_or_is_refused_with_its_file_named(file in prop::sample::select(yaml_files(&workspace().join("scenarios"))), damages in prop::collection::vec(damage(), 1..4)) {
        let text = std::fs::read_to_string(&file).expect("a scenario file");
        names_the_file(&file, kms_lab_scenarios::load::parse(&file, &apply(&text, &damages)))?;
    }

    #[test]
    fn a_damaged_manifest_loads_or_is_refused_with_its_file_named(file in prop::sample::select(yaml_files(&workspace().join("catalog"))), damages in prop::collection::vec(damage(), 1..4)) {
        let text = std::fs::read_to_string(&file).expect("a manifest file");
        names_the_file(&file, kms_lab_catalog::manifest::parse(&file, &apply(&text, &damages)))?;
    }
}
