//! The imperative shell every use case runs in: the [`Core`] with the store,
//! the catalog and settings in force, the drivers and the clock, and the one way
//! a change is made — the domain decides, the change commits with its audit
//! events, and only then does a driver act ([`Core::apply`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use ajar_domain::{AuditEvent, Catalog, Change, GrantDuration, Name, Placement, Request, RequestState, Timestamp};
use ajar_enforce::Driver;
use ajar_store::{RequestFilter, Store};
use tokio::sync::{broadcast, mpsc};
use tracing::error;

use crate::audit::file::AuditFile;
use crate::audit::verify::Checked;
use crate::deadline::Deadline;
use crate::identity::auth::HashMemory;
use crate::identity::limits::{FailedSignIns, LoginLimiter};
use crate::metrics::Metrics;
use crate::{Clock, CoreError};

/// Settings the use cases read; reloadable with the catalog.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub approval_timeout: GrantDuration,
    pub token_ttl: GrantDuration,
    /// How many pending requests one requester may have at once.
    pub max_pending_per_requester: u32,
    /// Whether the config's `[[users]]` may sign in with a password
    /// (`oidc.local_users`); true without SSO.
    pub local_users: bool,
}

pub struct Core {
    pub(crate) store: Arc<dyn Store>,
    catalog: RwLock<Arc<Catalog>>,
    settings: RwLock<CoreSettings>,
    pub(crate) drivers: BTreeMap<Placement, Arc<dyn Driver>>,
    clock: Arc<dyn Clock>,
    audit_file: Option<AuditFile>,
    pub(crate) limiter: LoginLimiter,
    /// Password checks running at once (argon2 takes ~19 MiB and tens of
    /// milliseconds each).
    pub(crate) hashing: Arc<tokio::sync::Semaphore>,
    /// argon2's work areas, one per check that may run at once.
    pub(crate) hash_memory: HashMemory,
    pub(crate) failed_sign_ins: FailedSignIns,
    /// One lock per requester creating a request right now.
    pub(crate) creating: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Metrics,
    deadlines: OnceLock<mpsc::UnboundedSender<Deadline>>,
    /// The sequence number of every audit event written, for live views.
    pub(crate) changes: broadcast::Sender<i64>,
    /// Hashes of JWT bearer tokens whose first use was audited.
    pub(crate) seen_bearers: Mutex<HashSet<String>>,
    /// How far the audit log is known to verify, so that a view can check
    /// only the events written since.
    pub(crate) audit_checked: Checked,
    /// Tokens, certificates and live links of agents, when `[agents]` is on.
    pub(crate) agent_plane: OnceLock<Arc<dyn crate::agents::AgentPlane>>,
    /// Agents revoked here, for the agent listener to drop at once.
    pub(crate) agent_revoked: broadcast::Sender<Name>,
}

/// How many password checks may run at once: one per core, at least two.
fn hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Catalog,
        settings: CoreSettings,
        drivers: BTreeMap<Placement, Arc<dyn Driver>>,
        clock: Arc<dyn Clock>,
        audit_file: Option<AuditFile>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            catalog: RwLock::new(Arc::new(catalog)),
            settings: RwLock::new(settings),
            drivers,
            clock,
            audit_file,
            limiter: LoginLimiter::default(),
            hashing: Arc::new(tokio::sync::Semaphore::new(hash_slots())),
            hash_memory: HashMemory::default(),
            failed_sign_ins: FailedSignIns::default(),
            creating: Mutex::default(),
            metrics: Metrics::default(),
            deadlines: OnceLock::new(),
            changes: broadcast::channel(256).0,
            seen_bearers: Mutex::default(),
            audit_checked: Checked::default(),
            agent_plane: OnceLock::new(),
            agent_revoked: broadcast::channel(64).0,
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn settings(&self) -> CoreSettings {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new catalog and settings in force.
    pub(crate) fn swap_catalog(&self, catalog: Catalog, settings: CoreSettings) {
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub(crate) fn audit_file(&self) -> Option<&AuditFile> {
        self.audit_file.as_ref()
    }

    pub(crate) fn set_scheduler(&self, tx: mpsc::UnboundedSender<Deadline>) {
        let _ = self.deadlines.set(tx);
    }

    /// Asks the scheduler to look at `request` at its next deadline.
    pub(crate) fn schedule(&self, request: &Request) {
        let at = match request.state {
            RequestState::Pending => request.decide_by,
            RequestState::Active => match request.ends_at {
                Some(end) => end,
                None => return,
            },
            _ => return,
        };
        if let Some(tx) = self.deadlines.get() {
            let _ = tx.send(Deadline { id: request.id.clone(), at });
        }
    }

    /// A stream of "something changed" signals (the newest audit sequence
    /// number). It carries no details, so every signed-in view may have it;
    /// views reload what their viewer may see.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    /// What follows every commit of audit events: metrics, live views and
    /// the audit file.
    pub(crate) async fn after_audit(&self, written: &[AuditEvent]) {
        for event in written {
            self.metrics.record_event(event);
        }
        if let Some(last) = written.last() {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(last.seq);
        }
        if let Some(file) = &self.audit_file {
            if let Err(e) = file.sync(self.store.as_ref(), written).await {
                error!(error = %e, "cannot write the audit file; the database keeps the events and the file catches up at the next write");
            }
        }
    }

    /// Every request something can still happen to: pending or active.
    pub(crate) async fn live_requests(&self) -> Result<Vec<Request>, CoreError> {
        let live = RequestFilter { states: vec![RequestState::Pending, RequestState::Active], ..Default::default() };
        Ok(self.store.list_requests(&live).await?)
    }

    /// Commits a change of `before` (if nobody changed it meanwhile) with its
    /// audit events, then carries out its effect.
    pub(crate) async fn apply(&self, before: &Request, change: Change) -> Result<Request, CoreError> {
        let Change { next, events, effect } = change;
        let written = self.store.update_request(before, &next, events).await?;
        self.after_audit(&written).await;
        Ok(self.enforce(next, effect).await)
    }
}
