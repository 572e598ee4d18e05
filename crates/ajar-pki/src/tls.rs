//! The rustls configs of both ends, and the verifier that lets an agent
//! trust the server through the CA fingerprint in its enrolment token.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::{cert, AgentKey, CaFingerprint, PkiError};

/// The ALPN protocol of the agent connection.
pub const ALPN: &[u8] = b"ajar-agent/1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: CertificateDer<'static>) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca).map_err(|e| {
        PkiError::new(format!(
            "the agent CA certificate cannot be trusted ({e}): enrol again with a new token (`ajar agent-token create --group G` on the server)"
        ))
    })?;
    Ok(Arc::new(roots))
}

fn tls_error(e: impl std::fmt::Display) -> PkiError {
    PkiError::new(format!("rustls refused the agent TLS configuration ({e}): this is a bug in ajar, please report it"))
}

/// The agent listener's config; see [`AgentCa::server_config`](crate::AgentCa::server_config).
pub(crate) fn server_config(
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .allow_unauthenticated()
        .build()
        .map_err(tls_error)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The agent's config for enrolment: no client certificate, and the
/// server's chain trusted only if it contains a CA certificate whose SHA-256
/// is `pin` and the server's certificate verifies against that CA for the
/// server name, as usual. ALPN [`ALPN`], TLS 1.3 only.
pub fn enrol_client_config(pin: &CaFingerprint) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let provider = provider();
    let verifier =
        PinnedCa { pin: *pin, algorithms: provider.signature_verification_algorithms, provider: provider.clone() };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The agent's config once enrolled: trusts only `ca_pem` and presents
/// `cert_pem` with `key`. ALPN [`ALPN`], TLS 1.3 only.
pub fn client_config(ca_pem: &str, cert_pem: &str, key: &AgentKey) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let again = |e: PkiError| {
        PkiError::new(format!("{e}: enrol again with a new token (`ajar agent-token create --group G` on the server)"))
    };
    let ca = cert::parse_pem(ca_pem, "the agent CA certificate").map_err(again)?;
    let cert = cert::parse_pem(cert_pem, "the agent certificate").map_err(again)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![cert], key.private_der())
        .map_err(|e| again(PkiError::new(format!("the agent certificate and key do not fit ({e})"))))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Trusts a server whose chain holds the pinned CA certificate, verifying
/// the server's certificate against that CA alone.
#[derive(Debug)]
struct PinnedCa {
    pin: CaFingerprint,
    provider: Arc<CryptoProvider>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| CaFingerprint::of_der(c) == self.pin) else {
            let message = format!(
                "the server did not present the agent CA {} that the enrolment token pins: check the server address, or create a new token on this server (`ajar agent-token create --group G`)",
                self.pin.to_b64url()
            );
            // `Error::Other` shows the sentence as it is (a `CertificateError`
            // would show its Debug form); the server gets a handshake_failure alert.
            return Err(rustls::Error::Other(OtherError(Arc::new(PkiError::new(message)))));
        };
        let roots = roots(ca.clone().into_owned()).map_err(|e| rustls::Error::Other(OtherError(Arc::new(e))))?;
        let inner = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone()).build().map_err(|e| {
            rustls::Error::General(format!("the pinned agent CA cannot be used to verify the server: {e}"))
        })?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
