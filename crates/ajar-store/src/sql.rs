//! The one implementation of [`Store`](crate::Store) over SQL, generated for
//! each backend by [`sql_store!`]. The backends differ only in what their
//! store types provide: `sql` (placeholder syntax), `serialize_writers`
//! (how concurrent writers of the audit chain are put in line) and
//! `announce` (how other replicas learn that a request changed).
//!
//! Writes that change requests or the audit chain go through a **group
//! committer**: one task per store takes every unit of work waiting in its
//! queue and commits them in one transaction (one chain-head read, one
//! fsync), then answers each caller with its own outcome. A unit that loses
//! its compare-and-set gets `Conflict` without disturbing the others; any
//! other error rolls the whole batch back and its units are committed again
//! one transaction each, so one bad unit never fails its neighbours. A unit
//! handed to the committer is committed (or refused) even if its caller
//! stops waiting, so a cancelled API call never leaves half a change.

use ajar_domain::{AuditEvent, NewAuditEvent, Request};
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

pub(crate) const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, target, source, request_id, subject, reason, data, prev_hash, hash";

pub(crate) const REQUEST_COLUMNS: &str = "id, target, requester, requester_groups, requester_addr, reason, source, \
     duration_seconds, state, created_at, decide_by, starts_at, ends_at, approvals_required, approvals, \
     closed_by, close_comment, policies, enforcement_status, enforcement_error";

/// The most units one transaction commits: enough to absorb a burst, small
/// enough that the first caller in a batch does not wait long for the last.
pub(crate) const MAX_BATCH: usize = 256;

/// One unit of work: a change of requests and the audit events that record
/// it, committed together or not at all.
pub(crate) enum Unit {
    Insert { request: Box<Request>, events: Vec<NewAuditEvent> },
    Update { before: Box<Request>, request: Box<Request>, events: Vec<NewAuditEvent> },
    Append { events: Vec<NewAuditEvent> },
}

pub(crate) type Outcome = Result<Vec<AuditEvent>, StoreError>;
pub(crate) type Queued = (Unit, oneshot::Sender<Outcome>);

/// The callers' side of the group committer.
pub(crate) struct Committer {
    queue: mpsc::Sender<Queued>,
}

impl Committer {
    /// A committer and the receiving end its task drains.
    pub(crate) fn new() -> (Self, mpsc::Receiver<Queued>) {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        (Self { queue }, rx)
    }

