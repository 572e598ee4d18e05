//! ajar's one config file: parsed and strictly checked into the domain's
//! [`Catalog`] plus the server's settings.
//!
//! The file looks like this (every section but `[server]` may be left out,
//! and every key of `[server]` has a default):
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! data_dir = "ajar-data"                 # relative to the config file
//! trusted_proxies = ["10.0.0.5"]         # peers whose X-Forwarded-For is believed
//! tls = { cert = "cert.pem", key = "key.pem" }
//! approval_timeout = "1h"
//! token_ttl = "12h"
//! reconcile_interval = "10s"             # 1s to 1h
//! http_header_timeout = "10s"            # a request's headers must arrive within this
//! http_idle_timeout = "60s"              # a connection without traffic is closed
//! max_api_connections = 1024             # more are closed at once
//! public_url = "https://ajar.example.com"  # what browsers see; decides cookie flags
//! metrics_listen = "127.0.0.1:9464"      # /metrics on its own listener
//! metrics_token_file = "metrics.token"   # or metrics_token_env: /metrics needs this bearer token
//!
//! [access]
//! admins = ["group:sre"]
//! auditors = ["group:security"]
//! groups = ["oncall"]                    # groups with no local member
//!
//! [[users]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! groups = ["dev"]
//!
//! [[targets]]
//! name = "db-prod"
//! address = "10.0.3.12:5432"
//! driver = "gateway"
//! labels = { env = "prod" }
//! gateway = { listen = "0.0.0.0:15432", public_host = "gw.example.com" }
//!
//! [[policies]]
//! name = "dev-prod-db"
//! subjects = ["group:dev"]
//! targets = ["env=prod"]
//! max_duration = "1h"
//! reason_required = true
//! approvals = 1
//! approvers = ["group:sre"]
//! sources = ["10.8.0.0/16"]
//!
//! [oidc]                                 # single sign-on; see the `oidc` module
//! issuer = "https://login.example.com"
//! client_id = "ajar"
//! client_secret_env = "AJAR_OIDC_SECRET"
//! ```
//!
//! Checking is strict: unknown keys, wrong types, bad values and policies
//! that could never be used are errors, and [`parse`] reports all of them at
//! once, each with file, line, column and dotted key. Files named in the
//! config (data directory, TLS certificate) are not opened here: the server
//! checks them when it starts, which keeps [`parse`] pure.
//!
//! The document is read with `toml_edit` rather than through serde, because
//! hand-reading a located tree lets one pass report every unknown key and
//! wrong type instead of stopping at the first, and locates even tables the
//! file only implies.

mod agents;
mod aws;
mod check;
mod decode;
mod error;
mod oidc;
mod reader;
mod summary;
mod values;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ajar_domain::{Catalog, GrantDuration};

pub use agents::{AgentSettings, GroupSettings};
pub use error::{ConfigError, ConfigErrors};
pub use oidc::{OidcSettings, Secret, SecretRef, TrustedTokens, UnmappedGroups};
pub use summary::summary;

/// A checked config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerSettings,
    pub catalog: Catalog,
    /// Single sign-on, when `[oidc]` is present.
    pub oidc: Option<OidcSettings>,
    /// Where `ajar agent`s connect, when `[agents]` is present.
    pub agents: Option<AgentSettings>,
}

/// How the server runs, from `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where the HTTP API listens; `127.0.0.1:8080` by default.
    pub listen: SocketAddr,
    /// Where the SQLite database and the audit file live; `ajar-data` next
    /// to the config file by default.
    pub data_dir: PathBuf,
    /// A PostgreSQL URL for replicas sharing one database; without it,
    /// SQLite in `data_dir`. The password is better given by `PGPASSWORD`
    /// or `~/.pgpass` than in the URL.
    pub database: Option<String>,
    /// Peers whose `X-Forwarded-For` header is believed. Empty means the
    /// client address is always the TCP peer's.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Serve HTTPS with these files; plain HTTP when absent.
    pub tls: Option<TlsSettings>,
    /// How long a request may stay pending before it times out; 1h by
    /// default.
    pub approval_timeout: GrantDuration,
    /// How long an API token stays valid; 12h by default.
    pub token_ttl: GrantDuration,
    /// How often actual network state is compared with granted state; 10s
    /// by default, between 1s and 1h.
    pub reconcile_interval: Duration,
    /// How many pending requests one requester may have at once; 20 by
    /// default, 1 to 1000.
    pub max_pending_per_requester: u32,
    /// How long a client may take to send a request's headers (the first
    /// request of a connection, and each one after the last answer); 10s by
    /// default, between 1s and 5m.
    pub http_header_timeout: Duration,
    /// How long an API connection may go without a byte in either
    /// direction before it is closed; 60s by default, between 1s and 1h.
    pub http_idle_timeout: Duration,
    /// How many API connections may be open at once; beyond it new ones
    /// are closed at once. 1024 by default, between 8 and 1,000,000.
    pub max_api_connections: u32,
    /// The URL browsers reach the portal at (`https://ajar.example.com`),
    /// without a trailing slash; it decides whether portal cookies are
    /// `Secure` and `__Host-` prefixed, and is the base of printed links.
    pub public_url: Option<String>,
    /// Serve `/metrics` on this separate listener (and not on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// The bearer token `/metrics` requires, from a file or an environment
    /// variable.
    pub metrics_token: Option<SecretRef>,
}

/// The certificate chain and private key for HTTPS, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Parses and checks `text`, the contents of `file`. Pure: `file` is only
/// named in errors and is where relative paths are resolved from.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let document = match toml_edit::ImDocument::parse(text) {
        Ok(document) => document,
        // A syntax error leaves nothing reliable to check further.
        Err(e) => return Err(ConfigErrors(vec![syntax_error(file, text, &e)])),
    };
    let base = file.parent().unwrap_or(Path::new(""));
    let mut reader = reader::Reader::new(file, text);
    let drafts = decode::decode(&mut reader, document.as_table(), base);
    check::check(&mut reader, &drafts);
    if reader.has_errors() {
        return Err(ConfigErrors::sorted(reader.into_errors()));
    }
    check::assemble(drafts).ok_or_else(|| {
        ConfigErrors(vec![ConfigError::whole_file(
            file,
            "internal error: the file was accepted but could not be assembled; please report this as a bug in ajar"
                .to_owned(),
        )])
    })
}

/// Reads `file` and [`parse`]s it.
pub fn load(file: &Path) -> Result<Config, ConfigErrors> {
    match std::fs::read_to_string(file) {
        Ok(text) => parse(file, &text),
        Err(e) => Err(ConfigErrors(vec![ConfigError::whole_file(file, format!("cannot read the config file: {e}"))])),
    }
}

/// A TOML syntax error, located and flattened to one line.
fn syntax_error(file: &Path, text: &str, e: &toml_edit::TomlError) -> ConfigError {
    let message: Vec<&str> = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let offset = e.span().map_or(0, |s| s.start);
    ConfigError::at(file, text, offset, "", format!("invalid TOML: {}", message.join("; ")))
}
