//! Crashes and restarts: after `kill -9` an active grant is enforced again
//! until its end and closed on time, and a grant that ended while the
//! server was down is closed and audited at start. SIGTERM exits cleanly
//! and leaves active grants as they are.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;

#[tokio::test]
async fn grants_survive_kill_9_and_close_on_time() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).target("cache", echo.addr).policy(Policy::auto(
        "auto",
        &["group:dev"],
        &["db", "cache"],
    ));
    let mut server = TestServer::start(config).await;
    let (db, cache) = (server.config.port("db"), server.config.port("cache"));
    let alice = server.login_from("alice", GRANTED).await;

    // One grant outlives the outage, the other ends during it.
    let long = alice.request("db", "10s", "INC-40 outlives the crash").await;
    let short = alice.request("cache", "2s", "INC-40 ends during the crash").await;
    let (long_id, short_id) = (id(&long), id(&short));
    let (long_end, short_end) = (time(&long, "ends_at"), time(&short, "ends_at"));
    connect_ok(GRANTED, db).await;
    connect_ok(GRANTED, cache).await;

    server.kill9();
    let killed_at = Utc::now();
    assert!(killed_at < short_end, "the short grant ended before the crash; the test machine is too slow");
    sleep_until(short_end + chrono::Duration::milliseconds(300)).await;
    server.restart().await;
    let restarted_at = Utc::now();
    assert!(restarted_at < long_end, "the long grant ended before the restart; the test machine is too slow");

    // The grant that ended while the server was down is closed and audited.
    let expired = alice.wait_state(&short_id, "expired", Duration::from_secs(3)).await;
    assert_eq!(time(&expired, "ends_at"), short_end, "{expired:#}");
    assert_refused(GRANTED, cache).await;
    let adam = server.login("adam").await;
    let event = adam
        .wait_audit("`expired` for the grant that ended during the outage", Duration::from_secs(3), |e| {
            e["action"] == "expired" && e["request_id"] == short_id.as_str()
        })
        .await;
    assert_eq!(event["actor"], "ajar:system");
    assert!(time(&event, "at") >= killed_at, "audited after the restart: {event:#}");
    adam.wait_audit("`closed` for the grant that ended during the outage", Duration::from_secs(3), |e| {
        e["action"] == "closed" && e["request_id"] == short_id.as_str()
    })
    .await;

    // The grant that is still running works again, for its source only…
    let now = alice.get_request(&long_id).await;
    assert_eq!(now["state"], "active", "{now:#}");
    assert_eq!(time(&now, "ends_at"), long_end, "a restart does not move the end");
    let mut stream = connect_ok(GRANTED, db).await;
    assert_refused(STRANGER, db).await;

    // …until its end, when it is cut on time.
    let cut = closed_at(&mut stream, Duration::from_secs(15)).await;
    assert_cut_on_time(cut, long_end);
    assert_refused(GRANTED, db).await;
    alice.wait_state(&long_id, "expired", Duration::from_secs(3)).await;
    assert!(echo.accepted().iter().all(|peer| peer.ip() != STRANGER));

    // The chain is intact across the crash.
    let report = server.login("erin").await.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], true, "{report:#}");
}

#[tokio::test]
async fn sigterm_exits_cleanly_and_active_grants_stay_active() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let mut server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login_from("alice", GRANTED).await;
    let grant = alice.request("db", "10m", "INC-41").await;
    let grant_id = id(&grant);
    // A live relay and an idle keep-alive API connection must not hold
    // the exit up.
    let mut live = connect_ok(GRANTED, port).await;

    let status = server.sigterm();
    assert!(status.success(), "SIGTERM should exit 0, got {status:?}\n{}", server.stderr());
    closed_at(&mut live, Duration::from_secs(1)).await;
    // Once stopped, nothing listens on the gateway port.
    assert!(dial(GRANTED, port).await.is_err(), "the gateway still accepts after exit");

    server.restart().await;
    let again = alice.get_request(&grant_id).await;
    assert_eq!(again["state"], "active", "{again:#}");
    assert_eq!(time(&again, "ends_at"), time(&grant, "ends_at"));
    assert_eq!(again["enforcement"]["status"], "open", "{again:#}");
    connect_ok(GRANTED, port).await;
    assert_refused(STRANGER, port).await;
}

/// The reconciler lists the active grants, then asks the gateway what it
/// has open. A grant activated between the two is open but not on the
/// list; the reconciler must not take it for a stray and close it (it did:
/// the benchmark found grants refused for up to one reconcile interval).
#[tokio::test]
async fn a_reconcile_pass_never_closes_grants_opened_while_it_runs() {
    let echo = Echo::start().await;
    let config = Config::new().server("reconcile_interval = \"1s\"").target("db", echo.addr).policy(Policy::auto(
        "auto",
        &["group:dev"],
        &["db"],
    ));
    let server = TestServer::start(config).await;
    let port = server.config.port("db");
    let alice = server.login("alice").await;

    // 32 callers ask at once, over several reconcile passes; each grant
    // binds to its caller's own address.
    let sources: Vec<std::net::IpAddr> =
        (0..32u8).flat_map(|w| (1..=80u8).map(move |i| std::net::Ipv4Addr::new(127, 7, w, i).into())).collect();
    let mut workers = Vec::new();
    for chunk in sources.chunks(80) {
        let (alice, chunk) = (alice.calling_from(chunk[0]), chunk.to_vec());
        workers.push(tokio::spawn(async move {
            for ip in chunk {
                let grant = alice.calling_from(ip).request("db", "10m", "INC-77 many at once").await;
                assert_eq!(grant["state"], "active", "{grant:#}");
                let mut stream = connect_ok(ip, port).await;
                round_trip(&mut stream, b"open right after the answer").await;
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a caller failed");
    }
    // At least one more pass, then every grant still admits its source.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for ip in &sources {
        let mut stream = connect_ok(*ip, port).await;
        round_trip(&mut stream, b"still open").await;
    }
    let log = server.stderr();
    let strays: Vec<&str> = log.lines().filter(|l| l.contains("closing a path that should not be open")).collect();
    assert!(strays.is_empty(), "the reconciler closed live grants:\n{}", strays.join("\n"));
}
