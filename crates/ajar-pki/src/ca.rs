//! ajar's own agent CA (server side): its files, the certificates it
//! issues to agents, and the TLS config of the agent listener.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::cert::{self, AGENT_URI};
use crate::{fs, tls, CaFingerprint, PkiError};

/// How far back certificates start, for peers whose clocks are behind.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);
const CA_LIFETIME: TimeDelta = TimeDelta::days(3650);
const SERVER_LIFETIME: TimeDelta = TimeDelta::days(365);

/// ajar's own agent CA (server side), kept as `ca.pem` and `ca.key` in its
/// directory.
pub struct AgentCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

/// A certificate [`AgentCa::issue_agent`] signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub cert_pem: String,
    /// Lowercase hex without separators, as [`PeerCert::serial`](crate::PeerCert::serial).
    pub serial: String,
    pub not_after: DateTime<Utc>,
}

impl AgentCa {
    /// Loads `dir/ca.pem` and `dir/ca.key`, or creates them: the directory
    /// with mode 0700, the key (ECDSA P-256) with 0600, each written to a
    /// temporary file and renamed, so a crash never leaves half a file. The
    /// certificate: CN "ajar agent CA", valid from 5 minutes before `now`
    /// for 10 years, a CA with path length 0, key usage certificate and CRL
    /// signing. Refuses a key other users may read and a certificate that
    /// is not for the key. A key without its certificate (a crash between
    /// the two writes) gets a new certificate for the same key.
    pub fn load_or_create(dir: &Path, now: DateTime<Utc>) -> Result<AgentCa, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let key_pem = fs::read_private(&key_path, "the agent CA key")?;
        let cert_pem = fs::read(&cert_path)?;
        match (cert_pem, key_pem) {
            (Some(cert_pem), Some(key_pem)) => Self::from_pem(&cert_pem, &key_pem, dir),
            (Some(_), None) => Err(PkiError::new(format!(
                "{} exists but its key {} does not: restore ca.key from a backup, or move ca.pem away to create a new agent CA (every agent then has to enrol again)",
                cert_path.display(),
                key_path.display()
            ))),
            (None, key_pem) => {
                fs::private_dir(dir)?;
                let key_pem = match key_pem {
                    Some(key_pem) => key_pem,
                    None => {
                        let key_pem = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal)?.serialize_pem();
                        fs::write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
                        key_pem
                    }
                };
                let key = KeyPair::from_pem(&key_pem).map_err(|e| bad_key(&key_path, e))?;
                let cert = ca_params(now)?.self_signed(&key).map_err(internal)?;
                fs::write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)?;
                Self::from_pem(&cert.pem(), &key_pem, dir)
            }
        }
    }

    fn from_pem(cert_pem: &str, key_pem: &str, dir: &Path) -> Result<AgentCa, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad_key(&key_path, e))?;
        let damaged = |e: PkiError| {
            PkiError::new(format!(
                "{e}: restore {} from a backup, or move ca.pem and ca.key away to create a new agent CA (every agent then has to enrol again)",
                cert_path.display()
            ))
        };
        let cert_der = cert::parse_pem(cert_pem, &cert_path.display().to_string()).map_err(damaged)?;
        let parsed = cert::parse_der(&cert_der, &cert_path.display().to_string()).map_err(damaged)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::new(format!(
                "{} is not the certificate of the key {}: put the matching pair back from a backup, or move both away to create a new agent CA (every agent then has to enrol again)",
                cert_path.display(),
                key_path.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| damaged(PkiError::new(format!("{} cannot be used to sign ({e})", cert_path.display()))))?;
        Ok(AgentCa { issuer, cert_der, cert_pem: cert_pem.to_owned() })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The SHA-256 of the CA certificate, which enrolment tokens pin.
    pub fn fingerprint(&self) -> CaFingerprint {
        CaFingerprint::of_der(&self.cert_der)
    }

    /// Signs an agent's CSR. The identity comes from the arguments, never
    /// from the CSR: only its public key is used, once its self-signature
    /// verifies. The certificate: subject CN `agent`, SAN URI
    /// `urn:ajar:agent:<agent>`, extended key usage client authentication
    /// only, key usage digital signature, valid from 5 minutes before `now`
    /// until `now + lifetime`, a random positive 16-byte serial.
    pub fn issue_agent(
        &self,
        csr_pem: &str,
        agent: &str,
        now: DateTime<Utc>,
        lifetime: std::time::Duration,
    ) -> Result<Issued, PkiError> {
        cert::check_agent_name(agent)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
            rcgen::Error::InvalidCertificationRequestSignature => PkiError::new(
                "the agent's certificate request is not signed by its own key (it was damaged or forged): run the agent's enrolment again",
            ),
            e => PkiError::new(format!(
                "the agent's certificate request cannot be read ({e}): run the agent's enrolment again with this version of ajar"
            )),
        })?;
        let not_after = TimeDelta::from_std(lifetime)
            .ok()
            .and_then(|l| now.checked_add_signed(l))
            .ok_or_else(|| PkiError::new("the agent certificate lifetime is too long: choose at most a few years"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(agent);
        let uri = Ia5String::try_from(format!("{AGENT_URI}{agent}")).map_err(internal)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = cert::to_offset(now - CLOCK_SKEW)?;
        params.not_after = cert::to_offset(not_after)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let signed = params.signed_by(&csr.public_key, &self.issuer).map_err(internal)?;
        // Serial and end are read back from the certificate, so they are
        // exactly what `peer_identity` will read from it.
        let parsed = cert::parse_der(signed.der(), "the issued certificate")?;
        let (_, not_after) = cert::validity(&parsed)?;
        Ok(Issued { cert_pem: signed.pem(), serial: cert::serial_hex(&parsed), not_after })
    }

    /// A rustls `ServerConfig` for the agent listener, with a fresh server
    /// certificate (its key only in memory) signed by this CA: valid from 5
    /// minutes before `now` for a year, SANs `names` (an IP address where
    /// one parses, else a DNS name), extended key usage server
    /// authentication; the chain sent is [server certificate, CA
    /// certificate]. Client certificates are optional, because an agent's
    /// enrolment connection has none; one that is presented must chain to
    /// this CA or the handshake fails. ALPN [`ALPN`](crate::ALPN), TLS 1.3 only.
    pub fn server_config(&self, names: &[String], now: DateTime<Utc>) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        if names.is_empty() {
            return Err(PkiError::new(
                "the agent listener needs at least one name for its certificate: give the DNS name or IP address agents connect to",
            ));
        }
        // rustls's own parsing decides, so every name is one a client can verify.
        if let Some(bad) = names.iter().find(|n| ServerName::try_from(n.as_str()).is_err()) {
            return Err(PkiError::new(format!(
                "{bad:?} is neither a DNS name nor an IP address: give the agent listener the names agents connect to"
            )));
        }
        let mut params = CertificateParams::new(names.to_vec()).map_err(internal)?;
        params.distinguished_name = common_name("ajar agent listener");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = cert::to_offset(now - CLOCK_SKEW)?;
        params.not_after = cert::to_offset(now + SERVER_LIFETIME)?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(internal)?;
        let signed = params.signed_by(&key, &self.issuer).map_err(internal)?;
        let chain = vec![signed.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        tls::server_config(self.cert_der.clone(), chain, key)
    }
}

fn ca_params(now: DateTime<Utc>) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name("ajar agent CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = cert::to_offset(now - CLOCK_SKEW)?;
    params.not_after = cert::to_offset(now + CA_LIFETIME)?;
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// 16 random bytes with the top bit clear (a positive DER integer) and the
/// next one set (no leading zero byte to strip), so every serial is 16 bytes.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn bad_key(path: &Path, e: rcgen::Error) -> PkiError {
    PkiError::new(format!(
        "the agent CA key {} is not a PEM private key ({e}): restore it from a backup, or move ca.pem and ca.key away to create a new agent CA (every agent then has to enrol again)",
        path.display()
    ))
}

/// rcgen failing on parameters this crate built itself: a bug, not an input problem.
fn internal(e: impl std::fmt::Display) -> PkiError {
    PkiError::new(format!("ajar could not build a certificate ({e}): this is a bug in ajar, please report it"))
}
