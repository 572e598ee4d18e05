//! The audit log as a use case: recording what changes no request (sign-ins,
//! reloads, connections, the server's start), reading it within what the
//! reader may see, the second copy in a file ([`file`]) and verifying both
//! ([`verify`]).

pub mod file;
pub mod verify;

use ajar_domain::connection::{ConnectionEvent, ConnectionEventKind};
use ajar_domain::policy::Principal;
use ajar_domain::{AuditData, AuditEvent, NewAuditEvent, Timestamp};
use ajar_store::{AuditFilter, AuditScope};
use tracing::error;

use crate::{Core, CoreError};

/// The outcome of an audit verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditReport {
    pub ok: bool,
    pub events: i64,
    pub head_hash: String,
    /// The first problem found, with the sequence number of the event.
    pub problem: Option<AuditProblem>,
    /// How many events this verification hashed and compared: all of them
    /// for a whole-log check, the new ones for [`Core::verify_audit_recent`].
    pub checked: i64,
    /// When the whole log was last walked (by this check or an earlier one).
    pub whole_log_checked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditProblem {
    pub seq: i64,
    pub message: String,
}

impl Core {
    /// Appends events that change no request.
    pub async fn record(&self, events: Vec<NewAuditEvent>) -> Result<(), CoreError> {
        let written = self.store.append_audit(events).await?;
        self.after_audit(&written).await;
        Ok(())
    }

    /// Audits this server's start: its version and the config it runs.
    pub async fn record_started(&self, version: &str, config: &str) -> Result<(), CoreError> {
        let started = AuditData::ServerStarted { version: version.to_owned(), config: config.to_owned() };
        self.record(vec![NewAuditEvent::system(self.now(), started)]).await
    }

    /// Audits what happened to one connection at the gateway, as the
    /// person whose grant admitted it (a refused one, as its address).
    pub async fn record_connection(&self, event: ConnectionEvent) {
        let subject = match &event.grant {
            Some(id) => self.store.get_request(id).await.ok().flatten().map(|r| r.requester.to_string()),
            None => None,
        };
        let peer = event.peer.ip().to_string();
        let audit = NewAuditEvent {
            at: self.now(),
            actor: subject.clone().unwrap_or_else(|| peer.clone()),
            target: Some(event.target.clone()),
            source: Some(peer),
            request_id: event.grant.as_ref().map(|g| g.to_string()),
            subject,
            reason: None,
            data: match event.kind {
                ConnectionEventKind::Refused { .. } => AuditData::ConnectionRefused(event),
                _ => AuditData::Connection(event),
            },
        };
        if let Err(e) = self.record(vec![audit]).await {
            error!(error = %e, "cannot audit a gateway connection");
        }
    }

    fn audit_scope(&self, who: &Principal) -> AuditScope {
        if who.may_read_all_audit(&self.catalog()) {
            AuditScope::All
        } else {
            AuditScope::Person(who.name.to_string())
        }
    }

    /// Events after `after` in sequence order, within what `who` may read.
    pub async fn audit_page(&self, who: &Principal, after: i64, limit: u32) -> Result<Vec<AuditEvent>, CoreError> {
        Ok(self.store.audit_page(&self.audit_scope(who), after, limit.clamp(1, 1000)).await?)
    }

    /// Searches the audit log, newest first, within what `who` may read.
    pub(crate) async fn audit_search(
        &self,
        who: &Principal,
        filter: &AuditFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, CoreError> {
        Ok(self.store.audit_search(&self.audit_scope(who), filter, before, limit.clamp(1, 1000)).await?)
    }
}
