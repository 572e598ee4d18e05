//! Harness for the black-box tests: spawns the real `ajar` binary on an
//! ephemeral port with a fresh data dir, talks to it over HTTP from chosen
//! loopback addresses, runs the CLI, and provides an echo server to stand
//! in for a protected target.
//!
//! Linux routes all of 127/8 to `lo`, so a test acts as a user at
//! 127.0.0.2 by binding its API and gateway sockets to that address;
//! 127.0.0.3 plays a stranger who holds no grant.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod browser;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// The address the tests use as a granted user's machine.
pub const GRANTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// An address that never holds a grant.
pub const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// A reverse proxy in front of the API, in tests that trust one.
pub const PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));
/// The default loopback address.
pub const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));

/// Every configured user has this password.
pub const PASSWORD: &str = "correct horse battery staple";

/// How late after `ends_at` the gateway may cut a live connection: the
/// issue's one second…
pub const CUT_WITHIN: Duration = Duration::from_secs(1);
/// …plus what this test process itself may add between the cut and
/// noticing it (wake-up latency on a loaded two-core CI host).
pub const OBSERVE_SLACK: Duration = Duration::from_millis(250);

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The argon2id hash of [`PASSWORD`], computed once per test process
/// (argon2 is deliberately slow, more so in debug builds).
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::encode_b64(b"ajar-black-box-tests").expect("a valid salt");
        Argon2::default().hash_password(PASSWORD.as_bytes(), &salt).expect("hashing the test password").to_string()
    })
}

/// A port that was free a moment ago. Gateway ports are picked this way
/// rather than with port 0 so that a target keeps its port across a
/// restart of the server.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

// ---- config ---------------------------------------------------------------

/// A gateway target in front of `address`, listening on 127.0.0.1:`port`.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub name: String,
    pub address: SocketAddr,
    pub port: u16,
    pub labels: Vec<(String, String)>,
}

/// One `[[policies]]` entry.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub subjects: Vec<String>,
    pub targets: Vec<String>,
    pub max_duration: String,
    pub reason_required: bool,
    pub approvals: u32,
    pub approvers: Vec<String>,
    pub sources: Vec<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Policy {
    /// Requests are approved automatically.
    pub fn auto(name: &str, subjects: &[&str], targets: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            subjects: strings(subjects),
            targets: strings(targets),
            max_duration: "1h".to_owned(),
            reason_required: true,
            approvals: 0,
            approvers: Vec::new(),
            sources: Vec::new(),
        }
    }

    /// Requests need `approvals` approvals from `approvers`.
    pub fn approved_by(name: &str, subjects: &[&str], targets: &[&str], approvals: u32, approvers: &[&str]) -> Self {
        Self { approvals, approvers: strings(approvers), ..Self::auto(name, subjects, targets) }
    }

    pub fn max(mut self, duration: &str) -> Self {
        duration.clone_into(&mut self.max_duration);
        self
    }

    pub fn sources(mut self, sources: &[&str]) -> Self {
        self.sources = strings(sources);
        self
    }

    fn render(&self) -> String {
        let mut out = format!(
            "[[policies]]\nname = {:?}\nsubjects = {}\ntargets = {}\nmax_duration = {:?}\nreason_required = {}\napprovals = {}\n",
            self.name,
            toml_list(&self.subjects),
            toml_list(&self.targets),
            self.max_duration,
            self.reason_required,
            self.approvals,
        );
        if !self.approvers.is_empty() {
            out.push_str(&format!("approvers = {}\n", toml_list(&self.approvers)));
        }
        if !self.sources.is_empty() {
            out.push_str(&format!("sources = {}\n", toml_list(&self.sources)));
        }
        out
    }
}

/// The users every test server knows, with their groups:
///
/// - alice and dave: `dev`, the requesters;
/// - bob and carol: `sre`, the approvers;
/// - adam: `admins`, an admin (may revoke anything, reads the whole audit log);
/// - erin: `security`, an auditor.
pub const USERS: &[(&str, &[&str])] = &[
    ("alice", &["dev"]),
    ("dave", &["dev"]),
    ("bob", &["sre"]),
    ("carol", &["sre"]),
    ("adam", &["admins"]),
    ("erin", &["security"]),
];

