//! Headless Chromium for the browser tests: chromedriver on a free port and
//! fresh browser sessions with the flags these machines need, driven over
//! WebDriver by fantoccini.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;

use super::free_port;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed on drop.
pub struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// `None` (with the reason printed) when Chromium is not installed and
    /// this is not CI; in CI a missing browser fails the test.
    pub fn start() -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            let why = "chromium and chromium-driver are not installed (./scripts/test.sh installs them)";
            if std::env::var_os("CI").is_some() {
                panic!("{why}");
            }
            eprintln!("skipping the browser test: {why}");
            return None;
        }
        // Two rustls crypto providers are compiled in (fantoccini brings
        // its own); pick one for this process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, url: format!("http://127.0.0.1:{port}") })
    }

    /// A fresh browser with its own profile (so its own cookies).
    pub async fn browser(&self, profile: &tempfile::TempDir) -> Client {
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_owned(), json!({ "binary": CHROMIUM, "args": args }));
        ClientBuilder::rustls().expect("rustls").capabilities(caps).connect(&self.url).await.expect("open a browser")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
