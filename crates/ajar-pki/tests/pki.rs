//! The agent PKI end to end: CA files on disk, enrolment and mutual TLS
//! over real rustls handshakes (tokio-rustls over an in-memory duplex
//! stream), CSRs, tokens and the agent's files.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ajar_pki::rustls::pki_types::pem::PemObject;
use ajar_pki::rustls::pki_types::{CertificateDer, CertificateSigningRequestDer, ServerName};
use ajar_pki::rustls::{ClientConfig, ServerConfig};
use ajar_pki::*;
use base64::Engine;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const DAY: Duration = Duration::from_secs(24 * 3600);
const SERVER_NAME: &str = "ajar.example.test";

fn now() -> DateTime<Utc> {
    Utc::now()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn new_ca() -> (tempfile::TempDir, AgentCa) {
    let dir = tempfile::tempdir().unwrap();
    let ca = AgentCa::load_or_create(&dir.path().join("agent-ca"), now()).unwrap();
    (dir, ca)
}

fn server(ca: &AgentCa) -> Arc<ServerConfig> {
    ca.server_config(&[SERVER_NAME.to_owned(), "127.0.0.1".to_owned()], now()).unwrap()
}

/// What each end saw of one handshake, followed by one byte from server to client.
struct Outcome {
    server: Result<Option<Vec<CertificateDer<'static>>>, std::io::Error>,
    client: Result<(), std::io::Error>,
}

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>, name: &str) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server).accept(server_io).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        let peer = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
        tls.write_all(b"!").await?;
        tls.flush().await?;
        Ok(peer)
    };
    let client_side = async move {
        let mut tls = TlsConnector::from(client).connect(name, client_io).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok(())
    };
    let (server, client) = tokio::join!(server_side, client_side);
    Outcome { server, client }
}

/// An enrolled agent of `ca`: its key and issued certificate.
fn enrolled(ca: &AgentCa, name: &str) -> (AgentKey, Issued) {
    let key = AgentKey::generate().unwrap();
    let issued = ca.issue_agent(&key.csr_pem(name).unwrap(), name, now(), 30 * DAY).unwrap();
    (key, issued)
}

#[test]
fn the_ca_is_created_private_and_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("agent-ca");
    let created = AgentCa::load_or_create(&ca_dir, now()).unwrap();
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert!(!ca_dir.join(".ca.key.tmp").exists());
    let loaded = AgentCa::load_or_create(&ca_dir, now() + TimeDelta::days(1)).unwrap();
    assert_eq!(created.fingerprint(), loaded.fingerprint());
    assert_eq!(created.cert_pem(), loaded.cert_pem());
    let der = CertificateDer::from_pem_slice(created.cert_pem().as_bytes()).unwrap();
    assert_eq!(CaFingerprint::of_der(&der), created.fingerprint());

    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=ajar agent CA");
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    let years = cert.validity().not_after.timestamp() - now().timestamp();
    assert!((3649 * 86400..=3650 * 86400).contains(&years), "{years}");
}

#[test]
fn a_ca_key_open_to_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    AgentCa::load_or_create(dir.path(), now()).unwrap();
    let key = dir.path().join("ca.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = AgentCa::load_or_create(dir.path(), now()).err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "the agent CA key {} is readable or writable by other users (mode 0644): run `chmod 600 {}`",
            key.display(),
            key.display()
        )
    );
}

#[test]
fn a_ca_certificate_of_another_key_is_refused() {
    let (one, _) = new_ca();
    let (other, _) = new_ca();
    std::fs::copy(other.path().join("agent-ca/ca.pem"), one.path().join("agent-ca/ca.pem")).unwrap();
    let err = AgentCa::load_or_create(&one.path().join("agent-ca"), now()).err().unwrap().to_string();
    assert!(err.contains("is not the certificate of the key"), "{err}");
}

#[test]
fn a_ca_key_without_its_certificate_gets_one_and_a_certificate_without_its_key_is_refused() {
    let (dir, ca) = new_ca();
    let ca_dir = dir.path().join("agent-ca");
    let (key, issued) = enrolled(&ca, "alice");
    std::fs::remove_file(ca_dir.join("ca.pem")).unwrap();
    let again = AgentCa::load_or_create(&ca_dir, now()).unwrap();
    // Same key and name: what the old certificate signed still verifies.
    let ca_pem = again.cert_pem();
    AgentFiles::new(&dir.path().join("agent")).save(&key, &issued.cert_pem, &ca_pem).unwrap();

    std::fs::remove_file(ca_dir.join("ca.key")).unwrap();
    let err = AgentCa::load_or_create(&ca_dir, now()).err().unwrap().to_string();
    assert!(err.contains("exists but its key"), "{err}");
}

