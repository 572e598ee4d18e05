//! People and machines whose identity an external provider vouches for
//! (single sign-on, trusted JWT bearer tokens), as opposed to the local
//! `[[users]]` of the config file.

use std::collections::BTreeSet;

use crate::Name;

/// Who an identity provider says someone is, after ajar checked the token
/// and mapped the provider's groups to ajar groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The ajar name: the verified e-mail address of a person, or the
    /// configured claim of a machine token.
    pub name: Name,
    /// The provider's `iss`.
    pub issuer: String,
    /// The provider's stable `sub` for this account. A name stays bound to
    /// the first (issuer, subject) that used it, so that a recycled e-mail
    /// address cannot take over someone else's history.
    pub subject: String,
    pub email: Option<String>,
    /// ajar groups, already mapped.
    pub groups: BTreeSet<Name>,
}

impl ExternalIdentity {
    /// Whether `other` is the same account at the same provider.
    pub fn same_account(&self, other: &ExternalIdentity) -> bool {
        self.issuer == other.issuer && self.subject == other.subject
    }
}
