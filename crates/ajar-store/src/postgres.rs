//! The shared store for several replicas: PostgreSQL.
//!
//! Writers of the audit chain are put in line across processes by a
//! transaction-scoped advisory lock, so the chain stays one chain however
//! many replicas write. Every request change sends a NOTIFY in its
//! transaction, delivered at commit, so that the other replicas' gateways
//! and live views follow within milliseconds.

use std::sync::Arc;
use std::time::Duration;

use ajar_domain::audit::GENESIS;
use ajar_domain::{AuditEvent, NewAuditEvent, Request, RequestId, Timestamp};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, Mutex};
use tracing::{info, warn};

use crate::codec::{micros, AuditRow, RequestRow};
use crate::sql::{Committer, AUDIT_COLUMNS, REQUEST_COLUMNS};
use crate::{AuditFilter, AuditScope, RequestFilter, Store, StoreError};

/// The NOTIFY channel for request changes; the payload is the request id.
const CHANGES: &str = "ajar_changes";

/// The advisory lock that serializes writers of the audit chain (any
/// constant ajar alone uses).
const CHAIN_LOCK: i64 = 0x616a_6172; // "ajar"

pub struct PgStore {
    pool: PgPool,
    /// Puts this process's writers in line before they queue on the
    /// database's lock, keeping pool connections free for readers.
    write: Arc<Mutex<()>>,
    /// Puts request changes and audit events into group commits.
    committer: Committer,
}

impl PgStore {
    /// Connects to `url` and brings the schema up to date. Refuses a
    /// database that a newer ajar has migrated.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        Self::migrator().run(&pool).await.map_err(crate::migrate_error)?;
        let write = Arc::new(Mutex::new(()));
        let (committer, queue) = Committer::new();
        tokio::spawn(Self::commit_loop(pool.clone(), write.clone(), queue));
        Ok(Self { pool, write, committer })
    }

    fn migrator() -> sqlx::migrate::Migrator {
        sqlx::migrate!("./migrations/postgres")
    }

    fn sql(text: &str) -> String {
        crate::sql::numbered(text)
    }

    async fn serialize_writers(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(CHAIN_LOCK).execute(&mut **tx).await?;
        Ok(())
    }

    async fn announce(tx: &mut Transaction<'_, Postgres>, id: &str) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANGES).bind(id).execute(&mut **tx).await?;
        Ok(())
    }

    /// Forwards every NOTIFY on the changes channel, reconnecting after
    /// errors. After a reconnect it sends an empty id: notifications may
    /// have been missed, so the receiver should look at everything.
    async fn change_feed(&self) -> Result<Option<mpsc::UnboundedReceiver<String>>, StoreError> {
        Ok(Some(self.feed().await?))
    }

    async fn feed(&self) -> Result<mpsc::UnboundedReceiver<String>, StoreError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANGES).await?;
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if tx.send(n.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    // The connection dropped and sqlx reconnected: anything
                    // may have changed meanwhile.
                    Ok(None) => {
                        info!("the PostgreSQL change feed reconnected; looking at everything");
                        if tx.send(String::new()).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "the PostgreSQL change feed failed; reconnecting in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match PgListener::connect_with(&pool).await {
                            Ok(mut fresh) => {
                                if fresh.listen(CHANGES).await.is_ok() {
                                    listener = fresh;
                                    if tx.send(String::new()).is_err() {
                                        return;
                                    }
                                }
                            }
                            Err(e) => warn!(error = %e, "cannot reconnect the change feed yet"),
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}

crate::sql::sql_store!(PgStore, Postgres);
crate::identity::identity_store!(PgStore, Postgres);
crate::agents::agent_store!(PgStore, Postgres);
