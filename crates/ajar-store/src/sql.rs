//! The one implementation of [`Store`](crate::Store) over SQL, generated for
//! each backend by [`sql_store!`]. The backends differ only in what their
//! store types provide: `sql` (placeholder syntax), `serialize_writers`
//! (how concurrent writers of the audit chain are put in line) and
//! `announce` (how other replicas learn that a request changed).

/// Implements `Store` for `$store`, a struct with `pool: sqlx::Pool<$db>`
/// and `write: tokio::sync::Mutex<()>`, whose inherent functions
/// `sql(&str) -> Cow<str>`, `serialize_writers(&mut Transaction)` and
/// `announce(&mut Transaction, &str)` adapt it to its backend.
pub(crate) const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, target, source, request_id, subject, reason, data, prev_hash, hash";

pub(crate) const REQUEST_COLUMNS: &str = "id, target, requester, requester_groups, requester_addr, reason, source, \
     duration_seconds, state, created_at, decide_by, starts_at, ends_at, approvals_required, approvals, \
     closed_by, close_comment, policies, enforcement_status, enforcement_error";

macro_rules! sql_store {
    ($store:ident, $db:ty) => {
        impl $store {
        async fn append(
            tx: &mut Transaction<'_, $db>,
            events: Vec<NewAuditEvent>,
        ) -> Result<Vec<AuditEvent>, StoreError> {
            let head: Option<(i64, String)> =
                sqlx::query_as(&Self::sql("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1"))
                    .fetch_optional(&mut **tx)
                    .await?;
            let (mut seq, mut hash) = head.unwrap_or((0, GENESIS.to_owned()));
            let mut written = Vec::with_capacity(events.len());
            for event in events {
                let event = event.chain(seq, &hash);
                let row = AuditRow::from_event(&event);
                sqlx::query(&Self::sql("INSERT INTO audit_events (seq, at, actor, action, target, source, request_id, subject, reason, data, prev_hash, hash) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
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
                .bind(row.hash)
                .execute(&mut **tx)
                .await?;
                seq = event.seq;
                hash = event.hash.clone();
                written.push(event);
            }
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
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let sql = format!("INSERT INTO requests ({REQUEST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
                let result = bind_request(sqlx::query(&Self::sql(&sql)), RequestRow::from_request(request)).execute(&mut *tx).await;
                if let Err(sqlx::Error::Database(e)) = &result {
                    if e.is_unique_violation() {
                        return Err(StoreError::Duplicate { id: request.id.to_string() });
                    }
                }
                result?;
                let written = Self::append(&mut tx, events).await?;
                Self::announce(&mut tx, request.id.as_str()).await?;
                tx.commit().await?;
                Ok(written)
            }

            async fn update_request(
                &self,
                before: &Request,
                request: &Request,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
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
                .execute(&mut *tx)
                .await?;
                if result.rows_affected() != 1 {
                    return Err(StoreError::Conflict { id: request.id.to_string() });
                }
                let written = Self::append(&mut tx, events).await?;
                Self::announce(&mut tx, request.id.as_str()).await?;
                tx.commit().await?;
                Ok(written)
            }

            async fn append_audit(&self, events: Vec<NewAuditEvent>) -> Result<Vec<AuditEvent>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let written = Self::append(&mut tx, events).await?;
                tx.commit().await?;
                Ok(written)
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
                sql.push_str(" ORDER BY created_at DESC, id LIMIT ?");
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
                let rows = query.bind(limit).fetch_all(&self.pool).await?;
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
