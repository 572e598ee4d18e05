//! The HTTP side of the security audit's findings, black-box against the
//! real binary on loopback:
//!
//! - slow and idle clients are cut (header read timeout, idle timeout), the
//!   API's connections are capped, and the gateway keeps its descriptors
//!   while the API is flooded (audit item 5);
//! - `/metrics` is protected and its gauges come from memory; the audit
//!   page verifies only what is new; the export streams (item 10);
//! - verification reads what the audit file's lines say (item 4), and a
//!   last line longer than 64 KiB does not stop the next start (item 3);
//! - portal cookies follow `public_url` (item 12).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---- helpers ----------------------------------------------------------------

/// `ajar server` started by `sh` after `ulimit -n NOFILE`, so that it runs
/// short of file descriptors; killed on drop.
struct Limited {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    stderr: Arc<Mutex<String>>,
}

impl Limited {
    async fn start(config: &Config, nofile: u32) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("ajar.toml");
        std::fs::write(&path, config.render()).expect("write the config");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" server --config \"$1\""))
            .arg(ajar_bin())
            .arg(&path)
            .current_dir(dir.path())
            .envs(AWS_TEST_ENV.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ajar under sh");
        let stderr = Arc::new(Mutex::new(String::new()));
        let log = stderr.clone();
        let err = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().expect("log lock").push_str(&format!("{line}\n"));
            }
        });
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ajar listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });
        let url = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(url)) => url,
            _ => panic!("ajar under ulimit -n {nofile} did not start:\n{}", stderr.lock().expect("log lock")),
        };
        Self { child, dir, url, stderr }
    }

    fn addr(&self) -> SocketAddr {
        self.url.trim_start_matches("http://").parse().expect("the API address")
    }

    fn log(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- ajar (limited) stderr -----\n{}\n(in {})", self.log(), self.dir.path().display());
        }
    }
}

/// Logs `user` in against `base` from `ip` and returns the token.
async fn token(base: &str, user: &str, ip: std::net::IpAddr) -> String {
    let body: Value = client(ip)
        .post(format!("{base}/api/v1/login"))
        .json(&json!({ "username": user, "password": PASSWORD }))
        .send()
        .await
        .expect("log in")
        .json()
        .await
        .expect("the login answer");
    body["token"].as_str().unwrap_or_else(|| panic!("no token: {body}")).to_owned()
}

/// One sample of a Prometheus text, such as `ajar_requests{state="active"}`.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

