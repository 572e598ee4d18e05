//! Persistence for ajar: requests and grants, the hash-chained audit log and
//! login tokens, behind the [`Store`] trait.
//!
//! Every method that changes a request also appends its audit events, in the
//! same transaction: either both are committed or neither is. The trait is
//! shaped around those units of work (not around tables) so that another
//! backend (PostgreSQL) can implement it without the callers changing.

mod agents;
mod codec;
mod identity;
#[macro_use]
mod sql;
mod postgres;
mod sqlite;

use ajar_domain::{AuditEvent, NewAuditEvent, Request, RequestId, RequestState, Timestamp};

pub use agents::{AgentStore, EnrolRefusal, TokenState};
pub use identity::IdentityStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request changed since it was read (another actor won the race).
    #[error("request {id} changed while this change was being made; reload it and try again")]
    Conflict { id: String },
    #[error("request {id} already exists")]
    Duplicate { id: String },
    #[error("the database holds a value ajar cannot read ({0}); was it edited by hand?")]
    Corrupt(String),
    /// The database cannot be reached right now; retrying later may work.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Database(other),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        migrate_error(e)
    }
}

/// A database migrated by a newer ajar is refused in words that say so.
pub(crate) fn migrate_error(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => StoreError::Migrate(format!(
            "the database has migration {version}, which this ajar ({}) does not know: a newer ajar has used it; \
             run that version (or newer) instead",
            env!("CARGO_PKG_VERSION")
        )),
        other => StoreError::Migrate(other.to_string()),
    }
}

/// Which requests to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub states: Vec<RequestState>,
    pub target: Option<String>,
    pub requester: Option<String>,
    pub enforcement: Vec<ajar_domain::EnforcementStatus>,
    /// At most this many; 0 means no limit.
    pub limit: u32,
    /// Skips this many of the newest matches first (for reading page by
    /// page).
    pub offset: u32,
}

/// Which login tokens to forget.
#[derive(Debug, Clone)]
pub enum TokenSelector {
    /// One token, by its hash (sign-out).
    Hash(String),
    /// Every token of a user (an admin's "sign them out everywhere").
    User(String),
}

/// Whose audit events to read.
#[derive(Debug, Clone)]
pub enum AuditScope {
    All,
    /// Events this person caused or that concern their requests.
    Person(String),
}

/// Narrows an audit search; every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<ajar_domain::Action>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

#[async_trait::async_trait]
pub trait Store: IdentityStore + AgentStore + Send + Sync {
    /// Inserts a new request and appends `events`, atomically.
    async fn insert_request(
        &self,
        request: &Request,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Replaces the stored request with `after` if it still is as `before`
    /// was read (same state, approvals and enforcement status), and appends
    /// `events`, atomically; otherwise [`StoreError::Conflict`] and nothing
    /// changes. This compare-and-set is what keeps two approvers acting at
    /// the same instant from overwriting each other's approval.
    async fn update_request(
        &self,
        before: &Request,
        after: &Request,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Appends events that change no request (logins, connections).
    async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<Vec<AuditEvent>, StoreError>;

    async fn get_request(&self, id: &RequestId) -> Result<Option<Request>, StoreError>;

    async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;

    /// Audit events with `seq > after`, in order, at most `limit`.
    async fn audit_page(&self, scope: &AuditScope, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError>;

    async fn insert_token(
        &self,
        hash: &str,
        user: &str,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;

    /// The user a token belongs to, if it exists and has not expired.
    async fn token_user(&self, hash: &str, now: Timestamp) -> Result<Option<String>, StoreError>;

    /// Forgets expired tokens; returns how many.
    async fn purge_tokens(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Forgets one token (sign-out); true if it existed.
    async fn delete_token(&self, hash: &str) -> Result<bool, StoreError>;

    /// Forgets the tokens `which` selects and appends `events`, atomically;
    /// nothing is appended when no token matched. Returns how many were
    /// forgotten and the events written.
    async fn revoke_tokens(
        &self,
        which: &TokenSelector,
        events: Vec<NewAuditEvent>,
    ) -> Result<(u64, Vec<AuditEvent>), StoreError>;

    /// Audit events matching `filter` with `seq < before` (newest first), at
    /// most `limit`: the audit page's search.
    async fn audit_search(
        &self,
        scope: &AuditScope,
        filter: &AuditFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Ids of requests changed by any process sharing this database, as
    /// they commit (an empty id means "anything may have changed"). `None`
    /// when no other process can share it (SQLite).
    async fn watch_changes(&self) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<String>>, StoreError>;
}
