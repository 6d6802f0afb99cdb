//! Reading the linter's inputs safely: a size cap before anything is parsed, text checked to be
//! UTF-8, serde's messages re-rendered without values, and every user value quoted in a message
//! clipped, so no input — however large or secret — is ever echoed whole.

use std::io::Read;
use std::path::Path;

use crate::error::LintError;

/// The largest file `kms-lab lint` reads (1 MiB). Real EncryptionConfigurations and flag files
/// are a few KiB; a larger one is not what was meant, and parsing it would cost seconds and GBs.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The most characters of a user value quoted in a finding or an error.
pub const MAX_QUOTED_CHARS: usize = 64;

/// Reads `path` as UTF-8 text of at most [`MAX_FILE_BYTES`], naming it `what` in errors
/// (e.g. `the EncryptionConfiguration`, `--apiserver-flags`).
pub fn read_text(path: &Path, what: &'static str) -> Result<String, LintError> {
    let read_error = |source| LintError::Read { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if meta.is_dir() {
        return Err(LintError::NotAFile { path: path.to_owned(), what, found: "a directory" });
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(LintError::TooLarge { path: path.to_owned(), what, limit: MAX_FILE_BYTES });
    }
    String::from_utf8(bytes).map_err(|error| {
        let before = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        LintError::NotText { file: path.display().to_string(), line, what }
    })
}

/// `value` cut to [`MAX_QUOTED_CHARS`] characters, saying how long it was when cut.
pub fn clip(value: &str) -> String {
    match value.char_indices().nth(MAX_QUOTED_CHARS) {
        None => value.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes in all)", &value[..end], value.len()),
    }
}

/// `text` with every backtick-quoted span (how messages quote user values) clipped by [`clip`],
/// and the whole cut to a few lines' worth, so a huge value cannot flood the report.
pub fn clip_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4096));
    let mut parts = text.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (index, part) in parts.enumerate() {
        out.push('`');
        // Odd parts (0, 2, …after the first) are inside backticks.
        if index % 2 == 0 { out.push_str(&clip(part)) } else { out.push_str(part) }
    }
    const MAX_MESSAGE_CHARS: usize = 2000;
    match out.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((end, _)) => format!("{}… (cut)", &out[..end]),
        None => out,
    }
}

/// What a serde type expectation means to a user (serde names internal Rust types:
/// `struct RawKey`, `i64`, `a sequence`).
fn friendly_expected(expected: &str) -> String {
    let expected = expected.trim();
    let by_struct = [
        ("struct RawConfig", "an EncryptionConfiguration mapping (apiVersion, kind, resources)"),
        ("struct RawResource", "a mapping with `resources` and `providers`"),
        ("struct RawProvider", "a mapping with one provider type (kms, aescbc, aesgcm, secretbox or identity)"),
        ("struct RawKeys", "a mapping with `keys`"),
        ("struct RawKey", "a mapping with `name` and `secret`"),
        ("struct RawKms", "a mapping with `apiVersion`, `name`, `endpoint`, `cachesize`, `timeout`"),
    ];
    if let Some((_, friendly)) = by_struct.iter().find(|(name, _)| *name == expected) {
        return (*friendly).to_owned();
    }
    if expected.starts_with("struct ") || expected.starts_with("a map") {
        return "a mapping".to_owned();
    }
    match expected {
        "a sequence" => "a list".to_owned(),
        "i64" | "i32" | "u64" | "u32" | "usize" => "an integer".to_owned(),
        "a boolean" | "a string" => expected.to_owned(),
        other if other.len() <= 80 && !other.contains(['"', '`']) => other.to_owned(),
        _ => "another type".to_owned(),
    }
}

/// The kind of value serde saw, from its `invalid type: <unexpected>` text, without the value:
/// `string "c2Vj…"` → `a string`, ``integer `7` `` → `an integer`.
fn unexpected_kind(unexpected: &str) -> &'static str {
    let word = unexpected.split([' ', '`', '"']).next().unwrap_or_default();
    match word {
        "string" | "char" => "a string",
        "integer" => "an integer",
        "floating" => "a number",
        "boolean" => "a boolean",
        "sequence" => "a list",
        "map" => "a mapping",
        "unit" | "null" => "nothing (null)",
        _ => "a value of another type",
    }
}

/// Re-renders a serde data error for the key at `key` so it names the key and what it must be,
/// never the value (which may be a provider's secret). `message` is serde's text without its
/// location.
pub fn render_serde_message(key: &str, message: &str) -> String {
    let at = if key.is_empty() || key == "." { "the value".to_owned() } else { format!("`{key}`") };
    // serde_yaml puts its own path first (`resources[0].providers[0]: invalid type: …`).
    const KNOWN: [&str; 7] =
        ["invalid type: ", "invalid value: ", "unknown variant", "invalid length", "missing field", "duplicate field", "unknown field"];
    let message = KNOWN
        .iter()
        .filter_map(|prefix| message.find(prefix))
        .min()
        .filter(|at| *at > 0 && message[..*at].ends_with(": "))
        .map_or(message, |at| &message[at..]);
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (unexpected, expected) = rest.split_once(", expected ").unwrap_or((rest, "another type"));
        return format!("{at} is {}, expected {}", unexpected_kind(unexpected), friendly_expected(expected));
    }
    if let Some(rest) = message.strip_prefix("invalid value: ") {
        let expected = rest.split_once(", expected ").map(|(_, e)| friendly_expected(e)).unwrap_or_else(|| "another value".to_owned());
        return format!("{at} has an invalid value, expected {expected}");
    }
    if message.starts_with("unknown variant") {
        let expected = message.split_once(", expected ").map(|(_, e)| e.to_owned()).unwrap_or_default();
        return format!("{at} has an unknown value, expected {expected}");
    }
    if message.starts_with("invalid length") || message.starts_with("missing field") || message.starts_with("duplicate field") {
        return format!("{at}: {}", clip_quoted(message));
    }
    // Anything else (a YAML syntax error, a custom message): the grammar's words only, never
    // a quoted value.
    if message.contains(['"', '`']) { format!("{at} cannot be read here") } else { clip_quoted(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_their_values_and_internal_names() {
        let cases = [
            (
                "resources[0].providers[0].aescbc.keys[0]",
                "invalid type: string \"c2VjcmV0LWtleS0xMjM0NTY3ODkwMTIzNDU2Nzg5MA==\", expected struct RawKey",
                "`resources[0].providers[0].aescbc.keys[0]` is a string, expected a mapping with `name` and `secret`",
            ),
            ("x.cachesize", "invalid type: string \"lots\", expected i64", "`x.cachesize` is a string, expected an integer"),
            ("x.secret", "invalid type: integer `123`, expected a string", "`x.secret` is an integer, expected a string"),
            ("x", "invalid value: integer `-1`, expected u64", "`x` has an invalid value, expected an integer"),
        ];
        let prefixed = render_serde_message("", "resources[0]: invalid type: string \"s3cr3t\", expected a sequence");
        assert_eq!(prefixed, "the value is a string, expected a list");
        for (key, message, expected) in cases {
            assert_eq!(render_serde_message(key, message), expected);
        }
    }

    #[test]
    fn quoted_values_are_clipped() {
        let long = "k".repeat(10_000);
        let clipped = clip_quoted(&format!("`{long}` is not a field (known here: `a`, `b`)"));
        assert!(clipped.len() < 200 && clipped.contains("10000 bytes in all") && clipped.ends_with("(known here: `a`, `b`)"), "{clipped}");
    }
}
