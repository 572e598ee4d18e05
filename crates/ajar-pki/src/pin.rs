//! The fingerprint an enrolment token pins the agent CA by.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::PkiError;

/// SHA-256 of the agent CA certificate's DER.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CaFingerprint(pub [u8; 32]);

impl CaFingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Base64url without padding: 43 characters.
    pub fn to_b64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Reads the form [`to_b64url`](Self::to_b64url) writes.
    pub fn parse_b64url(s: &str) -> Result<Self, PkiError> {
        URL_SAFE_NO_PAD
            .decode(s)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Self)
            .ok_or_else(|| {
                PkiError::new(format!(
                    "{s:?} is not an agent CA fingerprint: it is 43 characters of base64url (the SHA-256 of the CA certificate), as the server prints it"
                ))
            })
    }
}
