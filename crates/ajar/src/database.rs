//! Which store the server runs on: SQLite in the data dir by default,
//! PostgreSQL when `[server] database` names one (several replicas).

use std::sync::Arc;

use ajar_config::Config;
use ajar_core::Core;
use ajar_store::{PgStore, SqliteStore, Store};
use anyhow::Context;
use tracing::info;

/// Opens (and migrates) the configured store.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.server.database {
        Some(url) => {
            let store =
                PgStore::connect(url).await.with_context(|| format!("cannot use the database {}", redact(url)))?;
            info!(database = %redact(url), "using PostgreSQL");
            Ok(Arc::new(store))
        }
        None => {
            let path = config.server.data_dir.join("ajar.db");
            let store = SqliteStore::open(&path)
                .await
                .with_context(|| format!("cannot open the database {}", path.display()))?;
            Ok(Arc::new(store))
        }
    }
}

/// `ajar migrate`: brings the configured database's schema up to date.
pub async fn migrate(config_path: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let config =
        ajar_config::load(config_path).map_err(|errors| anyhow::anyhow!("the config has problems:\n{errors}"))?;
    if config.server.database.is_none() {
        std::fs::create_dir_all(&config.server.data_dir)
            .with_context(|| format!("cannot create {}", config.server.data_dir.display()))?;
    }
    open(&config).await?;
    let which = match &config.server.database {
        Some(url) => redact(url),
        None => config.server.data_dir.join("ajar.db").display().to_string(),
    };
    println!("the database {which} is up to date");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Follows changes other replicas commit, so that this replica's drivers,
/// timers and live views stay in line within milliseconds.
pub async fn follow(core: Arc<Core>, store: &dyn Store) -> anyhow::Result<()> {
    if let Some(mut changes) = store.watch_changes().await.context("cannot listen for changes from other replicas")? {
        tokio::spawn(async move {
            while let Some(id) = changes.recv().await {
                core.on_remote_change(&id).await;
            }
        });
    }
    Ok(())
}

/// A URL with its password (if any) hidden, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_a_log() {
        assert_eq!(super::redact("postgres://ajar:s3cret@db:5432/ajar"), "postgres://ajar:***@db:5432/ajar");
        assert_eq!(super::redact("postgres://ajar@db/ajar"), "postgres://ajar@db/ajar");
    }
}
