//! The `ajar` command line against a real server: login and the saved
//! token, request --wait, approve, ls, release, deny, cancel, revoke,
//! connect, hash-password and check-config.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use common::*;
use serde_json::Value;

/// Target `db`; devs' requests need one SRE's approval.
async fn reviewed_server() -> (TestServer, Echo) {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::approved_by(
        "reviewed",
        &["group:dev"],
        &["db"],
        1,
        &["group:sre"],
    ));
    (TestServer::start(config).await, echo)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap_or_else(|| panic!("expected a JSON array, got {list:#}")).iter().map(id).collect()
}

/// Polls the API until `who` sees a pending request and returns its id.
async fn pending_id(who: &Session) -> String {
    eventually("a pending request appears", Duration::from_secs(10), || async {
        let list = who.get("/api/v1/requests?state=pending").await.ok(200, "list pending");
        list.as_array().and_then(|l| l.first()).map(id)
    })
    .await
}

#[tokio::test]
async fn login_request_wait_approve_ls_and_release() {
    let (server, echo) = reviewed_server().await;
    let port = server.config.port("db");
    let alice = Cli::new(&server);
    let bob = Cli::new(&server);

    alice.login("alice").await;
    bob.login("bob").await;
    let credentials = alice.config_dir.path().join("credentials.json");
    let meta = std::fs::metadata(&credentials).expect("login saves credentials.json");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "credentials must be private");
    let saved = std::fs::read_to_string(&credentials).expect("read credentials");
    assert!(saved.contains("ajar_"), "the token is saved: {saved}");
    assert!(!saved.contains(PASSWORD), "the password is not saved");

    let targets = alice.run(&["targets", "--json"]).await.json();
    assert_eq!(targets[0]["name"], "db", "{targets:#}");
    assert_eq!(targets[0]["approvals_required"], 1);

    // `request --wait` blocks until an approver acts.
    let args = ["request", "db", "--for", "15m", "--reason", "INC-80", "--wait", "--json"];
    let mut waiting = alice.command(&args);
    waiting.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("spawn ajar request --wait");

    let bob_api = server.login("bob").await;
    let id = pending_id(&bob_api).await;
    let approved = bob.run(&["approve", &id, "--comment", "ok", "--json"]).await.json();
    assert_eq!(approved["state"], "active", "{approved:#}");
    assert_eq!(approved["approvals"][0]["approver"], "bob");

    let out = finish(&args, waiting).await;
    let granted = out.json();
    assert_eq!(granted["id"], id.as_str(), "{out}");
    assert_eq!(granted["state"], "active", "{out}");
    assert_eq!(granted["source"], "127.0.0.1/32", "bound to the CLI's own address");
    assert_eq!(granted["connect"]["port"], port, "{out}");

    let listed = alice.run(&["ls", "--json"]).await.json();
    assert_eq!(ids(&listed), [id.as_str()]);
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(ids(&alice.run(&["ls", "--state", "active", "--json"]).await.json()), [id.as_str()]);
    assert!(ids(&alice.run(&["ls", "--state", "released", "--json"]).await.json()).is_empty());

    // The CLI's address (127.0.0.1) holds the grant; 127.0.0.3 does not.
    let mut stream = connect_ok(LOCAL, port).await;
    assert_refused(STRANGER, port).await;

    let released = alice.run(&["release", &id, "--json"]).await.json();
    assert_eq!(released["state"], "released", "{released:#}");
    assert_cut_promptly(&mut stream).await;
    assert_refused(LOCAL, port).await;
    assert_eq!(echo.accepted().len(), 1);

    // Finished requests are listed on demand only.
    assert!(ids(&alice.run(&["ls", "--json"]).await.json()).is_empty());
    assert_eq!(ids(&alice.run(&["ls", "--state", "released", "--json"]).await.json()), [id.as_str()]);

    // The human table shows the same request among the finished ones.
    let table = alice.run(&["ls", "--all"]).await;
    assert!(table.success(), "{table}");
    assert!(table.stdout.contains("db") && table.stdout.contains("released"), "{table}");

    // `--server` overrides AJAR_SERVER.
    let mut cmd = alice.command(&["ls", "--all", "--json", "--server", &server.base_url()]);
    cmd.env("AJAR_SERVER", "http://127.0.0.1:9");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = finish(&["ls", "--all", "--json", "--server", "…"], cmd.spawn().expect("spawn")).await;
    assert_eq!(ids(&out.json()), [id]);
}

