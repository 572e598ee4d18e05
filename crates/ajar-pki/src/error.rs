//! The one error of this crate: a sentence saying what is wrong and how to
//! fix it.

/// What went wrong, as a full sentence naming the bad file or value and
/// the fix (for example "the agent CA key /x/ca.key is readable by other
/// users (mode 0644): run `chmod 600 /x/ca.key`").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PkiError(String);

impl PkiError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
