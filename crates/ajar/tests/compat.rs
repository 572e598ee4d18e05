//! A data directory written by an earlier ajar (commit 0103506, before audit
//! payloads were typed; see `fixtures/chain-0103506/make.sh`) keeps working:
//! today's server starts on it, its audit chain and file still verify, and
//! every payload it holds reads back as its typed variant, unchanged.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use ajar_domain::{Action, AuditData, AuditEvent};
use common::*;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chain-0103506/data")
}

fn fixture_events() -> Vec<AuditEvent> {
    let text = std::fs::read_to_string(fixture().join("audit.jsonl")).expect("read the fixture's audit file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not an audit event ({e}): {l}")))
        .collect()
}

#[test]
fn every_payload_an_earlier_ajar_wrote_reads_back_as_its_variant_unchanged() {
    let events = fixture_events();
    assert!(ajar_domain::audit::verify(&events, None).is_ok(), "the fixture's own chain verifies");
    for event in &events {
        let typed = AuditData::from_stored(event.action, &event.data).unwrap_or_else(|| {
            panic!("event {} ({}) has a payload no variant reads: {}", event.seq, event.action, event.data)
        });
        assert_eq!(typed.action(), event.action);
        assert_eq!(typed.to_value(), event.data, "event {} would be written differently today", event.seq);
    }
    // The fixture is worth something only if it holds the kinds of event
    // ajar writes most.
    let actions: HashSet<Action> = events.iter().map(|e| e.action).collect();
    for action in [
        Action::ServerStarted,
        Action::Login,
        Action::LoginFailed,
        Action::Requested,
        Action::Approved,
        Action::Denied,
        Action::Cancelled,
        Action::Activated,
        Action::Opened,
        Action::Closed,
        Action::Expired,
        Action::Revoked,
        Action::Released,
        Action::TimedOut,
        Action::Connection,
        Action::ConnectionRefused,
        Action::ConfigReloaded,
        Action::ConfigRejected,
        Action::Logout,
        Action::TokensRevoked,
    ] {
        assert!(actions.contains(&action), "the fixture has no {action} event: {actions:?}");
    }
}

#[tokio::test]
async fn todays_server_starts_on_an_earlier_data_directory_and_the_chain_still_verifies() {
    let written = fixture_events();
    let server = TestServer::start_on_copy(Config::new(), &fixture()).await;
    let erin = server.login("erin").await;
    let report = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], true, "{report:#}");
    let events = report["events"].as_u64().unwrap_or(0);
    assert!(events > written.len() as u64, "the old events and today's start: {report:#}");
    // The old events are still there, byte for byte as far as the hash
    // goes, and today's server linked its own to the last of them.
    let listed = erin.audit().await;
    for (old, now) in written.iter().zip(&listed) {
        assert_eq!(now["hash"].as_str(), Some(old.hash.as_str()), "event {}", old.seq);
    }
    let next = &listed[written.len()];
    assert_eq!(next["prev_hash"].as_str(), written.last().map(|e| e.hash.as_str()));
}
