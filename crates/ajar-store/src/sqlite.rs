//! The embedded default store: one SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ajar_domain::audit::GENESIS;
use ajar_domain::{AuditEvent, NewAuditEvent, Request, RequestId, Timestamp};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::Mutex;

use crate::codec::{micros, AuditRow, RequestRow};
use crate::sql::{Committer, AUDIT_COLUMNS, REQUEST_COLUMNS};
use crate::{AuditFilter, AuditScope, RequestFilter, Store, StoreError};

pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite has one writer at a time anyway; taking this lock before
    /// every write transaction makes "read the chain head, append after it"
    /// race-free within the process, and turns SQLITE_BUSY into waiting.
    write: Arc<Mutex<()>>,
    /// Puts request changes and audit events into group commits.
    committer: Committer,
}

impl SqliteStore {
    /// Opens (creating if needed) `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The audit log must survive a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        Self::connect(options).await
    }

    /// A private in-memory database, for tests.
    pub async fn in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let in_memory = options.get_filename().as_os_str().is_empty()
            || options.get_filename().to_string_lossy().contains("memory");
        let pool = SqlitePoolOptions::new()
            // Every connection of an in-memory database is a database of its
            // own, so those get exactly one.
            .max_connections(if in_memory { 1 } else { 8 })
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let write = Arc::new(Mutex::new(()));
        let (committer, queue) = Committer::new();
        tokio::spawn(Self::commit_loop(pool.clone(), write.clone(), queue));
        Ok(Self { pool, write, committer })
    }

    fn sql(text: &str) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(text)
    }

    /// The write mutex already puts this process's writers in line, and
    /// SQLite allows one process.
    async fn serialize_writers(_tx: &mut Transaction<'_, Sqlite>) -> Result<(), StoreError> {
        Ok(())
    }

    async fn change_feed(&self) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<String>>, StoreError> {
        Ok(None)
    }

    /// One process, nobody to tell.
    async fn announce(_tx: &mut Transaction<'_, Sqlite>, _id: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

crate::sql::sql_store!(SqliteStore, Sqlite);
crate::identity::identity_store!(SqliteStore, Sqlite);
crate::agents::agent_store!(SqliteStore, Sqlite);
