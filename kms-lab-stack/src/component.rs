//! The named components of a stack (`etcd`, `apiserver-0`, `mock-kms`, `mock-kms-1`, `plugin-0`)
//! and what a start or restart waits for: the vocabulary of [`Stack::start`](crate::Stack::start),
//! [`stop`](crate::Stack::stop), [`kill`](crate::Stack::kill) and [`restart`](crate::Stack::restart).

use std::fmt;
use std::str::FromStr;

/// A component of the stack, by the name scenarios, logs and reports use.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// etcd (`etcd`).
    Etcd,
    /// The apiserver with this index (`apiserver-0`).
    Apiserver(usize),
    /// Every node of the mock KMS at once (`mock-kms`).
    MockKms,
    /// One node of the mock KMS (`mock-kms-1`).
    MockKmsNode(usize),
    /// A plugin, by its name in the stack (`plugin-0`, or any name a scenario gives it).
    Plugin(String),
}

/// A component name that does not parse (`apiserver-x`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a component name: expected a number after the dash in `apiserver-N` / `mock-kms-N`, or `etcd`, `mock-kms` or a plugin's name"
)]
pub struct BadComponentName(pub String);

impl FromStr for Component {
    type Err = BadComponentName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = |rest: &str| rest.parse::<usize>().map_err(|_| BadComponentName(text.to_owned()));
        Ok(if text == "etcd" {
            Self::Etcd
        } else if text == "mock-kms" {
            Self::MockKms
        } else if let Some(rest) = text.strip_prefix("apiserver-") {
            Self::Apiserver(number(rest)?)
        } else if let Some(rest) = text.strip_prefix("mock-kms-") {
            Self::MockKmsNode(number(rest)?)
        } else if text.is_empty() || text.contains(char::is_whitespace) {
            return Err(BadComponentName(text.to_owned()));
        } else {
            Self::Plugin(text.to_owned())
        })
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Etcd => f.write_str("etcd"),
            Self::Apiserver(i) => write!(f, "apiserver-{i}"),
            Self::MockKms => f.write_str("mock-kms"),
            Self::MockKmsNode(i) => write!(f, "mock-kms-{i}"),
            Self::Plugin(name) => f.write_str(name),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Component {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Component {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What [`Stack::start`](crate::Stack::start) or [`Stack::restart`](crate::Stack::restart) waits
/// for before it returns. Every wait is bounded; `none` leaves the observation to later steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, strum::VariantArray, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum WaitFor {
    /// The component's full readiness: an apiserver's `/readyz`, a plugin's Status, etcd's
    /// `/health`, a mock KMS node's health endpoint.
    #[default]
    Ready,
    /// Apiservers only: `/livez/ping` answers, while post-start hooks that need the KMS may
    /// still wait (an apiserver that cannot decrypt stored objects).
    Serving,
    /// Apiservers only: `/livez` answers (it serves, whatever its KMS providers say).
    Live,
    /// Apiservers only: the process is started; nothing is awaited.
    None,
}

impl WaitFor {
    /// Every choice, in the order the docs list them (generated from the variants).
    pub const ALL: &'static [WaitFor] = <Self as strum::VariantArray>::VARIANTS;

    /// The name scenario files use (`ready`), as serde spells it too.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Whether `component` has this kind of wait (only apiservers have more than `ready`).
    pub fn applies_to(self, component: &Component) -> bool {
        self == Self::Ready || matches!(component, Component::Apiserver(_))
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["etcd", "apiserver-0", "apiserver-12", "mock-kms", "mock-kms-2", "plugin-0", "aws-plugin"] {
            assert_eq!(name.parse::<Component>().unwrap().to_string(), name);
        }
    }

    #[test]
    fn a_bad_number_names_the_valid_shapes() {
        let error = "apiserver-x".parse::<Component>().unwrap_err().to_string();
        assert!(error.contains("`apiserver-x`") && error.contains("apiserver-N") && error.contains("mock-kms-N"), "{error}");
        assert!("".parse::<Component>().is_err());
    }

    #[test]
    fn only_apiservers_have_partial_waits() {
        assert!(WaitFor::Serving.applies_to(&Component::Apiserver(0)));
        assert!(!WaitFor::None.applies_to(&Component::Plugin("plugin-0".into())));
        assert!(WaitFor::Ready.applies_to(&Component::Etcd));
    }
}