#[tokio::test]
async fn enrolment_trusts_the_server_only_through_the_pinned_ca() {
    let (_dir, ca) = new_ca();
    let client = enrol_client_config(&ca.fingerprint()).unwrap();
    let outcome = handshake(server(&ca), client.clone(), SERVER_NAME).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client);
    assert_eq!(outcome.server.unwrap(), None, "no client certificate at enrolment");

    // By IP address too, as the certificate names it.
    let outcome = handshake(server(&ca), client.clone(), "127.0.0.1").await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client);

    // The right CA but a name the server's certificate does not have.
    let outcome = handshake(server(&ca), client, "other.example.test").await;
    assert!(outcome.client.is_err());

    let (_other_dir, other) = new_ca();
    let wrong = enrol_client_config(&other.fingerprint()).unwrap();
    let outcome = handshake(server(&ca), wrong, SERVER_NAME).await;
    let err = outcome.client.unwrap_err().to_string();
    assert!(err.starts_with("other error: the server did not present the agent CA"), "{err}");
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn an_issued_certificate_authenticates_the_agent_by_the_name_it_was_issued_for() {
    let (_dir, ca) = new_ca();
    let (key, issued) = enrolled(&ca, "alice");
    assert_eq!(issued.serial.len(), 32);
    assert!(issued.serial.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let client = client_config(&ca.cert_pem(), &issued.cert_pem, &key).unwrap();
    let outcome = handshake(server(&ca), client, SERVER_NAME).await;
    assert!(outcome.client.is_ok(), "{:?}", outcome.client);
    let peer = outcome.server.unwrap().expect("a client certificate");
    let identity = peer_identity(&peer[0]).unwrap();
    assert_eq!(identity.name, "alice");
    assert_eq!(identity.serial, issued.serial);
    assert_eq!(identity.not_after, issued.not_after);
    assert!(identity.not_before < now() - TimeDelta::minutes(4));
    let lifetime = identity.not_after - now();
    assert!(lifetime > TimeDelta::days(29) && lifetime <= TimeDelta::days(30));

    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(cert.subject().to_string(), "CN=alice");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth && !eku.any);
    assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
    assert!(!cert.is_ca());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_by_the_server() {
    let (_dir, ca) = new_ca();
    let (_other_dir, other) = new_ca();
    let (key, issued) = enrolled(&other, "mallory");
    // The client trusts the real server, but its certificate is the other CA's.
    let client = client_config(&ca.cert_pem(), &issued.cert_pem, &key).unwrap();
    let outcome = handshake(server(&ca), client, SERVER_NAME).await;
    let err = outcome.server.unwrap_err().to_string();
    // Both CAs are called "ajar agent CA", so webpki finds the real one and
    // the signature does not verify.
    assert!(err.contains("invalid peer certificate: BadSignature"), "{err}");
    assert!(outcome.client.is_err());
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let (_dir, ca) = new_ca();
    let csr = AgentKey::generate().unwrap().csr_pem("alice").unwrap();
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap().as_ref().to_vec();
    // The last byte is in the signature's s value.
    *der.last_mut().unwrap() ^= 0x01;
    let broken = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(&der)
    );
    let err = ca.issue_agent(&broken, "alice", now(), DAY).err().unwrap().to_string();
    assert!(err.contains("is not signed by its own key"), "{err}");
    let err = ca.issue_agent("not a csr", "alice", now(), DAY).err().unwrap().to_string();
    assert!(err.contains("cannot be read"), "{err}");
}

#[test]
fn the_identity_comes_from_the_argument_not_from_the_csr() {
    let (_dir, ca) = new_ca();
    let key = AgentKey::generate().unwrap();
    let issued = ca.issue_agent(&key.csr_pem("mallory").unwrap(), "alice", now(), DAY).unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    assert_eq!(peer_identity(&der).unwrap().name, "alice");

    // A CSR asking for another agent's URI and for server authentication gets neither.
    let pair = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI("urn:ajar:agent:mallory".try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&pair).unwrap().pem().unwrap();
    let issued = ca.issue_agent(&csr, "alice", now(), DAY).unwrap();
    let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
    assert_eq!(peer_identity(&der).unwrap().name, "alice");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
    assert_eq!(sans.len(), 1);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
}

#[test]
fn invalid_agent_names_and_certificates_without_one_are_refused() {
    let (_dir, ca) = new_ca();
    let csr = AgentKey::generate().unwrap().csr_pem("alice").unwrap();
    for bad in ["", "-x", "a b", "a:b", &"x".repeat(65)] {
        let err = ca.issue_agent(&csr, bad, now(), DAY).err().unwrap().to_string();
        assert!(err.contains("is not a valid agent name"), "{err}");
    }
    let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    let err = peer_identity(&der).err().unwrap().to_string();
    assert!(err.contains("names no agent"), "{err}");
}

#[test]
fn the_server_config_needs_usable_names() {
    let (_dir, ca) = new_ca();
    assert!(ca.server_config(&[], now()).is_err());
    assert!(ca.server_config(&["not a name".to_owned()], now()).is_err());
    assert!(ca.server_config(&["::1".to_owned(), "ajar".to_owned()], now()).is_ok());
}

