//! Holes an outside audit found, each shown closed against the real
//! binary: the login limiter under a burst, free text that is too long or
//! rewrites terminals and logs, unlimited pending requests, and tokens that
//! could not be revoked.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{json, Value};

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, last))
}

/// The server's peak resident memory so far, in MiB (Linux `VmHWM`).
fn peak_rss_mib(server: &TestServer) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).expect("read /proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// A target `db` that dev may have once one of sre approves.
fn reviewed_db(echo: &Echo) -> Config {
    Config::new().target("db", echo.addr).policy(Policy::approved_by(
        "reviewed",
        &["group:dev"],
        &["db"],
        1,
        &["group:sre"],
    ))
}

fn count(events: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

// ---- the login limiter ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_parallel_guesses_gets_no_more_password_checks_than_the_limit() {
    let server = TestServer::start(Config::new()).await;
    let attacker = server.anonymous(STRANGER);
    let guesses =
        (0..40).map(|i| {
            let attacker = attacker.clone();
            async move {
                attacker.post("/api/v1/login", json!({ "username": "alice", "password": format!("guess {i}") })).await
            }
        });
    let answers = futures::future::join_all(guesses).await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    let limited = answers.iter().filter(|r| r.status == 429).count();
    assert_eq!((checked, limited), (5, 35), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status == 429) {
        assert!(r.headers.contains_key("retry-after"), "{r:?}");
    }
    let events = server.login("adam").await.audit().await;
    let failed = count(&events, |e| e["action"] == "login_failed" && e["subject"] == "alice");
    assert_eq!(failed, 5, "only the checked guesses are failures: {}", show_events(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_guesses_are_checked_a_few_at_a_time_in_bounded_memory() {
    let server = TestServer::start(Config::new()).await;
    let before = peak_rss_mib(&server);
    // Ten addresses, twenty distinct names each: no limit applies, so only
    // the bound on concurrent password checks holds the memory down.
    let guesses =
        (0..200u32).map(|i| {
            let caller = server.anonymous(addr(10 + (i % 10) as u8));
            async move {
                caller.post("/api/v1/login", json!({ "username": format!("nobody{i}"), "password": "guess" })).await
            }
        });
    let answers = futures::future::join_all(guesses).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    let busy: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    for r in &busy {
        r.problem(429, "busy");
    }
    let peak = peak_rss_mib(&server);
    println!(
        "200 parallel guesses: {} checked, {} told to retry; server peak RSS {before} -> {peak} MiB",
        statuses.iter().filter(|s| **s == 401).count(),
        busy.len()
    );
    // Each argon2 check holds ~19 MiB; 200 at once peaked at ~740 MiB.
    assert!(peak < before + 100, "peak RSS grew from {before} to {peak} MiB");
    // The server still answers at once afterwards.
    server.login_from("alice", GRANTED).await;
}

#[tokio::test]
async fn strangers_cannot_lock_a_user_out_of_an_address_they_signed_in_from() {
    let server = TestServer::start(Config::new()).await;
    // Alice signs in from her own machine once.
    server.login_from("alice", GRANTED).await;
    // Strangers fail as alice until she is locked out everywhere else.
    let stranger = server.anonymous(STRANGER);
    for i in 0..5 {
        let guess = json!({ "username": "alice", "password": format!("guess {i}") });
        stranger.post("/api/v1/login", guess).await.problem(401, "unauthenticated");
    }
    let right = json!({ "username": "alice", "password": PASSWORD });
    stranger.post("/api/v1/login", right.clone()).await.problem(429, "rate-limited");
    server.anonymous(addr(99)).post("/api/v1/login", right.clone()).await.problem(429, "rate-limited");
    // From her known-good address she still gets in.
    server.anonymous(GRANTED).post("/api/v1/login", right).await.ok(200, "alice from her own address");
}

// ---- free text ------------------------------------------------------------

#[tokio::test]
async fn reasons_and_comments_are_capped_and_a_long_one_cannot_break_the_next_start() {
    let echo = Echo::start().await;
    let config = reviewed_db(&echo);
    let mut server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let detail = alice.ask("db", "5m", &"r".repeat(1001)).await.problem(422, "reason-too-long");
    assert!(detail.contains("1001 characters") && detail.contains("1000"), "{detail}");
    let id = id(&alice.request("db", "5m", &"r".repeat(1000)).await);

    let detail = bob.act_with(&id, "approve", &"c".repeat(1001)).await.problem(422, "comment-too-long");
    assert!(detail.contains("1000"), "{detail}");
    let detail = bob.act_with(&id, "deny", &"c".repeat(5000)).await.problem(422, "comment-too-long");
    assert!(detail.contains("5000 characters"), "{detail}");
    // The 65 KB comment that bricked the next start is refused in words; a
    // body past 64 KiB is not even read.
    bob.act_with(&id, "approve", &"c".repeat(65_000)).await.problem(422, "comment-too-long");
    let detail = bob.act_with(&id, "approve", &"c".repeat(70_000)).await.problem(413, "body-too-large");
    assert!(detail.contains("64 KiB"), "{detail}");
    assert_eq!(alice.get_request(&id).await["state"], "pending", "nothing was recorded");

    // The longest accepted texts are kept whole and survive a restart.
    let comment = "c".repeat(1000);
    bob.act_with(&id, "approve", &comment).await.ok(200, "a 1000-character comment");
    server.sigterm();
    server.restart().await;
    let adam = server.login("adam").await;
    let r = adam.get_request(&id).await;
    assert_eq!(r["approvals"][0]["comment"], comment.as_str(), "{r:#}");
    let report = adam.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], true, "{report:#}");
}

#[tokio::test]
async fn control_characters_are_refused_in_what_people_type_and_escaped_where_they_are_shown() {
    let echo = Echo::start().await;
    let config = reviewed_db(&echo);
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;

    let detail = alice.ask("db", "5m", "fix\u{1b}[2J the db").await.problem(422, "forbidden-character-in-reason");
    assert!(detail.contains("U+001B") && detail.contains("character 4"), "{detail}");
    let detail = alice.ask("db", "5m", "two\nlines").await.problem(422, "forbidden-character-in-reason");
    assert!(detail.contains("U+000A"), "{detail}");
    alice.ask("db", "5m", "right-to-left \u{202E}txet").await.problem(422, "forbidden-character-in-reason");
    let id = id(&alice.request("db", "5m", "INC-7 — check the primary").await);
    let detail = bob.act_with(&id, "deny", "no\r\nway").await.problem(422, "forbidden-character-in-comment");
    assert!(detail.contains("U+000D"), "{detail}");

    // A sign-in under a name that would clear the screen and forge a log
    // line is audited, escaped.
    let evil = "mallory\u{1b}[2J\n2026-12-03T00:00:00Z  INFO ajar: login user=adam";
    server
        .anonymous(STRANGER)
        .post("/api/v1/login", json!({ "username": evil, "password": "x" }))
        .await
        .problem(401, "unauthenticated");
    let events = server.login("adam").await.audit().await;
    let failed = events.iter().rev().find(|e| e["action"] == "login_failed").expect("the failed login is audited");
    let actor = failed["actor"].as_str().unwrap_or_default();
    assert!(actor.starts_with("mallory\\u{1b}[2J\\u{a}"), "{failed:#}");
    assert!(!actor.chars().any(char::is_control), "{failed:#}");

    // Neither the server's log nor `ajar audit` prints a control character
    // that came from a caller.
    let log = server.stderr();
    assert!(!log.contains('\u{1b}'), "raw ESC in the server log:\n{log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-12-03T00:00:00Z")), "a forged log line:\n{log}");
    let cli = Cli::new(&server);
    cli.login("adam").await;
    let out = cli.run(&["audit", "--limit", "1000"]).await;
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("mallory\\u{1b}"), "{out}");
    assert!(!out.stdout.contains('\u{1b}'), "raw ESC in `ajar audit`:\n{out}");
}

