//! Agents and their enrolment tokens: the [`AgentStore`] trait and its one
//! SQL implementation, generated per backend by [`agent_store!`]. Every
//! change that matters to security (a token created or consumed, an agent
//! enrolled, renewed or revoked) commits with its audit events.

use ajar_domain::{AgentRecord, AgentToken, AuditEvent, Name, NewAuditEvent, Timestamp};

use crate::codec::from_micros;
use crate::StoreError;

/// Why an enrolment was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolRefusal {
    UnknownToken,
    /// Already used, by the agent named.
    Used {
        by: String,
    },
    Expired {
        at: Timestamp,
    },
    /// An agent of this name exists and is not revoked.
    NameTaken {
        group: Name,
    },
}

/// What an enrolment token says, read before it is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub group: Name,
    pub expires_at: Timestamp,
    pub used_by: Option<String>,
}

#[async_trait::async_trait]
pub trait AgentStore: Send + Sync {
    /// Saves a new enrolment token and appends `events`, atomically.
    async fn insert_agent_token(
        &self,
        token: &AgentToken,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// The token with this hash, used or not.
    async fn agent_token(&self, hash: &str) -> Result<Option<TokenState>, StoreError>;

    /// Consumes the token `hash` (unused, unexpired at `now`, for
    /// `agent.group`) and records `agent`, replacing a revoked agent of the
    /// same name, with `events`, atomically. On a refusal nothing changes.
    async fn enroll_agent(
        &self,
        hash: &str,
        now: Timestamp,
        agent: &AgentRecord,
        events: Vec<NewAuditEvent>,
    ) -> Result<Result<Vec<AuditEvent>, EnrolRefusal>, StoreError>;

    async fn agent(&self, name: &str) -> Result<Option<AgentRecord>, StoreError>;

    /// Every agent, by name.
    async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError>;

    /// Replaces agent `name`'s certificate if it still is `old_serial` and
    /// the agent is not revoked, with `events`; `None` when it was not.
    async fn renew_agent(
        &self,
        name: &str,
        old_serial: &str,
        serial: &str,
        not_after: Timestamp,
        events: Vec<NewAuditEvent>,
    ) -> Result<Option<Vec<AuditEvent>>, StoreError>;

    /// Marks agent `name` revoked by `by` with `events`; `None` when there
    /// is no such agent or it already was.
    async fn revoke_agent(
        &self,
        name: &str,
        at: Timestamp,
        by: &Name,
        events: Vec<NewAuditEvent>,
    ) -> Result<Option<Vec<AuditEvent>>, StoreError>;

    /// Notes that agent `name`, running `version`, connected or
    /// disconnected at `at`, with `events`.
    async fn agent_seen(
        &self,
        name: &str,
        version: &str,
        at: Timestamp,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

pub(crate) type AgentRow = (String, String, String, i64, i64, String, Option<i64>, Option<i64>, Option<String>);

pub(crate) const AGENT_COLUMNS: &str =
    "name, agent_group, cert_serial, cert_not_after, enrolled_at, version, last_seen, revoked_at, revoked_by";

pub(crate) fn decode(row: AgentRow) -> Result<AgentRecord, StoreError> {
    let (name, group, cert_serial, not_after, enrolled_at, version, last_seen, revoked_at, revoked_by) = row;
    let corrupt = |what: String| StoreError::Corrupt(format!("agent {name:?}: {what}"));
    let parse = |s: &str| Name::parse(s).map_err(|e| corrupt(e.to_string()));
    Ok(AgentRecord {
        name: parse(&name)?,
        group: parse(&group)?,
        cert_serial,
        cert_not_after: from_micros(not_after)?,
        enrolled_at: from_micros(enrolled_at)?,
        version,
        last_seen: last_seen.map(from_micros).transpose()?,
        revoked_at: revoked_at.map(from_micros).transpose()?,
        revoked_by: revoked_by.as_deref().map(parse).transpose()?,
    })
}

pub(crate) fn token_state(group: &str, expires_at: i64, used_by: Option<String>) -> Result<TokenState, StoreError> {
    Ok(TokenState {
        group: Name::parse(group).map_err(|e| StoreError::Corrupt(format!("agent token group: {e}")))?,
        expires_at: from_micros(expires_at)?,
        used_by,
    })
}

/// Implements [`AgentStore`] for a store type of `sql_store!`.
macro_rules! agent_store {
    ($store:ident, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::agents::AgentStore for $store {
            async fn insert_agent_token(
                &self,
                token: &ajar_domain::AgentToken,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                sqlx::query(
                    "INSERT INTO agent_tokens (hash, agent_group, created_by, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&token.hash)
                .bind(token.group.as_str())
                .bind(token.created_by.as_str())
                .bind(micros(token.created_at))
                .bind(micros(token.expires_at))
                .execute(&mut *tx)
                .await?;
                Self::append_and_commit(tx, &events).await
            }

            async fn agent_token(&self, hash: &str) -> Result<Option<$crate::agents::TokenState>, StoreError> {
                let row: Option<(String, i64, Option<String>)> =
                    sqlx::query_as("SELECT agent_group, expires_at, used_by FROM agent_tokens WHERE hash = $1")
                        .bind(hash)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(group, expires_at, used_by)| $crate::agents::token_state(&group, expires_at, used_by))
                    .transpose()
            }

            async fn enroll_agent(
                &self,
                hash: &str,
                now: Timestamp,
                agent: &ajar_domain::AgentRecord,
                events: Vec<NewAuditEvent>,
            ) -> Result<Result<Vec<AuditEvent>, $crate::agents::EnrolRefusal>, StoreError> {
                use $crate::agents::EnrolRefusal;
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let row: Option<(String, i64, Option<String>)> =
                    sqlx::query_as("SELECT agent_group, expires_at, used_by FROM agent_tokens WHERE hash = $1")
                        .bind(hash)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((group, expires_at, used_by)) = row else {
                    return Ok(Err(EnrolRefusal::UnknownToken));
                };
                let state = $crate::agents::token_state(&group, expires_at, used_by)?;
                if let Some(by) = state.used_by {
                    return Ok(Err(EnrolRefusal::Used { by }));
                }
                if state.expires_at <= now {
                    return Ok(Err(EnrolRefusal::Expired { at: state.expires_at }));
                }
                if state.group != agent.group {
                    // The caller builds the agent from the token it read; a
                    // token cannot change group, so this is a bug.
                    return Err(StoreError::Corrupt(format!(
                        "enrolment token for group {} used for an agent of group {}",
                        state.group, agent.group
                    )));
                }
                let inserted = sqlx::query(
                    "INSERT INTO agents (name, agent_group, cert_serial, cert_not_after, enrolled_at, version) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (name) DO UPDATE SET agent_group = $2, cert_serial = $3, cert_not_after = $4, \
                     enrolled_at = $5, version = $6, last_seen = NULL, revoked_at = NULL, revoked_by = NULL \
                     WHERE agents.revoked_at IS NOT NULL",
                )
                .bind(agent.name.as_str())
                .bind(agent.group.as_str())
                .bind(&agent.cert_serial)
                .bind(micros(agent.cert_not_after))
                .bind(micros(agent.enrolled_at))
                .bind(&agent.version)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    let group: Option<(String,)> = sqlx::query_as("SELECT agent_group FROM agents WHERE name = $1")
                        .bind(agent.name.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                    let group =
                        group.and_then(|(g,)| ajar_domain::Name::parse(&g).ok()).unwrap_or_else(|| agent.group.clone());
                    return Ok(Err(EnrolRefusal::NameTaken { group }));
                }
                let used = sqlx::query(
                    "UPDATE agent_tokens SET used_at = $2, used_by = $3 WHERE hash = $1 AND used_at IS NULL",
                )
                .bind(hash)
                .bind(micros(now))
                .bind(agent.name.as_str())
                .execute(&mut *tx)
                .await?;
                if used.rows_affected() != 1 {
                    return Ok(Err(EnrolRefusal::Used { by: "another agent".to_owned() }));
                }
                Self::append_and_commit(tx, &events).await.map(Ok)
            }

            async fn agent(&self, name: &str) -> Result<Option<ajar_domain::AgentRecord>, StoreError> {
                let sql = format!("SELECT {} FROM agents WHERE name = $1", $crate::agents::AGENT_COLUMNS);
                let row: Option<$crate::agents::AgentRow> =
                    sqlx::query_as(&sql).bind(name).fetch_optional(&self.pool).await?;
                row.map($crate::agents::decode).transpose()
            }

            async fn list_agents(&self) -> Result<Vec<ajar_domain::AgentRecord>, StoreError> {
                let sql = format!("SELECT {} FROM agents ORDER BY name", $crate::agents::AGENT_COLUMNS);
                let rows: Vec<$crate::agents::AgentRow> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
                rows.into_iter().map($crate::agents::decode).collect()
            }

            async fn renew_agent(
                &self,
                name: &str,
                old_serial: &str,
                serial: &str,
                not_after: Timestamp,
                events: Vec<NewAuditEvent>,
            ) -> Result<Option<Vec<AuditEvent>>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let done = sqlx::query(
                    "UPDATE agents SET cert_serial = $3, cert_not_after = $4 \
                     WHERE name = $1 AND cert_serial = $2 AND revoked_at IS NULL",
                )
                .bind(name)
                .bind(old_serial)
                .bind(serial)
                .bind(micros(not_after))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                Self::append_and_commit(tx, &events).await.map(Some)
            }

            async fn revoke_agent(
                &self,
                name: &str,
                at: Timestamp,
                by: &ajar_domain::Name,
                events: Vec<NewAuditEvent>,
            ) -> Result<Option<Vec<AuditEvent>>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let done = sqlx::query(
                    "UPDATE agents SET revoked_at = $2, revoked_by = $3 WHERE name = $1 AND revoked_at IS NULL",
                )
                .bind(name)
                .bind(micros(at))
                .bind(by.as_str())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                Self::append_and_commit(tx, &events).await.map(Some)
            }

            async fn agent_seen(
                &self,
                name: &str,
                version: &str,
                at: Timestamp,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                sqlx::query("UPDATE agents SET version = $2, last_seen = $3 WHERE name = $1")
                    .bind(name)
                    .bind(version)
                    .bind(micros(at))
                    .execute(&mut *tx)
                    .await?;
                Self::append_and_commit(tx, &events).await
            }
        }
    };
}

pub(crate) use agent_store;
