//! placeholder
pub const KNOWN_PLUGINS: [&str; 1] = ["kms-plugin"];