#[tokio::test]
async fn deny_cancel_and_revoke_from_the_cli() {
    let (server, _echo) = reviewed_server().await;
    let port = server.config.port("db");
    let alice = Cli::new(&server);
    let bob = Cli::new(&server);
    alice.login("alice").await;
    bob.login("bob").await;

    // Cancel a pending request.
    let pending = alice.run(&["request", "db", "--for", "5m", "--reason", "INC-81", "--json"]).await.json();
    assert_eq!(pending["state"], "pending", "{pending:#}");
    let cancelled = alice.run(&["cancel", &id(&pending), "--json"]).await.json();
    assert_eq!(cancelled["state"], "cancelled");

    // A denial ends `request --wait` with a non-zero exit that says so.
    let args = ["request", "db", "--for", "5m", "--reason", "INC-82", "--wait"];
    let mut waiting = alice.command(&args);
    waiting.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let waiting = waiting.spawn().expect("spawn ajar request --wait");
    let bob_api = server.login("bob").await;
    let denied_id = pending_id(&bob_api).await;
    let denied = bob.run(&["deny", &denied_id, "--comment", "not today", "--json"]).await.json();
    assert_eq!(denied["state"], "denied");
    let out = finish(&args, waiting).await;
    assert!(!out.success(), "a denied request is not a success:\n{out}");
    assert!(format!("{}{}", out.stdout, out.stderr).contains("denied"), "{out}");

    // Revoke an active grant.
    let asked = alice.run(&["request", "db", "--for", "5m", "--reason", "INC-83", "--json"]).await.json();
    let grant = id(&asked);
    bob.run(&["approve", &grant, "--json"]).await.json();
    let mut stream = connect_ok(LOCAL, port).await;
    let refused = alice.run(&["revoke", &grant]).await;
    assert!(!refused.success(), "the requester may not revoke:\n{refused}");
    let revoked = bob.run(&["revoke", &grant, "--json"]).await.json();
    assert_eq!(revoked["state"], "revoked");
    assert_cut_promptly(&mut stream).await;
}

#[tokio::test]
async fn cli_errors_say_what_is_wrong() {
    let (server, _echo) = reviewed_server().await;
    let alice = Cli::new(&server);

    let out = alice.run(&["targets"]).await;
    assert!(!out.success(), "not logged in:\n{out}");
    assert!(out.stderr.contains("ajar login"), "tells how to fix it:\n{out}");

    let out = alice.run_with_stdin(&["login", "alice", "--password-stdin"], "wrong password\n").await;
    assert!(!out.success(), "{out}");
    assert!(!alice.config_dir.path().join("credentials.json").exists(), "no credentials after a failed login");

    alice.login("alice").await;
    let out = alice.run(&["request", "nope", "--for", "5m", "--reason", "INC-84"]).await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("nope"), "the server's detail reaches the user:\n{out}");
    let out = alice.run(&["request", "db", "--for", "5h", "--reason", "INC-84"]).await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("5h") && out.stderr.contains("1h"), "{out}");
}

#[tokio::test]
async fn connect_runs_the_command_against_the_grant_and_releases_it() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = Cli::new(&server);
    alice.login("alice").await;

    // bash's /dev/tcp stands in for psql: send "ping", read the echo, and
    // exit with a code of its own.
    let script = "exec 3<>/dev/tcp/$1/$2; printf ping >&3; head -c 4 <&3; echo; exit 7";
    let out = alice
        .run(&[
            "connect",
            "db",
            "--for",
            "5m",
            "--reason",
            "INC-85",
            "--",
            "bash",
            "-c",
            script,
            "connect-test",
            "{host}",
            "{port}",
        ])
        .await;
    assert_eq!(out.code, Some(7), "the command's exit code is ajar's:\n{out}");
    assert!(out.stdout.contains("ping"), "the command reached the target through the gateway:\n{out}");
    assert_eq!(echo.accepted().len(), 1);

    // The grant connect requested is released when the command exits.
    let api = server.login("alice").await;
    let list = api.requests().await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    assert_eq!(list[0]["state"], "released", "{list:#}");
    assert_refused(LOCAL, server.config.port("db")).await;
}

