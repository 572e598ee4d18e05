//! Single sign-on against a real OpenID Connect provider: npm
//! `oidc-provider` (a certified implementation) from
//! `tests/oidc-provider/provider.mjs`, started on 127.0.0.1 for each test.
//! No token here is minted by test code: every one comes from the provider.
//!
//! - JWT bearer tokens (client credentials): accepted with the provider's
//!   groups; refused with a 401 that says why for a wrong audience, an
//!   expired token, a tampered payload and a key the provider rotated away;
//!   the rotated-in key is picked up without restarting ajar.
//! - In headless Chromium: "Sign in with SSO" in the portal lands with the
//!   IdP's (mapped) groups and a policy naming that group lets the user
//!   request; `ajar login --sso` completes by the device flow and by the
//!   loopback redirect; sign-ins and group changes are in the audit log.
//! - Over plain HTTP (a cookie-keeping client clicking through the
//!   provider's forms, as a browser would): the redirect URI is the
//!   configured one whatever the `Host` header says, a config without it is
//!   refused; a provider error's description is never shown as ajar's
//!   words; an IdP group called `admins` that `group_map` does not list
//!   gives nothing; a sign-in whose ID token does not say the e-mail is
//!   verified is refused; a reload judges an SSO user by the groups of
//!   their latest sign-in.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::browser::Driver;
use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

/// Skips (printing why) outside CI; fails in CI.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
}