    /// Queues `unit` and waits until it is committed or refused.
    pub(crate) async fn submit(&self, unit: Unit) -> Outcome {
        let stopped = || StoreError::Unavailable("the store is shutting down".to_owned());
        let (reply, outcome) = oneshot::channel();
        self.queue.send((unit, reply)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Takes whatever else is already waiting behind `first`, up to a batch.
pub(crate) fn gather(first: Queued, queue: &mut mpsc::Receiver<Queued>) -> Vec<Queued> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    batch
}

/// Implements `Store` for `$store`, a struct with `pool: sqlx::Pool<$db>`,
/// `write: Arc<tokio::sync::Mutex<()>>` and `committer: Committer`, whose
/// inherent functions `sql(&str) -> Cow<str>`, `serialize_writers(&mut
/// Transaction)` and `announce(&mut Transaction, &str)` adapt it to its
/// backend. The constructor spawns `Self::commit_loop`.
macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        impl $store {
        /// Commits queued units in batches until every `Committer` is gone.
        async fn commit_loop(
            pool: sqlx::Pool<$db>,
            write: std::sync::Arc<Mutex<()>>,
            mut queue: tokio::sync::mpsc::Receiver<crate::sql::Queued>,
        ) {
            while let Some(first) = queue.recv().await {
                let batch = crate::sql::gather(first, &mut queue);
                let _write = write.lock().await;
                let (units, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let outcomes = match Self::commit_batch(&pool, &units).await {
                    Ok(outcomes) => outcomes,
                    Err(e) if units.len() == 1 => vec![Err(e)],
                    // One unit broke the batch: give every unit a
                    // transaction of its own, so only that one fails.
                    Err(_) => {
                        let mut outcomes = Vec::with_capacity(units.len());
                        for unit in &units {
                            let outcome = Self::commit_batch(&pool, std::slice::from_ref(unit)).await;
                            outcomes.push(outcome.and_then(|mut o| o.pop().unwrap_or_else(|| Ok(Vec::new()))));
                        }
                        outcomes
                    }
                };
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that stopped waiting still had its unit done.
                    let _ = reply.send(outcome);
                }
            }
        }

        /// Runs `units` in one transaction. `Err` means nothing was
        /// committed; `Ok` holds each unit's own outcome (a lost
        /// compare-and-set is a unit's `Conflict`, not the batch's).
        async fn commit_batch(
            pool: &sqlx::Pool<$db>,
            units: &[crate::sql::Unit],
        ) -> Result<Vec<crate::sql::Outcome>, StoreError> {
            let mut tx = pool.begin().await?;
            Self::serialize_writers(&mut tx).await?;
            let mut head = Self::chain_head(&mut tx).await?;
            let mut outcomes = Vec::with_capacity(units.len());
            for unit in units {
                match Self::run_unit(&mut tx, unit, &mut head).await {
                    Err(e @ StoreError::Conflict { .. }) => outcomes.push(Err(e)),
                    // Dropping the transaction rolls it back.
                    Err(e) => return Err(e),
                    Ok(written) => outcomes.push(Ok(written)),
                }
            }
            tx.commit().await?;
            Ok(outcomes)
        }

        async fn run_unit(
            tx: &mut Transaction<'_, $db>,
            unit: &crate::sql::Unit,
            head: &mut (i64, String),
        ) -> Result<Vec<AuditEvent>, StoreError> {
            use crate::sql::Unit;
            let (changed, events) = match unit {
                Unit::Append { events } => return Self::append(tx, events, head).await,
                Unit::Insert { request, events } => {
                    let sql = format!("INSERT INTO requests ({REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                    let result = bind_request(sqlx::query(&Self::sql(&sql)), RequestRow::from_request(request)).execute(&mut **tx).await;
                    if let Err(sqlx::Error::Database(e)) = &result {
                        if e.is_unique_violation() {
                            return Err(StoreError::Duplicate { id: request.id.to_string() });
                        }
                    }
                    result?;
                    (&request.id, events)
                }
                Unit::Update { before, request, events } => {
                    let row = RequestRow::from_request(request);
                    let expected = RequestRow::from_request(before);
                    let result = sqlx::query(&Self::sql("UPDATE requests SET state = ?, duration_seconds = ?, starts_at = ?, ends_at = ?, approvals_required = ?, \
                         approvals = ?, closed_by = ?, close_comment = ?, policies = ?, enforcement_status = ?, enforcement_error = ? \
                         WHERE id = ? AND state = ? AND approvals = ? AND enforcement_status = ?"))
                    .bind(row.state)
                    .bind(row.duration_seconds)
                    .bind(row.starts_at)
                    .bind(row.ends_at)
                    .bind(row.approvals_required)
                    .bind(row.approvals)
                    .bind(row.closed_by)
                    .bind(row.close_comment)
                    .bind(row.policies)
                    .bind(row.enforcement_status)
                    .bind(row.enforcement_error)
                    .bind(row.id)
                    .bind(expected.state)
                    .bind(expected.approvals)
                    .bind(expected.enforcement_status)
                    .execute(&mut **tx)
                    .await?;
                    if result.rows_affected() != 1 {
                        return Err(StoreError::Conflict { id: request.id.to_string() });
                    }
                    (&request.id, events)
                }
            };
            let written = Self::append(tx, events, head).await?;
            Self::announce(tx, changed.as_str()).await?;
            Ok(written)
        }

        /// The sequence number and hash of the newest audit event.
        /// Appends `events` after the chain head and commits `tx`: the end of
        /// every unit of work that is not a request change.
        async fn append_and_commit(
            mut tx: Transaction<'_, $db>,
            events: &[NewAuditEvent],
        ) -> Result<Vec<AuditEvent>, StoreError> {
            let mut head = Self::chain_head(&mut tx).await?;
            let written = Self::append(&mut tx, events, &mut head).await?;
            tx.commit().await?;
            Ok(written)
        }

        async fn chain_head(tx: &mut Transaction<'_, $db>) -> Result<(i64, String), StoreError> {
            let head: Option<(i64, String)> =
                sqlx::query_as(&Self::sql("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"))
                    .fetch_optional(&mut **tx)
                    .await?;
            Ok(head.unwrap_or((0, GENESIS.to_owned())))
        }

        /// Chains `events` after `head` and inserts them in one statement;
        /// `head` moves to the last of them.
        async fn append(
            tx: &mut Transaction<'_, $db>,
            events: &[NewAuditEvent],
            head: &mut (i64, String),
        ) -> Result<Vec<AuditEvent>, StoreError> {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let mut written = Vec::with_capacity(events.len());
            for event in events {
                let event = event.clone().chain(head.0, &head.1);
                *head = (event.seq, event.hash.clone());
                written.push(event);
            }
            let marks = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; written.len()].join(", ");
            let sql = format!("INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES {marks}");
            let sql = Self::sql(&sql);
            let mut query = sqlx::query(&sql);
            for event in &written {
                let row = AuditRow::from_event(event);
                query = query
                    .bind(row.seq)
                    .bind(row.at)
                    .bind(row.actor)
                    .bind(row.action)
                    .bind(row.target)
                    .bind(row.source)
                    .bind(row.request_id)
                    .bind(row.subject)
                    .bind(row.reason)
                    .bind(row.data)
                    .bind(row.prev_hash)
                    .bind(row.hash);
            }
            query.execute(&mut **tx).await?;
            Ok(written)
        }
        }

        fn bind_request<'q>(
            query: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            row: RequestRow,
        ) -> sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>> {
            query
                .bind(row.id)
                .bind(row.target)
                .bind(row.requester)
                .bind(row.requester_groups)
                .bind(row.requester_addr)
                .bind(row.reason)
                .bind(row.source)
                .bind(row.duration_seconds)
                .bind(row.state)
                .bind(row.created_at)
                .bind(row.decide_by)
                .bind(row.starts_at)
                .bind(row.ends_at)
                .bind(row.approvals_required)
                .bind(row.approvals)
                .bind(row.closed_by)
                .bind(row.close_comment)
                .bind(row.policies)
                .bind(row.enforcement_status)
                .bind(row.enforcement_error)
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn insert_request(
                &self,
                request: &Request,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                self.committer.submit(crate::sql::Unit::Insert { request: Box::new(request.clone()), events }).await
            }

            async fn update_request(
                &self,
                before: &Request,
                request: &Request,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let unit = crate::sql::Unit::Update {
                    before: Box::new(before.clone()),
                    request: Box::new(request.clone()),
                    events,
                };
                self.committer.submit(unit).await
            }

            async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<Vec<AuditEvent>, StoreError> {
                self.committer.submit(crate::sql::Unit::Append { events }).await
            }

            async fn get_request(&self, id: &RequestId) -> Result<Option<Request>, StoreError> {
                let sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?");
                let row: Option<RequestRow> = sqlx::query_as(&Self::sql(&sql)).bind(id.as_str()).fetch_optional(&self.pool).await?;
                row.map(RequestRow::into_request).transpose()
            }

            async fn list_requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
                let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE 1 = 1");
                if !filter.states.is_empty() {
                    let marks = vec!["?"; filter.states.len()].join(", ");
                    sql.push_str(&format!(" AND state IN ({marks})"));
                }
                if !filter.enforcement.is_empty() {
                    let marks = vec!["?"; filter.enforcement.len()].join(", ");
                    sql.push_str(&format!(" AND enforcement_status IN ({marks})"));
                }
                if filter.target.is_some() {
                    sql.push_str(" AND target = ?");
                }
                if filter.requester.is_some() {
                    sql.push_str(" AND requester = ?");
                }
                sql.push_str(" ORDER BY created_at DESC, id LIMIT ? OFFSET ?");
                let sql = Self::sql(&sql);
                let mut query = sqlx::query_as::<_, RequestRow>(&sql);
                for state in &filter.states {
                    query = query.bind(state.as_str());
                }
                for status in &filter.enforcement {
                    query = query.bind(status.as_str());
                }
                if let Some(target) = &filter.target {
                    query = query.bind(target);
                }
                if let Some(requester) = &filter.requester {
                    query = query.bind(requester);
                }
                let limit = if filter.limit == 0 { i64::MAX } else { i64::from(filter.limit) };
                let rows = query.bind(limit).bind(i64::from(filter.offset)).fetch_all(&self.pool).await?;
                rows.into_iter().map(RequestRow::into_request).collect()
            }

