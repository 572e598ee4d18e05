//! Bad input is refused with a 4xx problem+json that says what is wrong,
//! and leaves no trace: no request, no audit event — except a failed
//! login, which is audited by design. Also the login rate limit and
//! expired tokens.

mod common;

use common::*;
use serde_json::{json, Value};

/// What a rejection must leave as it was.
struct Snapshot {
    requests: Value,
    events: Vec<Value>,
}

async fn snapshot(admin: &Session) -> Snapshot {
    Snapshot { requests: admin.requests().await, events: admin.audit().await }
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_change_nothing() {
    let echo = Echo::start().await;
    let config = Config::new()
        .target("db", echo.addr)
        .policy(Policy::auto("limited", &["group:dev"], &["db"]).max("1h").sources(&["10.8.0.0/16"]));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let adam = server.login("adam").await;

    // One good request first, so that "nothing changed" compares against
    // a log and a list that are not empty.
    let good = alice.request("db", "30m", "INC-20").await;
    assert_eq!(good["state"], "active");
    let before = snapshot(&adam).await;
    assert!(!before.events.is_empty());

    let request = |body: Value| {
        let alice = alice.clone();
        async move { alice.post("/api/v1/requests", body).await }
    };

    let detail = request(json!({ "target": "db", "duration": "2h", "reason": "INC-21" }))
        .await
        .problem(422, "duration-too-long");
    assert!(detail.contains("2h") && detail.contains("1h"), "names what was asked and the limit: {detail}");

    let detail =
        request(json!({ "target": "nope", "duration": "5m", "reason": "INC-21" })).await.problem(422, "unknown-target");
    assert!(detail.contains("nope"), "{detail}");

    let detail =
        request(json!({ "target": "db", "duration": "5m", "reason": "" })).await.problem(422, "reason-required");
    assert!(detail.contains("reason"), "{detail}");
    let detail = request(json!({ "target": "db", "duration": "5m" })).await.problem(422, "reason-required");
    assert!(detail.contains("reason"), "{detail}");

    let detail = request(json!({ "target": "db", "duration": "5m", "reason": "INC-21", "source": "0.0.0.0/0" }))
        .await
        .problem(422, "invalid-source");
    assert!(detail.contains("0.0.0.0/0"), "{detail}");

    let detail = request(json!({ "target": "db", "duration": "5m", "reason": "INC-21", "source": "192.0.2.0/24" }))
        .await
        .problem(422, "source-not-allowed");
    assert!(detail.contains("192.0.2.0/24") && detail.contains("10.8.0.0/16"), "{detail}");

    let detail = request(json!({ "target": "db", "duration": "forever", "reason": "INC-21" }))
        .await
        .problem(422, "invalid-duration");
    assert!(detail.contains("forever"), "{detail}");

    let detail = alice
        .post_raw("/api/v1/requests", r#"{"target": "db", "duration": "5m", "reason": "#)
        .await
        .problem(400, "malformed-json");
    assert!(detail.contains("JSON"), "{detail}");

    let detail = request(json!({ "target": "db", "reason": "INC-21" })).await.problem(400, "invalid-body");
    assert!(detail.contains("duration"), "names the missing field: {detail}");

    let detail = request(json!({ "target": "db", "duration": "5m", "reason": "INC-21", "extra": 1 }))
        .await
        .problem(400, "invalid-body");
    assert!(detail.contains("extra"), "names the unknown field: {detail}");

    // No token at all, and a token that was never issued.
    let detail = alice.without_token().ask("db", "5m", "INC-21").await.problem(401, "unauthenticated");
    assert!(detail.contains("token"), "{detail}");
    let forged = alice.with_token(&format!("ajar_{}", "0".repeat(64)));
    forged.ask("db", "5m", "INC-21").await.problem(401, "unauthenticated");

    // Acting on a request that does not exist.
    alice.act("no-such-request", "release").await.problem(404, "not-found");

    let after = snapshot(&adam).await;
    assert_eq!(
        after.events.len(),
        before.events.len(),
        "rejections must not be audited as actions:\n{}",
        show_events(&after.events[before.events.len().min(after.events.len())..])
    );
    assert_eq!(after.events, before.events);
    assert_eq!(after.requests, before.requests, "rejections must not change any request");

    // And nothing was opened for any of them: only the good grant admits.
    connect_ok(GRANTED, port).await;
    assert_refused(STRANGER, port).await;
}

#[tokio::test]
async fn wrong_password_is_refused_and_audited_as_exactly_one_failed_login() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let adam = server.login("adam").await;
    let before = snapshot(&adam).await;

    let stranger = server.anonymous(GRANTED);
    let resp = stranger.post("/api/v1/login", json!({ "username": "alice", "password": "Tr0ub4dor&3" })).await;
    let detail = resp.problem(401, "unauthenticated");
    assert!(detail.contains("password"), "{detail}");
    assert!(resp.body.get("token").is_none(), "{}", resp.text);
    assert!(!resp.text.contains(password_hash()), "the hash never leaves the server");

    let after = snapshot(&adam).await;
    assert_eq!(after.requests, before.requests);
    assert_eq!(after.events.len(), before.events.len() + 1, "{}", show_events(&after.events));
    assert_eq!(after.events[..before.events.len()], before.events[..]);
    let event = &after.events[before.events.len()];
    assert_eq!(event["action"], "login_failed", "{event:#}");
    assert_eq!(event["subject"], "alice");
    assert_eq!(event["source"], "127.0.0.2");
    assert!(event["target"].is_null() && event["request_id"].is_null(), "{event:#}");
    let text = event.to_string();
    assert!(!text.contains("Tr0ub4dor"), "the attempted password is never logged: {text}");
}

#[tokio::test]
async fn login_is_rate_limited_after_five_failures() {
    let server = TestServer::start(Config::new()).await;
    let attacker = server.anonymous(STRANGER);
    for attempt in 1..=5 {
        attacker
            .post("/api/v1/login", json!({ "username": "alice", "password": format!("guess {attempt}") }))
            .await
            .problem(401, "unauthenticated");
    }
    // The sixth attempt is refused without looking at the password, even
    // when it is right.
    let resp = attacker.post("/api/v1/login", json!({ "username": "alice", "password": PASSWORD })).await;
    let detail = resp.problem(429, "rate-limited");
    assert!(detail.contains("try again"), "{detail}");
    let retry_after: u64 = resp
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", resp.headers));
    assert!(retry_after > 0);

    // From another address too: the limit is per user as well.
    server
        .anonymous(GRANTED)
        .post("/api/v1/login", json!({ "username": "alice", "password": PASSWORD }))
        .await
        .problem(429, "rate-limited");

    // Another user is not locked out by alice's failures.
    let bob = server.login_from("bob", GRANTED).await;
    let events = server.login("adam").await.audit().await;
    let failed = events.iter().filter(|e| e["action"] == "login_failed" && e["subject"] == "alice").count();
    assert_eq!(failed, 5, "{}", show_events(&events));
    assert!(
        !events.iter().any(|e| e["action"] == "login" && e["subject"] == "alice"),
        "alice was never let in: {}",
        show_events(&events)
    );
    assert!(bob.token.is_some());
}

#[tokio::test]
async fn expired_token_is_refused_and_changes_nothing() {
    let echo = Echo::start().await;
    let config = Config::new().server("token_ttl = \"2s\"").target("db", echo.addr).policy(Policy::auto(
        "auto",
        &["group:dev"],
        &["db"],
    ));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");

    let alice = server.login_from("alice", GRANTED).await;
    let issued: Value = alice.get("/api/v1/targets").await.ok(200, "targets with a fresh token");
    assert_eq!(issued[0]["name"], "db", "{issued:#}");

    // Read the token's expiry from a second login's answer, then wait it out.
    let resp = server
        .anonymous(GRANTED)
        .post("/api/v1/login", json!({ "username": "alice", "password": PASSWORD }))
        .await
        .ok(200, "second login");
    let expires_at = time(&resp, "expires_at");
    let second = alice.with_token(resp["token"].as_str().expect("token"));
    sleep_until(expires_at + chrono::Duration::milliseconds(200)).await;

    // A fresh admin token (its login is audited) to compare before/after.
    let adam = server.login("adam").await;
    let before = snapshot(&adam).await;

    for session in [&alice, &second] {
        let detail = session.get("/api/v1/targets").await.problem(401, "unauthenticated");
        assert!(detail.contains("expired"), "{detail}");
        let detail = session.ask("db", "5m", "INC-30").await.problem(401, "unauthenticated");
        assert!(detail.contains("expired"), "{detail}");
    }

    let after = snapshot(&adam).await;
    assert_eq!(after.events, before.events, "{}", show_events(&after.events));
    assert_eq!(after.requests, before.requests);
    assert_eq!(after.requests, json!([]));
    assert_refused(GRANTED, port).await;
}
