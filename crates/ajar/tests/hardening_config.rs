//! Reloads that change where a target leads: an approval is for a
//! destination, so a SIGHUP that points a target at another address revokes
//! its grants (cutting their live connections) and denies its pending
//! requests, with a reason naming both addresses; a reload that leaves the
//! destination alone keeps them.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn a_reload_that_moves_a_target_withdraws_what_was_approved_for_the_old_address() {
    let (old, new) = (Echo::start().await, Echo::start().await);
    let (db_port, cache_port) = (free_port(), free_port());
    let config = |db: std::net::SocketAddr| {
        Config::new()
            .target_on("db", db, db_port)
            .target_on("cache", old.addr, cache_port)
            .policy(Policy::auto("db-auto", &["group:dev"], &["db"]))
            .policy(Policy::auto("cache-auto", &["group:dev"], &["cache"]))
            .policy(Policy::approved_by("db-sre", &["group:sre"], &["db"], 1, &["group:admins"]))
    };
    let mut server = TestServer::start(config(old.addr)).await;
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;
    let adam = server.login("adam").await;

    let db_grant = id(&alice.request("db", "30m", "INC-90 db").await);
    let cache_grant = id(&alice.request("cache", "30m", "INC-90 cache").await);
    let pending = id(&bob.request("db", "30m", "INC-91").await);
    assert_eq!(bob.get_request(&pending).await["state"], "pending");
    let mut db_stream = connect_ok(GRANTED, db_port).await;
    let mut cache_stream = connect_ok(GRANTED, cache_port).await;

    // A reload that changes other things (a new policy) but no destination
    // keeps every grant and request.
    server.write_config(config(old.addr).policy(Policy::auto("erin", &["erin"], &["cache"])));
    server.sighup();
    adam.wait_audit("the first `config_reloaded`", Duration::from_secs(5), |e| e["action"] == "config_reloaded").await;
    round_trip(&mut db_stream, b"db after a reload that moves nothing").await;
    assert_eq!(alice.get_request(&db_grant).await["state"], "active");
    assert_eq!(bob.get_request(&pending).await["state"], "pending");

    // db now leads to another server: what was approved for the old one
    // ends, and says why.
    server.write_config(config(new.addr));
    server.sighup();
    let why = format!("config reload: target db's address changed from {} to {}; ask again", old.addr, new.addr);
    let revoked = alice.wait_state(&db_grant, "revoked", Duration::from_secs(5)).await;
    assert_eq!(revoked["closed_by"], "ajar:system", "{revoked:#}");
    assert_eq!(revoked["close_comment"], why.as_str(), "{revoked:#}");
    assert_cut_promptly(&mut db_stream).await;
    let denied = bob.wait_state(&pending, "denied", Duration::from_secs(5)).await;
    assert_eq!(denied["close_comment"], why.as_str(), "{denied:#}");
    let event = adam
        .wait_audit("`revoked` for the db grant", Duration::from_secs(5), |e| {
            e["action"] == "revoked" && e["request_id"] == db_grant.as_str()
        })
        .await;
    assert_eq!((&event["actor"], &event["reason"]), (&"ajar:system".into(), &why.as_str().into()), "{event:#}");
    adam.wait_audit("`denied` for the pending request", Duration::from_secs(5), |e| {
        e["action"] == "denied" && e["request_id"] == pending.as_str() && e["reason"] == why.as_str()
    })
    .await;

    // The other target did not move: its grant and connection carry on.
    round_trip(&mut cache_stream, b"cache did not move").await;
    assert_eq!(alice.get_request(&cache_grant).await["state"], "active");

    // Asking again works, and reaches the new address.
    assert_eq!(new.accepted().len(), 0);
    let again = alice.request("db", "10m", "INC-92").await;
    assert_eq!(again["state"], "active", "{again:#}");
    connect_ok(GRANTED, db_port).await;
    assert_eq!(new.accepted().len(), 1, "the new grant reaches the new address");
}
