//! Harness for the kernel-driver tests: builds a private topology of network
//! namespaces joined by veth pairs (client A, client B, gateway, server),
//! runs the real `ajar` binary inside the gateway namespace, and speaks TCP
//! from the clients with socat. Addresses come from 10.0.0.0/8 and
//! fd00::/8 and exist only inside these namespaces; every name carries the
//! process id and a per-test tag, and `Drop` deletes the namespaces (which
//! deletes their veths, rules and the processes' sockets with them).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

pub const PASSWORD: &str = "correct horse battery staple";
/// The issue's bound on cutting an established flow after `ends_at`…
pub const CUT_WITHIN: Duration = Duration::from_secs(1);
/// …plus this process's own wake-up and ping interval on a loaded host.
pub const OBSERVE_SLACK: Duration = Duration::from_millis(300);

/// Whether this process can build namespaces and run the nftables tests.
/// Outside CI a missing privilege or tool skips the test with the reason;
/// in CI (`CI` set) it is a failure, so the suite never passes by skipping.
pub fn can_run(test: &str) -> bool {
    can_run_with(test, &["nft"])
}

/// Like [`can_run`], for a test that also runs `programs`.
pub fn can_run_with(test: &str, programs: &[&str]) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false);
    let missing: Vec<&str> =
        ["ip", "socat", "curl", "sysctl"].iter().chain(programs).copied().filter(|p| !on_path(p)).collect();
    let why = match (root, missing.is_empty()) {
        (true, true) => return true,
        (false, _) => "it needs root to create network namespaces".to_owned(),
        (true, false) => format!("{} not installed (./scripts/test.sh installs them)", missing.join(", ")),
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test} cannot run in CI: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Runs a command and panics with its output unless it succeeds.
pub fn run(args: &[&str]) -> String {
    let out = output(args);
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn output(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]))
}

/// Which address family a topology's target uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// Four namespaces: `a` and `b` (clients), `gw` (runs ajar), `srv` (the
/// critical server). Each client and the server have their own link to the
/// gateway; the server's and the clients' default routes go through it.
pub struct Topology {
    pub tag: String,
    pub a: String,
    pub b: String,
    pub gw: String,
    pub srv: String,
    n: u8,
}

impl Topology {
    /// `tag` is at most 5 characters; the namespace and veth names stay
    /// within the kernel's 15.
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id() % 100_000;
        let ns = |role: &str| format!("aj{pid}{tag}{role}");
        // A subnet number unique enough per test: the tag's bytes.
        let n = tag.bytes().fold(17u8, |acc, b| acc.wrapping_mul(31).wrapping_add(b)).max(1);
        let t = Topology { tag: tag.to_owned(), a: ns("a"), b: ns("b"), gw: ns("g"), srv: ns("s"), n };
        for name in [&t.a, &t.b, &t.gw, &t.srv] {
            let _ = output(&["ip", "netns", "del", name]);
            run(&["ip", "netns", "add", name]);
            run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        for (i, peer) in [(1, &t.a), (2, &t.b), (3, &t.srv)] {
            let gw_side = format!("v{pid}{tag}g{i}");
            let peer_side = format!("v{pid}{tag}p{i}");
            run(&[
                "ip", "link", "add", &gw_side, "netns", &t.gw, "type", "veth", "peer", "name", &peer_side, "netns",
                peer,
            ]);
            run(&["ip", "-n", &t.gw, "addr", "add", &format!("10.{n}.{i}.1/24", n = t.n), "dev", &gw_side]);
            run(&["ip", "-n", peer, "addr", "add", &format!("10.{n}.{i}.2/24", n = t.n), "dev", &peer_side]);
            run(&[
                "ip",
                "-n",
                &t.gw,
                "addr",
                "add",
                &format!("fd{n:02x}:{i}::1/64", n = t.n),
                "dev",
                &gw_side,
                "nodad",
            ]);
            run(&[
                "ip",
                "-n",
                peer,
                "addr",
                "add",
                &format!("fd{n:02x}:{i}::2/64", n = t.n),
                "dev",
                &peer_side,
                "nodad",
            ]);
            run(&["ip", "-n", &t.gw, "link", "set", &gw_side, "up"]);
            run(&["ip", "-n", peer, "link", "set", &peer_side, "up"]);
            run(&["ip", "-n", peer, "route", "add", "default", "via", &format!("10.{n}.{i}.1", n = t.n)]);
            run(&["ip", "-n", peer, "-6", "route", "add", "default", "via", &format!("fd{n:02x}:{i}::1", n = t.n)]);
        }
        // Neighbour discovery needs the link-local addresses, which stay
        // tentative for a moment after a link comes up; until then the
        // first IPv6 packets are lost.
        let deadline = Instant::now() + Duration::from_secs(10);
        for name in [&t.a, &t.b, &t.gw, &t.srv] {
            while !run(&["ip", "-n", name, "-6", "addr", "show", "tentative"]).trim().is_empty() {
                assert!(Instant::now() < deadline, "IPv6 addresses in {name} stayed tentative");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        t
    }

    pub fn set_forwarding(&self, on: bool) {
        let v = if on { "1" } else { "0" };
        run(&["ip", "netns", "exec", &self.gw, "sysctl", "-qw", &format!("net.ipv4.ip_forward={v}")]);
        run(&["ip", "netns", "exec", &self.gw, "sysctl", "-qw", &format!("net.ipv6.conf.all.forwarding={v}")]);
    }

    /// Client `i`'s (1 = A, 2 = B) or the server's (3) address.
    pub fn host(&self, i: u8, family: Family) -> IpAddr {
        match family {
            Family::V4 => format!("10.{}.{i}.2", self.n),
            Family::V6 => format!("fd{:02x}:{i}::2", self.n),
        }
        .parse()
        .expect("an address")
    }

    /// The gateway's address on client A's link: the DNAT listen address.
    pub fn gateway(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => format!("10.{}.1.1", self.n),
            Family::V6 => format!("fd{:02x}:1::1", self.n),
        }
        .parse()
        .expect("an address")
    }

    /// Runs `args` inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        output(&all)
    }

