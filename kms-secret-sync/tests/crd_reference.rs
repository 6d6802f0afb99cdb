//! The checked-in CRD reference (docs/secret-sync-crds.md) is what the Rust types generate: a
//! change to the types without regenerating it fails here, with the command that fixes it.

use std::path::Path;

use kms_secret_sync::reference::{REFERENCE_PATH, REGENERATE, markdown};

#[test]
fn the_crd_reference_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(REFERENCE_PATH);
    let generated = markdown();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &generated).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{REFERENCE_PATH} is stale (the CRD types changed): run `{REGENERATE}` (or UPDATE_EXPECT=1 cargo test -p kms-secret-sync --test crd_reference) and commit it"
    );
}