/// Reads from `stream` until it is closed (EOF or error) and returns how
/// long after `opened` that was, or `None` if it stayed open `within`.
async fn lifetime(mut stream: TcpStream, opened: Instant, within: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let deadline = opened + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(opened.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

/// A raw HTTP/1.1 GET with a cookie, read until the headers end; returns
/// the stream and the head.
async fn raw_get(addr: SocketAddr, path: &str, cookie: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the API");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("the answer's head within 5 s")
            .expect("read the answer");
        assert!(n > 0, "closed before the head ended: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

fn api_addr(server: &TestServer) -> SocketAddr {
    server.base_url().trim_start_matches("http://").parse().expect("the API address")
}

/// A reqwest client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

async fn metrics_text(server: &TestServer) -> String {
    let resp = server.anonymous(LOCAL).get("/metrics").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    resp.text
}

fn set_cookies(headers: &reqwest::header::HeaderMap) -> Vec<String> {
    headers.get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
}

// ---- item 5: timeouts, the connection cap, descriptors for the gateway ---------

/// 600 clients that send half a request each, against a server with 512
/// file descriptors: beyond the cap (half the limit) they are closed at
/// once, the rest when the header timeout runs out; meanwhile the gateway
/// relays a granted client, and afterwards /healthz answers a fresh
/// connection. Without the limits the slow clients stay forever and take
/// every descriptor, so the gateway cannot accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_and_cannot_starve_the_gateway() {
    // This process holds 600 sockets too.
    rlimit::increase_nofile_limit(4096).expect("raise this test's open-file limit");
    let echo = Echo::start().await;
    let config = Config::new()
        .server("http_header_timeout = \"2s\"")
        .server("http_idle_timeout = \"5s\"")
        .target("db", echo.addr)
        .policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let port = config.port("db");
    let server = Limited::start(&config, 512).await;
    let addr = server.addr();
    assert!(
        server.log().contains("too low for server.max_api_connections = 1024"),
        "the lowered cap is explained:\n{}",
        server.log()
    );

    let alice = token(&server.url, "alice", GRANTED).await;
    let grant: Value = client(GRANTED)
        .post(format!("{}/api/v1/requests", server.url))
        .bearer_auth(&alice)
        .json(&json!({ "target": "db", "duration": "10m", "reason": "INC-5" }))
        .send()
        .await
        .expect("request access")
        .json()
        .await
        .expect("the request");
    assert_eq!(grant["state"], "active", "{grant:#}");

    const SLOW: usize = 600;
    let mut slow = Vec::with_capacity(SLOW);
    for i in 0..SLOW {
        let opened = Instant::now();
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            // A connection the kernel would not even queue is refused too.
            slow.push((None, opened));
            continue;
        };
        // Half a request: the headers never end.
        let _ = stream.write_all(format!("GET /healthz HTTP/1.1\r\nHost: ajar\r\nX-Slow: {i}").as_bytes()).await;
        slow.push((Some(stream), opened));
    }
    let watchers: Vec<_> = slow
        .into_iter()
        .map(|(stream, opened)| {
            tokio::spawn(async move {
                match stream {
                    Some(stream) => lifetime(stream, opened, Duration::from_secs(15)).await,
                    None => Some(Duration::ZERO),
                }
            })
        })
        .collect();

    // While the API is saturated the gateway still admits the granted
    // client and relays its bytes.
    let mut relayed = connect_ok(GRANTED, port).await;
    round_trip(&mut relayed, b"still here").await;

    let mut lifetimes = Vec::new();
    for watcher in watchers {
        lifetimes.push(watcher.await.expect("watcher").expect("every slow connection is closed within 15 s"));
    }
    let at_once = lifetimes.iter().filter(|l| **l < Duration::from_millis(1500)).count();
    let longest = lifetimes.iter().max().copied().unwrap_or_default();
    let timed_out: Vec<&Duration> = lifetimes.iter().filter(|l| **l >= Duration::from_millis(1500)).collect();
    eprintln!(
        "{SLOW} half-sent requests: {at_once} closed at once (over the cap), {} cut by the 2 s header timeout, the longest lived {longest:?}",
        timed_out.len()
    );
    assert!(at_once >= SLOW - 256 - 10, "the connections over the cap of 256 are closed at once: {at_once} were");
    assert!(timed_out.len() >= 200, "the admitted ones wait for their headers until the timeout: {}", timed_out.len());
    assert!(
        longest <= Duration::from_millis(4500),
        "no half-sent request lives much past the 2 s timeout: {longest:?}"
    );

    // The slow ones are gone: a fresh client is served, and the counts show.
    let health = client(LOCAL).get(format!("{}/healthz", server.url)).send().await.expect("/healthz after the flood");
    assert_eq!(health.status(), 200);
    let metrics = client(LOCAL).get(format!("{}/metrics", server.url)).send().await.expect("metrics");
    let metrics = metrics.text().await.expect("metrics text");
    assert_eq!(sample(&metrics, "ajar_api_connections_max"), 256.0, "{metrics}");
    assert!(sample(&metrics, "ajar_api_connections_refused_total") >= (SLOW - 256 - 10) as f64, "{metrics}");
    let warnings = server.log().matches("the API is at its connection cap").count();
    assert!((1..=3).contains(&warnings), "the refusals are logged, rate-limited: {warnings} warnings");
    round_trip(&mut relayed, b"and still").await;
}

/// A keep-alive connection that sends nothing more, and a request whose
/// body stops arriving, are closed on time; a live page's event stream
/// outlives the idle timeout on its keep-alives and still delivers changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_live_updates_stay() {
    let echo = Echo::start().await;
    let config = Config::new()
        .server("http_header_timeout = \"2s\"")
        .server("http_idle_timeout = \"2s\"")
        .target("db", echo.addr)
        .policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let addr = api_addr(&server);

    // Idle after one answer: the header timeout runs again from it.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: ajar\r\n\r\n").await.expect("send");
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.expect("the answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let after_answer = Instant::now();
    let idle = lifetime(kept, after_answer, Duration::from_secs(10)).await.expect("the idle connection is closed");
    eprintln!("an idle keep-alive connection was closed {idle:?} after its last answer");
    assert!(idle >= Duration::from_millis(1500) && idle <= Duration::from_millis(4000), "{idle:?}");

    // A body that stops: the headers are in, the 100 bytes never are.
    let mut stalled = TcpStream::connect(addr).await.expect("connect");
    let opened = Instant::now();
    stalled
        .write_all(
            b"POST /api/v1/login HTTP/1.1\r\nHost: ajar\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
        )
        .await
        .expect("send half a body");
    let stalled_for = lifetime(stalled, opened, Duration::from_secs(10)).await.expect("the stalled upload is closed");
    eprintln!("a request whose body stalled was closed after {stalled_for:?}");
    assert!(
        stalled_for >= Duration::from_millis(1500) && stalled_for <= Duration::from_millis(4500),
        "{stalled_for:?}"
    );

    // The portal's live updates: /events stays open past the idle timeout
    // and delivers the next change.
    let alice = server.login_from("alice", GRANTED).await;
    let cookie = format!("ajar_session={}", alice.token.clone().expect("a token"));
    let (mut events, head) = raw_get(addr, "/events", &cookie).await;
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    let mut seen = String::new();
    let quiet_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < quiet_until {
        match tokio::time::timeout(Duration::from_secs(2), events.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!("the event stream was closed while idle; it had sent: {seen:?}"),
            Ok(Ok(n)) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => panic!("no keep-alive for 2 s on the event stream: {seen:?}"),
        }
    }
    assert!(seen.contains(':'), "keep-alive comments arrived: {seen:?}");
    alice.request("db", "5m", "INC-7").await;
    let change = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = events.read(&mut buf).await.expect("read the event stream");
            assert!(n > 0, "the event stream closed: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("event: change") {
                return;
            }
        }
    })
    .await;
    assert!(change.is_ok(), "the change reached the live page after 5 s of quiet: {seen:?}");
}