async fn hash_password(stdin: &str) -> CliOut {
    let mut child = tokio::process::Command::new(ajar_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ajar hash-password");
    let mut input = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut input, stdin.as_bytes()).await.expect("write");
    drop(input);
    finish(&["hash-password"], child).await
}

#[tokio::test]
async fn hash_password_prints_a_verifiable_argon2id_hash() {
    let out = hash_password("a long enough passphrase\n").await;
    assert!(out.success(), "{out}");
    let phc = out.stdout.trim();
    assert!(phc.starts_with("$argon2id$"), "{out}");
    let hash = PasswordHash::new(phc).expect("a PHC string");
    let argon2 = argon2::Argon2::default();
    assert!(
        argon2.verify_password(b"a long enough passphrase", &hash).is_ok(),
        "the newline is not part of the password"
    );
    assert!(argon2.verify_password(b"other", &hash).is_err());

    let short = hash_password("short\n").await;
    assert!(!short.success() && short.stdout.is_empty(), "a short password is refused:\n{short}");
}

/// A file with four mistakes, on lines 4, 5, 21 and 23.
const BAD_CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"
data_dir = "data"
approval_timeout = "soon"
colour = "blue"

[[users]]
name = "alice"
password_hash = "HASH"

[[targets]]
name = "db"
address = "127.0.0.1:5432"
driver = "gateway"
gateway = { listen = "127.0.0.1:15432" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "forever"
approvals = 0
sources = ["0.0.0.0/0"]
"#;

#[tokio::test]
async fn check_config_names_file_line_and_key_of_each_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, BAD_CONFIG.replace("HASH", password_hash())).expect("write");
    let path = bad.to_str().expect("utf-8 path");

    let run = |args: Vec<String>| async move {
        let mut cmd = tokio::process::Command::new(ajar_bin());
        cmd.args(&args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        finish(&refs, cmd.spawn().expect("spawn ajar")).await
    };

    let out = run(vec!["check-config".into(), path.into()]).await;
    assert_eq!(out.code, Some(1), "{out}");
    let said = format!("{}{}", out.stdout, out.stderr);
    for (line, key) in [(4, "approval_timeout"), (5, "colour"), (21, "max_duration"), (23, "sources")] {
        let prefix = format!("{path}:{line}:");
        let found = said
            .lines()
            .any(|l| l.starts_with(&prefix) && l[prefix.len()..].contains(key) && l.split(": ").count() >= 3);
        assert!(found, "no `{prefix}COL: ...{key}...: message` line:\n{out}");
    }
    let error_lines = said.lines().filter(|l| l.starts_with(path)).count();
    assert_eq!(error_lines, 4, "exactly the four mistakes:\n{out}");

    // The server refuses to start on the same file, with the same errors.
    let out = run(vec!["server".into(), "--config".into(), path.into()]).await;
    assert!(!out.success(), "{out}");
    assert!(format!("{}{}", out.stdout, out.stderr).contains(&format!("{path}:5:")), "{out}");

    // A good file: exit 0 and a summary.
    let echo_addr: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("addr");
    let good = dir.path().join("good.toml");
    let config = Config::new().target("db", echo_addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    std::fs::write(&good, config.render()).expect("write");
    let out = run(vec!["check-config".into(), good.to_str().expect("utf-8").into()]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("ok") && out.stdout.contains("6 users"), "{out}");
    assert!(out.stdout.contains("auto"), "the summary names the policy:\n{out}");
}

#[tokio::test]
async fn up_writes_a_sample_config_with_a_bootstrap_admin_and_serves_it() {
    let mut server = TestServer::up().await;
    let data = server.dir().join("ajar-data");
    let shown = eventually("`ajar up` prints the admin password", Duration::from_secs(5), || {
        let out = server.stdout();
        async move { out.contains("ajar connect").then_some(out) }
    })
    .await;
    let password = shown
        .lines()
        .find_map(|l| l.split_once("admin password, shown only this once, is: ").map(|(_, p)| p.trim().to_owned()))
        .unwrap_or_else(|| panic!("no admin password in:\n{shown}"));
    assert!(password.len() >= 16, "a strong bootstrap password: {password:?}");
    assert!(shown.contains(&server.base_url()), "prints the URL:\n{shown}");

    for (file, private) in [("ajar.toml", true), ("admin-password", true), ("ajar.db", false)] {
        let meta = std::fs::metadata(data.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        if private {
            assert_eq!(meta.permissions().mode() & 0o077, 0, "{file} is readable by others");
        }
    }
    let saved = std::fs::read_to_string(data.join("admin-password")).expect("read admin-password");
    assert_eq!(saved.trim(), password);
    let checked = tokio::process::Command::new(ajar_bin())
        .arg("check-config")
        .arg(data.join("ajar.toml"))
        .output()
        .await
        .expect("run check-config");
    assert!(checked.status.success(), "the sample config checks: {checked:?}");

    // The admin can log in with it and sees the sample target.
    let admin = server.anonymous(LOCAL);
    let login = admin
        .post("/api/v1/login", serde_json::json!({ "username": "admin", "password": password }))
        .await
        .ok(200, "admin login");
    let admin = admin.with_token(login["token"].as_str().expect("token"));
    let targets = admin.get("/api/v1/targets").await.ok(200, "targets");
    assert_eq!(targets.as_array().map(Vec::len), Some(1), "{targets:#}");

    // A second start reuses the config and shows no new password.
    assert!(server.sigterm().success());
    let before = server.stdout();
    server.restart().await;
    let again = eventually("`ajar up` prints its next steps", Duration::from_secs(5), || {
        let out = server.stdout();
        let before = before.len();
        async move { out[before..].contains("ajar connect").then(|| out[before..].to_owned()) }
    })
    .await;
    assert!(!again.contains("password, shown only this once"), "{again}");
    assert!(!again.contains(&password), "{again}");
    let saved_again = std::fs::read_to_string(data.join("admin-password")).expect("read admin-password");
    assert_eq!(saved_again.trim(), password, "the bootstrap password is not replaced");
    admin.get("/api/v1/targets").await.ok(200, "the old token still works after a restart");
}

#[tokio::test]
async fn connect_reuses_an_active_grant_and_leaves_it_open() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = Cli::new(&server);
    alice.login("alice").await;
    let grant = alice.run(&["request", "db", "--for", "10m", "--reason", "INC-86", "--json"]).await.json();
    assert_eq!(grant["state"], "active", "{grant:#}");

    let script = "exec 3<>/dev/tcp/$1/$2; printf pong >&3; head -c 4 <&3; echo";
    let out = alice
        .run(&[
            "connect", "db", "--for", "5m", "--reason", "INC-86", "--", "bash", "-c", script, "t", "{host}", "{port}",
        ])
        .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("pong"), "{out}");

    // No second request, and the grant connect did not ask for stays open.
    let list = server.login("alice").await.requests().await;
    assert_eq!(ids(&list), [id(&grant)], "{list:#}");
    assert_eq!(list[0]["state"], "active", "{list:#}");
    connect_ok(LOCAL, server.config.port("db")).await;
}