/// A config file for the test server: the fixed users and access lists of
/// [`USERS`], plus the targets, policies and `[server]` keys a test adds.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `[server] listen`; `127.0.0.1:0` (the OS picks a port) unless set.
    listen: Option<SocketAddr>,
    server: Vec<String>,
    targets: Vec<TargetSpec>,
    policies: Vec<Policy>,
    /// Whole sections (such as `[oidc]`) appended after everything else.
    sections: Vec<String>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens on `addr` instead of a port the OS picks, for a test that
    /// must name the server's address in its own config (such as
    /// `oidc.redirect_url`).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// Adds a `[server]` line such as `token_ttl = "2s"`.
    pub fn server(mut self, line: &str) -> Self {
        self.server.push(line.to_owned());
        self
    }

    /// Adds a gateway target in front of `address` on a freshly picked port.
    pub fn target(self, name: &str, address: SocketAddr) -> Self {
        self.target_on(name, address, free_port())
    }

    /// Adds a gateway target in front of `address` listening on `port`.
    pub fn target_on(mut self, name: &str, address: SocketAddr, port: u16) -> Self {
        self.targets.push(TargetSpec {
            name: name.to_owned(),
            address,
            port,
            labels: vec![("env".to_owned(), "test".to_owned())],
        });
        self
    }

    /// Appends a whole section, such as `[oidc]` with its keys.
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push(text.to_owned());
        self
    }

    pub fn policy(mut self, policy: Policy) -> Self {
        self.policies.push(policy);
        self
    }

    /// The same config without the target `name` and the policies that
    /// name it.
    pub fn without_target(mut self, name: &str) -> Self {
        self.targets.retain(|t| t.name != name);
        self.policies.retain(|p| !p.targets.iter().any(|t| t == name));
        self
    }

    /// The gateway port of target `name`.
    pub fn port(&self, name: &str) -> u16 {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no target {name} in the test config"))
            .port
    }

    pub fn render(&self) -> String {
        let listen = self.listen.unwrap_or(SocketAddr::from((LOCAL, 0)));
        let mut out = format!("[server]\nlisten = \"{listen}\"\ndata_dir = \"data\"\n");
        for line in &self.server {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("\n[access]\nadmins = [\"group:admins\"]\nauditors = [\"group:security\"]\n");
        for (name, groups) in USERS {
            let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
            out.push_str(&format!(
                "\n[[users]]\nname = {name:?}\npassword_hash = {:?}\ngroups = {}\n",
                password_hash(),
                toml_list(&groups)
            ));
        }
        for t in &self.targets {
            let labels: Vec<String> = t.labels.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
            out.push_str(&format!(
                "\n[[targets]]\nname = {:?}\naddress = \"{}\"\ndriver = \"gateway\"\nlabels = {{ {} }}\ngateway = {{ listen = \"127.0.0.1:{}\" }}\n",
                t.name,
                t.address,
                labels.join(", "),
                t.port
            ));
        }
        for p in &self.policies {
            out.push('\n');
            out.push_str(&p.render());
        }
        for section in &self.sections {
            out.push('\n');
            out.push_str(section);
        }
        out
    }
}

// ---- the database ---------------------------------------------------------

/// The PostgreSQL server for tests (`postgres://user@host:port`), which
/// ./scripts/test.sh starts; `None` when it is not set.
pub fn postgres_server() -> Option<String> {
    std::env::var("AJAR_TEST_POSTGRES").ok().filter(|s| !s.is_empty())
}

/// A fresh, empty PostgreSQL database on the test server.
pub async fn fresh_postgres() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server = postgres_server().expect("AJAR_TEST_POSTGRES names the test PostgreSQL server");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    let name = format!("ajar_bb_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create a test database");
    admin.close().await;
    format!("{server}/{name}")
}

/// With `AJAR_TEST_BACKEND=postgres`, a fresh database for a test server.
async fn backend_database() -> Option<String> {
    match std::env::var("AJAR_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(fresh_postgres().await),
        _ => None,
    }
}