// ---- item 10: metrics, the audit page, the export ---------------------------

#[tokio::test]
async fn metrics_need_the_token_when_one_is_set() {
    let secret = tempfile::tempdir().expect("a directory");
    let token_file = secret.path().join("metrics.token");
    let token = "3b1f0c9e5d7a4b2c8e6f1a0d9c7b5e3f";
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token");
    let config = Config::new().server(&format!("metrics_token_file = {:?}", token_file.display().to_string()));
    let server = TestServer::start(config).await;
    let anonymous = server.anonymous(LOCAL);

    let refused = anonymous.get("/metrics").await;
    let detail = refused.problem(401, "metrics-token");
    assert!(detail.contains("Authorization: Bearer"), "{detail}");
    assert!(!refused.text.contains("ajar_requests"), "{}", refused.text);
    anonymous.with_token("ajar_wrong").get("/metrics").await.problem(401, "metrics-token");
    // A user's API token is not the metrics token.
    let alice = server.login("alice").await;
    alice.get("/metrics").await.problem(401, "metrics-token");

    let started = Instant::now();
    let served = anonymous.with_token(token).get("/metrics").await;
    eprintln!("/metrics answered in {:?}", started.elapsed());
    assert_eq!(served.status, 200, "{}", served.text);
    assert!(served.text.contains("ajar_requests{state=\"active\"} 0"), "{}", served.text);
}

