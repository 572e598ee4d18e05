//! SIGHUP reloads the config: a target the new file removes has its
//! active grant revoked and its traffic cut, other grants carry on; a
//! broken new file is rejected whole and the old config stays in force.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn reload_removing_a_target_revokes_its_grants_and_a_broken_file_is_rejected() {
    let echo = Echo::start().await;
    let config = Config::new()
        .target("db", echo.addr)
        .target("cache", echo.addr)
        .policy(Policy::auto("db-auto", &["group:dev"], &["db"]))
        .policy(Policy::auto("cache-auto", &["group:dev"], &["cache"]));
    let mut server = TestServer::start(config.clone()).await;
    let (db, cache) = (server.config.port("db"), server.config.port("cache"));
    let alice = server.login_from("alice", GRANTED).await;
    let adam = server.login("adam").await;

    let db_grant = id(&alice.request("db", "10m", "INC-70 db").await);
    let cache_grant = id(&alice.request("cache", "10m", "INC-70 cache").await);
    let mut db_stream = connect_ok(GRANTED, db).await;
    let mut cache_stream = connect_ok(GRANTED, cache).await;

    // Remove the cache target (and its policy) and reload.
    server.write_config(config.clone().without_target("cache"));
    server.sighup();
    let revoked = alice.wait_state(&cache_grant, "revoked", Duration::from_secs(5)).await;
    assert_eq!(revoked["closed_by"], "ajar:system", "{revoked:#}");
    assert!(
        revoked["close_comment"].as_str().is_some_and(|c| c.contains("reload")),
        "the reason says why: {revoked:#}"
    );
    closed_at(&mut cache_stream, Duration::from_secs(2)).await;
    assert_refused(GRANTED, cache).await;

    // The other grant is untouched.
    round_trip(&mut db_stream, b"db still works").await;
    assert_eq!(alice.get_request(&db_grant).await["state"], "active");
    let targets: Value = alice.get("/api/v1/targets").await.ok(200, "targets");
    let names: Vec<&str> = targets.as_array().expect("targets").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["db"]);
    alice.ask("cache", "5m", "INC-71").await.problem(422, "unknown-target");

    adam.wait_audit("`config_reloaded`", Duration::from_secs(3), |e| e["action"] == "config_reloaded").await;
    let event = adam
        .wait_audit("`revoked` for the cache grant", Duration::from_secs(3), |e| {
            e["action"] == "revoked" && e["request_id"] == cache_grant.as_str()
        })
        .await;
    assert_eq!(event["actor"], "ajar:system");

    // A broken file that would also remove db: rejected whole.
    let mut broken = server.config.clone().without_target("db").render();
    broken = broken.replacen("[server]\n", "[server]\ncolour = \"blue\"\n", 1);
    server.write_raw_config(&broken);
    server.sighup();
    adam.wait_audit("`config_rejected`", Duration::from_secs(5), |e| e["action"] == "config_rejected").await;
    let log = server.stderr();
    assert!(log.contains("colour"), "the server logs what is wrong with the file:\n{log}");

    assert!(server.is_running(), "a bad reload must not stop the server");
    round_trip(&mut db_stream, b"db survives a broken reload").await;
    assert_eq!(alice.get_request(&db_grant).await["state"], "active");
    connect_ok(GRANTED, db).await;
    let targets: Value = alice.get("/api/v1/targets").await.ok(200, "targets");
    assert_eq!(targets[0]["name"], "db", "the old config is still in force: {targets:#}");
    assert_eq!(targets.as_array().map(Vec::len), Some(1));
    let again = alice.request("db", "5m", "INC-72").await;
    assert_eq!(again["state"], "active");
    let health = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert!(health.status().is_success());
}

#[tokio::test]
async fn reload_withdraws_what_the_new_policy_no_longer_allows() {
    let echo = Echo::start().await;
    let devs = Policy::approved_by("reviewed", &["group:dev"], &["db"], 1, &["group:sre"]);
    let config = Config::new().target("db", echo.addr).policy(devs.clone());
    let mut server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let dave = server.login_from("dave", STRANGER).await;
    let bob = server.login("bob").await;

    let active = id(&alice.request("db", "10m", "INC-73").await);
    bob.act(&active, "approve").await.ok(200, "approve");
    let pending = id(&dave.request("db", "10m", "INC-74").await);
    let mut stream = connect_ok(GRANTED, port).await;

    // Only SREs may request now: the devs' grant and request are withdrawn.
    let sres = Policy::approved_by("reviewed", &["group:sre"], &["db"], 1, &["group:sre"]);
    server.write_config(Config::new().target_on("db", echo.addr, port).policy(sres));
    server.sighup();
    let revoked = alice.wait_state(&active, "revoked", Duration::from_secs(5)).await;
    assert_eq!(revoked["closed_by"], "ajar:system", "{revoked:#}");
    closed_at(&mut stream, Duration::from_secs(2)).await;
    assert_refused(GRANTED, port).await;
    let denied = dave.wait_state(&pending, "denied", Duration::from_secs(5)).await;
    assert_eq!(denied["closed_by"], "ajar:system", "{denied:#}");
    assert!(denied["close_comment"].as_str().is_some_and(|c| c.contains("reload")), "{denied:#}");
    assert_eq!(echo.accepted().len(), 1);
}