// ---- the server -----------------------------------------------------------

/// A running `ajar server` with its own temporary directory; killed on drop.
pub struct TestServer {
    dir: TempDir,
    pub config: Config,
    child: Option<Child>,
    /// The subcommand and its arguments.
    args: Vec<std::ffi::OsString>,
    /// `http://127.0.0.1:PORT`, shared with the sessions so that they follow
    /// a restart onto the new port.
    base: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

/// What every `ajar` the tests start gets, so that the AWS drivers (against
/// the emulator) find credentials through the SDK's standard chain and never
/// ask the instance metadata service, which is not on loopback.
pub const AWS_TEST_ENV: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "ajar-test"),
    ("AWS_SECRET_ACCESS_KEY", "ajar-test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

pub fn ajar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ajar")
}

impl TestServer {
    /// Writes `config` into a fresh temporary directory and starts the
    /// server on it.
    pub async fn start(config: Config) -> Self {
        // With AJAR_TEST_BACKEND=postgres every server gets a fresh
        // PostgreSQL database, so the whole suite runs on both backends.
        let config = match backend_database().await {
            Some(url) if !config.server.iter().any(|line| line.starts_with("database")) => {
                config.server(&format!("database = {url:?}"))
            }
            _ => config,
        };
        let mut server = Self::new(config, Vec::new());
        server.args = vec!["server".into(), "--config".into(), server.config_path().into()];
        server.write_config(server.config.clone());
        server.spawn().await;
        server
    }

    /// Starts the server on SQLite with a copy of the data directory
    /// `data` (a database and audit file an earlier ajar wrote).
    pub async fn start_on_copy(config: Config, data: &Path) -> Self {
        let mut server = Self::new(config, Vec::new());
        std::fs::create_dir_all(server.data_dir()).expect("create the data directory");
        for entry in std::fs::read_dir(data).expect("read the data to copy") {
            let path = entry.expect("an entry").path();
            if path.is_file() {
                let to = server.data_dir().join(path.file_name().expect("a file name"));
                std::fs::copy(&path, &to).expect("copy the data");
            }
        }
        server.args = vec!["server".into(), "--config".into(), server.config_path().into()];
        server.write_config(server.config.clone());
        server.spawn().await;
        server
    }

    /// Runs `ajar up --dir DIR/ajar-data --listen 127.0.0.1:0` in a fresh
    /// temporary directory (the test's [`Config`] is not used).
    pub async fn up() -> Self {
        let mut server = Self::new(Config::new(), Vec::new());
        let data = server.dir().join("ajar-data");
        server.args = vec!["up".into(), "--dir".into(), data.into(), "--listen".into(), "127.0.0.1:0".into()];
        server.spawn().await;
        server
    }

