//! Time on real sockets: a grant closes at its `ends_at` (new connections
//! refused, live ones cut within a second), and a pending request that
//! nobody decides times out and never becomes active.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn grant_expires_on_time_and_cuts_live_connections() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;

    let request = alice.request("db", "3s", "INC-10 quick look").await;
    let id = id(&request);
    assert_eq!(request["state"], "active", "{request:#}");
    let ends_at = time(&request, "ends_at");
    assert_eq!((ends_at - time(&request, "starts_at")).num_seconds(), 3);

    // A connection opened during the grant works until the end…
    let mut stream = connect_ok(GRANTED, port).await;
    let cut = closed_at(&mut stream, Duration::from_secs(10)).await;
    assert_cut_on_time(cut, ends_at);

    // …and no new connection is let in after it.
    assert_refused(GRANTED, port).await;
    assert_eq!(echo.accepted().len(), 1);

    // The control plane agrees: expired, closed, audited.
    let expired = alice.wait_state(&id, "expired", Duration::from_secs(5)).await;
    assert!(expired["connect"].is_null(), "{expired:#}");
    assert_eq!(time(&expired, "ends_at"), ends_at, "expiry keeps the approved end");
    let adam = server.login("adam").await;
    let event = adam
        .wait_audit("`expired` for the grant", Duration::from_secs(5), |e| {
            e["action"] == "expired" && e["request_id"] == id.as_str()
        })
        .await;
    assert_eq!(event["actor"], "ajar:system");
    adam.wait_audit("`closed` for the grant", Duration::from_secs(5), |e| {
        e["action"] == "closed" && e["request_id"] == id.as_str()
    })
    .await;
    let closed = alice.get_request(&id).await;
    assert_eq!(closed["enforcement"]["status"], "closed", "{closed:#}");
    // The cut connection is audited with the grant it belonged to.
    let connection = adam
        .wait_audit("`connection` for the grant", Duration::from_secs(5), |e| {
            e["action"] == "connection" && e["request_id"] == id.as_str()
        })
        .await;
    assert_eq!(connection["data"]["ended_by"], "grant_ended", "{connection:#}");
    assert_eq!(connection["data"]["bytes_up"], "hello from 127.0.0.2".len(), "{connection:#}");
}

#[tokio::test]
async fn pending_request_times_out_and_never_becomes_active() {
    let echo = Echo::start().await;
    let config = Config::new().server("approval_timeout = \"2s\"").target("db", echo.addr).policy(Policy::approved_by(
        "reviewed",
        &["group:dev"],
        &["db"],
        1,
        &["group:sre"],
    ));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let request = alice.request("db", "10m", "INC-11").await;
    let id = id(&request);
    assert_eq!(request["state"], "pending");
    let decide_by = time(&request, "decide_by");
    let created = time(&request, "created_at");
    assert_eq!((decide_by - created).num_seconds(), 2, "{request:#}");

    sleep_until(decide_by).await;
    let timed_out = alice.wait_state(&id, "timed_out", Duration::from_secs(3)).await;
    assert!(timed_out["starts_at"].is_null() && timed_out["connect"].is_null(), "{timed_out:#}");

    // Too late to approve: it never becomes active.
    let detail = bob.act(&id, "approve").await.problem(409, "wrong-state");
    assert!(detail.contains("timed_out") || detail.contains("timed out"), "{detail}");
    assert_eq!(alice.get_request(&id).await["state"], "timed_out");
    assert_refused(GRANTED, port).await;
    assert!(echo.accepted().is_empty());

    let events = server.login("adam").await.audit().await;
    let actions = actions_for(&events, &id);
    assert_eq!(actions, ["requested", "timed_out"], "{}", show_events(&events));
    let event = events.iter().find(|e| e["action"] == "timed_out").expect("timed_out event");
    assert_eq!(event["actor"], "ajar:system");
}