#[tokio::test]
async fn metrics_can_have_their_own_listener() {
    let port = free_port();
    let server = TestServer::start(Config::new().server(&format!("metrics_listen = \"127.0.0.1:{port}\""))).await;
    let detail = server.anonymous(LOCAL).get("/metrics").await.problem(404, "metrics-elsewhere");
    assert!(detail.contains(&format!("127.0.0.1:{port}")), "{detail}");
    assert!(
        server.stdout().contains(&format!("ajar metrics on http://127.0.0.1:{port}/metrics")),
        "{}",
        server.stdout()
    );

    let own = client(LOCAL).get(format!("http://127.0.0.1:{port}/metrics")).send().await.expect("the metrics listener");
    assert_eq!(own.status(), 200);
    let text = own.text().await.expect("text");
    assert!(text.contains("ajar_requests{state=\"pending\"} 0"), "{text}");
    // It serves nothing else.
    let other = client(LOCAL).get(format!("http://127.0.0.1:{port}/api/v1/targets")).send().await.expect("other path");
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn metrics_without_a_token_answer_only_this_host() {
    let server = TestServer::start(Config::new()).await;
    let local = server.anonymous(LOCAL);
    assert_eq!(local.get("/metrics").await.status, 200);
    // A proxy on this host in front of a loopback listener adds a header.
    let via_proxy = local.http.get(server.url("/metrics")).header("X-Forwarded-For", "203.0.113.9").send().await;
    let via_proxy = via_proxy.expect("metrics through a proxy");
    assert_eq!(via_proxy.status(), 403);
    let body: Value = via_proxy.json().await.expect("a problem");
    assert_eq!(body["type"], "urn:ajar:problem:metrics-local-only", "{body:#}");
}

/// The request gauges follow creation, approval and expiry as they commit,
/// read from memory: a scrape costs the same with many live requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_gauges_follow_creation_approval_and_expiry() {
    let echo = Echo::start().await;
    // Room for the 200 pending requests of the load below.
    let config = Config::new()
        .server("max_pending_per_requester = 1000")
        .target("db", echo.addr)
        .policy(Policy::approved_by("reviewed", &["group:dev"], &["db"], 1, &["group:sre"]));
    let server = TestServer::start(config).await;
    let gauges = |text: &str| {
        (sample(text, "ajar_requests{state=\"pending\"}"), sample(text, "ajar_requests{state=\"active\"}"))
    };
    assert_eq!(gauges(&metrics_text(&server).await), (0.0, 0.0));

    let alice = server.login_from("alice", GRANTED).await;
    let bob = server.login("bob").await;
    let short = alice.request("db", "3s", "INC-1").await;
    let other = alice.request("db", "5m", "INC-2").await;
    assert_eq!(gauges(&metrics_text(&server).await), (2.0, 0.0), "two pending");

    bob.act(&id(&short), "approve").await.ok(200, "approve");
    assert_eq!(gauges(&metrics_text(&server).await), (1.0, 1.0), "one approved");
    bob.act(&id(&other), "deny").await.ok(200, "deny");
    assert_eq!(gauges(&metrics_text(&server).await), (0.0, 1.0), "one denied");

    alice.wait_state(&id(&short), "expired", Duration::from_secs(10)).await;
    eventually("the gauge drops at expiry", Duration::from_secs(5), || async {
        (gauges(&metrics_text(&server).await) == (0.0, 0.0)).then_some(())
    })
    .await;

    // Many pending requests: scraping stays as quick.
    for i in 0..200 {
        alice.request("db", "5m", &format!("INC-load-{i}")).await;
    }
    let started = Instant::now();
    for _ in 0..20 {
        metrics_text(&server).await;
    }
    let per_scrape = started.elapsed() / 20;
    let text = metrics_text(&server).await;
    eprintln!("/metrics with 200 pending requests: {per_scrape:?} per scrape");
    assert_eq!(gauges(&text), (200.0, 0.0));
}