    fn new(config: Config, args: Vec<std::ffi::OsString>) -> Self {
        Self {
            dir: tempfile::tempdir().expect("create a temporary directory"),
            config,
            child: None,
            args,
            base: Arc::new(Mutex::new(String::new())),
            stdout: Arc::new(Mutex::new(String::new())),
            stderr: Arc::new(Mutex::new(String::new())),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ajar.toml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("ajar.db")
    }

    /// The PostgreSQL URL this server uses, if it is not on SQLite.
    pub fn database_url(&self) -> Option<String> {
        self.config
            .server
            .iter()
            .find_map(|line| line.strip_prefix("database = "))
            .map(|quoted| quoted.trim_matches('"').to_owned())
    }

    /// Runs one SQL statement on the server's database behind its back
    /// (whichever backend it uses) and returns the rows it affected.
    pub async fn execute_sql(&self, statement: &str) -> u64 {
        use sqlx::Connection;
        match self.database_url() {
            Some(url) => {
                let mut db = sqlx::PgConnection::connect(&url).await.expect("open the server's database");
                let n = sqlx::query(statement).execute(&mut db).await.expect("run the statement").rows_affected();
                db.close().await.expect("close the database");
                n
            }
            None => {
                let mut db = sqlx::SqliteConnection::connect_with(
                    &sqlx::sqlite::SqliteConnectOptions::new().filename(self.db_path()),
                )
                .await
                .expect("open the server's database");
                let n = sqlx::query(statement).execute(&mut db).await.expect("run the statement").rows_affected();
                db.close().await.expect("close the database");
                n
            }
        }
    }

    pub fn base_url(&self) -> String {
        self.base.lock().expect("base url lock").clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    /// Replaces the config file (the server reads it on SIGHUP or restart).
    pub fn write_config(&mut self, config: Config) {
        std::fs::write(self.config_path(), config.render()).expect("write the config file");
        self.config = config;
    }

    /// Replaces the config file with arbitrary text.
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).expect("write the config file");
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let mut child = Command::new(ajar_bin())
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("AJAR_CONFIG_DIR", self.dir.path().join("server-client-config"))
            .envs(AWS_TEST_ENV.iter().copied())
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("no-aws-credentials"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn `ajar server`");
        let stderr = child.stderr.take().expect("piped stderr");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);

        // Both pipes are drained by their own threads so that the server
        // never blocks writing its log.
        let log = self.stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut chunk = [0u8; 8192];
            while let Ok(n) = reader.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                log.lock().expect("stderr lock").push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        let out = self.stdout.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                out.lock().expect("stdout lock").push_str(&format!("{line}\n"));
                if let Some(url) = line.strip_prefix("ajar listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.trim().to_owned());
                    }
                }
            }
        });
        match tokio::time::timeout(START_TIMEOUT, rx).await {
            Ok(Ok(url)) => {
                assert!(url.starts_with("http://127.0.0.1:"), "unexpected address line: {url}");
                *self.base.lock().expect("base url lock") = url;
            }
            Ok(Err(_)) => {
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                panic!(
                    "the server exited ({status:?}) without printing `ajar listening on`\nconfig:\n{}\nstdout:\n{}\nstderr:\n{}",
                    self.config.render(),
                    self.stdout(),
                    self.stderr()
                );
            }
            Err(_) => panic!(
                "the server did not print `ajar listening on` within {START_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            ),
        }
    }

    pub fn pid(&self) -> String {
        self.child.as_ref().expect("the server is running").id().to_string()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.pid()]).status().expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Kills the server with SIGKILL and waits until it is gone.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        child.kill().expect("SIGKILL the server");
        let status = child.wait().expect("wait for the killed server");
        assert!(!status.success(), "a SIGKILLed server cannot exit successfully");
    }

    /// Sends SIGTERM and waits (at most 15 s) for the server to exit.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal("-TERM");
        let mut child = self.child.take().expect("the server is running");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().expect("poll the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit within 15 s of SIGTERM\nstderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the server to reload its config file.
    pub fn sighup(&self) {
        self.signal("-HUP");
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().expect("poll the server").is_none())
    }

    /// Starts the server again on the same config and data dir.
    pub async fn restart(&mut self) {
        self.stderr.lock().expect("stderr lock").push_str("\n----- restart -----\n");
        self.spawn().await;
    }

    /// An HTTP client bound to `ip`, with no token.
    pub fn anonymous(&self, ip: IpAddr) -> Session {
        Session { http: client(ip), base: self.base.clone(), token: None, name: String::new() }
    }

    /// Logs `user` in from 127.0.0.1.
    pub async fn login(&self, user: &str) -> Session {
        self.login_from(user, LOCAL).await
    }

    /// Logs `user` in with API calls made from `ip`.
    pub async fn login_from(&self, user: &str, ip: IpAddr) -> Session {
        let mut session = self.anonymous(ip);
        let resp = session.post("/api/v1/login", json!({ "username": user, "password": PASSWORD })).await;
        let body = resp.ok(200, &format!("login {user}"));
        assert_eq!(body["username"], user);
        session.token = Some(body["token"].as_str().expect("token in the login answer").to_owned());
        session.name = user.to_owned();
        session
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- ajar server stdout -----\n{}", self.stdout());
            eprintln!("----- ajar server stderr -----\n{}", self.stderr());
        }
    }
}

// ---- HTTP -----------------------------------------------------------------

