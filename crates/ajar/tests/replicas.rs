//! Several `ajar server` replicas on one PostgreSQL: a grant made through
//! one is enforced by every replica's gateway; when the replica whose timer
//! would close a grant dies, another closes it on time; and many grants
//! expiring across replicas are each closed exactly once.
//!
//! Each replica listens on its own gateway port (on one machine two
//! processes cannot share one), with the same targets and policies.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::Value;

/// A fresh database for a set of replicas, or `None` (after saying why)
/// when no PostgreSQL is available outside CI.
async fn shared_database() -> Option<String> {
    if postgres_server().is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("AJAR_TEST_POSTGRES is not set; ./scripts/test.sh starts PostgreSQL and sets it");
        }
        eprintln!("skipping the replica tests: AJAR_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
        return None;
    }
    Some(fresh_postgres().await)
}

/// The same targets and policies, on this replica's own gateway port.
fn replica_config(database: &str, echo: &Echo) -> Config {
    Config::new()
        .server(&format!("database = {database:?}"))
        .server("reconcile_interval = \"1s\"")
        .target("db", echo.addr)
        .policy(Policy::auto("dev-db", &["group:dev"], &["db"]).max("1h"))
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|s| s.parse().ok()).expect("an RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_through_one_replica_works_through_the_other() {
    let Some(database) = shared_database().await else { return };
    let echo = Echo::start().await;
    let (config_a, config_b) = (replica_config(&database, &echo), replica_config(&database, &echo));
    let (port_a, port_b) = (config_a.port("db"), config_b.port("db"));
    let a = TestServer::start(config_a).await;
    let b = TestServer::start(config_b).await;

    let alice_a = a.login_from("alice", GRANTED).await;
    let grant = alice_a.request("db", "10m", "INC-1").await;
    let id = grant["id"].as_str().expect("id").to_owned();
    assert_eq!(grant["state"], "active");

    // B's API sees it, and B's gateway admits alice within moments.
    let alice_b = b.login_from("alice", GRANTED).await;
    assert_eq!(alice_b.get_request(&id).await["state"], "active");
    let started = std::time::Instant::now();
    let mut through_b = loop {
        if let Ok(mut stream) = dial(GRANTED, port_b).await {
            if tokio::time::timeout(Duration::from_millis(500), round_trip(&mut stream, b"via b")).await.is_ok() {
                break stream;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(3), "replica B's gateway never admitted the grant");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("replica B admitted the grant {} ms after A created it", started.elapsed().as_millis());
    let mut through_a = connect_ok(GRANTED, port_a).await;
    assert_refused(STRANGER, port_b).await;

    // Released through B: both gateways cut their connections.
    alice_b.post(&format!("/api/v1/requests/{id}/release"), serde_json::json!({})).await.ok(200, "release via b");
    closed_at(&mut through_b, CUT_WITHIN + OBSERVE_SLACK).await;
    closed_at(&mut through_a, CUT_WITHIN + OBSERVE_SLACK * 4).await;
    assert_refused(GRANTED, port_a).await;
    assert_refused(GRANTED, port_b).await;

    // One chain for both replicas, and it verifies through either.
    let erin = a.login("erin").await;
    let verified = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(verified["ok"], true, "{verified:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_replica_dies_another_closes_its_grants_on_time() {
    let Some(database) = shared_database().await else { return };
    let echo = Echo::start().await;
    let (config_a, config_b) = (replica_config(&database, &echo), replica_config(&database, &echo));
    let port_b = config_b.port("db");
    let mut a = TestServer::start(config_a).await;
    let b = TestServer::start(config_b).await;

    let grant = a.login_from("alice", GRANTED).await.request("db", "3s", "INC-2").await;
    let id = grant["id"].as_str().expect("id").to_owned();
    let ends_at = at(&grant["ends_at"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut live = connect_ok(GRANTED, port_b).await;
    a.kill9();

    // B's gateway cuts on time on its own, and B records the expiry.
    let cut = closed_at(&mut live, Duration::from_secs(6)).await;
    assert_cut_on_time(cut, ends_at);
    let alice_b = b.login_from("alice", GRANTED).await;
    let expired = alice_b.wait_state(&id, "expired", Duration::from_secs(5)).await;
    assert_eq!(expired["state"], "expired");
    let erin = b.login("erin").await;
    let events = erin.audit().await;
    let expiries: Vec<&Value> =
        events.iter().filter(|e| e["request_id"] == id.as_str() && e["action"] == "expired").collect();
    assert_eq!(expiries.len(), 1, "exactly one expiry");
    let lag = at(&expiries[0]["at"]) - ends_at;
    eprintln!("replica B recorded the expiry {} ms after ends_at", lag.num_milliseconds());
    assert!(lag <= chrono::Duration::seconds(2), "expiry recorded {lag} after ends_at");
    assert_refused(GRANTED, port_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_grants_expiring_across_replicas_are_each_closed_exactly_once() {
    const GRANTS: usize = 1000;
    let Some(database) = shared_database().await else { return };
    let echo = Echo::start().await;
    let a = TestServer::start(replica_config(&database, &echo)).await;
    let b = TestServer::start(replica_config(&database, &echo)).await;
    let sessions = [a.login_from("alice", GRANTED).await, b.login_from("dave", GRANTED).await];

    // Half through each replica, 25 at a time, all ending within seconds.
    let started = std::time::Instant::now();
    let mut ids = Vec::new();
    for chunk in (0..GRANTS).collect::<Vec<_>>().chunks(25) {
        let batch = chunk.iter().map(|i| {
            let session = &sessions[i % 2];
            async move { session.request("db", "15s", &format!("load {i}")).await }
        });
        for grant in futures::future::join_all(batch).await {
            ids.push(grant["id"].as_str().expect("id").to_owned());
        }
    }
    eprintln!("{GRANTS} grants created through two replicas in {} ms", started.elapsed().as_millis());

    let erin = a.login("erin").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (expired, closed) = loop {
        let events = erin.audit().await;
        let mut expired: HashMap<String, usize> = HashMap::new();
        let mut closed: HashMap<String, usize> = HashMap::new();
        for e in &events {
            let Some(id) = e["request_id"].as_str() else { continue };
            match e["action"].as_str() {
                Some("expired") => *expired.entry(id.to_owned()).or_default() += 1,
                Some("closed") => *closed.entry(id.to_owned()).or_default() += 1,
                _ => {}
            }
        }
        if (expired.len() == GRANTS && closed.len() == GRANTS) || std::time::Instant::now() > deadline {
            break (expired, closed);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(expired.len(), GRANTS, "every grant expired");
    assert_eq!(closed.len(), GRANTS, "every grant closed");
    assert!(expired.values().all(|n| *n == 1), "no grant expired twice");
    assert!(closed.values().all(|n| *n == 1), "no grant closed twice");
    assert!(ids.iter().all(|id| expired.contains_key(id)));
    let verified = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(verified["ok"], true, "{verified:#}");
}

/// A PostgreSQL cluster of this test's own, so that stopping it disturbs
/// no other test. Needs root (PostgreSQL runs as the postgres user).
struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl OwnPostgres {
    fn create() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|p| p.join("initdb").exists())?;
        let dir = tempfile::Builder::new().prefix("ajar-own-pg").tempdir_in("/tmp").expect("temp dir");
        let chown = std::process::Command::new("chown").args(["postgres:postgres"]).arg(dir.path()).status();
        if !chown.is_ok_and(|s| s.success()) {
            return None;
        }
        let initdb = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D"])
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run initdb");
        assert!(initdb.success(), "initdb failed");
        let own = Self { bin, dir, port: free_port() };
        own.start();
        Some(own)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let status = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed");
    }

    fn start(&self) {
        let data = self.dir.path().join("data");
        let options = format!("-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off", self.port, data.display());
        let log = data.join("log").display().to_string();
        self.pg_ctl(&["-w", "-l", &log, "-o", &options, "start"]);
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_errors_are_clean_grants_still_end_and_nothing_is_lost() {
    let Some(pg) = OwnPostgres::create() else {
        if std::env::var_os("CI").is_some() {
            panic!("cannot create a PostgreSQL cluster (needs root and the postgresql package)");
        }
        eprintln!("skipping: cannot create a PostgreSQL cluster here (needs root and the postgresql package)");
        return;
    };
    let echo = Echo::start().await;
    let config = replica_config(&pg.url(), &echo);
    let port = config.port("db");
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let grant = alice.request("db", "4s", "INC-3").await;
    let id = grant["id"].as_str().expect("id").to_owned();
    let ends_at = at(&grant["ends_at"]);
    let before = alice.audit().await.len();
    let mut live = connect_ok(GRANTED, port).await;
    // Watch the live connection while the API is being tried, so the cut
    // is timed when it happens, not when the test gets round to it.
    let cut = tokio::spawn(async move { closed_at(&mut live, Duration::from_secs(10)).await });

    pg.stop();
    // Clean answers while the database is gone: 503 with a sentence.
    let refused = alice.ask("db", "5m", "while down").await;
    let detail = refused.problem(503, "unavailable");
    assert!(detail.contains("try again"), "{detail}");
    let ready = reqwest::get(server.url("/readyz")).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 503);

    // The gateway keeps its own deadline: the grant still ends on time.
    let cut = cut.await.expect("the watcher");
    assert_cut_on_time(cut, ends_at);
    assert_refused(GRANTED, port).await;

    pg.start();
    // Everything converges: the expiry is recorded, the API works again,
    // and the chain verifies with nothing lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let resp = alice.get(&format!("/api/v1/requests/{id}")).await;
        if resp.status == 200 && resp.body["state"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the expiry was not recorded after recovery: {:?}", resp.body);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    alice.request("db", "5m", "after recovery").await;
    let erin = server.login("erin").await;
    let verified = erin.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(verified["ok"], true, "{verified:#}");
    assert!(erin.audit().await.len() > before);
}
