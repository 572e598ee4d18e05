//! The agent's own key (agent side) and the CSR it sends at enrolment.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cert::check_agent_name;
use crate::PkiError;

/// The agent's private key. Its `Debug` does not show the key.
pub struct AgentKey {
    pair: KeyPair,
}

impl AgentKey {
    /// A new ECDSA P-256 key.
    pub fn generate() -> Result<AgentKey, PkiError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map(|pair| AgentKey { pair }).map_err(|e| {
            PkiError::new(format!("cannot generate the agent key ({e}): check that the system's random source works"))
        })
    }

    /// Reads a PKCS#8 PEM key, as [`to_pem`](Self::to_pem) writes it.
    pub fn from_pem(pem: &str) -> Result<AgentKey, PkiError> {
        KeyPair::from_pem(pem)
            .map(|pair| AgentKey { pair })
            .map_err(|e| PkiError::new(format!("the agent key is not a PEM private key ({e})")))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// A certificate request for `agent`, signed by this key. The server
    /// takes only the public key from it; the name is there for people
    /// reading the request.
    pub fn csr_pem(&self, agent: &str) -> Result<String, PkiError> {
        check_agent_name(agent)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, agent);
        params.distinguished_name = dn;
        params.serialize_request(&self.pair).and_then(|csr| csr.pem()).map_err(|e| {
            PkiError::new(format!(
                "cannot build the certificate request ({e}): this is a bug in ajar, please report it"
            ))
        })
    }

    /// The raw public key (the SubjectPublicKeyInfo's key bits).
    pub(crate) fn public_key_raw(&self) -> &[u8] {
        self.pair.public_key_raw()
    }

    /// The key as rustls takes it.
    pub(crate) fn private_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pair.serialize_der()))
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey { .. }")
    }
}