/// A reqwest client whose connections come from `ip`.
pub fn client(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(20)).build().expect("build an HTTP client")
}

/// A caller of the API: an HTTP client bound to one address, and a token
/// once logged in.
#[derive(Clone)]
pub struct Session {
    pub http: reqwest::Client,
    base: Arc<Mutex<String>>,
    pub token: Option<String>,
    pub name: String,
}

/// An API answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub content_type: String,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub body: Value,
    /// What was sent, for failure messages.
    pub sent: String,
}

impl Resp {
    /// The body of a successful answer with `status`.
    pub fn ok(self, status: u16, what: &str) -> Value {
        assert_eq!(
            self.status, status,
            "{what}: expected {status}\nsent: {}\ngot: {} {}",
            self.sent, self.status, self.text
        );
        self.body
    }

    /// Checks that this is an `application/problem+json` answer with
    /// `status` and type `urn:ajar:problem:<slug>`, and returns its detail.
    pub fn problem(&self, status: u16, slug: &str) -> String {
        assert_eq!(
            (self.status, self.body["type"].as_str()),
            (status, Some(format!("urn:ajar:problem:{slug}").as_str())),
            "sent: {}\ngot: {} {}",
            self.sent,
            self.status,
            self.text
        );
        assert!(
            self.content_type.starts_with("application/problem+json"),
            "problem with content type {:?}: {}",
            self.content_type,
            self.text
        );
        assert_eq!(self.body["status"], status, "problem status field: {}", self.text);
        let detail = self.body["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "a problem without detail: {}", self.text);
        detail
    }
}

impl Session {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base.lock().expect("base url lock"))
    }

    /// The same caller without a token.
    pub fn without_token(&self) -> Session {
        Session { token: None, ..self.clone() }
    }

    /// The same token used from another address.
    pub fn calling_from(&self, ip: IpAddr) -> Session {
        Session { http: client(ip), ..self.clone() }
    }

    /// The same client with another token.
    pub fn with_token(&self, token: &str) -> Session {
        Session { token: Some(token.to_owned()), ..self.clone() }
    }

    async fn send(&self, builder: reqwest::RequestBuilder, sent: String) -> Resp {
        let builder = match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        };
        let response = builder.send().await.unwrap_or_else(|e| panic!("{sent}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let content_type =
            headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let text = response.text().await.unwrap_or_else(|e| panic!("{sent}: reading the body: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, content_type, headers, text, body, sent }
    }

    pub async fn get(&self, path: &str) -> Resp {
        let sent = format!("GET {path} as {:?}", self.name);
        self.send(self.http.get(self.url(path)), sent).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Resp {
        let sent = format!("POST {path} {body} as {:?}", self.name);
        self.send(self.http.post(self.url(path)).json(&body), sent).await
    }

    /// POST with an extra header, such as `X-Forwarded-For`.
    pub async fn post_with_header(&self, path: &str, body: Value, header: &str, value: &str) -> Resp {
        let sent = format!("POST {path} {body} with {header}: {value} as {:?}", self.name);
        self.send(self.http.post(self.url(path)).header(header, value).json(&body), sent).await
    }

    /// POST with no body at all.
    pub async fn post_empty(&self, path: &str) -> Resp {
        let sent = format!("POST {path} (no body) as {:?}", self.name);
        self.send(self.http.post(self.url(path)), sent).await
    }

    /// POST with a raw body sent as JSON.
    pub async fn post_raw(&self, path: &str, body: &str) -> Resp {
        let sent = format!("POST {path} {body:?} as {:?}", self.name);
        let builder = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_owned());
        self.send(builder, sent).await
    }

    /// POST /api/v1/requests.
    pub async fn ask(&self, target: &str, duration: &str, reason: &str) -> Resp {
        self.post("/api/v1/requests", json!({ "target": target, "duration": duration, "reason": reason })).await
    }

    /// Requests access and expects 201; returns the request.
    pub async fn request(&self, target: &str, duration: &str, reason: &str) -> Value {
        self.ask(target, duration, reason).await.ok(201, "create a request")
    }

    /// POST /api/v1/requests/{id}/{verb} with no body.
    pub async fn act(&self, id: &str, verb: &str) -> Resp {
        self.post_empty(&format!("/api/v1/requests/{id}/{verb}")).await
    }

    /// POST /api/v1/requests/{id}/{verb} with a comment.
    pub async fn act_with(&self, id: &str, verb: &str, comment: &str) -> Resp {
        self.post(&format!("/api/v1/requests/{id}/{verb}"), json!({ "comment": comment })).await
    }

    pub async fn get_request(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/requests/{id}")).await.ok(200, "get a request")
    }

    /// Polls the request until its state is `state` (at most `within`).
    pub async fn wait_state(&self, id: &str, state: &str, within: Duration) -> Value {
        let mut last = Value::Null;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            last = self.get_request(id).await;
            if last["state"] == state {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("request {id} did not become {state} within {within:?}; last seen: {last:#}");
    }

    /// Every request this caller may see (all of them for an admin).
    pub async fn requests(&self) -> Value {
        self.get("/api/v1/requests").await.ok(200, "list requests")
    }

    /// Every audit event this caller may read, oldest first.
    pub async fn audit(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!("/api/v1/audit?after={after}&limit=1000")).await.ok(200, "read the audit log");
            let batch = page["events"].as_array().expect("events array").clone();
            if batch.is_empty() {
                return events;
            }
            after = page["next_after"].as_i64().expect("next_after");
            events.extend(batch);
        }
    }

    /// Polls the audit log until an event matches `pred` (at most `within`).
    pub async fn wait_audit(&self, what: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let events = self.audit().await;
            if let Some(e) = events.iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!("no audit event {what} within {within:?}; the log holds:\n{}", show_events(&events));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One line per event, for failure messages.
pub fn show_events(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} actor={} request={} source={} reason={}",
                e["seq"], e["action"], e["actor"], e["request_id"], e["source"], e["reason"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The audit events about request `id`, as their action names.
pub fn actions_for(events: &[Value], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["request_id"] == id)
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A timestamp field of an API object.
pub fn time(value: &Value, field: &str) -> DateTime<Utc> {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {value:#}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field} of {value:#} is not a timestamp: {e}"))
}

pub fn id(request: &Value) -> String {
    request["id"].as_str().unwrap_or_else(|| panic!("no id in {request:#}")).to_owned()
}

/// Sleeps until `at` (wall clock), if it is in the future.
pub async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(left) = (at - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the data plane -------------------------------------------------------

/// A TCP echo server standing in for a protected target; it records the
/// peer address of every connection it accepts.
pub struct Echo {
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Echo {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the echo server");
        let addr = listener.local_addr().expect("echo address");
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, peer)) = listener.accept().await {
                seen.lock().expect("echo lock").push(peer);
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    /// The peer addresses of the connections accepted so far.
    pub fn accepted(&self) -> Vec<SocketAddr> {
        self.accepted.lock().expect("echo lock").clone()
    }
}

/// Opens a TCP connection from `from` to the gateway on 127.0.0.1:`port`.
pub async fn dial(from: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(SocketAddr::from(([127, 0, 0, 1], port))))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

/// Opens a connection from `from` through the gateway on `port` and checks
/// that it echoes.
pub async fn connect_ok(from: IpAddr, port: u16) -> TcpStream {
    let mut stream =
        dial(from, port).await.unwrap_or_else(|e| panic!("connecting from {from} to gateway port {port}: {e}"));
    round_trip(&mut stream, format!("hello from {from}").as_bytes()).await;
    stream
}

/// Sends `data` and reads the echo back.
pub async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.expect("write through the gateway");
    let mut back = vec![0; data.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back))
        .await
        .expect("the echo came back within 5 s")
        .expect("read the echo through the gateway");
    assert_eq!(back, data);
}

/// Checks that a connection from `from` to the gateway on `port` gets
/// nothing: refused at connect, or accepted and closed without a byte
/// even after we sent some.
pub async fn assert_refused(from: IpAddr, port: u16) {
    let Ok(mut stream) = dial(from, port).await else { return };
    // Writing may fail if the gateway already closed: that is refusal too.
    let _ = stream.write_all(b"let me in").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap_or_else(|_| {
        panic!("a connection from {from} to port {port} was neither closed nor answered within 5 s")
    });
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a connection from {from} to port {port} should get nothing, got {read:?} ({:?})",
        read.as_ref().ok().map(|n| String::from_utf8_lossy(&buf[..*n]).into_owned())
    );
}

/// Waits (at most `within`) for the gateway to close `stream` and returns
/// the wall-clock time it noticed. Fails if data arrives instead.
pub async fn closed_at(stream: &mut TcpStream, within: Duration) -> DateTime<Utc> {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(within, stream.read(&mut byte))
        .await
        .unwrap_or_else(|_| panic!("the connection was not closed within {within:?}"));
    let at = Utc::now();
    assert!(matches!(read, Ok(0) | Err(_)), "expected the connection to be closed, got {read:?}");
    at
}

/// Asserts that a cut observed at `cut` came at `ends_at` or after and
/// within [`CUT_WITHIN`] (plus [`OBSERVE_SLACK`]).
pub fn assert_cut_on_time(cut: DateTime<Utc>, ends_at: DateTime<Utc>) {
    let late = cut - ends_at;
    eprintln!("connection cut {} ms after ends_at", late.num_milliseconds());
    // The gateway and this process read the same clock; a few ms early
    // would only be rounding of the stored timestamp.
    assert!(late.num_milliseconds() >= -20, "cut {late} before ends_at {ends_at}");
    let limit = CUT_WITHIN + OBSERVE_SLACK;
    assert!(
        late.to_std().is_ok_and(|l| l <= limit),
        "cut {} ms after ends_at, more than {limit:?}",
        late.num_milliseconds()
    );
}

/// Asserts that `stream` is cut promptly after an action that ends its
/// grant (release, revoke, reload) was answered.
pub async fn assert_cut_promptly(stream: &mut TcpStream) {
    let start = Instant::now();
    closed_at(stream, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took <= CUT_WITHIN + OBSERVE_SLACK, "the live connection was cut {took:?} after the grant ended");
}

// ---- the CLI --------------------------------------------------------------

/// The CLI as one person: its own config dir (credentials) and the server
/// URL in `AJAR_SERVER`.
pub struct Cli {
    pub config_dir: TempDir,
    base: Arc<Mutex<String>>,
}

/// What a CLI run did.
#[derive(Debug)]
pub struct CliOut {
    pub args: Vec<String>,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOut {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Checks that the command succeeded and returns its stdout as JSON.
    pub fn json(&self) -> Value {
        assert!(self.success(), "{self}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for CliOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ajar {}\nexit code: {:?}\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Cli {
    pub fn new(server: &TestServer) -> Self {
        Self { config_dir: tempfile::tempdir().expect("CLI config dir"), base: server.base.clone() }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(ajar_bin());
        cmd.args(args)
            .env("AJAR_SERVER", self.base.lock().expect("base url lock").clone())
            .env("AJAR_CONFIG_DIR", self.config_dir.path())
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        cmd
    }

    /// Runs `ajar ARGS` with `stdin` and waits for it (at most 60 s).
    pub async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> CliOut {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn the ajar CLI");
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin.as_bytes()).await.expect("write the CLI's stdin");
        drop(input);
        finish(args, child).await
    }

    /// Runs `ajar ARGS` with empty stdin.
    pub async fn run(&self, args: &[&str]) -> CliOut {
        self.run_with_stdin(args, "").await
    }

    /// `ajar login USER --password-stdin`, expected to succeed.
    pub async fn login(&self, user: &str) {
        let out = self.run_with_stdin(&["login", user, "--password-stdin"], &format!("{PASSWORD}\n")).await;
        assert!(out.success(), "{out}");
    }
}

/// Waits for a CLI child to exit and collects what it printed.
pub async fn finish(args: &[&str], child: tokio::process::Child) -> CliOut {
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("ajar {} did not finish within 60 s", args.join(" ")))
        .expect("wait for the ajar CLI");
    CliOut {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