    /// `nft list ...` inside the gateway namespace.
    pub fn nft(&self, args: &str) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.gw, "nft"];
        all.extend(args.split_whitespace());
        run(&all)
    }

    /// Runs `args` inside the gateway namespace and returns its stdout;
    /// panics with its output unless it succeeds.
    pub fn in_gw(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.gw];
        all.extend_from_slice(args);
        run(&all)
    }

    /// Whether `client` gets "hello" echoed back through `addr` within 3 s.
    pub fn reaches(&self, client: &str, addr: SocketAddr) -> bool {
        self.try_reach(client, addr).is_ok()
    }

    /// Like [`Topology::reaches`], with socat's complaint when it fails.
    pub fn try_reach(&self, client: &str, addr: SocketAddr) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", client, "socat", "-T", "3", "-"])
            .arg(format!("TCP:{},connect-timeout=2", socat_addr(addr)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socat");
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"hello\n");
        }
        let out = child.wait_with_output().expect("socat output");
        if String::from_utf8_lossy(&out.stdout).contains("hello") {
            Ok(())
        } else {
            Err(format!("{} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in [&self.a, &self.b, &self.gw, &self.srv] {
            // Processes still inside would keep the namespace alive; kill
            // exactly those (ajar, socat) by pid.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn socat_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// An echo server in the server namespace that logs every peer it accepts.
pub struct EchoServer {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl EchoServer {
    pub fn start(topo: &Topology, family: Family, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("echo.log");
        let listen = match family {
            Family::V4 => format!("TCP4-LISTEN:{port},fork,reuseaddr"),
            Family::V6 => format!("TCP6-LISTEN:{port},fork,reuseaddr"),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &topo.srv, "socat", "-d", "-d", &listen, "EXEC:cat"])
            .stderr(std::fs::File::create(&log).expect("log file"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the echo server");
        let server = EchoServer { child, log, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !server.log().contains("listening on") {
            assert!(Instant::now() < deadline, "the echo server did not start: {}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the server accepted a connection whose peer is `ip`.
    pub fn saw(&self, ip: IpAddr) -> bool {
        let log = self.log();
        log.lines().filter(|l| l.contains("accepting connection from")).any(|l| {
            let needle = match ip {
                IpAddr::V4(v4) => format!(" {v4}:"),
                // socat writes IPv6 peers fully expanded.
                IpAddr::V6(v6) => {
                    let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:04x}")).collect();
                    format!("[{}]:", groups.join(":"))
                }
            };
            l.contains(&needle)
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real `ajar server` running inside the gateway namespace.
pub struct Ajar {
    child: Option<Child>,
    /// Extra environment for every start (e.g. a `PATH` that picks another
    /// iptables backend).
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    pub url: String,
    gw: String,
    stderr: PathBuf,
}

impl Ajar {
    /// Writes a config with one target `t` (driver nftables) and a policy
    /// that auto-approves alice for it from clients' own addresses.
    pub fn config(topo: &Topology, listen: SocketAddr, destination: SocketAddr) -> String {
        Self::config_for("nftables", topo, listen, destination)
    }

    /// Like [`Ajar::config`], with the target on `driver` (`nftables` or
    /// `iptables`).
    pub fn config_for(driver: &str, topo: &Topology, listen: SocketAddr, destination: SocketAddr) -> String {
        let family = if listen.is_ipv4() { Family::V4 } else { Family::V6 };
        let hash = password_hash();
        format!(
            r#"[server]
listen = "{api}"
data_dir = "data"
reconcile_interval = "1s"

[[users]]
name = "alice"
password_hash = "{hash}"

[[targets]]
name = "t"
address = "{dest}"
driver = "{driver}"
{driver} = {{ listen = "{listen}" }}

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["t"]
max_duration = "1h"
reason_required = false
approvals = 0
"#,
            api = socat_addr(SocketAddr::new(topo.gateway(family), 0)),
            dest = socat_addr(destination),
            listen = socat_addr(listen),
        )
    }

    /// Starts ajar with `config`; panics with its stderr unless it prints
    /// its address within 30 s.
    pub fn start(topo: &Topology, config: &str) -> Self {
        Self::start_with_env(topo, config, &[])
    }

    /// Like [`Ajar::start`], with `env` added to ajar's environment at this
    /// and every later start.
    pub fn start_with_env(topo: &Topology, config: &str, env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ajar.toml"), config).expect("write the config");
        let mut ajar = Ajar {
            child: None,
            env: env.to_vec(),
            url: String::new(),
            gw: topo.gw.clone(),
            stderr: dir.path().join("stderr"),
            dir,
        };
        ajar.spawn();
        ajar
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("ajar.toml")
    }

    fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&self.stderr).expect("stderr file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.gw, env!("CARGO_BIN_EXE_ajar"), "server", "--config"])
            .arg(self.config_path())
            .env("AJAR_LOG", "info,ajar_driver_nftables=debug,ajar_driver_iptables=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn ajar");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("ajar listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => self.url = url,
            Err(_) => panic!("ajar did not start in the gateway namespace; stderr:\n{}", self.stderr()),
        }
    }

    /// Runs ajar with `args` to completion in the gateway namespace.
    pub fn run_to_end(topo: &Topology, config: &str, args: &[&str]) -> Output {
        Self::run_to_end_with_env(topo, config, args, &[])
    }

    /// Like [`Ajar::run_to_end`], with `env` added to ajar's environment.
    pub fn run_to_end_with_env(topo: &Topology, config: &str, args: &[&str], env: &[(String, String)]) -> Output {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ajar.toml");
        std::fs::write(&path, config).expect("write the config");
        Command::new("ip")
            .args(["netns", "exec", &topo.gw, env!("CARGO_BIN_EXE_ajar"), "server", "--config"])
            .arg(&path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run ajar")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Writes `config` over ajar's config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(self.config_path(), config).expect("write the config");
        let pid = self.child.as_ref().expect("ajar runs").id().to_string();
        run(&["kill", "-HUP", &pid]);
    }

    /// Waits up to 10 s for ajar's log to contain `text`.
    pub fn wait_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stderr().contains(text) {
            assert!(Instant::now() < deadline, "ajar never logged {text:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: nothing of ajar runs any more, in user space.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs ajar, so the child's pid is ajar's.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for Ajar {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The argon2id hash of [`PASSWORD`], computed once per process.
fn password_hash() -> &'static str {
    use argon2::password_hash::{PasswordHasher, SaltString};
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let salt = SaltString::encode_b64(b"ajar-netns-tests").expect("salt");
        argon2::Argon2::default().hash_password(PASSWORD.as_bytes(), &salt).expect("hash").to_string()
    })
}

/// A user of the API, calling from inside a client namespace with curl so
/// that ajar sees the client's own address.
pub struct Client<'a> {
    topo: &'a Topology,
    ns: String,
    url: String,
    token: String,
}

impl<'a> Client<'a> {
    pub fn login(topo: &'a Topology, ns: &str, ajar: &Ajar) -> Self {
        let mut client = Client { topo, ns: ns.to_owned(), url: ajar.url.clone(), token: String::new() };
        let body = serde_json::json!({ "username": "alice", "password": PASSWORD });
        let answer = client.call("POST", "/api/v1/login", Some(&body));
        client.token = answer["token"].as_str().unwrap_or_else(|| panic!("no token in {answer}")).to_owned();
        client
    }

    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let url = format!("{}{path}", self.url);
        let auth = format!("authorization: Bearer {}", self.token);
        let body = body.map(|b| b.to_string());
        let mut args = vec!["curl", "-sSg", "-X", method, "-H", "content-type: application/json", "-H", &auth];
        if let Some(b) = &body {
            args.extend(["-d", b.as_str()]);
        }
        args.push(&url);
        let out = self.topo.exec(&self.ns, &args);
        assert!(out.status.success(), "curl {url} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{url} answered non-JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Requests target `t` for `duration`; returns the request once active.
    pub fn grant(&self, duration: &str) -> Value {
        let body = serde_json::json!({ "target": "t", "duration": duration, "reason": "netns test" });
        let request = self.call("POST", "/api/v1/requests", Some(&body));
        assert_eq!(request["state"], "active", "the request was not auto-approved: {request}");
        request
    }
}

pub fn time(request: &Value, field: &str) -> DateTime<Utc> {
    request[field].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no {field} in {request}"))
}

/// A long-lived TCP connection from a client namespace through the gateway,
/// driven line by line.
pub struct Flow {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Flow {
    pub fn open(client: &str, addr: SocketAddr) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", client, "socat", "-"])
            .arg(format!("TCP:{},connect-timeout=2", socat_addr(addr)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Flow { child, stdin, lines }
    }

    /// Sends one line and waits up to `within` for its echo.
    pub fn echo(&mut self, within: Duration) -> bool {
        let line = format!("ping {}", Utc::now().timestamp_micros());
        if writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()).is_err() {
            return false;
        }
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(got) if got == line => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
        false
    }

    /// Pings every 50 ms until an echo fails; returns when the flow
    /// stopped passing data (the send time of the first unanswered ping).
    pub fn wait_until_cut(&mut self, give_up: Duration) -> DateTime<Utc> {
        let deadline = Instant::now() + give_up;
        while Instant::now() < deadline {
            let sent = Utc::now();
            if !self.echo(Duration::from_millis(150)) {
                return sent;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the established flow was still passing data after {give_up:?}");
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Client A's flow through `listen` passes data, and is cut within the
/// bound of `ends_at`; afterwards A's new connections fail. With `kill`,
/// ajar is killed (SIGKILL) while the flow is open, and the flow must keep
/// working until the kernel alone ends it.
pub fn assert_flow_cut_at_expiry(topo: &Topology, listen: SocketAddr, ends_at: DateTime<Utc>, kill: Option<&mut Ajar>) {
    let mut flow = Flow::open(&topo.a, listen);
    assert!(flow.echo(Duration::from_secs(2)), "the established flow does not pass data");
    let killed = kill.is_some();
    if let Some(ajar) = kill {
        ajar.kill9();
        assert!(flow.echo(Duration::from_secs(2)), "the flow must keep working while the grant lasts, ajar or not");
    }
    let cut = flow.wait_until_cut(Duration::from_secs(12));
    assert_cut_on_time(cut, ends_at);
    let dead = if killed { " with ajar dead" } else { "" };
    assert!(!topo.reaches(&topo.a, listen), "client A got a new connection after expiry{dead}");
}

/// Asserts that a flow that stopped at `cut` did so within the issue's
/// bound of `ends_at` (and not before it), and returns the lag.
pub fn assert_cut_on_time(cut: DateTime<Utc>, ends_at: DateTime<Utc>) -> Duration {
    let lag = cut - ends_at;
    let bound = chrono::Duration::from_std(CUT_WITHIN + OBSERVE_SLACK).expect("bound");
    // The kernel timeout is whole seconds, rounded to the nearest: up to
    // half a second early is the documented precision.
    assert!(
        lag >= chrono::Duration::milliseconds(-500),
        "the flow was cut {}ms before ends_at",
        -lag.num_milliseconds()
    );
    assert!(lag <= bound, "the flow was cut {}ms after ends_at; the bound is {bound}", lag.num_milliseconds());
    eprintln!("established flow stopped {}ms after ends_at", lag.num_milliseconds());
    lag.to_std().unwrap_or_default()
}