#[tokio::test]
async fn up_on_a_taken_port_writes_nothing_and_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("hold a port");
    let addr = taken.local_addr().expect("address");
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("ajar-data");
    let up = |listen: String| {
        let data = data.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                tokio::process::Command::new(ajar_bin())
                    .args(["up", "--dir"])
                    .arg(&data)
                    .args(["--listen", &listen])
                    .output(),
            )
            .await
            .expect("`ajar up` on a taken port ends at once")
            .expect("run ajar up")
        }
    };
    let out = up(addr.to_string()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr}")), "{stderr}");
    assert!(stderr.contains("ajar up --listen 127.0.0.1:"), "the error says how to choose another:\n{stderr}");
    assert!(!data.join("ajar.toml").exists() && !data.join("admin-password").exists(), "nothing was written");
    drop(taken);
}

#[tokio::test]
async fn a_later_up_refuses_a_listen_the_config_does_not_say_instead_of_ignoring_it() {
    let mut server = TestServer::up().await;
    assert!(server.sigterm().success());
    let data = server.dir().join("ajar-data");
    let out = tokio::process::Command::new(ajar_bin())
        .args(["up", "--dir"])
        .arg(&data)
        .args(["--listen", "127.0.0.1:9"])
        .output()
        .await
        .expect("run ajar up");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("already sets server.listen = \"127.0.0.1:0\""), "{stderr}");
    assert!(stderr.contains("change server.listen in that file"), "{stderr}");
}
