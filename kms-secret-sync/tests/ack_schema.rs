//! Our CRDs against ack-secret-manager's own (`deploy/crds/*.yaml` and the chart's
//! `templates/*-crd.yaml` of `../shared/thirdparty/ack-secret-manager`, commit 223ebff), field by
//! field: every field of theirs is ours with the same type, the same required fields and no
//! constraint theirs lacks (so every object their schema accepts, ours accepts, and what theirs
//! refuses, ours refuses); every field of ours that theirs lacks is optional and one of the
//! documented additions.
//!
//! Without the third-party folder (a checkout without `../shared`), the test says where it
//! looked and passes only if `KMS_LAB_REQUIRE_THIRDPARTY` is unset.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

/// Our additions: optional everywhere, documented in `crd.rs` and the README.
const ADDITIONS: [&str; 3] = ["ExternalSecret spec.refreshInterval", "ExternalSecret spec.deletionPolicy", "ExternalSecret status.*"];

/// Keywords that only describe (or that the apiserver fills in): they constrain nothing.
const DESCRIPTIVE: [&str; 5] = ["description", "title", "nullable", "default", "x-kubernetes-preserve-unknown-fields"];

/// Root fields every object has whatever the schema says (the apiserver validates them itself).
const IMPLICIT: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// The `openAPIV3Schema` of kind `kind` in a multi-document CRD YAML file.
fn their_schema(path: &PathBuf, kind: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for document in serde_yaml::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if crd["spec"]["names"]["kind"] == kind {
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        }
    }
    panic!("{} has no CRD of kind {kind}", path.display())
}

fn our_schema(kind: &str) -> Value {
    let crd = kms_secret_sync::crd::crds().into_iter().find(|c| c.spec.names.kind == kind).expect("our CRD");
    serde_json::to_value(&crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema).unwrap()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

fn is_addition(kind: &str, path: &str) -> bool {
    ADDITIONS.iter().any(|a| {
        let (k, p) = a.split_once(' ').unwrap();
        k == kind && (p == path || p.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix)))
    })
}

/// Walks theirs and ours together; returns every difference, in words.
fn compare(kind: &str, path: &str, theirs: &Value, ours: &Value, out: &mut Vec<String>) {
    let at = if path.is_empty() { "the root".to_owned() } else { format!("`{path}`") };
    if theirs["type"] != ours["type"] {
        out.push(format!("{kind} {at}: type {} in theirs, {} in ours", theirs["type"], ours["type"]));
    }
    if required(theirs) != required(ours) {
        out.push(format!("{kind} {at}: required {:?} in theirs, {:?} in ours", required(theirs), required(ours)));
    }
    if let Some(object) = ours.as_object() {
        for (keyword, value) in object {
            let structural = ["type", "properties", "items", "required"].contains(&keyword.as_str());
            if !structural && !DESCRIPTIVE.contains(&keyword.as_str()) && theirs.get(keyword) != Some(value) {
                out.push(format!("{kind} {at}: ours adds `{keyword}: {value}`"));
            }
        }
    }
    if theirs["type"] == "array" {
        compare(kind, &format!("{path}[]"), &theirs["items"], &ours["items"], out);
    }
    let (their_props, our_props) = (theirs["properties"].as_object(), ours["properties"].as_object());
    for (name, their_child) in their_props.into_iter().flatten() {
        if path.is_empty() && IMPLICIT.contains(&name.as_str()) {
            continue;
        }
        let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        match our_props.and_then(|p| p.get(name)) {
            Some(our_child) => compare(kind, &child_path, their_child, our_child, out),
            None => out.push(format!("{kind} `{child_path}`: theirs has it, ours does not")),
        }
    }
    for (name, _) in our_props.into_iter().flatten() {
        let child_path = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let theirs_has = their_props.is_some_and(|p| p.contains_key(name));
        if !theirs_has && !is_addition(kind, &child_path) {
            out.push(format!("{kind} `{child_path}`: ours has it, theirs does not, and it is not a documented addition"));
        }
        if !theirs_has && required(ours).contains(name) {
            out.push(format!("{kind} `{child_path}`: our addition is required"));
        }
    }
}

#[test]
fn our_crds_are_ack_secret_managers_plus_optional_additions() {
    let Some(root) = kms_lab_provision::thirdparty_source_or_skip(&kms_lab_provision::GoRecipe::ack_secret_manager()) else {
        return;
    };
    let files = [
        ("ExternalSecret", root.join("deploy/crds/alibabacloud.com_externalsecrets.yaml")),
        ("SecretStore", root.join("deploy/crds/alibabacloud.com_secretstores.yaml")),
        ("ExternalSecret", root.join("charts/ack-secret-manager/templates/external-secrets-crd.yaml")),
        ("SecretStore", root.join("charts/ack-secret-manager/templates/secret-stores-crd.yaml")),
    ];
    let mut differences = Vec::new();
    for (kind, file) in &files {
        let mut found = Vec::new();
        compare(kind, "", &their_schema(file, kind), &our_schema(kind), &mut found);
        differences.extend(found.into_iter().map(|d| format!("{}: {d}", file.display())));
    }
    assert!(differences.is_empty(), "our CRDs differ from ack-secret-manager's:\n{}", differences.join("\n"));
}
