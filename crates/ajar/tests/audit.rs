//! The audit log: every step is an event, the hash chain verifies, the
//! JSON-lines copy matches the database, and editing one stored event makes
//! `ajar audit --verify` fail and name it.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::Value;

/// A server with some history: logins, a grant, a release.
async fn server_with_history() -> (TestServer, Echo) {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let grant = alice.request("db", "5m", "INC-50").await;
    connect_ok(GRANTED, server.config.port("db")).await;
    alice.act(&id(&grant), "release").await.ok(200, "release");
    (server, echo)
}

#[tokio::test]
async fn chain_verifies_and_an_edited_event_is_named() {
    let (server, _echo) = server_with_history().await;
    let erin = server.login("erin").await;

    let events = erin.audit().await;
    assert!(events.len() >= 5, "expected some history:\n{}", show_events(&events));
    // Sequence numbers are dense and every event links to the one before.
    for (i, pair) in events.windows(2).enumerate() {
        assert_eq!(pair[1]["seq"].as_i64(), pair[0]["seq"].as_i64().map(|s| s + 1), "gap after event {i}");
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "event {} does not link to its predecessor", pair[1]["seq"]);
    }

    let report = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["events"].as_u64(), Some(events.len() as u64), "{report:#}");
    assert_eq!(report["head_hash"], events[events.len() - 1]["hash"]);
    assert!(report["first_bad_seq"].is_null());

    let cli = Cli::new(&server);
    cli.login("erin").await;
    let ok = cli.run(&["audit", "--verify"]).await;
    assert!(ok.success(), "an intact chain verifies:\n{ok}");

    // `ajar audit --json` pages through the log as JSON lines.
    let page = cli.run(&["audit", "--json", "--after", "2", "--limit", "3"]).await;
    assert!(page.success(), "{page}");
    let lines: Vec<Value> = page
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let seqs: Vec<i64> = lines.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, [3, 4, 5], "{page}");
    assert_eq!(lines[0]["hash"], events[2]["hash"]);

    // A requester may not verify the whole log.
    let alice = server.login("alice").await;
    alice.get("/api/v1/audit/verify").await.problem(403, "forbidden");

    // Forge one stored event behind the server's back.
    let target = events.iter().find(|e| e["seq"] == 3).expect("event 3");
    assert_ne!(target["reason"], "forged");
    let changed = server.execute_sql("UPDATE audit_events SET reason = 'forged' WHERE seq = 3").await;
    assert_eq!(changed, 1);

    let broken = cli.run(&["audit", "--verify"]).await;
    assert!(!broken.success(), "verification must fail after an edit:\n{broken}");
    let said = format!("{}{}", broken.stdout, broken.stderr);
    assert!(said.contains("event 3"), "the first bad event is named:\n{broken}");

    let report = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], false, "{report:#}");
    assert_eq!(report["first_bad_seq"], 3, "{report:#}");
    assert!(report["problem"].as_str().is_some_and(|p| !p.is_empty()), "{report:#}");

    let json = cli.run(&["audit", "--verify", "--json"]).await;
    assert!(!json.success(), "{json}");
    let parsed: Value = serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{json}"));
    assert_eq!(parsed["first_bad_seq"], 3, "{json}");
}

#[tokio::test]
async fn every_step_is_audited_and_copied_to_the_audit_file() {
    let (server, _echo) = server_with_history().await;
    let adam = server.login("adam").await;
    let events = adam.audit().await;

    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    for wanted in ["login", "requested", "activated", "opened", "released", "closed"] {
        assert!(actions.contains(&wanted), "no {wanted} event:\n{}", show_events(&events));
    }
    for event in &events {
        for field in ["seq", "at", "actor", "action", "prev_hash", "hash"] {
            assert!(!event[field].is_null(), "event without {field}: {event:#}");
        }
    }
    // The gateway connection is audited with its traffic once it ends.
    let connection =
        adam.wait_audit("`connection`", std::time::Duration::from_secs(5), |e| e["action"] == "connection").await;
    assert_eq!(connection["target"], "db", "{connection:#}");
    assert!(connection["source"].as_str().is_some_and(|s| s.contains("127.0.0.2")), "{connection:#}");

    // The data dir holds secrets (token hashes, the whole log): private.
    let mode = std::fs::metadata(server.data_dir()).expect("data dir").permissions().mode();
    assert_eq!(mode & 0o077, 0, "the data dir is open to others: {mode:o}");

    // The audit file holds the same events, one JSON object per line.
    let events = adam.audit().await;
    let file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("read audit.jsonl");
    let lines: Vec<Value> =
        file.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert_eq!(lines.len(), events.len(), "audit.jsonl:\n{file}\nAPI:\n{}", show_events(&events));
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(line["seq"], event["seq"]);
        assert_eq!(line["hash"], event["hash"]);
        assert_eq!(line["action"], event["action"]);
    }

    // A requester reads only their own trail.
    let alice = server.login("alice").await;
    let own = alice.audit().await;
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e["actor"] == "alice" || e["subject"] == "alice"), "{}", show_events(&own));
    assert!(own.len() < events.len());
}
