//! The request → approve → grant loop end to end over the HTTP API, with
//! real TCP through the built-in gateway: who gets through, and that every
//! way a grant ends (release, revoke) cuts live traffic while refused
//! requests (deny, cancel) never open anything.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// One target `db` in front of an echo server.
async fn server_with(policy: Policy) -> (TestServer, Echo) {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(policy);
    (TestServer::start(config).await, echo)
}

/// Requests need one approval from an SRE; devs and SREs may request.
fn one_approval() -> Policy {
    Policy::approved_by("reviewed", &["group:dev", "group:sre"], &["db"], 1, &["group:sre"])
}

#[tokio::test]
async fn auto_approved_grant_admits_only_its_source() {
    let (server, echo) = server_with(Policy::auto("auto", &["group:dev"], &["db"])).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;

    let request = alice.request("db", "5m", "INC-1 look at the replica lag").await;
    assert_eq!(request["state"], "active", "{request:#}");
    assert_eq!(request["requester"], "alice");
    assert_eq!(request["source"], "127.0.0.2/32", "the grant binds to the caller's own address");
    assert_eq!(request["duration_seconds"], 300);
    assert_eq!(request["enforcement"]["status"], "open", "{request:#}");
    assert_eq!(request["connect"], json!({ "host": "127.0.0.1", "port": port }));
    let starts = time(&request, "starts_at");
    assert_eq!((time(&request, "ends_at") - starts).num_seconds(), 300);

    // The granted source gets through, both ways.
    let mut stream = connect_ok(GRANTED, port).await;
    round_trip(&mut stream, b"a second message on the same connection").await;
    assert_eq!(echo.accepted().len(), 1, "one connection reached the target");

    // Another source gets nothing, and nothing reaches the target for it.
    assert_refused(STRANGER, port).await;
    assert_refused(STRANGER, port).await;
    let seen = echo.accepted();
    assert_eq!(seen.len(), 1, "the refused source reached the target: {seen:?}");
    assert!(seen.iter().all(|peer| peer.ip() != STRANGER), "{seen:?}");

    // The same user's token used from another address does not carry the
    // grant with it.
    assert_refused(LOCAL, port).await;
    assert_eq!(echo.accepted().len(), 1);

    // The granted connection still works after the refusals.
    round_trip(&mut stream, b"still here").await;
    drop(stream);

    // The audit log tells the story: requested, activated, opened, and
    // the connection (once it ended) and the refusal.
    let adam = server.login("adam").await;
    let id = id(&request);
    let connection = adam
        .wait_audit("`connection` for the grant", Duration::from_secs(5), |e| {
            e["action"] == "connection" && e["request_id"] == id.as_str()
        })
        .await;
    // The traffic is counted each way: the three messages echoed above.
    let sent = "hello from 127.0.0.2".len() + "a second message on the same connection".len() + "still here".len();
    let data = &connection["data"];
    assert_eq!(
        (data["bytes_up"].as_u64(), data["bytes_down"].as_u64()),
        (Some(sent as u64), Some(sent as u64)),
        "{connection:#}"
    );
    assert!(data["duration_ms"].is_u64(), "{connection:#}");
    assert_eq!(data["ended_by"], "client", "{connection:#}");
    assert_eq!(connection["subject"], "alice");
    assert_eq!(connection["source"], "127.0.0.2");
    adam.wait_audit("`connection_refused` from 127.0.0.3", Duration::from_secs(5), |e| {
        e["action"] == "connection_refused" && e["source"].as_str().is_some_and(|s| s.contains("127.0.0.3"))
    })
    .await;
    let events = adam.audit().await;
    let actions = actions_for(&events, &id);
    for wanted in ["requested", "activated", "opened"] {
        assert!(actions.iter().any(|a| a == wanted), "no {wanted} event for {id}:\n{}", show_events(&events));
    }
    let requested =
        events.iter().find(|e| e["action"] == "requested" && e["request_id"] == id.as_str()).expect("requested event");
    assert_eq!(requested["actor"], "alice");
    assert_eq!(requested["target"], "db");
    assert_eq!(requested["reason"], "INC-1 look at the replica lag");
}