/// The provider process, killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start() -> Option<Self> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc-provider");
        if !dir.join("node_modules/oidc-provider").exists() {
            skip("tests/oidc-provider/node_modules is missing (./scripts/test.sh runs `npm ci` there)");
            return None;
        }
        let mut child = match Command::new("node")
            .arg("provider.mjs")
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                skip(&format!("node cannot be run ({e}); install Node.js 20 or later"));
                return None;
            }
        };
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("listening ") {
                        break url.trim().to_owned();
                    }
                }
                _ => panic!("the OIDC provider exited before listening"),
            }
        };
        // Keep draining its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Some(Self { child, issuer })
    }

    /// A JWT access token from the client credentials grant.
    async fn client_token(&self, client: &str, resource: Option<&str>) -> String {
        let mut form = vec![("grant_type", "client_credentials"), ("scope", "api")];
        if let Some(resource) = resource {
            form.push(("resource", resource));
        }
        let response: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some("ci-test-secret"))
            .form(&form)
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token response");
        response["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {response}")).to_owned()
    }

    /// Replaces the provider's signing key; the old one leaves the JWKS.
    async fn rotate_keys(&self) {
        let status = reqwest::Client::new()
            .post(format!("{}/__test/rotate", self.issuer))
            .send()
            .await
            .expect("rotate")
            .status();
        assert_eq!(status, 204);
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test config with an `[oidc]` section for `issuer`, on a port picked
/// now so that `redirect_url` can name the server.
fn config(issuer: &str, echo: std::net::SocketAddr) -> Config {
    let listen = std::net::SocketAddr::from((LOCAL, free_port()));
    let oidc = format!(
        r#"
[oidc]
issuer = "{issuer}"
client_id = "ajar"
client_secret_env = "AJAR_TEST_OIDC_SECRET"
scopes = ["openid", "email", "groups"]
group_map = {{ "idp-dev" = "developers", "ci" = "ci", "staff" = "staff" }}
allowed_email_domains = ["example.com"]
redirect_url = "http://{listen}/sso/callback"
clock_skew = "1s"

[[oidc.trusted_tokens]]
issuer = "{issuer}"
audience = "urn:ajar"
"#
    );
    Config::new()
        .listen(listen)
        .target("db", echo)
        .policy(Policy::auto("idp-developers", &["group:developers"], &["db"]))
        .policy(Policy::auto("ci", &["group:ci"], &["db"]))
        .section(&oidc)
}

async fn start(provider: &Provider, echo: std::net::SocketAddr) -> TestServer {
    // The server reads the client secret from its environment; the harness
    // passes its own environment on.
    std::env::set_var("AJAR_TEST_OIDC_SECRET", "ajar-test-secret");
    TestServer::start(config(&provider.issuer, echo)).await
}

fn tamper(token: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let payload = String::from_utf8(engine.decode(parts[1]).expect("payload")).expect("utf-8");
    let forged = payload.replace("\"groups\":[\"ci\"]", "\"groups\":[\"admins\"]");
    assert_ne!(forged, payload, "the payload names the ci group");
    format!("{}.{}.{}", parts[0], engine.encode(forged), parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_jwts_are_bearer_tokens_and_bad_ones_are_refused_with_why() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;
    let anon = server.anonymous(std::net::IpAddr::from([127, 0, 0, 1]));

    // A CI job's token: its groups come from the provider.
    let token = provider.client_token("ci", None).await;
    let ci = anon.with_token(&token);
    let me = ci.get("/api/v1/whoami").await.ok(200, "whoami with a provider JWT");
    assert_eq!((me["username"].as_str(), &me["groups"]), (Some("ci"), &json!(["ci"])));
    ci.ask("db", "5m", "deploy").await.ok(201, "a trusted token may request what its policy allows");

    // A token for another audience.
    let other = anon.with_token(&provider.client_token("ci", Some("urn:other")).await);
    let why = other.get("/api/v1/whoami").await.problem(401, "invalid-token");
    assert!(why.contains("another audience (urn:other)"), "{why}");

    // A payload changed after signing.
    let why = anon.with_token(&tamper(&token)).get("/api/v1/whoami").await.problem(401, "invalid-token");
    assert!(why.contains("signature does not match"), "{why}");

    // An expired token (1 s lifetime, 1 s skew).
    let short = provider.client_token("ci-short", None).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let why = anon.with_token(&short).get("/api/v1/whoami").await.problem(401, "invalid-token");
    assert!(why.contains("expired"), "{why}");

    // The provider rotates its key. A token signed by the new key makes
    // ajar fetch the JWKS again (no restart), and from then on a token
    // signed by the retired key is refused.
    provider.rotate_keys().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let fresh = anon.with_token(&provider.client_token("ci", None).await);
    fresh.get("/api/v1/whoami").await.ok(200, "a token signed by the rotated-in key");
    let why = ci.get("/api/v1/whoami").await.problem(401, "invalid-token");
    assert!(why.contains("unknown key"), "{why}");

    // None of the answers repeats the token.
    assert!(!why.contains(&token[..20]));

    // The audit log has the sign-in, the first groups and every refusal.
    let admin = server.login("adam").await;
    let audit = admin.get("/api/v1/audit?limit=500").await.ok(200, "audit");
    let events = audit["events"].as_array().cloned().unwrap_or_default();
    let count = |action: &str| events.iter().filter(|e| e["action"] == action).count();
    assert!(events.iter().any(|e| e["action"] == "login" && e["actor"] == "ci"), "{audit}");
    assert!(events.iter().any(|e| e["action"] == "groups_changed" && e["actor"] == "ci"), "{audit}");
    assert_eq!(count("login_failed"), 4, "{audit}");
    for kind in ["wrong_audience", "bad_signature", "expired", "unknown_key"] {
        assert!(
            events
                .iter()
                .any(|e| e["action"] == "login_failed" && e["reason"].as_str().unwrap_or("").starts_with(kind)),
            "no refusal audited as {kind}: {audit}"
        );
    }
}

/// A server whose trusted tokens are named by the provider's `acct`
/// claim (see provider.mjs), with a target alice may have once sre
/// approves.
async fn start_named_by_acct(provider: &Provider, echo: std::net::SocketAddr) -> TestServer {
    std::env::set_var("AJAR_TEST_OIDC_SECRET", "ajar-test-secret");
    let issuer = &provider.issuer;
    let oidc = format!(
        r#"
[oidc]
issuer = "{issuer}"
client_id = "ajar"
client_secret_env = "AJAR_TEST_OIDC_SECRET"
group_map = {{ "ci" = "ci" }}
redirect_url = "https://ajar.example.com/sso/callback"

[[oidc.trusted_tokens]]
issuer = "{issuer}"
audience = "urn:ajar"
name_claim = "acct"
"#
    );
    let config = Config::new()
        .target("db", echo)
        .policy(Policy::approved_by("reviewed", &["group:dev"], &["db"], 1, &["group:sre", "group:ci"]))
        .section(&oidc);
    TestServer::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bearer_token_stays_refused_on_every_use() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start_named_by_acct(&provider, echo.addr).await;
    let anon = server.anonymous(std::net::IpAddr::from([127, 0, 0, 1]));

    // A token naming the local admin is refused, however often it is used.
    let as_adam = anon.with_token(&provider.client_token("adam", None).await);
    for use_ in 1..=3 {
        let why = as_adam.get("/api/v1/whoami").await.problem(403, "forbidden");
        assert!(why.contains("local user"), "use {use_}: {why}");
        as_adam.get("/api/v1/audit").await.problem(403, "forbidden");
    }

    // A token naming the approver bob cannot approve as bob.
    let alice = server.login_from("alice", GRANTED).await;
    let id = id(&alice.request("db", "5m", "INC-9").await);
    let as_bob = anon.with_token(&provider.client_token("bob", None).await);
    for _ in 1..=3 {
        as_bob.act(&id, "approve").await.problem(403, "forbidden");
    }
    assert_eq!(alice.get_request(&id).await["state"], "pending");

    // The first account to use a name keeps it; a second one claiming it is
    // refused every time, and the first still works.
    let ci = anon.with_token(&provider.client_token("ci", None).await);
    assert_eq!(ci.get("/api/v1/whoami").await.ok(200, "ci")["username"], "ci");
    let twin = anon.with_token(&provider.client_token("ci-twin", None).await);
    for use_ in 1..=3 {
        let why = twin.get("/api/v1/whoami").await.problem(403, "forbidden");
        assert!(why.contains("not the one this name was first used by"), "use {use_}: {why}");
        twin.act(&id, "approve").await.problem(403, "forbidden");
    }
    assert_eq!(ci.get("/api/v1/whoami").await.ok(200, "ci still")["username"], "ci");
    assert_eq!(alice.get_request(&id).await["state"], "pending", "nobody approved it");

    let events = server.login("erin").await.audit().await;
    let signed_in: Vec<&Value> = events.iter().filter(|e| e["action"] == "login").collect();
    assert!(
        signed_in.iter().all(|e| e["actor"] != "adam" && e["actor"] != "bob" || e["data"]["method"] != "jwt"),
        "a refused token signed in: {}",
        show_events(&events)
    );
    let refusals = |why: &str| events.iter().any(|e| e["action"] == "login_failed" && e["reason"] == why);
    assert!(refusals("the name belongs to a local user"), "{}", show_events(&events));
    assert!(refusals("the name belongs to another account at the identity provider"), "{}", show_events(&events));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_tokens_and_provider_errors_cannot_flood_the_audit_log() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let mut server = start(&provider, echo.addr).await;
    let adam = server.login("adam").await;
    let before = adam.audit().await.len();

    // 200 junk bearer tokens from one address: the first 30 are verified
    // (and refused), the rest wait without being looked at.
    let junk = server.anonymous(STRANGER).with_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl");
    let mut statuses = Vec::new();
    for _ in 0..200 {
        statuses.push(junk.get("/api/v1/whoami").await.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 30, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 170, "{statuses:?}");
    let limited = junk.get("/api/v1/whoami").await;
    limited.problem(429, "rate-limited");
    assert!(limited.headers.contains_key("retry-after"), "{limited:?}");
    // Another address is not held back by that one.
    let ci = server.anonymous(GRANTED).with_token(&provider.client_token("ci", None).await);
    ci.get("/api/v1/whoami").await.ok(200, "a good token from elsewhere");

    // 50 provider errors at the callback from a third address.
    let callback = server.url("/sso/callback?error=access_denied&error_description=nope");
    let browser = client(PROXY);
    for _ in 0..50 {
        let status = browser.get(&callback).send().await.expect("callback").status().as_u16();
        assert!(status == 401 || status == 429, "{status}");
    }

    // Two events so far (the first of each kind); the repeats are audited
    // with their count when their minute ends, or at shutdown.
    let events = adam.audit().await;
    let failed: Vec<&Value> = events[before..].iter().filter(|e| e["action"] == "login_failed").collect();
    assert_eq!(failed.len(), 2, "{}", show_events(&events[before..]));
    server.sigterm();
    server.restart().await;
    let events = server.login("adam").await.audit().await;
    let repeats: Vec<(String, u64)> = events[before..]
        .iter()
        .filter(|e| e["action"] == "login_failed" && e["data"]["repeats"].is_u64())
        .map(|e| (e["source"].as_str().unwrap_or("").to_owned(), e["data"]["repeats"].as_u64().unwrap_or(0)))
        .collect();
    assert!(repeats.contains(&("127.0.0.3".to_owned(), 29)), "{repeats:?}\n{}", show_events(&events[before..]));
    assert!(repeats.contains(&("127.0.0.4".to_owned(), 29)), "{repeats:?}\n{}", show_events(&events[before..]));
    let all_failed = events[before..].iter().filter(|e| e["action"] == "login_failed").count();
    assert_eq!(all_failed, 4, "250 failures, four events: {}", show_events(&events[before..]));
}

// ---- in the browser -------------------------------------------------------

/// Clicks through the provider's pages (its development login form, where
/// any password works, the consent and device-confirmation pages) as
/// `login`, until the browser is at a URL starting with `done` or a page
/// saying `done_text`.
async fn through_provider(browser: &Client, provider: &Provider, login: &str, done: &str, done_text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = browser.current_url().await.expect("url").to_string();
        let page = browser.source().await.unwrap_or_default();
        if url.starts_with(done) || (!done_text.is_empty() && page.contains(done_text)) {
            return;
        }
        assert!(Instant::now() < deadline, "stuck at {url}:\n{page}");
        if url.starts_with(&provider.issuer) {
            if let Ok(field) = browser.find(Locator::Css("input[name=login]")).await {
                field.send_keys(login).await.expect("type login");
                browser
                    .find(Locator::Css("input[name=password]"))
                    .await
                    .expect("password")
                    .send_keys("x")
                    .await
                    .expect("type");
                browser.find(Locator::Css("button[type=submit]")).await.expect("sign-in").click().await.expect("click");
            } else if let Ok(button) = browser.find(Locator::Css("button[autofocus], button[type=submit]")).await {
                button.click().await.expect("continue");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `ajar login --sso ARGS` and returns it with the sign-in URL it
/// printed.
fn cli_login(server: &TestServer, home: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(ajar_bin())
        .args(["login", "--sso", "--no-browser"])
        .args(args)
        .env("AJAR_SERVER", server.base_url())
        .env("AJAR_CONFIG_DIR", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ajar login --sso");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("To sign in, open ") {
                    break url.trim().to_owned();
                }
            }
            _ => panic!("ajar login --sso printed no sign-in URL"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

fn wait_success(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut out).expect("read");
            assert!(status.success(), "ajar login --sso failed: {out}");
            return out;
        }
        assert!(Instant::now() < deadline, "ajar login --sso did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn saved_username(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("credentials.json")).expect("saved credentials");
    let saved: Value = serde_json::from_str(&text).expect("json");
    saved["username"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_and_cli_sign_in_through_the_provider() {
    let Some(provider) = Provider::start() else { return };
    let Some(driver) = Driver::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;
    let profile = tempfile::tempdir().expect("dir");
    let browser = driver.browser(&profile).await;

    let outcome = async {
        // The portal: Sign in with SSO, as carol (IdP groups idp-dev, staff).
        browser.goto(&server.url("/login")).await.expect("sign-in page");
        browser.find(Locator::Id("sso")).await.expect("the SSO button").click().await.expect("click");
        through_provider(&browser, &provider, "carol", &server.url("/access"), "").await;
        let who = browser.find(Locator::Css(".who")).await.expect("signed in").text().await.expect("text");
        assert!(who.contains("carol@example.com"), "{who}");

        // Her mapped group lets her request through the policy that names it.
        let cookie = browser.get_named_cookie("ajar_session").await.expect("session cookie");
        let carol = server.anonymous(std::net::IpAddr::from([127, 0, 0, 1])).with_token(cookie.value());
        let me = carol.get("/api/v1/whoami").await.ok(200, "whoami");
        assert_eq!(me["groups"], json!(["developers", "staff"]), "{me}");
        let request = carol.request("db", "10m", "INC-1").await;
        assert_eq!(request["state"], "active", "{request}");
        browser.goto(&server.url("/targets")).await.expect("targets");
        let targets = browser.find(Locator::Css("main")).await.expect("main").text().await.expect("text");
        assert!(targets.contains("db"), "{targets}");

        // The CLI by the device flow (the provider offers it).
        let home = tempfile::tempdir().expect("dir");
        let (child, url) = cli_login(&server, home.path(), &[]);
        assert!(url.starts_with(&provider.issuer), "{url}");
        browser.goto(&url).await.expect("device page");
        through_provider(&browser, &provider, "carol", "\u{0}", "Sign-in Success").await;
        let out = wait_success(child);
        assert!(out.contains("as carol@example.com"), "{out}");
        assert_eq!(saved_username(home.path()), "carol@example.com");

        // The CLI by the loopback redirect.
        let home = tempfile::tempdir().expect("dir");
        let (child, url) = cli_login(&server, home.path(), &["--loopback"]);
        assert!(url.starts_with(&server.base_url()), "{url}");
        browser.goto(&url).await.expect("loopback sign-in");
        through_provider(&browser, &provider, "carol", "\u{0}", "Signed in to ajar").await;
        let out = wait_success(child);
        assert!(out.contains("as carol@example.com"), "{out}");

        // A sign-in outside the allowed e-mail domains is refused: none
        // here, but a callback without a sign-in in progress is, audited.
        let stray = reqwest::get(server.url("/sso/callback?code=x&state=y")).await.expect("callback");
        assert_eq!(stray.status(), 400);

        let admin = server.login("adam").await;
        let audit = admin.get("/api/v1/audit?limit=500").await.ok(200, "audit");
        let events = audit["events"].as_array().cloned().unwrap_or_default();
        let by =
            |action: &str| events.iter().filter(|e| e["action"] == action && e["actor"] == "carol@example.com").count();
        assert_eq!(by("login"), 3, "portal, device and loopback sign-ins: {audit}");
        assert_eq!(by("groups_changed"), 1, "the groups changed once, at the first sign-in: {audit}");
        assert!(events.iter().any(|e| e["action"] == "login_failed"), "{audit}");
    }
    .await;
    browser.close().await.expect("close the browser");
    outcome
}

// ---- over plain HTTP ------------------------------------------------------

/// Cookies as a browser keeps them: by origin, path and name, sent back to
/// the same origin for the paths under the cookie's path.
#[derive(Default)]
struct Jar {
    /// (origin, path, name, value)
    cookies: Vec<(String, String, String, String)>,
}

impl Jar {
    fn keep(&mut self, url: &reqwest::Url, headers: &reqwest::header::HeaderMap) {
        let origin = url.origin().ascii_serialization();
        for header in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let mut parts = text.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else { continue };
            let (mut path, mut gone) = ("/".to_owned(), value.is_empty());
            for attribute in parts {
                let (key, val) = attribute.split_once('=').unwrap_or((attribute, ""));
                match key.to_ascii_lowercase().as_str() {
                    "path" => val.clone_into(&mut path),
                    "max-age" => gone |= val.parse::<i64>().is_ok_and(|s| s <= 0),
                    "expires" => gone |= val.contains("1970"),
                    _ => {}
                }
            }
            self.cookies.retain(|(o, p, n, _)| !(*o == origin && *p == path && n == name));
            if !gone {
                self.cookies.push((origin.clone(), path, name.to_owned(), value.to_owned()));
            }
        }
    }

    fn header(&self, url: &reqwest::Url) -> String {
        let origin = url.origin().ascii_serialization();
        let sent: Vec<String> = self
            .cookies
            .iter()
            .filter(|(o, p, _, _)| *o == origin && url.path().starts_with(p.as_str()))
            .map(|(_, _, n, v)| format!("{n}={v}"))
            .collect();
        sent.join("; ")
    }

    fn value(&self, name: &str) -> Option<String> {
        self.cookies.iter().find(|(_, _, n, _)| n == name).map(|(_, _, _, v)| v.clone())
    }
}

/// One answer in a sign-in: the status, where it redirects, the body.
struct Answer {
    status: u16,
    location: Option<reqwest::Url>,
    body: String,
}

/// A stand-in for a browser over plain HTTP: follows redirects itself and
/// keeps cookies, so that it can click through the provider's development
/// login and consent forms (TESTING.md: ~0.1 s for a sign-in).
struct HttpBrowser {
    http: reqwest::Client,
    jar: Jar,
}

impl HttpBrowser {
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(LOCAL)
            .timeout(Duration::from_secs(20))
            .build()
            .expect("build an HTTP client");
        Self { http, jar: Jar::default() }
    }

    /// GET `url`, or POST `form` to it; `host` overrides the Host header.
    async fn send(&mut self, url: &reqwest::Url, form: Option<&[(&str, &str)]>, host: Option<&str>) -> Answer {
        let mut request = match form {
            Some(form) => self.http.post(url.clone()).form(form),
            None => self.http.get(url.clone()),
        };
        let cookies = self.jar.header(url);
        if !cookies.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookies);
        }
        if let Some(host) = host {
            request = request.header(reqwest::header::HOST, host);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        self.jar.keep(url, response.headers());
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| url.join(l).unwrap_or_else(|e| panic!("{url} redirects to {l}: {e}")));
        let body = response.text().await.unwrap_or_default();
        Answer { status, location, body }
    }

    /// From `answer` (the redirect ajar's /sso/start gave) through the
    /// provider's forms as `login`, until the provider sends the browser
    /// back: returns that URL, the redirect URI with the code.
    async fn through_provider(&mut self, provider: &Provider, mut answer: Answer, login: &str) -> reqwest::Url {
        for _ in 0..20 {
            if let Some(next) = answer.location.take() {
                if !next.as_str().starts_with(&provider.issuer) {
                    return next;
                }
                answer = self.send(&next, None, None).await;
                continue;
            }
            assert_eq!(answer.status, 200, "the provider answered {}: {}", answer.status, answer.body);
            let action = answer
                .body
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("a provider page without a form: {}", answer.body));
            let action = reqwest::Url::parse(action).expect("the form's action is a URL");
            answer = if answer.body.contains(r#"name="prompt" value="login""#) {
                self.send(&action, Some(&[("prompt", "login"), ("login", login), ("password", "x")]), None).await
            } else if answer.body.contains(r#"name="prompt" value="consent""#) {
                self.send(&action, Some(&[("prompt", "consent")]), None).await
            } else {
                panic!("an unexpected provider page: {}", answer.body)
            };
        }
        panic!("the sign-in at the provider did not end within 20 steps")
    }
}

/// How a sign-in over HTTP ended at ajar.
struct Landed {
    /// ajar's answer at /sso/callback.
    answer: Answer,
    /// The portal session's token, when ajar signed the user in.
    token: Option<String>,
}

/// Signs `login` in the way the portal's "Sign in with SSO" does, over
/// plain HTTP: /sso/start, the provider's forms, back to /sso/callback.
async fn http_sign_in(server: &TestServer, provider: &Provider, login: &str) -> Landed {
    let mut browser = HttpBrowser::new();
    let start = reqwest::Url::parse(&server.url("/sso/start")).expect("url");
    let answer = browser.send(&start, None, None).await;
    assert_eq!(answer.status, 303, "/sso/start: {}", answer.body);
    let back = browser.through_provider(provider, answer, login).await;
    assert!(back.as_str().starts_with(&server.url("/sso/callback?")), "the provider sent the browser to {back}");
    let answer = browser.send(&back, None, None).await;
    Landed { answer, token: browser.jar.value("ajar_session") }
}

/// The session of a sign-in that succeeded, calling the API from `ip`.
fn signed_in(server: &TestServer, landed: &Landed, ip: std::net::IpAddr) -> Session {
    assert_eq!(
        (landed.answer.status, landed.answer.location.as_ref().map(|l| l.path().to_owned())),
        (303, Some("/access".to_owned())),
        "the sign-in did not land in the portal: {}",
        landed.answer.body
    );
    let token = landed.token.as_deref().expect("a session cookie after signing in");
    server.anonymous(ip).with_token(token)
}

fn query(url: &reqwest::Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_uri_is_the_configured_one_whatever_the_host_header_says() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;
    let configured = server.url("/sso/callback");

    // A client that names another host gets the configured redirect URI
    // all the same: the provider would send the code wherever it says.
    let mut browser = HttpBrowser::new();
    let start = reqwest::Url::parse(&server.url("/sso/start")).expect("url");
    let answer = browser.send(&start, None, Some("evil.example")).await;
    assert_eq!(answer.status, 303, "{}", answer.body);
    let to = answer.location.clone().expect("a redirect to the provider");
    assert!(to.as_str().starts_with(&provider.issuer), "{to}");
    assert_eq!(query(&to, "redirect_uri").as_deref(), Some(configured.as_str()), "{to}");

    // And the sign-in completes there.
    let back = browser.through_provider(&provider, answer, "carol").await;
    assert!(back.as_str().starts_with(&format!("{configured}?")), "{back}");
    let landed = browser.send(&back, None, Some("evil.example")).await;
    assert_eq!(landed.status, 303, "{}", landed.body);
    assert!(browser.jar.value("ajar_session").is_some(), "signed in");

    // A config without redirect_url is refused, saying what to add.
    let rendered = server.config.render();
    let without: Vec<&str> = rendered.lines().filter(|l| !l.starts_with("redirect_url")).collect();
    let file = server.dir().join("no-redirect.toml");
    std::fs::write(&file, without.join("\n")).expect("write");
    let out = std::process::Command::new(ajar_bin()).arg("check-config").arg(&file).output().expect("run ajar");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    let line = said.lines().find(|l| l.contains("oidc.redirect_url")).unwrap_or_else(|| panic!("{said}"));
    assert!(line.starts_with(&format!("{}:", file.display())), "located in the file: {line}");
    assert!(line.contains("redirect_url = \"https://"), "shows the fix: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_is_told_in_ajars_words_and_its_text_only_logged() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;
    let http = reqwest::Client::new();
    let hostile = "Your account is locked. Call +1-555-0100 or visit https://evil.example/reset\n\
                   2026-01-01T00:00:00Z ERROR forged log line";

    // Anyone can send a browser here with any text.
    let url = reqwest::Url::parse_with_params(
        &server.url("/sso/callback"),
        &[("error", "access_denied"), ("error_description", hostile)],
    )
    .expect("url");
    let response = http.get(url).send().await.expect("callback");
    assert_eq!(response.status(), 401);
    let page = response.text().await.expect("page");
    assert!(page.contains("Sign-in was not completed") && page.contains("(access_denied)"), "{page}");
    for words in ["555-0100", "evil.example", "locked", "forged"] {
        assert!(!page.contains(words), "the page repeats the provider's {words:?}:\n{page}");
    }

    // An error code that no standard defines is not repeated either.
    let url = reqwest::Url::parse_with_params(
        &server.url("/sso/callback"),
        &[("error", "call_555-0100_now"), ("error_description", "x")],
    )
    .expect("url");
    let page = http.get(url).send().await.expect("callback").text().await.expect("page");
    assert!(page.contains("Sign-in was not completed") && !page.contains("555-0100"), "{page}");

    // The log has the provider's text, escaped: it cannot forge a line.
    let log = eventually("the provider's error in the log", Duration::from_secs(5), || async {
        let log = server.stderr();
        log.contains("call_555-0100_now").then_some(log)
    })
    .await;
    assert!(log.contains(r"evil.example/reset\u{a}2026-01-01T00:00:00Z ERROR forged log line"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z ERROR forged")), "{log}");

    // The audit log says what happened in ajar's words.
    let admin = server.login("adam").await;
    let events = admin.audit().await;
    let reasons: Vec<&str> =
        events.iter().filter(|e| e["action"] == "login_failed").filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        ["the identity provider answered access_denied", "the identity provider answered an unregistered error code"],
        "{}",
        show_events(&events)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_groups_that_group_map_does_not_list_give_nothing() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;

    // mallory is in provider groups `admins` (not mapped) and `idp-dev`;
    // ajar's admins are `group:admins`.
    let landed = http_sign_in(&server, &provider, "mallory").await;
    let mallory = signed_in(&server, &landed, LOCAL);
    let me = mallory.get("/api/v1/whoami").await.ok(200, "whoami");
    assert_eq!(me["username"], "mallory@example.com", "{me}");
    assert_eq!(me["groups"], json!(["developers"]), "{me}");
    assert_eq!(me["admin"], false, "{me}");
    mallory.get("/api/v1/audit/verify").await.problem(403, "forbidden");

    // The same for a trusted token whose groups claim says admins.
    let token = provider.client_token("ci-admins", None).await;
    let ci = server.anonymous(LOCAL).with_token(&token);
    let me = ci.get("/api/v1/whoami").await.ok(200, "whoami with a provider JWT");
    assert_eq!((&me["groups"], &me["admin"]), (&json!(["ci"]), &json!(false)), "{me}");

    // Neither may do what an admin may: revoke someone else's grant.
    let grant = id(&ci.request("db", "5m", "deploy").await);
    mallory.act(&grant, "revoke").await.problem(404, "not-found");
    assert_eq!(ci.get_request(&grant).await["state"], "active");
    let adam = server.login("adam").await;
    adam.act(&grant, "revoke").await.ok(200, "an admin may revoke it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_whose_email_the_provider_does_not_vouch_for_is_refused() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;

    // grace's ID token has an e-mail address but no email_verified claim.
    let landed = http_sign_in(&server, &provider, "grace").await;
    assert_eq!(landed.answer.status, 403, "{}", landed.answer.body);
    assert!(landed.token.is_none(), "no session for grace");
    let page = &landed.answer.body;
    assert!(
        page.contains("did not say that it verified the e-mail address grace@example.com")
            && page.contains("require_verified_email"),
        "{page}"
    );

    // carol's says it verified hers.
    let carol = signed_in(&server, &http_sign_in(&server, &provider, "carol").await, LOCAL);
    carol.get("/api/v1/whoami").await.ok(200, "whoami");

    let admin = server.login("adam").await;
    let events = admin.audit().await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "login_failed"
                && e["reason"].as_str().is_some_and(|r| r.contains("grace@example.com"))),
        "{}",
        show_events(&events)
    );
    assert!(!events.iter().any(|e| e["action"] == "login" && e["actor"] == "grace@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_judges_an_sso_user_by_the_groups_of_their_latest_sign_in() {
    let Some(provider) = Provider::start() else { return };
    let echo = Echo::start().await;
    let server = start(&provider, echo.addr).await;
    let port = server.config.port("db");
    let (frank_ip, carol_ip) = (GRANTED, std::net::IpAddr::from([127, 0, 0, 5]));

    // frank and carol are developers (provider group idp-dev) and get a
    // grant by the policy for developers.
    let frank = signed_in(&server, &http_sign_in(&server, &provider, "frank").await, frank_ip);
    let carol = signed_in(&server, &http_sign_in(&server, &provider, "carol").await, carol_ip);
    let frank_grant = id(&frank.request("db", "30m", "INC-80").await);
    let carol_grant = id(&carol.request("db", "30m", "INC-81").await);
    let mut frank_stream = connect_ok(frank_ip, port).await;
    let mut carol_stream = connect_ok(carol_ip, port).await;

    // The provider takes frank out of idp-dev; he signs in again.
    let status = reqwest::Client::new()
        .post(format!("{}/__test/groups", provider.issuer))
        .json(&json!({ "account": "frank", "groups": ["staff"] }))
        .send()
        .await
        .expect("change groups")
        .status();
    assert_eq!(status, 204);
    let again = signed_in(&server, &http_sign_in(&server, &provider, "frank").await, frank_ip);
    assert_eq!(again.get("/api/v1/whoami").await.ok(200, "whoami")["groups"], json!(["staff"]));

    // A reload (of the same file) judges him by those groups: no policy
    // lets him have db any more. carol keeps hers.
    server.sighup();
    let revoked = frank.wait_state(&frank_grant, "revoked", Duration::from_secs(5)).await;
    assert_eq!(revoked["closed_by"], "ajar:system", "{revoked:#}");
    assert!(revoked["close_comment"].as_str().is_some_and(|c| c.starts_with("config reload:")), "{revoked:#}");
    assert_cut_promptly(&mut frank_stream).await;
    assert_refused(frank_ip, port).await;

    let admin = server.login("adam").await;
    admin.wait_audit("`config_reloaded`", Duration::from_secs(5), |e| e["action"] == "config_reloaded").await;
    assert_eq!(carol.get_request(&carol_grant).await["state"], "active");
    round_trip(&mut carol_stream, b"carol still works").await;
}
