//! Names of users, groups, targets and policies.

use std::fmt;

/// A name that is safe to show, log, use in a label selector and put in a
/// URL path: 1 to 64 characters of ASCII letters, digits, `.`, `_`, `-` and
/// `@`, starting with a letter or digit. `@` is there for users who sign in
/// through single sign-on, who are named by their e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{value:?} is not a valid name: use 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
)]
pub struct InvalidName {
    pub value: String,
}

impl Name {
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
        let valid = !value.is_empty()
            && value.len() <= 64
            && value.chars().all(ok_char)
            && value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if valid {
            Ok(Self(value.to_owned()))
        } else {
            Err(InvalidName { value: value.to_owned() })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Name::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names_and_rejects_the_rest() {
        for ok in ["alice", "db-prod", "a", "team_1.x", "9lives", "carol@example.com"] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "@x", "a b", "env=prod", "ä", "group:x", &"x".repeat(65)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }
}