/// The portal's audit page verifies the whole log once, then only what was
/// written since; "Verify the whole log now" walks everything again.
#[tokio::test]
async fn the_audit_page_verifies_only_new_events() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    for i in 0..5 {
        let grant = alice.request("db", "5m", &format!("INC-{i}")).await;
        alice.act(&id(&grant), "release").await.ok(200, "release");
    }
    let erin = server.login("erin").await;
    let cookie = format!("ajar_session={}", erin.token.clone().expect("token"));
    let view = |path: &'static str| {
        let (http, url, cookie) = (erin.http.clone(), server.url(path), cookie.clone());
        async move {
            let resp = http.get(url).header("Cookie", cookie).send().await.expect("the audit page");
            assert_eq!(resp.status(), 200);
            resp.text().await.expect("page")
        }
    };
    let counters = |text: &str| {
        (sample(text, "ajar_audit_verified_events_total"), sample(text, "ajar_audit_whole_log_verifications_total"))
    };
    let total = |events: &[Value]| events.len() as f64;

    let before = counters(&metrics_text(&server).await);
    assert_eq!(before, (0.0, 0.0), "nothing verified yet");
    let page = view("/audit").await;
    assert!(page.contains("Hash chain verified"), "{page}");
    let events = erin.audit().await;
    let first = counters(&metrics_text(&server).await);
    assert_eq!(first, (total(&events), 1.0), "the first view walks the whole log");

    let page = view("/audit").await;
    assert!(page.contains("Hash chain verified"), "{page}");
    let second = counters(&metrics_text(&server).await);
    assert_eq!(second, first, "nothing new was written, so nothing is verified again");

    alice.request("db", "5m", "INC-new").await;
    let now = erin.audit().await;
    view("/audit").await;
    let third = counters(&metrics_text(&server).await);
    assert_eq!(third, (first.0 + (now.len() - events.len()) as f64, 1.0), "only the new events are verified");

    let page = view("/audit?verify=all").await;
    assert!(page.contains("Hash chain verified"), "{page}");
    let fourth = counters(&metrics_text(&server).await);
    assert_eq!(fourth, (third.0 + total(&now), 2.0), "the whole log on request");
}

/// Thousands of events stream out of the export as they are read (no
/// Content-Length: the body is not built first), and `after` and `limit`
/// page through them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_export_streams_and_pages() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    let dave = server.login_from("dave", GRANTED).await;
    // Each round is five events: requested, activated, opened, released,
    // closed.
    let work = |who: Session, rounds: usize| async move {
        for i in 0..rounds {
            let grant = who.request("db", "5m", &format!("INC-{i}")).await;
            who.act(&id(&grant), "release").await.ok(200, "release");
        }
    };
    tokio::join!(work(alice.clone(), 220), work(dave, 220));
    let adam = server.login("adam").await;
    let events = adam.audit().await;
    assert!(events.len() >= 2200, "{} events", events.len());
    let cookie = format!("ajar_session={}", adam.token.clone().expect("token"));
    let export = |query: String| {
        let (http, url, cookie) = (adam.http.clone(), server.url(&format!("/audit/export?{query}")), cookie.clone());
        async move {
            let resp = http.get(url).header("Cookie", cookie).send().await.expect("the export");
            assert_eq!(resp.status(), 200);
            let headers = resp.headers().clone();
            let text = resp.text().await.expect("the export's body");
            let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
            (headers, lines)
        }
    };

    let started = Instant::now();
    let (headers, all) = export(String::new()).await;
    eprintln!("exported {} events in {:?}", all.len(), started.elapsed());
    assert!(headers.get(reqwest::header::CONTENT_LENGTH).is_none(), "a streamed body has no length: {headers:?}");
    assert_eq!(headers.get(reqwest::header::TRANSFER_ENCODING).and_then(|v| v.to_str().ok()), Some("chunked"));
    let seqs: Vec<i64> = all.iter().filter_map(|e| e["seq"].as_i64()).collect();
    let expected: Vec<i64> = events.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert!(seqs.len() >= expected.len() && seqs.starts_with(&expected), "every event once, oldest first");

    let (_, page) = export("after=1000&limit=50".to_owned()).await;
    let seqs: Vec<i64> = page.iter().filter_map(|e| e["seq"].as_i64()).collect();
    assert_eq!(seqs, (1001..=1050).collect::<Vec<_>>());
    let (_, released) = export("action=released&after=10&limit=7".to_owned()).await;
    assert_eq!(released.len(), 7);
    assert!(released.iter().all(|e| e["action"] == "released" && e["seq"].as_i64() > Some(10)), "{released:?}");
    let (_, tail) = export(format!("after={}", expected[expected.len() - 1])).await;
    assert!(tail.iter().all(|e| e["seq"].as_i64() > expected.last().copied()), "{tail:?}");
}

