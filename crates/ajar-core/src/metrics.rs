//! Counters the server exports at `/metrics`, kept as plain atomics so that
//! the core does not depend on a metrics library, and the gauge of live
//! requests, kept up to date from the audit events so that a scrape reads
//! memory only.
//!
//! How the gauge stays right: every committed change of this server passes
//! its audit events through [`Metrics::record_event`], and each request
//! event says which state its request is in now (`requested` → pending,
//! `activated` → active, `expired` → ended, ...). An entry remembers the
//! sequence number of the event that set it, so events applied out of order
//! (two commits finishing in either order) never move a request backwards,
//! and ended requests stay as tombstones until the next resync so that a
//! late event cannot bring them back. Changes made by other replicas do not
//! pass through here: [`Metrics::resync`] reads the live requests from the
//! store, and the server runs it after every burst of remote changes and at
//! every reconcile interval, so replicas agree within one interval even if
//! a notification is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ajar_domain::{Action, AuditEvent, RequestState};
use ajar_store::{AuditFilter, AuditScope, RequestFilter, Store, StoreError};

#[derive(Debug, Default)]
pub struct Metrics {
    events: [AtomicU64; Action::ALL.len()],
    /// Sum and count of how late grants were closed after `ends_at`, in
    /// milliseconds.
    expiry_lag_ms_sum: AtomicU64,
    expiry_lag_count: AtomicU64,
    expiry_lag_ms_max: AtomicU64,
    /// How many audit events verification has hashed and compared since
    /// start, and how many times it walked the whole log.
    audit_verified_events: AtomicU64,
    audit_full_verifications: AtomicU64,
    live: Mutex<HashMap<String, Live>>,
}

/// What the gauge knows about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Live {
    /// `None` once the request has ended (a tombstone).
    state: Option<RequestState>,
    /// The audit sequence number this was learnt from.
    seq: i64,
}

/// The state a request is in after an event with `action`, when the action
/// says (`Some(None)`: it ended).
fn state_after(action: Action) -> Option<Option<RequestState>> {
    match action {
        Action::Requested | Action::Approved => Some(Some(RequestState::Pending)),
        Action::Activated => Some(Some(RequestState::Active)),
        Action::Denied
        | Action::Cancelled
        | Action::Expired
        | Action::Revoked
        | Action::Released
        | Action::TimedOut => Some(None),
        _ => None,
    }
}

impl Metrics {
    pub fn record(&self, action: Action) {
        if let Some(i) = Action::ALL.iter().position(|a| *a == action) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a committed audit event and follows its request's state.
    pub fn record_event(&self, event: &AuditEvent) {
        self.record(event.action);
        let (Some(id), Some(state)) = (&event.request_id, state_after(event.action)) else { return };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let entry = live.entry(id.clone()).or_insert(Live { state, seq: event.seq });
        if event.seq >= entry.seq {
            *entry = Live { state, seq: event.seq };
        }
    }

    /// Replaces what the gauge knows with the store's live requests, keeping
    /// what events newer than the store's reading have already said.
    pub async fn resync(&self, store: &dyn Store) -> Result<(), StoreError> {
        // The newest event first: every change up to it is committed, so the
        // listing below shows it (or something newer).
        let head = store
            .audit_search(&AuditScope::All, &AuditFilter::default(), i64::MAX, 1)
            .await?
            .first()
            .map_or(0, |e| e.seq);
        let listed = store
            .list_requests(&RequestFilter {
                states: vec![RequestState::Pending, RequestState::Active],
                ..Default::default()
            })
            .await?;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, entry| entry.seq > head);
        for request in listed {
            live.entry(request.id.to_string()).or_insert(Live { state: Some(request.state), seq: head });
        }
        Ok(())
    }

    /// `(pending, active)` requests now.
    pub fn live_requests(&self) -> (u64, u64) {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values().fold((0, 0), |(pending, active), entry| match entry.state {
            Some(RequestState::Pending) => (pending + 1, active),
            Some(RequestState::Active) => (pending, active + 1),
            _ => (pending, active),
        })
    }