            async fn audit_page(&self, scope: &AuditScope, after: i64, limit: u32) -> Result<Vec<AuditEvent>, StoreError> {
                let columns = AUDIT_COLUMNS;
                let rows: Vec<AuditRow> = match scope {
                    AuditScope::All => {
                        sqlx::query_as(&Self::sql(&format!("SELECT {columns} FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?")))
                            .bind(after)
                            .bind(i64::from(limit))
                            .fetch_all(&self.pool)
                            .await?
                    }
                    AuditScope::Person(name) => {
                        sqlx::query_as(&Self::sql(&format!(
                        "SELECT {columns} FROM audit_events WHERE seq > ? AND (subject = ? OR actor = ?) ORDER BY seq LIMIT ?"
                    )))
                        .bind(after)
                        .bind(name)
                        .bind(name)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.into_iter().map(AuditRow::into_event).collect()
            }

            async fn insert_token(
                &self,
                hash: &str,
                user: &str,
                created_at: Timestamp,
                expires_at: Timestamp,
            ) -> Result<(), StoreError> {
                let _write = self.write.lock().await;
                sqlx::query(&Self::sql("INSERT INTO tokens (hash, user_name, created_at, expires_at) VALUES (?, ?, ?, ?)"))
                    .bind(hash)
                    .bind(user)
                    .bind(micros(created_at))
                    .bind(micros(expires_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn token_user(&self, hash: &str, now: Timestamp) -> Result<Option<String>, StoreError> {
                let user: Option<(String,)> = sqlx::query_as(&Self::sql("SELECT user_name FROM tokens WHERE hash = ? AND expires_at > ?"))
                    .bind(hash)
                    .bind(micros(now))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(user.map(|(u,)| u))
            }

            async fn purge_tokens(&self, now: Timestamp) -> Result<u64, StoreError> {
                let _write = self.write.lock().await;
                let result =
                    sqlx::query(&Self::sql("DELETE FROM tokens WHERE expires_at <= ?")).bind(micros(now)).execute(&self.pool).await?;
                Ok(result.rows_affected())
            }

            async fn delete_token(&self, hash: &str) -> Result<bool, StoreError> {
                let _write = self.write.lock().await;
                let result = sqlx::query(&Self::sql("DELETE FROM tokens WHERE hash = ?")).bind(hash).execute(&self.pool).await?;
                Ok(result.rows_affected() > 0)
            }

            async fn revoke_tokens(
                &self,
                which: &$crate::TokenSelector,
                events: Vec<NewAuditEvent>,
            ) -> Result<(u64, Vec<AuditEvent>), StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let (statement, key) = match which {
                    $crate::TokenSelector::Hash(hash) => ("DELETE FROM tokens WHERE hash = ?", hash),
                    $crate::TokenSelector::User(user) => ("DELETE FROM tokens WHERE user_name = ?", user),
                };
                let removed = sqlx::query(&Self::sql(statement)).bind(key).execute(&mut *tx).await?.rows_affected();
                if removed == 0 {
                    tx.rollback().await?;
                    return Ok((0, Vec::new()));
                }
                let written = Self::append_and_commit(tx, &events).await?;
                Ok((removed, written))
            }

            async fn audit_search(
                &self,
                scope: &AuditScope,
                filter: &AuditFilter,
                before: i64,
                limit: u32,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE seq < ?");
                if matches!(scope, AuditScope::Person(_)) {
                    sql.push_str(" AND (subject = ? OR actor = ?)");
                }
                for (set, clause) in [
                    (filter.actor.is_some(), " AND actor = ?"),
                    (filter.target.is_some(), " AND target = ?"),
                    (filter.action.is_some(), " AND action = ?"),
                    (filter.since.is_some(), " AND at >= ?"),
                    (filter.until.is_some(), " AND at < ?"),
                ] {
                    if set {
                        sql.push_str(clause);
                    }
                }
                sql.push_str(" ORDER BY seq DESC LIMIT ?");
                let sql = Self::sql(&sql);
                let mut query = sqlx::query_as::<_, AuditRow>(&sql).bind(before);
                if let AuditScope::Person(name) = scope {
                    query = query.bind(name.clone()).bind(name.clone());
                }
                if let Some(actor) = &filter.actor {
                    query = query.bind(actor.clone());
                }
                if let Some(target) = &filter.target {
                    query = query.bind(target.clone());
                }
                if let Some(action) = filter.action {
                    query = query.bind(action.as_str());
                }
                if let Some(since) = filter.since {
                    query = query.bind(micros(since));
                }
                if let Some(until) = filter.until {
                    query = query.bind(micros(until));
                }
                let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
                rows.into_iter().map(AuditRow::into_event).collect()
            }

            async fn watch_changes(
                &self,
            ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<String>>, StoreError> {
                self.change_feed().await
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query(&Self::sql("SELECT 1")).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

pub(crate) use sql_store;

/// Rewrites `?` placeholders as `$1, $2, …` for PostgreSQL. ajar's SQL has
/// no `?` inside string literals, so every `?` is a placeholder.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_in_order() {
        assert_eq!(super::numbered("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
    }
}
