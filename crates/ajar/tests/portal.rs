//! The web portal, end to end in headless Chromium (driven over WebDriver
//! by fantoccini): alice asks, bob sees it appear and approves, alice's page
//! turns active with a countdown, alice connects through the gateway with
//! real TCP and releases, and the audit page tells the whole story. Also:
//! a POST without a CSRF token is refused, and a non-approver neither sees
//! nor can use the approve action. Screenshots of every page are saved
//! under the target dir for a person to look at.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::Driver;
use common::*;
use fantoccini::{Client, Locator};

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portal-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn shoot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshots().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    eprintln!("screenshot: {}", path.display());
}

/// Waits until `css` matches an element whose text contains `text`.
async fn wait_for_text(browser: &Client, css: &str, text: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(elements) = browser.find_all(Locator::Css(css)).await {
            for element in elements {
                if let Ok(found) = element.text().await {
                    if found.contains(text) {
                        return found;
                    }
                }
            }
        }
        if Instant::now() > deadline {
            let page = browser.source().await.unwrap_or_default();
            panic!("no {css} containing {text:?} within {within:?}; page was:\n{page}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finds and clicks `css`, finding it again if a live update replaced it
/// between the two (the page swaps its live regions on every change).
async fn click(browser: &Client, css: &str) {
    let mut last = String::new();
    for _ in 0..20 {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not click {css}: {last}");
}

async fn sign_in(browser: &Client, server: &TestServer, user: &str) {
    browser.goto(&server.url("/login")).await.expect("open the sign-in page");
    browser.find(Locator::Id("username")).await.expect("user field").send_keys(user).await.expect("type user");
    browser.find(Locator::Id("password")).await.expect("password field").send_keys(PASSWORD).await.expect("type");
    click(browser, "button[type=submit]").await;
    wait_for_text(browser, ".who", user, Duration::from_secs(10)).await;
}

async fn session_cookie(browser: &Client) -> String {
    let cookie = browser.get_named_cookie("ajar_session").await.expect("a session cookie");
    format!("ajar_session={}", cookie.value())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approve_connect_release_and_audit_in_the_browser() {
    let Some(driver) = Driver::start() else { return };
    let echo = Echo::start().await;
    let config = Config::new().target("db-prod", echo.addr).policy(Policy::approved_by(
        "dev-prod",
        &["group:dev"],
        &["db-prod"],
        1,
        &["group:sre"],
    ));
    let port = config.port("db-prod");
    let server = TestServer::start(config).await;
    let (alice_profile, bob_profile) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let alice = driver.browser(&alice_profile).await;
    let bob = driver.browser(&bob_profile).await;

    let outcome = async {
        // bob watches his approvals page before anything is asked.
        sign_in(&bob, &server, "bob").await;
        bob.goto(&server.url("/approvals")).await.expect("approvals");
        wait_for_text(&bob, "main", "Nothing is waiting for your approval", Duration::from_secs(5)).await;
        shoot(&bob, "approvals-empty").await;

        // alice asks for access with a reason.
        sign_in(&alice, &server, "alice").await;
        shoot(&alice, "access-empty").await;
        alice.goto(&server.url("/targets")).await.expect("targets");
        wait_for_text(&alice, ".card.target", "1 from group:sre", Duration::from_secs(5)).await;
        alice.find(Locator::Id("reason-db-prod")).await.expect("reason").send_keys("INC-4411").await.expect("type");
        shoot(&alice, "targets").await;
        click(&alice, ".card.target button[type=submit]").await;
        wait_for_text(&alice, ".card.request", "Waiting for approval", Duration::from_secs(10)).await;
        shoot(&alice, "access-pending").await;

        // bob's page shows it without a reload, and he approves.
        wait_for_text(&bob, "article.request", "INC-4411", Duration::from_secs(10)).await;
        shoot(&bob, "approvals-pending").await;
        bob.find(Locator::Css("article.request input[name=comment]"))
            .await
            .expect("comment")
            .send_keys("go ahead")
            .await
            .expect("type");
        click(&bob, "article.request button.primary").await;
        wait_for_text(&bob, ".notice", "Approved", Duration::from_secs(10)).await;

        // alice's page turns active with a countdown, without a reload.
        let line = wait_for_text(&alice, ".connect", "left", Duration::from_secs(10)).await;
        assert!(line.contains(&format!(":{port}")), "the connect line names the gateway port: {line}");
        let first = alice.find(Locator::Css(".countdown")).await.expect("countdown").text().await.expect("text");
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let later = alice.find(Locator::Css(".countdown")).await.expect("countdown").text().await.expect("text");
        assert_ne!(first, later, "the countdown moves");
        shoot(&alice, "access-active").await;

        // adam, an admin, sees the open grant with its enforcement status.
        click(&bob, ".who button").await;
        wait_for_text(&bob, "h1", "Sign in", Duration::from_secs(5)).await;
        shoot(&bob, "sign-in").await;
        sign_in(&bob, &server, "adam").await;
        bob.goto(&server.url("/admin")).await.expect("admin");
        let row = wait_for_text(&bob, "table.table tbody tr", "alice", Duration::from_secs(5)).await;
        assert!(row.contains("open") && row.contains("Revoke"), "admin row: {row}");
        shoot(&bob, "admin").await;

        // The browser signed in from 127.0.0.1, so the grant is for that address.
        let mut stream = connect_ok(LOCAL, port).await;
        round_trip(&mut stream, b"through the portal's grant").await;
        assert_refused(STRANGER, port).await;

        click(&alice, "form[action$='/release'] button").await;
        wait_for_text(&alice, ".notice", "Access released", Duration::from_secs(10)).await;
        closed_at(&mut stream, Duration::from_secs(2)).await;
        assert_refused(LOCAL, port).await;
        shoot(&alice, "access-released").await;

        // erin, an auditor, reads the whole story and sees the chain verified.
        click(&bob, ".who button").await;
        wait_for_text(&bob, "h1", "Sign in", Duration::from_secs(5)).await;
        sign_in(&bob, &server, "erin").await;
        bob.goto(&server.url("/audit")).await.expect("audit");
        let verified = wait_for_text(&bob, ".notice", "Hash chain verified", Duration::from_secs(10)).await;
        assert!(verified.contains("intact"));
        let table = bob.find(Locator::Css("table.audit")).await.expect("audit table").text().await.expect("text");
        for event in ["requested", "approved", "activated", "opened", "connection", "released", "closed"] {
            assert!(table.contains(event), "the audit page shows {event}:\n{table}");
        }
        assert!(table.contains("go ahead") && table.contains("INC-4411"));
        shoot(&bob, "audit").await;
        bob.goto(&server.url("/audit?action=approved")).await.expect("filter");
        let filtered = bob.find(Locator::Css("table.audit")).await.expect("table").text().await.expect("text");
        assert!(filtered.contains("approved") && !filtered.contains("requested"), "filtered:\n{filtered}");
    }
    .await;
    // Close the browsers whatever happened, so no Chromium is left behind.
    let _ = alice.close().await;
    let _ = bob.close().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_csrf_and_approvals_by_non_approvers_are_refused() {
    let Some(driver) = Driver::start() else { return };
    let echo = Echo::start().await;
    let config = Config::new().target("db-prod", echo.addr).policy(Policy::approved_by(
        "dev-prod",
        &["group:dev"],
        &["db-prod"],
        1,
        &["group:sre"],
    ));
    let server = TestServer::start(config).await;
    let pending = server.login("alice").await.request("db-prod", "30m", "INC-1").await;
    let id = pending["id"].as_str().expect("id").to_owned();
    let profile = tempfile::tempdir().expect("dir");
    let dave = driver.browser(&profile).await;

    let outcome = async {
        // dave is in group dev, not sre: no approve action for him.
        sign_in(&dave, &server, "dave").await;
        dave.goto(&server.url("/approvals")).await.expect("approvals");
        let page = dave.source().await.expect("source");
        assert!(!page.contains(&id), "a non-approver must not see the request");
        assert!(!page.contains("/approve"), "a non-approver gets no approve form");
        shoot(&dave, "approvals-non-approver").await;

        let cookie = session_cookie(&dave).await;
        let csrf = dave
            .find(Locator::Css("input[name=csrf]"))
            .await
            .expect("csrf field")
            .attr("value")
            .await
            .expect("attr")
            .expect("value");
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let post = |path: String, body: String| {
            http.post(server.url(&path))
                .header("Cookie", cookie.clone())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        // Even with his own valid token, dave cannot approve it.
        let response = post(format!("/approvals/{id}/approve"), format!("csrf={csrf}")).await.expect("post");
        assert!(matches!(response.status().as_u16(), 403 | 404), "got {}", response.status());
        // A state-changing POST without the CSRF token is refused.
        let response = post("/targets/db-prod/request".into(), "duration=30m&reason=x".into()).await.expect("post");
        assert_eq!(response.status().as_u16(), 403);
        assert!(response.text().await.expect("body").contains("security token"));
        let response = post("/logout".into(), "csrf=forged".into()).await.expect("post");
        assert_eq!(response.status().as_u16(), 403);
        // A refused request shows the API's words next to the field concerned.
        let response =
            post("/targets/db-prod/request".into(), format!("csrf={csrf}&duration=9h&reason=x")).await.expect("post");
        assert_eq!(response.status().as_u16(), 422);
        let page = response.text().await.expect("body");
        assert!(
            page.contains(r#"<p class="field-error" id="dur-err-db-prod">duration 9h is longer than policy"#),
            "the duration error sits under the duration field:\n{page}"
        );
        let response = post("/targets/db-prod/request".into(), format!("csrf={csrf}&duration=30m&reason=%20"))
            .await
            .expect("post");
        assert!(response.text().await.expect("body").contains(r#"id="reason-err-db-prod">policy"#));
        // Nothing changed: the request is still pending, dave made none.
        let alice = server.login("alice").await;
        let state = alice.get(&format!("/api/v1/requests/{id}")).await.ok(200, "get")["state"].clone();
        assert_eq!(state, "pending");
        let mine = http
            .get(server.url("/access"))
            .header("Cookie", cookie.clone())
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        assert!(mine.contains("You have no access open or waiting"), "dave's request must not exist");
        // Pages carry a strict CSP.
        let page = http.get(server.url("/access")).header("Cookie", cookie.clone()).send().await.expect("get");
        let csp = page.headers()["content-security-policy"].to_str().expect("ascii").to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    }
    .await;
    let _ = dave.close().await;
    outcome
}