    pub fn record_expiry_lag(&self, lag_ms: u64) {
        self.expiry_lag_ms_sum.fetch_add(lag_ms, Ordering::Relaxed);
        self.expiry_lag_count.fetch_add(1, Ordering::Relaxed);
        self.expiry_lag_ms_max.fetch_max(lag_ms, Ordering::Relaxed);
    }

    pub fn record_verification(&self, events: u64, whole_log: bool) {
        self.audit_verified_events.fetch_add(events, Ordering::Relaxed);
        if whole_log {
            self.audit_full_verifications.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(events verified, whole-log walks)` since start.
    pub fn verification(&self) -> (u64, u64) {
        (self.audit_verified_events.load(Ordering::Relaxed), self.audit_full_verifications.load(Ordering::Relaxed))
    }

    /// `(action, count)` for every action.
    pub fn events(&self) -> Vec<(Action, u64)> {
        Action::ALL.iter().zip(&self.events).map(|(a, c)| (*a, c.load(Ordering::Relaxed))).collect()
    }

    /// `(sum_ms, count, max_ms)` of expiry lag.
    pub fn expiry_lag(&self) -> (u64, u64, u64) {
        (
            self.expiry_lag_ms_sum.load(Ordering::Relaxed),
            self.expiry_lag_count.load(Ordering::Relaxed),
            self.expiry_lag_ms_max.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ajar_domain::audit::GENESIS;
    use ajar_domain::NewAuditEvent;

    use super::*;

    fn event(seq: i64, id: &str, action: Action) -> AuditEvent {
        NewAuditEvent {
            at: chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            actor: "alice".into(),
            target: Some("db".into()),
            source: None,
            request_id: Some(id.into()),
            subject: None,
            reason: None,
            data: payload(action),
        }
        .chain(seq - 1, GENESIS)
    }

    /// A payload of the right shape for `action` (the tests here are about
    /// where events go, not what they say).
    fn payload(action: Action) -> ajar_domain::AuditData {
        use ajar_domain::audit::SignIn;
        use ajar_domain::AuditData;
        match action {
            Action::Requested => AuditData::Requested { duration_seconds: 60, approvals_required: 1, policies: vec![] },
            Action::Approved => AuditData::Approved {},
            Action::Activated => AuditData::Activated { starts_at: None, ends_at: None, approvals: 1 },
            Action::Opened => AuditData::Opened { host: "127.0.0.1".into(), port: 1, open_ms: 0 },
            Action::Closed => AuditData::Closed {},
            Action::Denied => AuditData::Denied {},
            Action::Cancelled => AuditData::Cancelled {},
            Action::Expired => AuditData::Expired { ends_at: None },
            Action::Revoked => AuditData::Revoked {},
            Action::Released => AuditData::Released {},
            Action::TimedOut => AuditData::TimedOut {},
            Action::Login => AuditData::Login(SignIn::Password {}),
            Action::Logout => AuditData::Logout {},
            Action::TokensRevoked => AuditData::TokensRevoked {},
            other => panic!("no test payload for {other}"),
        }
    }

    #[test]
    fn events_move_requests_through_the_gauge_in_any_order() {
        let m = Metrics::default();
        m.record_event(&event(1, "a", Action::Requested));
        m.record_event(&event(2, "b", Action::Requested));
        m.record_event(&event(3, "b", Action::Activated));
        m.record_event(&event(4, "b", Action::Opened));
        assert_eq!(m.live_requests(), (1, 1));
        m.record_event(&event(6, "a", Action::Denied));
        // An event that arrives after a later one changes nothing.
        m.record_event(&event(5, "a", Action::Approved));
        assert_eq!(m.live_requests(), (0, 1));
        m.record_event(&event(7, "b", Action::Expired));
        m.record_event(&event(8, "b", Action::Closed));
        assert_eq!(m.live_requests(), (0, 0));
        assert_eq!(m.events().iter().find(|(a, _)| *a == Action::Requested).map(|(_, n)| *n), Some(2));
    }
}
