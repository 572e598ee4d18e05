//! One-time enrolment tokens: `ajar1.<secret>.<pin>`.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::cert::hex;
use crate::{CaFingerprint, PkiError};

const PREFIX: &str = "ajar1";

/// A one-time enrolment token, shown once to the admin who created it:
/// `ajar1.<secret>.<pin>`, the secret 32 random bytes and the pin the agent
/// CA's fingerprint, both base64url without padding. The server keeps only
/// [`secret_hash`](Self::secret_hash). `Debug` does not show the secret, and
/// there is no `Display`: the text is [`to_string_secret`](Self::to_string_secret).
#[derive(Clone)]
pub struct EnrolToken {
    secret: [u8; 32],
    pin: CaFingerprint,
}

impl EnrolToken {
    /// A new token with a secret from the operating system's random source.
    pub fn new(pin: CaFingerprint) -> EnrolToken {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        EnrolToken { secret, pin }
    }

    /// Reads the text of a token (surrounding whitespace, as pasted, is ignored).
    pub fn parse(s: &str) -> Result<EnrolToken, PkiError> {
        let bad = |why: &str| {
            PkiError::new(format!(
                "this is not an enrolment token ({why}): an enrolment token looks like ajar1.<secret>.<ca>; create one with `ajar agent-token create --group G`"
            ))
        };
        let parts: Vec<&str> = s.trim().split('.').collect();
        let [prefix, secret, pin] = parts.as_slice() else {
            return Err(bad("it does not have three parts separated by dots"));
        };
        if *prefix != PREFIX {
            return Err(bad("it does not start with ajar1."));
        }
        let secret = URL_SAFE_NO_PAD
            .decode(secret)
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| bad("its secret is not 43 characters of base64url"))?;
        let pin = CaFingerprint::parse_b64url(pin)
            .map_err(|_| bad("its CA fingerprint is not 43 characters of base64url"))?;
        Ok(EnrolToken { secret, pin })
    }

    /// The fingerprint of the agent CA the agent should trust.
    pub fn pin(&self) -> CaFingerprint {
        self.pin
    }

    /// The SHA-256 of the secret's bytes, lowercase hex: what the server stores.
    pub fn secret_hash(&self) -> String {
        hex(&Sha256::digest(self.secret))
    }

    /// The full text of the token, secret included; named so it is never
    /// printed by accident.
    pub fn to_string_secret(&self) -> String {
        format!("{PREFIX}.{}.{}", URL_SAFE_NO_PAD.encode(self.secret), self.pin.to_b64url())
    }
}

impl fmt::Debug for EnrolToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrolToken").field("secret", &"<hidden>").field("pin", &self.pin.to_b64url()).finish()
    }
}
