//! The saved login: server URL and bearer token in
//! `$AJAR_CONFIG_DIR/credentials.json` (default: the user's config dir,
//! e.g. `~/.config/ajar`), readable only by the user.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub server: String,
    pub username: String,
    pub token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

fn dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("AJAR_CONFIG_DIR") {
        return Ok(PathBuf::from(dir));
    }
    dirs::config_dir()
        .map(|d| d.join("ajar"))
        .context("cannot find your config directory; set AJAR_CONFIG_DIR to where ajar may keep your login")
}

fn path() -> anyhow::Result<PathBuf> {
    Ok(dir()?.join("credentials.json"))
}

/// The saved login, if there is a readable one.
pub fn load() -> Option<Credentials> {
    let text = std::fs::read_to_string(path().ok()?).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn save(credentials: &Credentials) -> anyhow::Result<PathBuf> {
    let dir = dir()?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = path()?;
    let tmp = dir.join("credentials.json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // An existing file keeps its mode through open(); make sure it is 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(serde_json::to_string_pretty(credentials)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub fn remove() -> anyhow::Result<bool> {
    let path = path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}
