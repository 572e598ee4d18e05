//! Reading certificates: the identity of an agent's certificate, and the
//! small conversions (names, serials, times, PEM) the rest of the crate
//! shares.

use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::PkiError;

/// The prefix of the SAN URI that names an agent: `urn:ajar:agent:<name>`.
pub(crate) const AGENT_URI: &str = "urn:ajar:agent:";

/// What the server reads from a (rustls-verified) client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The agent's name, from the SAN URI `urn:ajar:agent:<name>`.
    pub name: String,
    /// The serial number in lowercase hex without separators, as in
    /// [`Issued::serial`](crate::Issued::serial).
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// Reads the agent's name, serial and validity from its certificate.
/// This does not verify the certificate: call it on what rustls verified
/// (`ServerConnection::peer_certificates()[0]`). A certificate without the
/// SAN URI `urn:ajar:agent:<name>` is refused.
pub fn peer_identity(cert_der: &[u8]) -> Result<PeerCert, PkiError> {
    let cert = parse_der(cert_der, "the agent's certificate")?;
    let not_agent = || {
        PkiError::new(
            "the client certificate names no agent (it has no SAN URI urn:ajar:agent:<name>): only certificates the agent CA issued at enrolment are accepted",
        )
    };
    let san = cert.subject_alternative_name().ok().flatten().ok_or_else(not_agent)?;
    let name = san
        .value
        .general_names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => uri.strip_prefix(AGENT_URI),
            _ => None,
        })
        .ok_or_else(not_agent)?;
    check_agent_name(name)?;
    let (not_before, not_after) = validity(&cert)?;
    Ok(PeerCert { name: name.to_owned(), serial: serial_hex(&cert), not_before, not_after })
}

/// Agent names follow ajar's names: 1 to 64 ASCII letters, digits, `.`,
/// `_`, `-` or `@`, starting with a letter or digit (all valid in a URN).
pub(crate) fn check_agent_name(name: &str) -> Result<(), PkiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(ok_char)
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(PkiError::new(format!(
            "{name:?} is not a valid agent name: use 1 to 64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
        )))
    }
}

/// The serial as lowercase hex without separators or leading zero bytes.
pub(crate) fn serial_hex(cert: &X509Certificate<'_>) -> String {
    let raw = cert.raw_serial();
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len().saturating_sub(1));
    hex(&raw[start..])
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn validity(cert: &X509Certificate<'_>) -> Result<(DateTime<Utc>, DateTime<Utc>), PkiError> {
    Ok((from_asn1(&cert.validity().not_before)?, from_asn1(&cert.validity().not_after)?))
}

fn from_asn1(t: &ASN1Time) -> Result<DateTime<Utc>, PkiError> {
    DateTime::from_timestamp(t.timestamp(), 0)
        .ok_or_else(|| PkiError::new(format!("the certificate date {t} is out of range: issue a new certificate")))
}

/// A `chrono` time as the `time` type rcgen's parameters take (whole seconds).
pub(crate) fn to_offset(t: DateTime<Utc>) -> Result<OffsetDateTime, PkiError> {
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|_| PkiError::new(format!("the time {t} cannot be written into a certificate: check the clock")))
}

/// The first certificate in `pem`; `what` names it in the message.
pub(crate) fn parse_pem(pem: &str, what: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::new(format!("{what} is not a PEM certificate ({e})")))
}

pub(crate) fn parse_der<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, PkiError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::new(format!("{what} has trailing bytes after the certificate"))),
        Err(e) => Err(PkiError::new(format!("{what} is not an X.509 certificate ({e})"))),
    }
}