// ---- pending requests -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_may_have_only_so_many_pending_requests_even_in_a_burst() {
    let echo = Echo::start().await;
    let config = Config::new()
        .server("max_pending_per_requester = 3")
        .target("db", echo.addr)
        .target("auto", echo.addr)
        .policy(Policy::approved_by("reviewed", &["group:dev"], &["db"], 1, &["group:sre"]))
        .policy(Policy::auto("self-service", &["group:dev"], &["auto"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let burst = (0..12).map(|i| {
        let alice = alice.clone();
        async move { alice.ask("db", "5m", &format!("burst {i}")).await }
    });
    let answers = futures::future::join_all(burst).await;
    let created: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(created.len(), 3, "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in answers.iter().filter(|r| r.status != 201) {
        let detail = r.problem(422, "too-many-pending");
        assert!(detail.contains("3 pending requests") && detail.contains("ajar cancel"), "{detail}");
    }
    // Others are not held back by alice's limit, and requests that need no
    // approval are not pending, so they do not count.
    server.login_from("dave", GRANTED).await.ask("db", "5m", "mine").await.ok(201, "dave's own request");
    alice.ask("auto", "5m", "self-service").await.ok(201, "an automatic grant is not pending");
    // Cancelling one makes room for one more.
    alice.act(&id(&created[0].body), "cancel").await.ok(200, "cancel");
    alice.ask("db", "5m", "after cancelling").await.ok(201, "room again");
    alice.ask("db", "5m", "one too many").await.problem(422, "too-many-pending");
}

#[tokio::test]
async fn a_pending_request_times_out_once_however_many_reconcile_passes_saw_it() {
    let echo = Echo::start().await;
    let config = Config::new()
        .server("reconcile_interval = \"1s\"")
        .server("approval_timeout = \"4s\"")
        .target("db", echo.addr)
        .policy(Policy::approved_by("reviewed", &["group:dev"], &["db"], 1, &["group:sre"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let id = id(&alice.request("db", "5m", "waiting").await);
    let timed_out = alice.wait_state(&id, "timed_out", Duration::from_secs(15)).await;
    // On time: within a second of decide_by, though four reconcile passes
    // announced the same deadline again.
    let late = Utc::now() - time(&timed_out, "decide_by");
    assert!(late < chrono::Duration::seconds(3), "timed out {late} after decide_by");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = server.login("adam").await.audit().await;
    assert_eq!(actions_for(&events, &id), ["requested", "timed_out"], "{}", show_events(&events));
}

// ---- sign-out -------------------------------------------------------------

#[tokio::test]
async fn logout_revokes_the_token_on_the_server_and_admins_can_end_every_session_of_a_user() {
    let server = TestServer::start(Config::new()).await;
    let alice = server.login_from("alice", GRANTED).await;
    alice.get("/api/v1/whoami").await.ok(200, "signed in");
    assert_eq!(alice.post_empty("/api/v1/logout").await.status, 204);
    alice.get("/api/v1/whoami").await.problem(401, "unauthenticated");
    alice.post_empty("/api/v1/logout").await.problem(401, "unauthenticated");

    // Two sessions of alice's, ended by an admin at once.
    let first = server.login_from("alice", GRANTED).await;
    let second = server.login_from("alice", STRANGER).await;
    let bob = server.login("bob").await;
    bob.post_empty("/api/v1/users/alice/revoke-tokens").await.problem(403, "forbidden");
    first.get("/api/v1/whoami").await.ok(200, "a non-admin could not end it");
    let adam = server.login("adam").await;
    let answer = adam.post_empty("/api/v1/users/alice/revoke-tokens").await.ok(200, "revoke alice's tokens");
    assert_eq!(answer, json!({ "user": "alice", "revoked": 2 }));
    first.get("/api/v1/whoami").await.problem(401, "unauthenticated");
    second.get("/api/v1/whoami").await.problem(401, "unauthenticated");
    bob.get("/api/v1/whoami").await.ok(200, "other users keep their sessions");
    adam.post_empty("/api/v1/users/not%20a%20name/revoke-tokens").await.problem(400, "invalid");

    // The CLI signs out on the server, not only on disk.
    let cli = Cli::new(&server);
    cli.login("dave").await;
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(cli.config_dir.path().join("credentials.json")).expect("saved credentials"),
    )
    .expect("credentials JSON");
    let token = saved["token"].as_str().expect("saved token").to_owned();
    let out = cli.run(&["logout"]).await;
    assert!(out.success() && out.stdout.contains("no longer accepts"), "{out}");
    server.anonymous(LOCAL).with_token(&token).get("/api/v1/whoami").await.problem(401, "unauthenticated");
    let out = cli.run(&["logout"]).await;
    assert!(out.success() && out.stdout.contains("not logged in"), "{out}");

    let events = adam.audit().await;
    assert_eq!(count(&events, |e| e["action"] == "logout"), 2, "{}", show_events(&events));
    let revoked = events.iter().find(|e| e["action"] == "tokens_revoked").expect("tokens_revoked audited");
    assert_eq!((revoked["actor"].as_str(), revoked["subject"].as_str()), (Some("adam"), Some("alice")));
}
