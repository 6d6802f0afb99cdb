//! Issue 28: `kms-lab decode` reads values someone else wrote (etcd, a backup, a paste). A
//! generator builds values from real envelope prefixes (KMS v2 with key ids and annotation keys
//! holding control characters, KMS v1, static keys, identity) followed by any bytes, in every
//! input encoding; the real binary ends with exit 0, 1 or 2 and a message, never a panic, and
//! prints nothing that would steer the terminal (no escape or other control character).

use std::process::Command;

use kms_wire::envelope::Envelope;
use kms_wire::proto::storage::{EncryptedDekSourceType, EncryptedObject};
use proptest::prelude::*;
use prost::Message as _;

fn value() -> impl Strategy<Value = Vec<u8>> {
    let odd = prop::sample::select(vec!["key", "\u{1b}[2J\u{1b}[31mred", "a\nb", "\u{0}", "é", "\u{7f}", "x.example.io"]);
    let kms_v2 = (odd.clone(), odd, prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(key_id, annotation, dek)| {
        let object = EncryptedObject {
            encrypted_data: b"sealed".to_vec().into(),
            key_id: key_id.to_owned(),
            encrypted_dek_source: dek.into(),
            annotations: [(annotation.to_owned(), b"\x1b]0;title\x07".to_vec().into())].into_iter().collect(),
            encrypted_dek_source_type: EncryptedDekSourceType::AesGcmKey as i32,
        };
        [b"k8s:enc:kms:v2:lab\x1b[1m:".to_vec(), object.encode_to_vec()].concat()
    });
    let prefixed = (
        prop::sample::select(vec![
            &b"k8s:enc:kms:v2:lab:"[..],
            b"k8s:enc:kms:v1:lab:",
            b"k8s:enc:aesgcm:v1:key1:",
            b"k8s:enc:",
            b"k8s\x00",
            b"{",
        ]),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(prefix, tail)| [prefix, tail.as_slice()].concat());
    prop_oneof![2 => kms_v2, 3 => prefixed, 1 => prop::collection::vec(any::<u8>(), 0..200)]
}

fn encoded(value: &[u8], encoding: &str) -> Vec<u8> {
    use base64::Engine as _;
    match encoding {
        "hex" => hex::encode(value).into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD.encode(value).into_bytes(),
        _ => value.to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)))]

    #[test]
    fn any_value_is_decoded_or_refused_with_a_code_from_the_table(value in value(), encoding in prop::sample::select(vec!["raw", "hex", "base64"]), json in any::<bool>()) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("value");
        std::fs::write(&file, encoded(&value, encoding)).expect("write the value");
        let mut command = Command::new(env!("CARGO_BIN_EXE_kms-lab"));
        command.arg("decode").arg(&file).args(["--input-encoding", encoding]);
        if json {
            command.args(["--format", "json"]);
        }
        let output = command.output().expect("kms-lab runs");
        let code = output.status.code();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        prop_assert!(matches!(code, Some(0..=2)), "exit {code:?} for a {} B value ({encoding}):\n{stderr}", value.len());
        prop_assert!(code == Some(0) || !stderr.trim().is_empty(), "a refusal says why");
        // Text has no control character at all; JSON escapes C0 (ESC among them) and may carry
        // DEL or C1 characters inside its strings, as JSON allows.
        let steering = |c: char| c.is_control() && c != '\n';
        let json_steering = |c: char| c < ' ' && c != '\n';
        let stdout_ok = if json {
            stdout.is_empty() || (!stdout.chars().any(json_steering) && serde_json::from_str::<serde_json::Value>(&stdout).is_ok())
        } else {
            !stdout.chars().any(steering)
        };
        prop_assert!(stdout_ok && !stderr.chars().any(steering), "a control character reaches the terminal:\n{stdout}{stderr}");
        // What the file says it is, it is: the envelope parses the same way the command reads it.
        let _ = Envelope::parse(&value);
    }
}