#[tokio::test]
async fn approval_flow_refuses_self_approval_and_opens_on_approval() {
    let (server, echo) = server_with(one_approval()).await;
    let port = server.config.port("db");
    // carol is an SRE herself, so the only thing stopping her from
    // approving is that the request is hers.
    let carol = server.login_from("carol", GRANTED).await;
    let bob = server.login("bob").await;
    let alice = server.login("alice").await;

    let request = carol.request("db", "10m", "CHG-7 rotate the credentials").await;
    let id = id(&request);
    assert_eq!(request["state"], "pending", "{request:#}");
    assert_eq!(request["approvals_required"], 1);
    assert!(request["connect"].is_null(), "a pending request has nowhere to connect: {request:#}");
    assert!(request["starts_at"].is_null() && request["ends_at"].is_null(), "{request:#}");
    assert_refused(GRANTED, port).await;

    // Self-approval is refused and changes nothing.
    let detail = carol.act(&id, "approve").await.problem(403, "self-approval");
    assert!(detail.contains("own request"), "{detail}");
    assert_eq!(carol.get_request(&id).await["state"], "pending");

    // Someone who is not an approver cannot even see it.
    alice.act(&id, "approve").await.problem(404, "not-found");

    // Another approver approves: active, and traffic flows.
    let approved = bob.act_with(&id, "approve", "looks fine").await.ok(200, "bob approves");
    assert_eq!(approved["state"], "active", "{approved:#}");
    assert_eq!(approved["approvals"][0]["approver"], "bob");
    assert_eq!(approved["approvals"][0]["comment"], "looks fine");
    let ends = time(&approved, "ends_at");
    assert_eq!((ends - time(&approved, "starts_at")).num_seconds(), 600);
    let now = carol.get_request(&id).await;
    assert_eq!(now["enforcement"]["status"], "open", "{now:#}");
    assert_eq!(now["connect"]["port"], port);
    connect_ok(GRANTED, port).await;
    assert_refused(STRANGER, port).await;
    assert_eq!(echo.accepted().len(), 1);

    // Approving an active request is a conflict, not a second approval.
    bob.act(&id, "approve").await.problem(409, "wrong-state");

    let events = server.login("adam").await.audit().await;
    let actions = actions_for(&events, &id);
    assert_eq!(
        actions.iter().filter(|a| *a == "approved").count(),
        1,
        "exactly one approval is audited:\n{}",
        show_events(&events)
    );
    let approval =
        events.iter().find(|e| e["action"] == "approved" && e["request_id"] == id.as_str()).expect("approved event");
    assert_eq!(approval["actor"], "bob");
    assert_eq!(approval["subject"], "carol");
}

#[tokio::test]
async fn two_approvals_need_two_distinct_approvers() {
    let (server, _echo) =
        server_with(Policy::approved_by("two-person", &["group:dev"], &["db"], 2, &["group:sre"])).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;
    let carol = server.login("carol").await;

    let id = id(&alice.request("db", "5m", "INC-2").await);
    let once = bob.act(&id, "approve").await.ok(200, "first approval");
    assert_eq!(once["state"], "pending", "one of two approvals: {once:#}");
    assert_eq!(once["approvals"].as_array().map(Vec::len), Some(1));
    assert_refused(GRANTED, port).await;

    let detail = bob.act(&id, "approve").await.problem(409, "already-approved");
    assert!(detail.contains("already approved"), "{detail}");
    let still = alice.get_request(&id).await;
    assert_eq!(still["state"], "pending");
    assert_eq!(still["approvals"].as_array().map(Vec::len), Some(1), "one approver counts once");

    let twice = carol.act(&id, "approve").await.ok(200, "second approval");
    assert_eq!(twice["state"], "active", "{twice:#}");
    let approvers: Vec<&str> =
        twice["approvals"].as_array().expect("approvals").iter().filter_map(|a| a["approver"].as_str()).collect();
    assert_eq!(approvers, ["bob", "carol"]);
    connect_ok(GRANTED, port).await;
}

#[tokio::test]
async fn denied_request_never_opens() {
    let (server, echo) = server_with(one_approval()).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let id = id(&alice.request("db", "5m", "INC-3").await);
    // The requester cannot deny (nor approve) her own request.
    alice.act(&id, "deny").await.problem(403, "self-approval");

    let denied = bob.act_with(&id, "deny", "use the read replica").await.ok(200, "bob denies");
    assert_eq!(denied["state"], "denied", "{denied:#}");
    assert_eq!(denied["closed_by"], "bob");
    assert_eq!(denied["close_comment"], "use the read replica");
    assert!(denied["connect"].is_null());
    assert_refused(GRANTED, port).await;
    assert!(echo.accepted().is_empty());

    // A denied request stays denied.
    bob.act(&id, "approve").await.problem(409, "wrong-state");
    alice.act(&id, "cancel").await.problem(409, "wrong-state");
    assert_eq!(alice.get_request(&id).await["state"], "denied");

    let events = server.login("adam").await.audit().await;
    let actions = actions_for(&events, &id);
    assert!(actions.iter().any(|a| a == "denied"), "{}", show_events(&events));
    assert!(!actions.iter().any(|a| a == "activated" || a == "opened"), "{}", show_events(&events));
}

