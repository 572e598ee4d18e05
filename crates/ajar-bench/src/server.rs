//! Starts the real `ajar` binary on the embedded default (SQLite and the
//! built-in gateway) with a temporary data dir and a generated config, and
//! reads its memory use from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The bench user's name and password.
pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-password-not-secret";

/// The one target every section uses: the bench's own echo/sink server
/// behind the gateway.
pub const TARGET: &str = "bench";

/// The longest grant the bench policy allows.
pub const MAX_DURATION_SECS: u64 = 3600;

/// A running `ajar server`, killed (by its own pid, through the handle)
/// when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub url: String,
    /// From spawning the process to the first `200` from `/readyz`.
    pub start_to_ready: Duration,
    /// Where the server's log goes.
    pub log: PathBuf,
    _dir: TempDir,
}

impl Server {
    /// Starts `binary` with a fresh data dir, one user and one gateway
    /// target in front of `target`.
    pub async fn start(binary: &Path, target: SocketAddr) -> anyhow::Result<Self> {
        let mut dir = tempfile::Builder::new().prefix("ajar-bench-").tempdir()?;
        // AJAR_BENCH_KEEP=1 keeps the data dir and server.log for a look
        // afterwards (the path is printed).
        if std::env::var_os("AJAR_BENCH_KEEP").is_some() {
            dir.disable_cleanup(true);
            eprintln!("ajar-bench: keeping {}", dir.path().display());
        }
        let config = dir.path().join("ajar.toml");
        std::fs::write(&config, config_text(&dir.path().join("data"), target, password_hash()?))?;
        let log = dir.path().join("server.log");
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("server")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("the server exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout from the server"))?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("ajar listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("the server stopped before it listened; see {}", log.display())
        })
        .await
        .map_err(|_| anyhow!("the server did not listen within 60 s; see {}", log.display()))??;
        // Keep reading stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::new();
        loop {
            let ready = http.get(format!("{url}/readyz")).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the server was not ready within 60 s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self { start_to_ready: started.elapsed(), child, pid, url, log, _dir: dir })
    }

    /// Resident memory now and at its peak, in MiB.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow!("/proc/{}/status has no {name}", self.pid))?;
            let kib: f64 = line.split_whitespace().nth(1).unwrap_or_default().parse()?;
            Ok(kib / 1024.0)
        };
        Ok(Memory { rss_mib: field("VmRSS:")?, peak_rss_mib: field("VmHWM:")? })
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// The bench user's argon2id hash, with the library's default cost (what
/// `ajar hash-password` produces).
fn password_hash() -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(b"ajar-bench-salt").map_err(|e| anyhow!("salt: {e}"))?;
    Ok(Argon2::default().hash_password(PASSWORD.as_bytes(), &salt).map_err(|e| anyhow!("hashing: {e}"))?.to_string())
}

/// The config: one user, one gateway target on an ephemeral port, and an
/// auto-approving policy whose `sources` admit any loopback address, so
/// that each grant can name its own client address in 127/8.
fn config_text(data_dir: &Path, target: SocketAddr, hash: String) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
data_dir = {data_dir:?}

[[users]]
name = "{USER}"
password_hash = "{hash}"
groups = ["bench"]

[[targets]]
name = "{TARGET}"
address = "{target}"
driver = "gateway"
labels = {{ env = "bench" }}
gateway = {{ listen = "127.0.0.1:0" }}

[[policies]]
name = "bench-auto"
subjects = ["group:bench"]
targets = ["env=bench"]
max_duration = "{MAX_DURATION_SECS}s"
reason_required = false
approvals = 0
sources = ["127.0.0.0/8"]
"#,
        data_dir = data_dir.display().to_string(),
    )
}
