//! Every file in `tests/invalid/` is a plugin manifest with one mistake; its header says where the
//! error must point (`# error-at: LINE`) and what the message must say (`# expect: TEXT`, each a
//! literal substring): refused at load, `file:line:col: key: message`, naming the valid choices.

use std::path::Path;

fn header(text: &str, file: &str) -> (usize, Vec<String>) {
    let mut line = None;
    let mut expect = Vec::new();
    for comment in text.lines().map_while(|l| l.strip_prefix('#')) {
        let comment = comment.trim();
        if let Some(number) = comment.strip_prefix("error-at:") {
            line = Some(number.trim().parse().unwrap_or_else(|_| panic!("{file}: `# error-at:` needs a line number")));
        } else if let Some(needle) = comment.strip_prefix("expect:") {
            expect.push(needle.trim().to_owned());
        }
    }
    let line = line.unwrap_or_else(|| panic!("{file}: the header has no `# error-at: LINE`"));
    assert!(!expect.is_empty(), "{file}: the header has no `# expect: TEXT`");
    (line, expect)
}

#[test]
fn every_invalid_manifest_is_refused_at_its_line_with_the_choices() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("invalid");
    let mut files: Vec<_> = std::fs::read_dir(&fixtures).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 8, "expected the fixture files in {}", fixtures.display());
    let mut problems = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let (line, expect) = header(&text, &file);
        let message = match kms_lab_plugins::manifest::load_file(&path) {
            Ok(_) => {
                problems.push(format!("{file}: accepted"));
                continue;
            }
            Err(error) => error.to_string(),
        };
        let at = format!("{file}:{line}:");
        if !message.contains(&at) {
            problems.push(format!("{file}: the error does not point at `{at}`: {message}"));
        }
        for needle in &expect {
            if !message.contains(needle.as_str()) {
                problems.push(format!("{file}: the error does not say `{needle}`: {message}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