#[tokio::test]
async fn cancelled_request_never_opens() {
    let (server, echo) = server_with(one_approval()).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let id = id(&alice.request("db", "5m", "INC-4").await);
    // Only the requester may cancel.
    bob.act(&id, "cancel").await.problem(403, "not-requester");
    let cancelled = alice.act(&id, "cancel").await.ok(200, "alice cancels");
    assert_eq!(cancelled["state"], "cancelled", "{cancelled:#}");

    bob.act(&id, "approve").await.problem(409, "wrong-state");
    assert_eq!(bob.get_request(&id).await["state"], "cancelled");
    assert_refused(GRANTED, port).await;
    assert!(echo.accepted().is_empty());

    let events = server.login("adam").await.audit().await;
    let actions = actions_for(&events, &id);
    assert_eq!(actions, ["requested", "cancelled"], "{}", show_events(&events));
}

#[tokio::test]
async fn release_ends_the_grant_and_cuts_traffic() {
    let (server, echo) = server_with(one_approval()).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let id = id(&alice.request("db", "30m", "INC-5").await);
    // Nothing to release while pending.
    alice.act(&id, "release").await.problem(409, "wrong-state");
    bob.act(&id, "approve").await.ok(200, "approve");
    let mut stream = connect_ok(GRANTED, port).await;

    // Only the requester may release.
    bob.act(&id, "release").await.problem(403, "not-requester");
    round_trip(&mut stream, b"still open").await;

    let released = alice.act(&id, "release").await.ok(200, "alice releases");
    assert_eq!(released["state"], "released", "{released:#}");
    assert!(released["connect"].is_null());
    assert_cut_promptly(&mut stream).await;
    assert_refused(GRANTED, port).await;
    assert_eq!(echo.accepted().len(), 1);

    let closed = alice.get_request(&id).await;
    assert_eq!(closed["enforcement"]["status"], "closed", "{closed:#}");
    alice.act(&id, "release").await.problem(409, "wrong-state");

    let events = server.login("adam").await.audit().await;
    let actions = actions_for(&events, &id);
    for wanted in ["released", "closed"] {
        assert!(actions.iter().any(|a| a == wanted), "no {wanted} for {id}:\n{}", show_events(&events));
    }
}

#[tokio::test]
async fn revoke_ends_the_grant_and_cuts_traffic() {
    let (server, echo) = server_with(one_approval()).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;
    let adam = server.login("adam").await;

    let first = id(&alice.request("db", "30m", "INC-6").await);
    bob.act(&first, "approve").await.ok(200, "approve");
    let mut stream = connect_ok(GRANTED, port).await;

    // The requester cannot revoke her own grant (she releases it instead).
    alice.act(&first, "revoke").await.problem(403, "may-not-revoke");
    round_trip(&mut stream, b"still open").await;

    let revoked = bob.act_with(&first, "revoke", "wrong host").await.ok(200, "bob revokes");
    assert_eq!(revoked["state"], "revoked", "{revoked:#}");
    assert_eq!(revoked["closed_by"], "bob");
    assert_eq!(revoked["close_comment"], "wrong host");
    assert_cut_promptly(&mut stream).await;
    assert_refused(GRANTED, port).await;
    bob.act(&first, "revoke").await.problem(409, "wrong-state");

    // An admin may revoke any grant, too.
    let second = id(&alice.request("db", "30m", "INC-6 again").await);
    bob.act(&second, "approve").await.ok(200, "approve");
    let mut stream = connect_ok(GRANTED, port).await;
    let revoked = adam.act(&second, "revoke").await.ok(200, "adam revokes");
    assert_eq!(revoked["state"], "revoked");
    assert_eq!(revoked["closed_by"], "adam");
    assert_cut_promptly(&mut stream).await;
    assert_refused(GRANTED, port).await;
    assert_eq!(echo.accepted().len(), 2);

    let events = adam.audit().await;
    for id in [&first, &second] {
        let actions = actions_for(&events, id);
        for wanted in ["revoked", "closed"] {
            assert!(actions.iter().any(|a| a == wanted), "no {wanted} for {id}:\n{}", show_events(&events));
        }
    }
}

