//! Every file in `tests/invalid/` is a plugin manifest with one mistake; its header says where the
//! error must point (`# error-at: LINE`) and what the message must say (`# expect: TEXT`, each a
//! literal substring): refused at load, `file:line:col: key: message`, naming the valid choices.

use std::path::Path;

#[test]
fn every_invalid_manifest_is_refused_at_its_line_with_the_choices() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("invalid");
    let mut problems = Vec::new();
    for fixture in kms_lab_fixtures::load_dir(&fixtures, 8) {
        match kms_lab_catalog::manifest::load_file(&fixture.path) {
            Ok(_) => problems.push(format!("{}: accepted", fixture.file)),
            Err(error) => problems.extend(fixture.problems(&error.to_string())),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
