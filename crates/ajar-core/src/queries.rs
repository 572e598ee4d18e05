//! The read side the API and the portal ask for, in the core's own terms:
//! which requests to list ([`RequestQuery`]), which audit events to search
//! ([`AuditQuery`]) and whether the server is ready. The core turns these
//! into the store's filters, so that callers never name a store type.

use ajar_domain::policy::Principal;
use ajar_domain::{Action, AuditEvent, RequestState, Timestamp};
use ajar_store::{AuditFilter, RequestFilter};

use crate::{Core, CoreError, RequestView};

/// Which requests to list; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestQuery {
    /// Any of these states; empty means any state.
    pub states: Vec<RequestState>,
    pub target: Option<String>,
    pub requester: Option<String>,
    /// At most this many; 0 means as many as a listing may hold.
    pub limit: u32,
}

impl RequestQuery {
    fn filter(&self) -> RequestFilter {
        RequestFilter {
            states: self.states.clone(),
            target: self.target.clone(),
            requester: self.requester.clone(),
            enforcement: Vec::new(),
            limit: self.limit,
            offset: 0,
        }
    }
}

/// Narrows an audit search; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<Action>,
    /// From this instant on.
    pub since: Option<Timestamp>,
    /// Before this instant.
    pub until: Option<Timestamp>,
}

impl AuditQuery {
    fn filter(&self) -> AuditFilter {
        AuditFilter {
            actor: self.actor.clone(),
            target: self.target.clone(),
            action: self.action,
            since: self.since,
            until: self.until,
        }
    }

    /// Whether `event` passes: the same tests the store's search makes, for
    /// callers that page through the log with [`Core::audit_page`] and
    /// filter as they go (the portal's export).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.actor.as_ref().is_none_or(|a| &event.actor == a)
            && self.target.as_ref().is_none_or(|t| event.target.as_ref() == Some(t))
            && self.action.is_none_or(|a| event.action == a)
            && self.since.is_none_or(|s| event.at >= s)
            && self.until.is_none_or(|u| event.at < u)
    }
}

/// The store did not answer a readiness check; the text says why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(String);

impl Core {
    /// The requests `who` may see that match `query`, newest first.
    pub async fn find_requests(&self, who: &Principal, query: &RequestQuery) -> Result<Vec<RequestView>, CoreError> {
        self.list_requests(who, query.filter()).await
    }

    /// Searches the audit log, newest first, before the sequence number
    /// `before` and within what `who` may read.
    pub async fn search_audit(
        &self,
        who: &Principal,
        query: &AuditQuery,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, CoreError> {
        self.audit_search(who, &query.filter(), before, limit).await
    }

    /// Whether the server can serve: its database answers.
    pub async fn ready(&self) -> Result<(), NotReady> {
        self.store().ping().await.map_err(|e| NotReady(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(actor: &str, target: Option<&str>, action: Action, at: &str) -> AuditEvent {
        let at: Timestamp = at.parse().unwrap_or_default();
        AuditEvent {
            seq: 1,
            at,
            actor: actor.to_owned(),
            action,
            target: target.map(str::to_owned),
            source: None,
            request_id: None,
            subject: None,
            reason: None,
            data: serde_json::Value::Null,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn an_audit_query_matches_what_every_set_field_allows() {
        let e = event("alice", Some("db"), Action::Released, "2026-11-22T14:03:00Z");
        assert!(AuditQuery::default().matches(&e));
        assert!(AuditQuery { actor: Some("alice".into()), target: Some("db".into()), ..Default::default() }.matches(&e));
        assert!(!AuditQuery { actor: Some("bob".into()), ..Default::default() }.matches(&e));
        assert!(!AuditQuery { target: Some("web".into()), ..Default::default() }.matches(&e));
        assert!(!AuditQuery { action: Some(Action::Requested), ..Default::default() }.matches(&e));
        let untargeted = event("alice", None, Action::Released, "2026-11-22T14:03:00Z");
        assert!(!AuditQuery { target: Some("db".into()), ..Default::default() }.matches(&untargeted));
        // `since` includes its instant, `until` does not, as in the store.
        assert!(AuditQuery { since: Some(e.at), ..Default::default() }.matches(&e));
        assert!(!AuditQuery { until: Some(e.at), ..Default::default() }.matches(&e));
    }

    #[test]
    fn queries_become_the_store_filters_field_by_field() {
        let q = RequestQuery {
            states: vec![RequestState::Pending],
            target: Some("db".into()),
            requester: Some("alice".into()),
            limit: 7,
        };
        let f = q.filter();
        assert_eq!(
            (f.states, f.target, f.requester, f.enforcement, f.limit),
            (vec![RequestState::Pending], Some("db".into()), Some("alice".into()), vec![], 7)
        );
        let a = AuditQuery { actor: Some("bob".into()), action: Some(Action::Denied), ..Default::default() };
        let f = a.filter();
        assert_eq!(
            (f.actor, f.target, f.action, f.since, f.until),
            (Some("bob".into()), None, Some(Action::Denied), None, None)
        );
    }
}
