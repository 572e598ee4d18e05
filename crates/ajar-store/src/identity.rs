//! Identities vouched for by an identity provider: the [`IdentityStore`]
//! trait and its one SQL implementation, generated per backend by
//! [`identity_store!`] (placeholders are written `$1`, `$2`, which both
//! SQLite and PostgreSQL accept).

use ajar_domain::{AuditEvent, ExternalIdentity, NewAuditEvent, Timestamp};

use crate::StoreError;

#[async_trait::async_trait]
pub trait IdentityStore: Send + Sync {
    /// The identity named `name`, as of its latest sign-in.
    async fn identity(&self, name: &str) -> Result<Option<ExternalIdentity>, StoreError>;

    /// Records a sign-in of `identity` at `at` (creating it the first time,
    /// else replacing its e-mail and groups) and appends `events`,
    /// atomically. Fails with [`StoreError::Conflict`] if the name belongs
    /// to another (issuer, subject) or the account has another name.
    async fn save_identity(
        &self,
        identity: &ExternalIdentity,
        at: Timestamp,
        events: Vec<NewAuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Implements [`IdentityStore`] for a store type of `sql_store!`.
macro_rules! identity_store {
    ($store:ident, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::identity::IdentityStore for $store {
            async fn identity(&self, name: &str) -> Result<Option<ajar_domain::ExternalIdentity>, StoreError> {
                let row: Option<(String, String, String, Option<String>, String)> =
                    sqlx::query_as("SELECT name, issuer, subject, email, groups FROM identities WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(name, issuer, subject, email, groups)| {
                    $crate::identity::decode(name, issuer, subject, email, &groups)
                })
                .transpose()
            }

            async fn save_identity(
                &self,
                identity: &ajar_domain::ExternalIdentity,
                at: Timestamp,
                events: Vec<NewAuditEvent>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let _write = self.write.lock().await;
                let mut tx = self.pool.begin().await?;
                Self::serialize_writers(&mut tx).await?;
                let groups = $crate::identity::encode_groups(identity);
                let result = sqlx::query(
                    "INSERT INTO identities (name, issuer, subject, email, groups, first_seen, last_seen) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (name) DO UPDATE SET email = $4, groups = $5, last_seen = $6 \
                     WHERE identities.issuer = $2 AND identities.subject = $3",
                )
                .bind(identity.name.as_str())
                .bind(&identity.issuer)
                .bind(&identity.subject)
                .bind(identity.email.as_deref())
                .bind(groups)
                .bind(micros(at))
                .execute(&mut *tx)
                .await;
                let conflict = || StoreError::Conflict { id: identity.name.to_string() };
                match result {
                    Ok(done) if done.rows_affected() == 1 => {}
                    Ok(_) => return Err(conflict()),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(conflict()),
                    Err(e) => return Err(e.into()),
                }
                Self::append_and_commit(tx, &events).await
            }
        }
    };
}

pub(crate) use identity_store;

pub(crate) fn encode_groups(identity: &ExternalIdentity) -> String {
    let names: Vec<&str> = identity.groups.iter().map(|g| g.as_str()).collect();
    serde_json::Value::from(names).to_string()
}

pub(crate) fn decode(
    name: String,
    issuer: String,
    subject: String,
    email: Option<String>,
    groups: &str,
) -> Result<ExternalIdentity, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("identity {name:?}: {what}"));
    let groups: Vec<String> = serde_json::from_str(groups).map_err(|e| corrupt(format!("groups: {e}")))?;
    let groups = groups
        .iter()
        .map(|g| ajar_domain::Name::parse(g))
        .collect::<Result<_, _>>()
        .map_err(|e| corrupt(e.to_string()))?;
    let name = ajar_domain::Name::parse(&name).map_err(|e| corrupt(e.to_string()))?;
    Ok(ExternalIdentity { name, issuer, subject, email, groups })
}
