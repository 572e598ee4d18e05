//! The PKI of `ajar agent`: the server's own agent CA, the agent's key and
//! certificate files, one-time enrolment tokens, and the mutual-TLS configs
//! both ends use.
//!
//! An agent connects out to the server. Its first connection (enrolment)
//! has no certificate: it trusts the server only through the CA fingerprint
//! in its [`EnrolToken`] ([`enrol_client_config`]) and sends a CSR, which the
//! server signs with [`AgentCa::issue_agent`] under the name the token was
//! made for. Every later connection presents that certificate
//! ([`client_config`]); the server checks it against the CA
//! ([`AgentCa::server_config`]) and reads the agent's name from it
//! ([`peer_identity`]). All crypto is rustls with its ring provider, which
//! this crate re-exports so callers use the same version.

pub use rustls;

mod agent;
mod ca;
mod cert;
mod error;
mod files;
mod fs;
mod pin;
mod tls;
mod token;

pub use agent::AgentKey;
pub use ca::{AgentCa, Issued};
pub use cert::{peer_identity, PeerCert};
pub use error::PkiError;
pub use files::{AgentFiles, Enrolled};
pub use pin::CaFingerprint;
pub use tls::{client_config, enrol_client_config, ALPN};
pub use token::EnrolToken;