// ---- items 4 and 3: what the audit file says ---------------------------------

/// Replaces `field` of the file's event `seq` with `value`, keeping every
/// other field, and the hash unless `rehash`.
fn edit_file_event(server: &TestServer, seq: i64, field: &str, value: Value, rehash: bool) {
    let path = server.data_dir().join("audit.jsonl");
    let text = std::fs::read_to_string(&path).expect("read audit.jsonl");
    let mut out = String::new();
    let mut edited = false;
    for line in text.lines() {
        let mut event: Value = serde_json::from_str(line).expect("a JSON line");
        if event["seq"] == seq {
            assert_ne!(event[field], value, "the edit must change something");
            event[field] = value.clone();
            if rehash {
                let mut parsed: ajar_domain::AuditEvent = serde_json::from_value(event.clone()).expect("an event");
                parsed.hash = parsed.compute_hash();
                event = serde_json::to_value(parsed).expect("serialize");
            }
            edited = true;
        }
        out.push_str(&event.to_string());
        out.push('\n');
    }
    assert!(edited, "no event {seq} in the file");
    std::fs::write(&path, out).expect("write audit.jsonl");
}

#[tokio::test]
async fn an_edited_line_of_the_audit_file_is_named() {
    let echo = Echo::start().await;
    let config = Config::new().target("db", echo.addr).policy(Policy::auto("auto", &["group:dev"], &["db"]));
    let server = TestServer::start(config).await;
    let alice = server.login_from("alice", GRANTED).await;
    alice.request("db", "5m", "INC-3").await;
    let adam = server.login("adam").await;
    let report = adam.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!(report["ok"], true, "{report:#}");

    // Event 2 is alice's login, made from 127.0.0.2: say it was bob, from
    // elsewhere, and keep the hash.
    edit_file_event(&server, 2, "actor", json!("bob"), false);
    let report = adam.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!((report["ok"].clone(), report["first_bad_seq"].clone()), (json!(false), json!(2)), "{report:#}");
    let problem = report["problem"].as_str().unwrap_or_default();
    assert!(problem.contains("event 2") && problem.contains("audit.jsonl"), "{problem}");

    // A forger who also recomputes the line's hash is caught by the
    // comparison with the database's event.
    edit_file_event(&server, 2, "actor", json!("alice"), false);
    assert_eq!(adam.get("/api/v1/audit/verify").await.ok(200, "verify")["ok"], true, "restored");
    edit_file_event(&server, 3, "source", json!("198.51.100.7"), true);
    let report = adam.get("/api/v1/audit/verify").await.ok(200, "verify");
    assert_eq!((report["ok"].clone(), report["first_bad_seq"].clone()), (json!(false), json!(3)), "{report:#}");
    assert!(report["problem"].as_str().is_some_and(|p| p.contains("differs")), "{report:#}");
}

