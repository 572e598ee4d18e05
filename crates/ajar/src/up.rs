//! `ajar up`: the five-minute start. Creates the data directory and a
//! commented sample config with a bootstrap admin on first start, then runs
//! the server and says what to do next.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use rand::Rng;

const CONFIG: &str = "ajar.toml";
const PASSWORD_FILE: &str = "admin-password";

/// Where the API listens on first start unless `--listen` says otherwise.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

pub async fn run(dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<ExitCode> {
    let config = dir.join(CONFIG);
    let first_start = if config.exists() {
        if let Some(asked) = listen {
            check_listen_matches(&config, asked)?;
        }
        None
    } else {
        let listen = listen.unwrap_or(DEFAULT_LISTEN);
        // Nothing is written until the address is known to be free, so a
        // failed first start leaves nothing behind to trip the next one.
        check_free(listen)?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Some(write_sample(dir, listen)?)
    };
    let shown_dir = dir.display().to_string();
    crate::serve::run(&config, move |url| {
        println!();
        println!("ajar is up at {url}; config, database and audit log are in {shown_dir}/");
        if let Some(password) = &first_start {
            println!("First start: wrote {shown_dir}/{CONFIG} with the user \"admin\" (group admins) and a sample target.");
            println!("The admin password, shown only this once, is: {password}");
            println!("(also in {shown_dir}/{PASSWORD_FILE}, readable only by you; change it in the config with `ajar hash-password`)");
        }
        let server = if url == "http://127.0.0.1:8080" { String::new() } else { format!(" --server {url}") };
        println!();
        println!("Open {url} in a browser and sign in, or, in another terminal:");
        println!("  ajar login admin{server}");
        println!("  ajar targets");
        println!("  ajar connect ssh-local --for 15m --reason \"trying ajar\" -- ssh -p {{port}} {{host}}");
        println!();
        println!("Edit {shown_dir}/{CONFIG} to add your own targets and policies, then `kill -HUP` this process to reload.");
    })
    .await
}

/// Refuses to start when `listen` is taken, saying how to pick another.
fn check_free(listen: SocketAddr) -> anyhow::Result<()> {
    match TcpListener::bind(listen) {
        Ok(_) => Ok(()),
        Err(e) => {
            let other = SocketAddr::new(listen.ip(), listen.port().wrapping_add(1).max(1024));
            anyhow::bail!(
                "cannot listen on {listen}: {e} (another ajar or another program has it); nothing was written; \
                 choose a free address with `ajar up --listen {other}`"
            )
        }
    }
}

/// A later start keeps the config's address: `--listen` that says
/// otherwise is refused rather than silently ignored.
fn check_listen_matches(config: &Path, asked: SocketAddr) -> anyhow::Result<()> {
    let written = ajar_config::load(config)
        .map_err(|errors| anyhow::anyhow!("the config has problems:\n{errors}"))?
        .server
        .listen;
    if written != asked {
        anyhow::bail!(
            "{} already sets server.listen = \"{written}\"; --listen applies only on the first start: \
             change server.listen in that file (or run without --listen)",
            config.display()
        );
    }
    Ok(())
}

/// Writes the sample config and the bootstrap password; returns the
/// password.
fn write_sample(dir: &Path, listen: SocketAddr) -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    let password: String = (0..24).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    let hash = ajar_core::auth::hash_password(&password).map_err(anyhow::Error::msg)?;
    let gateway = free_port_near(2222);
    let text = SAMPLE
        .replace("{listen}", &listen.to_string())
        .replace("{hash}", &hash)
        .replace("{gateway}", &gateway.to_string());
    write_private(&dir.join(PASSWORD_FILE), &format!("{password}\n"))?;
    write_private(&dir.join(CONFIG), &text)?;
    Ok(password)
}

/// `preferred` if it is free on loopback, else any free port.
fn free_port_near(preferred: u16) -> u16 {
    TcpListener::bind(("127.0.0.1", preferred))
        .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
        .and_then(|l| l.local_addr())
        .map_or(preferred, |a| a.port())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

const SAMPLE: &str = r#"# ajar configuration, written by `ajar up` on first start.
# Check it with `ajar check-config ajar.toml`; reload a running server with SIGHUP.
# Relative paths are relative to this file's directory.

[server]
listen = "{listen}"        # the API (and `ajar` CLI) address
data_dir = "."             # SQLite database (ajar.db) and audit copy (audit.jsonl)
approval_timeout = "1h"    # pending requests time out after this
token_ttl = "12h"          # how long a login lasts
# tls = { cert = "cert.pem", key = "key.pem" }   # serve HTTPS; do this before listening beyond loopback
# trusted_proxies = ["10.0.0.5"]                 # believe X-Forwarded-For only from these

[access]
admins = ["group:admins"]     # may revoke any grant and read the whole audit log
auditors = ["group:admins"]   # may read the whole audit log

[[users]]
name = "admin"
password_hash = "{hash}"
groups = ["admins"]

# Add people with `ajar hash-password` (password on stdin):
# [[users]]
# name = "alice"
# password_hash = "$argon2id$..."
# groups = ["dev"]

# A sample target: SSH on this machine, reachable only through ajar's
# built-in gateway on 127.0.0.1:{gateway}, and only from the address of
# whoever holds an active grant.
[[targets]]
name = "ssh-local"
address = "127.0.0.1:22"
driver = "gateway"
labels = { env = "demo" }
gateway = { listen = "127.0.0.1:{gateway}" }

# Admins may open the demo target for themselves for up to an hour,
# approved automatically, with a reason.
[[policies]]
name = "admins-demo"
subjects = ["group:admins"]
targets = ["env=demo"]
max_duration = "1h"
reason_required = true
approvals = 0

# A production policy looks like this: one approval from SRE, never from
# the requester, and only from the VPN.
# [[policies]]
# name = "dev-prod-db"
# subjects = ["group:dev"]
# targets = ["env=prod"]
# max_duration = "1h"
# reason_required = true
# approvals = 1
# approvers = ["group:sre"]
# sources = ["10.8.0.0/16"]
"#;