#[tokio::test]
async fn explicit_source_must_lie_within_the_policy_networks() {
    let (server, echo) =
        server_with(Policy::auto("from-lab", &["group:dev"], &["db"]).sources(&["127.0.0.0/29"])).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;

    // alice, at 127.0.0.2, asks for a grant for 127.0.0.3 (say, a jump host).
    let grant = alice
        .post("/api/v1/requests", json!({ "target": "db", "duration": "5m", "reason": "INC-8", "source": "127.0.0.3" }))
        .await
        .ok(201, "request for an explicit source");
    assert_eq!(grant["source"], "127.0.0.3/32", "{grant:#}");
    connect_ok(STRANGER, port).await;
    assert_refused(GRANTED, port).await;
    assert_eq!(echo.accepted().len(), 1);

    let detail = alice
        .post(
            "/api/v1/requests",
            json!({ "target": "db", "duration": "5m", "reason": "INC-8", "source": "127.0.0.8/29" }),
        )
        .await
        .problem(422, "source-not-allowed");
    assert!(detail.contains("127.0.0.8/29") && detail.contains("127.0.0.0/29"), "{detail}");
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let echo = Echo::start().await;
    let config = Config::new()
        .server("trusted_proxies = [\"127.0.0.4\"]")
        .target("db", echo.addr)
        .policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");
    let body = json!({ "target": "db", "duration": "5m", "reason": "INC-9" });

    // From an untrusted peer the header is ignored: the grant binds to the peer.
    let alice = server.login_from("alice", GRANTED).await;
    let direct = alice
        .post_with_header("/api/v1/requests", body.clone(), "x-forwarded-for", "127.0.0.3")
        .await
        .ok(201, "request with a spoofed X-Forwarded-For");
    assert_eq!(direct["source"], "127.0.0.2/32", "{direct:#}");

    // Through the trusted proxy, the forwarded address is the requester's.
    let dave = server.login("dave").await.calling_from(PROXY);
    let detail = dave.post("/api/v1/requests", body.clone()).await.problem(400, "bad-forwarded-for");
    assert!(detail.contains("X-Forwarded-For"), "{detail}");
    let proxied = dave
        .post_with_header("/api/v1/requests", body, "x-forwarded-for", "127.0.0.3")
        .await
        .ok(201, "request through the trusted proxy");
    assert_eq!(proxied["source"], "127.0.0.3/32", "{proxied:#}");
    connect_ok(STRANGER, port).await;
    assert_refused(PROXY, port).await;
}

#[tokio::test]
async fn health_metrics_and_openapi_are_served() {
    let (server, _echo) = server_with(Policy::auto("auto", &["group:dev"], &["db"])).await;
    let alice = server.login("alice").await;
    alice.request("db", "5m", "INC-10").await;
    let anonymous = server.anonymous(LOCAL);

    let health = anonymous.get("/healthz").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let ready = anonymous.get("/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.text);

    let metrics = anonymous.get("/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.content_type.starts_with("text/plain"), "{}", metrics.content_type);
    assert!(metrics.text.contains("ajar_requests{state=\"active\"} 1"), "{}", metrics.text);
    assert!(metrics.text.contains("ajar_audit_events_total{action=\"requested\"}"), "{}", metrics.text);

    let doc = anonymous.get("/api/v1/openapi.json").await.ok(200, "openapi");
    for path in ["/api/v1/login", "/api/v1/requests", "/api/v1/requests/{id}/approve", "/api/v1/audit/verify"] {
        assert!(doc["paths"].get(path).is_some(), "the OpenAPI document lacks {path}");
    }

    anonymous.get("/api/v1/nothing-here").await.problem(404, "no-such-endpoint");
}

#[tokio::test]
async fn concurrent_approvals_are_never_lost_or_double_counted() {
    let (server, _echo) =
        server_with(Policy::approved_by("two-person", &["group:dev"], &["db"], 2, &["group:sre"])).await;
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;
    let carol = server.login("carol").await;
    let adam = server.login("adam").await;

    // Each round races two approvals of one request, and bob against
    // himself; whatever the interleaving, every 200 is one counted approval
    // and one audit event, and nobody counts twice.
    for round in 0..5 {
        let id = id(&alice.request("db", "5m", &format!("INC-race-{round}")).await);
        let path = format!("/api/v1/requests/{id}/approve");
        let (a, b, c) = tokio::join!(bob.post_empty(&path), carol.post_empty(&path), bob.post_empty(&path));
        let accepted = [&a, &b, &c].iter().filter(|r| r.status == 200).count();
        for r in [&a, &b, &c] {
            assert!(matches!(r.status, 200 | 409), "round {round}: {} {}", r.status, r.text);
        }
        let now = alice.get_request(&id).await;
        let approvals = now["approvals"].as_array().expect("approvals").len();
        assert_eq!(approvals, accepted, "round {round}: {now:#}\n{a:?}\n{b:?}\n{c:?}");
        let approvers: std::collections::BTreeSet<&str> =
            now["approvals"].as_array().expect("approvals").iter().filter_map(|a| a["approver"].as_str()).collect();
        assert_eq!(approvers.len(), approvals, "an approver counted twice: {now:#}");
        assert_eq!(now["state"], if approvals == 2 { "active" } else { "pending" }, "{now:#}");
        let events = adam.audit().await;
        let audited = actions_for(&events, &id).iter().filter(|a| *a == "approved").count();
        assert_eq!(audited, accepted, "round {round}:\n{}", show_events(&events));
    }
}