/// An event longer than 64 KiB as the file's last line (a rejected reload
/// with thousands of errors) does not stop the next start.
#[tokio::test]
async fn a_last_audit_line_over_64_kib_does_not_stop_the_next_start() {
    let mut server = TestServer::start(Config::new()).await;
    let mut bad = String::from("[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n");
    for i in 0..1500 {
        bad.push_str(&format!("no_such_key_{i} = {i}\n"));
    }
    server.write_raw_config(&bad);
    server.sighup();
    let adam = server.login("adam").await;
    adam.wait_audit("`config_rejected`", Duration::from_secs(10), |e| e["action"] == "config_rejected").await;
    let file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).expect("read audit.jsonl");
    let last = file.lines().last().expect("a last line");
    assert!(last.len() > 64 * 1024, "the last line is {} bytes", last.len());
    assert!(last.contains("config_rejected"), "the long event is the last line");

    server.kill9();
    server.write_config(server.config.clone());
    server.restart().await;
    let adam = server.login("adam").await;
    let report = adam.get("/api/v1/audit/verify").await.ok(200, "verify after the restart");
    assert_eq!(report["ok"], true, "{report:#}");
}

// ---- item 12: cookies ------------------------------------------------------------

#[tokio::test]
async fn portal_cookies_are_host_prefixed_and_secure_with_an_https_public_url() {
    let server = TestServer::start(Config::new().server("public_url = \"https://ajar.example.com/\"")).await;
    assert!(server.stdout().contains("ajar portal at https://ajar.example.com\n"), "{}", server.stdout());
    let http = no_redirects();

    let form = http.get(server.url("/login")).send().await.expect("the sign-in page");
    let cookies = set_cookies(form.headers());
    let csrf_cookie = cookies.iter().find(|c| c.starts_with("__Host-ajar_login_csrf=")).unwrap_or_else(|| {
        panic!("the sign-in CSRF cookie is a __Host- cookie: {cookies:?}");
    });
    for c in &cookies {
        assert!(c.contains("; Secure") && c.contains("Path=/;") && !c.contains("Domain"), "{c}");
    }
    let csrf = csrf_cookie.trim_start_matches("__Host-ajar_login_csrf=").split(';').next().expect("value").to_owned();

    let signed_in = http
        .post(server.url("/login"))
        .header("Cookie", format!("__Host-ajar_login_csrf={csrf}"))
        .form(&[("username", "alice"), ("password", PASSWORD), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), 303);
    let cookies = set_cookies(signed_in.headers());
    let session = cookies.iter().find(|c| c.starts_with("__Host-ajar_session=")).unwrap_or_else(|| {
        panic!("the session cookie is a __Host- cookie: {cookies:?}");
    });
    assert!(session.contains("; Secure") && session.contains("Path=/;") && session.contains("HttpOnly"), "{session}");
    let token = session.trim_start_matches("__Host-ajar_session=").split(';').next().expect("value").to_owned();

    // The portal works with it, and only under its prefixed name: a cookie
    // some other page set without the prefix is not a session.
    let page = http.get(server.url("/access")).header("Cookie", format!("__Host-ajar_session={token}")).send().await;
    assert_eq!(page.expect("the access page").status(), 200);
    let plain = http.get(server.url("/access")).header("Cookie", format!("ajar_session={token}")).send().await;
    assert_eq!(plain.expect("the access page").status(), 303, "a plain-named cookie is no session");

    // Without public_url (and without TLS), cookies are as before.
    let plain_server = TestServer::start(Config::new()).await;
    let form = http.get(plain_server.url("/login")).send().await.expect("the sign-in page");
    let cookies = set_cookies(form.headers());
    assert!(
        cookies.iter().any(|c| c.starts_with("ajar_login_csrf=") && c.contains("Path=/login") && !c.contains("Secure")),
        "{cookies:?}"
    );
}