#[test]
fn tokens_round_trip_and_hide_their_secret() {
    let (_dir, ca) = new_ca();
    let token = EnrolToken::new(ca.fingerprint());
    let text = token.to_string_secret();
    let parts: Vec<&str> = text.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "ajar1");
    assert_eq!(parts[1].len(), 43);
    assert_eq!(parts[2], ca.fingerprint().to_b64url());

    let parsed = EnrolToken::parse(&format!("  {text}\n")).unwrap();
    assert_eq!(parsed.pin(), ca.fingerprint());
    assert_eq!(parsed.secret_hash(), token.secret_hash());
    assert_eq!(parsed.to_string_secret(), text);
    assert_eq!(token.secret_hash().len(), 64);
    assert_ne!(EnrolToken::new(ca.fingerprint()).secret_hash(), token.secret_hash());

    let debug = format!("{token:?}");
    assert!(!debug.contains(parts[1]), "{debug}");
    assert!(debug.contains("<hidden>"), "{debug}");

    assert_eq!(CaFingerprint::parse_b64url(parts[2]).unwrap(), ca.fingerprint());
    assert!(CaFingerprint::parse_b64url("abc").is_err());
}

#[test]
fn malformed_tokens_are_refused_with_the_shape_of_a_token() {
    let (_dir, ca) = new_ca();
    let text = EnrolToken::new(ca.fingerprint()).to_string_secret();
    let parts: Vec<&str> = text.split('.').collect();
    let pin = parts[2];
    for bad in [
        "".to_owned(),
        "ajar1".to_owned(),
        format!("ajar2.{}.{pin}", parts[1]),
        format!("ajar1.{}.{pin}.x", parts[1]),
        format!("ajar1.{}.{pin}", &parts[1][1..]),
        format!("ajar1.{}=.{pin}", parts[1]),
        format!("ajar1.{}.{}", parts[1], &pin[1..]),
        format!("ajar1.{}+.{pin}", &parts[1][1..]),
    ] {
        let err = EnrolToken::parse(&bad).err().unwrap().to_string();
        assert!(
            err.ends_with(
                "an enrolment token looks like ajar1.<secret>.<ca>; create one with `ajar agent-token create --group G`"
            ),
            "{err}"
        );
        assert!(!err.contains(parts[1]), "the message repeats the secret: {err}");
    }
}

#[test]
fn agent_files_save_load_and_forget() {
    let (dir, ca) = new_ca();
    let files = AgentFiles::new(&dir.path().join("agent"));
    assert!(files.load().unwrap().is_none());
    files.forget().unwrap();

    let (key, issued) = enrolled(&ca, "alice");
    files.save(&key, &issued.cert_pem, &ca.cert_pem()).unwrap();
    let agent_dir = dir.path().join("agent");
    assert_eq!(mode(&agent_dir), 0o700);
    assert_eq!(mode(&agent_dir.join("key.pem")), 0o600);
    let loaded = files.load().unwrap().expect("enrolled");
    assert_eq!(loaded.key.to_pem(), key.to_pem());
    assert_eq!(loaded.cert_pem, issued.cert_pem);
    assert_eq!(loaded.ca_pem, ca.cert_pem());
    assert_eq!(loaded.not_after, issued.not_after);
    assert!(loaded.not_before < loaded.not_after);
    // What was saved still makes a working client config.
    client_config(&loaded.ca_pem, &loaded.cert_pem, &loaded.key).unwrap();

    files.forget().unwrap();
    assert!(files.load().unwrap().is_none());
    assert!(!agent_dir.join("cert.pem").exists());
    assert!(!agent_dir.join("key.pem").exists());
}

#[test]
fn damaged_or_open_agent_files_are_refused() {
    let (dir, ca) = new_ca();
    let agent_dir = dir.path().join("agent");
    let files = AgentFiles::new(&agent_dir);
    let (key, issued) = enrolled(&ca, "alice");

    // save refuses what load would refuse.
    let other_key = AgentKey::generate().unwrap();
    let err = files.save(&other_key, &issued.cert_pem, &ca.cert_pem()).err().unwrap().to_string();
    assert!(err.contains("not the certificate of key.pem"), "{err}");
    let (_other_dir, other) = new_ca();
    let err = files.save(&key, &issued.cert_pem, &other.cert_pem()).err().unwrap().to_string();
    assert!(err.contains("not signed by ca.pem"), "{err}");

    files.save(&key, &issued.cert_pem, &ca.cert_pem()).unwrap();
    std::fs::write(agent_dir.join("cert.pem"), "garbage").unwrap();
    let err = files.load().err().unwrap().to_string();
    assert!(err.contains("are damaged") && err.contains("enrol again"), "{err}");

    files.save(&key, &issued.cert_pem, &ca.cert_pem()).unwrap();
    std::fs::write(agent_dir.join("key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .unwrap();
    assert!(files.load().is_err());

    files.save(&key, &issued.cert_pem, &ca.cert_pem()).unwrap();
    std::fs::remove_file(agent_dir.join("key.pem")).unwrap();
    let err = files.load().err().unwrap().to_string();
    assert!(err.contains("key.pem or ca.pem is missing"), "{err}");

    files.save(&key, &issued.cert_pem, &ca.cert_pem()).unwrap();
    std::fs::set_permissions(agent_dir.join("key.pem"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = files.load().err().unwrap().to_string();
    assert!(err.contains("mode 0640") && err.contains("chmod 600"), "{err}");
}
