//! The use cases, one method each: load, decide (pure), commit with audit,
//! then enforce.

mod audit_check;
mod sso;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock};

use ajar_domain::policy::{self, evaluate, Ask, Principal, Verdict};
use ajar_domain::request::{may_revoke, Actor};
use ajar_domain::text;
use ajar_domain::{
    Action, AuditEvent, Catalog, Change, DriverKind, Effect, Enforcement, EnforcementStatus, GrantDuration,
    NewAuditEvent, Request, RequestId, RequestState, Target, Timestamp,
};
use ajar_enforce::{plan, Driver, DriverError, EndedEarly, GrantSpec, Opened};
use ajar_store::{AuditScope, RequestFilter, Store, StoreError, TokenSelector};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, info, warn};

use crate::audit_file::AuditFile;
use crate::auth::{self, FailedSignIns, LoginLimiter};
use crate::metrics::Metrics;
use crate::scheduler::Deadline;
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

/// A target as a caller may see it: with the combined limits of the
/// policies that let them request it.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub target: Target,
    pub max_duration: GrantDuration,
    pub reason_required: bool,
    pub approvals_required: u32,
    pub approvers: Vec<String>,
    pub policies: Vec<String>,
    pub connect: Option<Opened>,
}

/// A request with where to connect once its path is open.
#[derive(Debug, Clone)]
pub struct RequestView {
    pub request: Request,
    pub connect: Option<Opened>,
}

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

pub struct Core {
    store: Arc<dyn Store>,
    catalog: RwLock<Arc<Catalog>>,
    settings: RwLock<CoreSettings>,
    drivers: BTreeMap<DriverKind, Arc<dyn Driver>>,
    clock: Arc<dyn Clock>,
    audit_file: Option<AuditFile>,
    limiter: LoginLimiter,
    /// Password checks running at once (argon2 takes ~19 MiB and tens of
    /// milliseconds each).
    hashing: Arc<tokio::sync::Semaphore>,
    /// argon2's work areas, one per check that may run at once.
    hash_memory: auth::HashMemory,
    failed_sign_ins: FailedSignIns,
    /// One lock per requester creating a request right now.
    creating: std::sync::Mutex<std::collections::HashMap<ajar_domain::Name, Arc<tokio::sync::Mutex<()>>>>,
    metrics: Metrics,
    deadlines: OnceLock<mpsc::UnboundedSender<Deadline>>,
    /// The sequence number of every audit event written, for live views.
    changes: broadcast::Sender<i64>,
    /// Hashes of JWT bearer tokens whose first use was audited.
    seen_bearers: std::sync::Mutex<std::collections::HashSet<String>>,
    /// How far the audit log is known to verify, so that a view can check
    /// only the events written since.
    audit_checked: audit_check::Checked,
}

/// How many requests a listing returns at most.
const LIST_LIMIT: u32 = 500;

/// How long a sign-in waits for a free password check before it is asked
/// to retry.
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Passwords longer than this are never checked for real.
const MAX_PASSWORD_BYTES: usize = 1024;

/// How many password checks may run at once: one per core, at least two.
fn hash_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8)
}

impl Core {
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Catalog,
        settings: CoreSettings,
        drivers: BTreeMap<DriverKind, Arc<dyn Driver>>,
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
            hash_memory: auth::HashMemory::default(),
            failed_sign_ins: FailedSignIns::default(),
            creating: std::sync::Mutex::default(),
            metrics: Metrics::default(),
            deadlines: OnceLock::new(),
            changes: broadcast::channel(256).0,
            seen_bearers: std::sync::Mutex::default(),
            audit_checked: audit_check::Checked::default(),
        })
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn settings(&self) -> CoreSettings {
        self.settings.read().unwrap_or_else(|e| e.into_inner()).clone()
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

    pub(crate) fn set_scheduler(&self, tx: mpsc::UnboundedSender<Deadline>) {
        let _ = self.deadlines.set(tx);
    }

    /// Asks the scheduler to look at `request` at its next deadline.
    fn schedule(&self, request: &Request) {
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

    // ---- audit ------------------------------------------------------------

    /// Appends events that change no request.
    pub async fn record(&self, events: Vec<NewAuditEvent>) -> Result<(), CoreError> {
        let written = self.store.append_audit(events).await?;
        self.after_audit(&written).await;
        Ok(())
    }

    /// A stream of "something changed" signals (the newest audit sequence
    /// number). It carries no details, so every signed-in view may have it;
    /// views reload what their viewer may see.
    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    async fn after_audit(&self, written: &[AuditEvent]) {
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

    fn request_event(
        &self,
        request: &Request,
        action: Action,
        actor: &Actor,
        reason: Option<String>,
        data: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: self.now(),
            actor: actor.label(),
            action,
            target: Some(request.target.to_string()),
            source: Some(request.source.to_string()),
            request_id: Some(request.id.to_string()),
            subject: Some(request.requester.to_string()),
            reason,
            data,
        }
    }

    /// The audit events a domain change implies.
    fn change_events(&self, change: &Change) -> Vec<NewAuditEvent> {
        let r = &change.next;
        change
            .actions
            .iter()
            .map(|action| {
                let (reason, data) = match action {
                    Action::Requested => (
                        Some(r.reason.clone()),
                        json!({
                            "duration_seconds": r.duration.as_secs(),
                            "approvals_required": r.approvals_required,
                            "policies": r.policies,
                        }),
                    ),
                    Action::Activated => (
                        None,
                        json!({ "starts_at": r.starts_at, "ends_at": r.ends_at, "approvals": r.approvals.len() }),
                    ),
                    Action::Expired => (None, json!({ "ends_at": r.ends_at })),
                    _ => (change.comment.clone(), json!({})),
                };
                self.request_event(r, *action, &change.actor, reason, data)
            })
            .collect()
    }

    /// Commits a change of `before` (if nobody changed it meanwhile) with its
    /// audit events, then carries out its effect.
    async fn apply(&self, before: &Request, change: Change) -> Result<Request, CoreError> {
        let events = self.change_events(&change);
        let written = self.store.update_request(before, &change.next, events).await?;
        self.after_audit(&written).await;
        Ok(self.enforce(change.next, change.effect).await)
    }

    async fn enforce(&self, request: Request, effect: Option<Effect>) -> Request {
        match effect {
            Some(Effect::Open) => {
                self.schedule(&request);
                self.open_grant(request).await
            }
            Some(Effect::Close) => self.close_grant(request).await,
            None => {
                self.schedule(&request);
                request
            }
        }
    }

    fn driver_for(&self, catalog: &Catalog, request: &Request) -> Result<(Target, Arc<dyn Driver>), DriverError> {
        let target = catalog.target(request.target.as_str()).ok_or_else(|| {
            DriverError::permanent(format!("target {} is no longer in the configuration", request.target))
        })?;
        let driver = self
            .drivers
            .get(&target.kind())
            .ok_or_else(|| DriverError::permanent(format!("driver {} is not running on this server", target.kind())))?;
        Ok((target.clone(), driver.clone()))
    }

    /// Opens the path of an active grant and records how that went.
    async fn open_grant(&self, request: Request) -> Request {
        let catalog = self.catalog();
        let started = std::time::Instant::now();
        let outcome = match self.driver_for(&catalog, &request) {
            Ok((target, driver)) => {
                let Some(ends_at) = request.ends_at else { return request };
                let spec = grant_spec(&request, target, ends_at);
                driver.open(&spec).await.map(|opened| (opened, driver))
            }
            Err(e) => Err(e),
        };
        // How long opening took (an instance launch takes seconds), for the
        // audit event.
        let open_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(e) = &outcome {
            // The reconciler retries a failed open every pass; the same
            // failure again is logged, not audited again, so that an hour of
            // a full security group is one event, not hundreds.
            let same = request.enforcement.status == EnforcementStatus::Failed
                && request.enforcement.error.as_deref() == Some(e.message.as_str());
            if same {
                warn!(request = %request.id, error = %e, "opening the grant still fails; the reconciler retries");
                return request;
            }
        }
        let mut next = request.clone();
        let (event, driver) = match outcome {
            Ok((opened, driver)) => {
                next.enforcement = Enforcement::status(EnforcementStatus::Open);
                let data = json!({ "host": opened.host, "port": opened.port, "open_ms": open_ms });
                (self.request_event(&next, Action::Opened, &Actor::System, None, data), Some(driver))
            }
            Err(e) => {
                warn!(request = %request.id, error = %e, "opening the grant failed; the reconciler will retry");
                next.enforcement = Enforcement { status: EnforcementStatus::Failed, error: Some(e.message.clone()) };
                let data = json!({ "error": e.message, "transient": e.transient, "open_ms": open_ms });
                (self.request_event(&next, Action::OpenFailed, &Actor::System, None, data), None)
            }
        };
        match self.store.update_request(&request, &next, vec![event]).await {
            Ok(written) => {
                self.after_audit(&written).await;
                next
            }
            Err(StoreError::Conflict { .. }) => {
                let now = self.store.get_request(&request.id).await.ok().flatten();
                let still_active = now.as_ref().is_some_and(|r| r.state == RequestState::Active);
                // The grant ended while the driver was opening it: make sure
                // what was just opened is closed again. (If it is still
                // active, someone else recorded its status first.)
                if !still_active {
                    if let Some(driver) = driver {
                        if let Err(e) = driver.close(&request.id).await {
                            warn!(request = %request.id, error = %e, "closing a grant that ended while opening failed; the reconciler will retry");
                        }
                    }
                }
                now.unwrap_or(request)
            }
            Err(e) => {
                error!(request = %request.id, error = %e, "cannot record the enforcement status");
                next
            }
        }
    }

    /// Closes the path of a grant that has ended and records how that went.
    async fn close_grant(&self, request: Request) -> Request {
        let catalog = self.catalog();
        let result = match self.driver_for(&catalog, &request) {
            Ok((_, driver)) => driver.close(&request.id).await,
            // The target is gone from the config: close on every driver (a
            // close of an unknown grant is a no-op by contract).
            Err(_) => {
                let mut result = Ok(());
                for driver in self.drivers.values() {
                    if let Err(e) = driver.close(&request.id).await {
                        result = Err(e);
                    }
                }
                result
            }
        };
        let mut next = request.clone();
        let event = match result {
            Ok(()) => {
                next.enforcement = Enforcement::status(EnforcementStatus::Closed);
                self.request_event(&next, Action::Closed, &Actor::System, None, json!({}))
            }
            Err(e) => {
                error!(request = %request.id, error = %e, "closing the grant failed; the reconciler will retry");
                next.enforcement = Enforcement { status: EnforcementStatus::Failed, error: Some(e.message.clone()) };
                let data = json!({ "error": e.message, "transient": e.transient });
                self.request_event(&next, Action::CloseFailed, &Actor::System, None, data)
            }
        };
        match self.store.update_request(&request, &next, vec![event]).await {
            Ok(written) => {
                self.after_audit(&written).await;
                next
            }
            // Another replica recorded the close first: exactly one "closed"
            // per grant, and our own path is closed all the same.
            Err(StoreError::Conflict { .. }) => {
                debug!(request = %request.id, "another replica recorded this close first");
                self.store.get_request(&request.id).await.ok().flatten().unwrap_or(next)
            }
            Err(e) => {
                error!(request = %request.id, error = %e, "cannot record the enforcement status");
                next
            }
        }
    }

    /// Another replica (or this one) committed a change to request `id`:
    /// bring this replica's drivers and timers in line with it. An empty id
    /// means changes may have been missed, so everything is reconciled.
    pub async fn on_remote_change(&self, id: &str) {
        // Live views reload on any change, whichever replica made it.
        let _ = self.changes.send(0);
        if id.is_empty() {
            if let Err(e) = self.reconcile_once().await {
                warn!(error = %e, "reconcile after a missed change failed; the next round retries");
            }
            return;
        }
        let Some(id) = RequestId::parse(id) else { return };
        let request = match self.store.get_request(&id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                warn!(request = %id, error = %e, "cannot load a changed request; the reconciler will catch up");
                return;
            }
        };
        self.schedule(&request);
        let catalog = self.catalog();
        let Ok((target, driver)) = self.driver_for(&catalog, &request) else { return };
        // A cloud driver's rules and instances are the same for every
        // replica: the replica that made the change has acted on them.
        if target.kind().is_shared() {
            return;
        }
        match (request.state, request.ends_at) {
            (RequestState::Active, Some(ends_at)) => {
                let spec = grant_spec(&request, target, ends_at);
                // Local only: the replica that activated the grant records
                // its enforcement; this one just enforces it too.
                if let Err(e) = driver.open(&spec).await {
                    warn!(request = %id, error = %e, "cannot open a grant made on another replica; the reconciler will retry");
                }
            }
            (state, _) if state.is_final() => {
                if let Err(e) = driver.close(&request.id).await {
                    warn!(request = %id, error = %e, "cannot close a grant ended on another replica; the reconciler will retry");
                }
            }
            _ => {}
        }
    }

    // ---- identity ---------------------------------------------------------

    /// Checks a local user's password and issues a bearer token. The
    /// attempt counts against the limits before the (deliberately slow)
    /// password check, and at most a few checks run at once; the rest wait
    /// briefly, then are told to retry.
    pub async fn login(&self, username: &str, password: &str, addr: IpAddr) -> Result<(String, Timestamp), CoreError> {
        if !self.settings().local_users {
            return Err(CoreError::Forbidden(
                "password sign-in is turned off on this server; sign in with SSO (`ajar login --sso`, or the portal's Sign in with SSO)",
            ));
        }
        let shown = text::shown(username, 64);
        let attempt = self
            .limiter
            .begin(&shown, addr, std::time::Instant::now())
            .map_err(|retry_after_secs| CoreError::RateLimited { retry_after_secs })?;
        let Ok(Ok(permit)) = tokio::time::timeout(HASH_WAIT, self.hashing.clone().acquire_owned()).await else {
            self.limiter.abandon(attempt);
            warn!(%addr, "too many password checks at once; asking the client to retry");
            return Err(CoreError::Busy { retry_after_secs: 1 });
        };
        let catalog = self.catalog();
        let user = catalog.user(username);
        let hash = user.map_or(auth::decoy_hash().to_owned(), |u| u.password_hash.clone());
        let attempt_password = password.to_owned();
        // argon2 is deliberately slow; keep it off the async workers. A
        // password longer than anyone types is checked against the decoy,
        // so that it costs no more than any other.
        let mut memory = self.hash_memory.take();
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (password, hash) = if attempt_password.len() > MAX_PASSWORD_BYTES {
                ("", auth::decoy_hash().to_owned())
            } else {
                (attempt_password.as_str(), hash)
            };
            let matches = auth::verify_password_in(password, &hash, &mut memory);
            (matches, memory)
        })
        .await
        .map_err(|e| CoreError::Internal(format!("password check failed: {e}")))?;
        let (matches, memory) = checked;
        self.hash_memory.put(memory);
        let now = self.now();
        let event = |action, reason: Option<&str>| NewAuditEvent {
            at: now,
            actor: shown.clone(),
            action,
            target: None,
            source: Some(addr.to_string()),
            request_id: None,
            subject: Some(shown.clone()),
            reason: reason.map(str::to_owned),
            data: json!({}),
        };
        match user {
            Some(user) if matches => {
                self.limiter.succeeded(attempt);
                let token = auth::new_token();
                let expires_at = now + self.settings().token_ttl.as_chrono();
                self.store.insert_token(&auth::token_hash(&token), user.name.as_str(), now, expires_at).await?;
                self.record(vec![event(Action::Login, None)]).await?;
                info!(user = %user.name, %addr, "login");
                Ok((token, expires_at))
            }
            _ => {
                let why = if user.is_some() { "wrong password" } else { "unknown user" };
                self.record(vec![event(Action::LoginFailed, Some(why))]).await?;
                warn!(user = %shown, %addr, why, "failed login");
                Err(CoreError::Unauthenticated("the user name or password is wrong"))
            }
        }
    }

    /// The principal a bearer token stands for, with the groups the config
    /// gives them now.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, CoreError> {
        let expired = || CoreError::Unauthenticated("your token is invalid or has expired; run `ajar login` again");
        if !token.starts_with("ajar_") || token.len() > 128 {
            return Err(expired());
        }
        let user = self.store.token_user(&auth::token_hash(token), self.now()).await?.ok_or_else(expired)?;
        let catalog = self.catalog();
        match catalog.user(&user) {
            Some(local) if self.settings().local_users => {
                Ok(Principal::new(local.name.clone(), local.groups.iter().cloned()))
            }
            Some(_) => Err(expired()),
            // Not a local user: someone who signed in through SSO, with the
            // groups of their latest sign-in.
            None => self.external_principal(&user).await?.ok_or_else(expired),
        }
    }

    /// Ends `who`'s session: `token` stops working at once, on every
    /// replica, audited in the same transaction. A JWT bearer token is the
    /// identity provider's to revoke, not ajar's.
    pub async fn logout(&self, who: &Principal, token: &str, addr: IpAddr) -> Result<(), CoreError> {
        if !token.starts_with("ajar_") {
            return Err(CoreError::Unprocessable(
                "this is a token of your identity provider, which ajar cannot revoke; it ends when it expires, or revoke it at the provider",
            ));
        }
        let event = self.session_event(who, Action::Logout, who, addr, json!({}));
        let (_, written) = self.store.revoke_tokens(&TokenSelector::Hash(auth::token_hash(token)), vec![event]).await?;
        self.after_audit(&written).await;
        info!(user = %who.name, %addr, "logout");
        Ok(())
    }

    /// An admin ends every session of `user` (local or SSO): all of their
    /// ajar tokens stop working at once. Returns how many there were.
    pub async fn revoke_tokens_of(&self, admin: &Principal, user: &str, addr: IpAddr) -> Result<u64, CoreError> {
        if !admin.is_admin(&self.catalog()) {
            return Err(CoreError::Forbidden("only admins may end other people's sessions"));
        }
        let name = ajar_domain::Name::parse(user).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let subject = Principal::new(name, []);
        let event = self.session_event(admin, Action::TokensRevoked, &subject, addr, json!({}));
        let (removed, written) =
            self.store.revoke_tokens(&TokenSelector::User(subject.name.to_string()), vec![event]).await?;
        self.after_audit(&written).await;
        info!(admin = %admin.name, user = %subject.name, removed, "revoked every token of a user");
        Ok(removed)
    }

    fn session_event(
        &self,
        actor: &Principal,
        action: Action,
        subject: &Principal,
        addr: IpAddr,
        data: serde_json::Value,
    ) -> NewAuditEvent {
        NewAuditEvent {
            at: self.now(),
            actor: actor.name.to_string(),
            action,
            target: None,
            source: Some(addr.to_string()),
            request_id: None,
            subject: Some(subject.name.to_string()),
            reason: None,
            data,
        }
    }

    // ---- targets ----------------------------------------------------------

    pub fn connect_info(&self, target: &Target) -> Option<Opened> {
        self.drivers.get(&target.kind()).and_then(|d| d.connect_info(target, None))
    }

    pub fn targets(&self, who: &Principal) -> Vec<TargetView> {
        let catalog = self.catalog();
        policy::offers(&catalog, who)
            .into_iter()
            .map(|offer| TargetView {
                target: offer.target.clone(),
                max_duration: offer.max_duration,
                reason_required: offer.reason_required,
                approvals_required: offer.approvals_required,
                approvers: offer.approvers.iter().map(|s| s.to_string()).collect(),
                policies: offer.policies.iter().map(|p| p.to_string()).collect(),
                connect: self.connect_info(offer.target),
            })
            .collect()
    }

    // ---- requests ---------------------------------------------------------

    pub async fn create_request(&self, who: &Principal, addr: IpAddr, ask: Ask) -> Result<RequestView, CoreError> {
        let catalog = self.catalog();
        let verdict = evaluate(&catalog, who, &ask, addr)?;
        let id = RequestId::from_random(rand::random());
        let settings = self.settings();
        let change = Request::create(id, who, addr, &ask, &verdict, self.now(), settings.approval_timeout);
        // Counting and inserting take turns per requester, so that a burst
        // of parallel requests cannot all pass the count.
        let _turn;
        if change.next.state == RequestState::Pending {
            _turn = self.requester_turn(&who.name).await;
            let max = settings.max_pending_per_requester;
            let pending = self
                .store
                .list_requests(&RequestFilter {
                    states: vec![RequestState::Pending],
                    requester: Some(who.name.to_string()),
                    limit: max,
                    ..Default::default()
                })
                .await?;
            if pending.len() >= max as usize {
                return Err(ajar_domain::Rejected::TooManyPending { max }.into());
            }
        }
        let events = self.change_events(&change);
        let written = self.store.insert_request(&change.next, events).await?;
        self.after_audit(&written).await;
        info!(request = %change.next.id, requester = %who.name, target = %ask.target, state = %change.next.state, "request");
        let request = self.enforce(change.next, change.effect).await;
        Ok(self.view(request))
    }

    /// Waits until no other request of `who` is being created.
    async fn requester_turn(&self, who: &ajar_domain::Name) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for.
            turns.retain(|_, lock| Arc::strong_count(lock) > 1);
            turns.entry(who.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    fn view(&self, request: Request) -> RequestView {
        let open = request.state == RequestState::Active && request.enforcement.status == EnforcementStatus::Open;
        let connect = if open {
            self.catalog()
                .target(request.target.as_str())
                .and_then(|t| self.drivers.get(&t.kind()).and_then(|d| d.connect_info(t, Some(&request.id))))
        } else {
            None
        };
        RequestView { request, connect }
    }

    /// The requester as the policy engine should see them now: with their
    /// current groups if they are still a user, else as they were.
    fn requester(&self, catalog: &Catalog, request: &Request) -> Principal {
        match catalog.user(request.requester.as_str()) {
            Some(user) => Principal::new(user.name.clone(), user.groups.iter().cloned()),
            None => request.requester_principal(),
        }
    }

    fn verdict(&self, catalog: &Catalog, request: &Request) -> Result<Verdict, ajar_domain::Rejected> {
        evaluate(catalog, &self.requester(catalog, request), &request.ask(), request.requester_addr)
    }

    /// Whether `who` may approve or deny `request` now (it is pending, they
    /// are an eligible approver, and not its requester).
    pub fn can_approve(&self, who: &Principal, request: &Request) -> bool {
        let catalog = self.catalog();
        request.state == RequestState::Pending
            && self
                .verdict(&catalog, request)
                .is_ok_and(|v| policy::check_approver(&v, &request.requester, who).is_ok())
    }

    /// Whether `who` may revoke `request` (an admin or an eligible
    /// approver).
    pub fn can_revoke(&self, who: &Principal, request: &Request) -> bool {
        let catalog = self.catalog();
        let verdict = self.verdict(&catalog, request).ok();
        request.state == RequestState::Active && may_revoke(request, who, verdict.as_ref(), who.is_admin(&catalog))
    }

    /// The verdict an approver acts under. A request that is no longer
    /// pending says so first, whatever the policy says now.
    fn current_verdict(
        &self,
        catalog: &Catalog,
        request: &Request,
        action: &'static str,
    ) -> Result<Verdict, ajar_domain::Rejected> {
        if request.state != RequestState::Pending {
            return Err(ajar_domain::Rejected::WrongState { state: request.state.as_str(), action });
        }
        self.verdict(catalog, request).map_err(|e| ajar_domain::Rejected::NoLongerAllowed(e.to_string()))
    }

    fn may_see(&self, catalog: &Catalog, who: &Principal, request: &Request) -> bool {
        who.name == request.requester
            || who.may_read_all_audit(catalog)
            || self.verdict(catalog, request).is_ok_and(|v| policy::check_approver(&v, &request.requester, who).is_ok())
    }

    async fn load_visible(&self, who: &Principal, id: &str) -> Result<Request, CoreError> {
        let not_found = || CoreError::NotFound { id: id.chars().take(64).collect() };
        let id = RequestId::parse(id).ok_or_else(not_found)?;
        let request = self.store.get_request(&id).await?.ok_or_else(not_found)?;
        if self.may_see(&self.catalog(), who, &request) {
            Ok(request)
        } else {
            Err(not_found())
        }
    }

    pub async fn get_request(&self, who: &Principal, id: &str) -> Result<RequestView, CoreError> {
        Ok(self.view(self.load_visible(who, id).await?))
    }

    pub async fn list_requests(
        &self,
        who: &Principal,
        mut filter: RequestFilter,
    ) -> Result<Vec<RequestView>, CoreError> {
        filter.limit = if filter.limit == 0 { LIST_LIMIT } else { filter.limit.min(LIST_LIMIT) };
        let catalog = self.catalog();
        let requests = self.store.list_requests(&filter).await?;
        Ok(requests.into_iter().filter(|r| self.may_see(&catalog, who, r)).map(|r| self.view(r)).collect())
    }

    async fn command(
        &self,
        who: &Principal,
        id: &str,
        decide: impl FnOnce(&Catalog, &Request, Timestamp) -> Result<Change, ajar_domain::Rejected>,
    ) -> Result<RequestView, CoreError> {
        let request = self.load_visible(who, id).await?;
        let catalog = self.catalog();
        let change = decide(&catalog, &request, self.now())?;
        let next = self.apply(&request, change).await?;
        Ok(self.view(next))
    }

    pub async fn approve(&self, who: &Principal, id: &str, comment: Option<String>) -> Result<RequestView, CoreError> {
        self.command(who, id, |catalog, r, now| {
            r.approve(who, &self.current_verdict(catalog, r, "approved")?, comment, now)
        })
        .await
    }

    pub async fn deny(&self, who: &Principal, id: &str, comment: Option<String>) -> Result<RequestView, CoreError> {
        self.command(who, id, |catalog, r, now| r.deny(who, &self.current_verdict(catalog, r, "denied")?, comment, now))
            .await
    }

    pub async fn cancel(&self, who: &Principal, id: &str) -> Result<RequestView, CoreError> {
        self.command(who, id, |_, r, now| r.cancel(who, now)).await
    }

    pub async fn release(&self, who: &Principal, id: &str) -> Result<RequestView, CoreError> {
        self.command(who, id, |_, r, now| r.release(who, now)).await
    }

    pub async fn revoke(&self, who: &Principal, id: &str, comment: Option<String>) -> Result<RequestView, CoreError> {
        self.command(who, id, |catalog, r, now| {
            let verdict = self.verdict(catalog, r).ok();
            let allowed = may_revoke(r, who, verdict.as_ref(), who.is_admin(catalog));
            r.revoke(who, allowed, comment, now)
        })
        .await
    }

    // ---- time -------------------------------------------------------------

    /// Called by the scheduler when a request's deadline has come.
    pub async fn on_deadline(&self, id: &RequestId) {
        let request = match self.store.get_request(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                error!(request = %id, error = %e, "cannot load a request whose deadline came; the reconciler will retry");
                return;
            }
        };
        let now = self.now();
        match request.expire(now).or_else(|| request.time_out(now)) {
            Some(change) => {
                if change.actions.contains(&Action::Expired) {
                    if let Some(end) = request.ends_at {
                        let lag = (now - end).num_milliseconds().max(0);
                        self.metrics.record_expiry_lag(u64::try_from(lag).unwrap_or(0));
                    }
                }
                match self.apply(&request, change).await {
                    Ok(_) => {}
                    // Another replica's timer won: it expired the grant and
                    // closes it; this replica's path closes on its notice.
                    Err(CoreError::Conflict) => debug!(request = %id, "another replica handled this deadline"),
                    Err(e) => {
                        warn!(request = %id, error = %e, "closing at the deadline failed; the reconciler will retry")
                    }
                }
            }
            // The timer fired a moment before the wall clock reached the
            // deadline: look again then.
            None => self.schedule(&request),
        }
    }

    /// One pass of repair: closes what is overdue, then makes every driver's
    /// actual state match the store's, in both directions.
    pub async fn reconcile_once(&self) -> Result<(), CoreError> {
        let now = self.now();
        let live = self
            .store
            .list_requests(&RequestFilter {
                states: vec![RequestState::Pending, RequestState::Active],
                ..Default::default()
            })
            .await?;
        let mut active = Vec::new();
        for request in live {
            match request.expire(now).or_else(|| request.time_out(now)) {
                Some(change) => match self.apply(&request, change).await {
                    Ok(_) | Err(CoreError::Conflict) => {}
                    Err(e) => warn!(request = %request.id, error = %e, "closing an overdue request failed"),
                },
                None => {
                    self.schedule(&request);
                    if request.state == RequestState::Active {
                        active.push(request);
                    }
                }
            }
        }

        let catalog = self.catalog();
        let mut observed_ids = BTreeSet::new();
        for (kind, driver) in &self.drivers {
            let observation = match driver.observe().await {
                Ok(o) => o,
                Err(e) => {
                    warn!(driver = %kind, error = %e, "cannot observe the driver; skipping it this round");
                    continue;
                }
            };
            // Paths that ended on their own end their grants first, so that
            // the plan below does not open them again.
            for EndedEarly { id, why } in observation.ended_early {
                let Some(at) = active.iter().position(|r| r.id == id) else { continue };
                let request = active.remove(at);
                info!(request = %id, driver = %kind, why = %why, "reconcile: the path ended on its own; ending the grant");
                if let Some(change) = request.withdraw(why, now) {
                    match self.apply(&request, change).await {
                        Ok(_) | Err(CoreError::Conflict) => {}
                        Err(e) => warn!(request = %id, error = %e, "cannot end a grant whose path ended"),
                    }
                }
            }
            let observed = observation.open;
            observed_ids.extend(observed.iter().map(|o| o.id.clone()));
            let desired: Vec<GrantSpec> = active
                .iter()
                .filter_map(|r| {
                    let target = catalog.target(r.target.as_str()).filter(|t| t.kind() == *kind)?;
                    Some(grant_spec(r, target.clone(), r.ends_at?))
                })
                .collect();
            let plan = plan(&desired, &observed);
            for spec in &plan.open {
                if let Some(request) = active.iter().find(|r| r.id == spec.id) {
                    info!(request = %request.id, driver = %kind, "reconcile: opening a grant that should be open");
                    self.open_grant(request.clone()).await;
                }
            }
            for id in &plan.close {
                // The active grants were listed before the driver was
                // observed: one that became active in between is open
                // because it should be. Look again before closing.
                match self.store.get_request(id).await {
                    Ok(Some(r))
                        if r.state == RequestState::Active
                            && catalog.target(r.target.as_str()).is_some_and(|t| t.kind() == *kind) =>
                    {
                        continue
                    }
                    Ok(_) => {}
                    Err(e) => {
                        warn!(request = %id, error = %e, "reconcile: cannot look up an unexpected open path; next round");
                        continue;
                    }
                }
                info!(request = %id, driver = %kind, "reconcile: closing a path that should not be open");
                if let Err(e) = driver.close(id).await {
                    warn!(request = %id, error = %e, "reconcile: close failed");
                }
            }
            // Grants that are open although the store still says otherwise.
            for request in active.iter().filter(|r| r.enforcement.status != EnforcementStatus::Open) {
                let opened = observed.iter().any(|o| o.id == request.id);
                let planned = plan.open.iter().any(|g| g.id == request.id);
                if opened && !planned {
                    self.open_grant(request.clone()).await;
                }
            }
        }

        // Ended grants whose close did not complete: close again.
        let unfinished = self
            .store
            .list_requests(&RequestFilter {
                states: vec![RequestState::Expired, RequestState::Revoked, RequestState::Released],
                enforcement: vec![EnforcementStatus::Closing, EnforcementStatus::Failed, EnforcementStatus::Open],
                ..Default::default()
            })
            .await?;
        for request in unfinished {
            self.close_grant(request).await;
        }
        if let Err(e) = self.store.purge_tokens(now).await {
            warn!(error = %e, "cannot purge expired tokens");
        }
        Ok(())
    }

    /// Brings the drivers up for the current catalog and repairs whatever
    /// happened while ajar was not running.
    pub async fn start(&self) -> Result<(), CoreError> {
        self.configure_drivers(&self.catalog()).await?;
        self.reconcile_once().await
    }

    async fn configure_drivers(&self, catalog: &Catalog) -> Result<(), CoreError> {
        for (kind, driver) in &self.drivers {
            let targets: Vec<Target> = catalog.targets.iter().filter(|t| t.kind() == *kind).cloned().collect();
            driver
                .configure(&targets)
                .await
                .map_err(|e| CoreError::Internal(format!("driver {kind} cannot apply the configuration: {e}")))?;
        }
        Ok(())
    }

    // ---- configuration ----------------------------------------------------

    /// Switches to a new catalog. Requests the new config no longer allows
    /// are withdrawn (active grants revoked, pending requests denied), each
    /// audited, and so are those whose target now leads to another
    /// destination (approvals were for the old one). If a driver cannot
    /// apply the new targets, the old catalog stays in force; requests
    /// withdrawn for a changed destination stay withdrawn all the same.
    pub async fn reload(&self, catalog: Catalog, settings: CoreSettings) -> Result<(), CoreError> {
        let old = self.catalog();
        let live = self
            .store
            .list_requests(&RequestFilter {
                states: vec![RequestState::Pending, RequestState::Active],
                ..Default::default()
            })
            .await?;

        // A target whose destination changes is withdrawn from before the
        // drivers learn the new one, so that no connection under an old
        // approval reaches the new destination even for a moment. The old
        // catalog is still in force here, so the close goes to the driver
        // that opened the grant.
        let mut withdrawn = 0;
        let mut kept = Vec::new();
        for request in live {
            let moved = old.target(request.target.as_str()).zip(catalog.target(request.target.as_str())).and_then(
                |(before, after)| {
                    let (from, to) = (before.destination(), after.destination());
                    let what = if before.address != after.address {
                        format!("address changed from {} to {}", before.address, after.address)
                    } else if from != to {
                        format!("destination changed from {from} to {to}")
                    } else {
                        return None;
                    };
                    Some(format!("config reload: target {}'s {what}; ask again", request.target))
                },
            );
            match moved {
                Some(why) => withdrawn += self.withdraw_on_reload(&request, why).await,
                None => kept.push(request),
            }
        }

        if let Err(e) = self.configure_drivers(&catalog).await {
            if let Err(again) = self.configure_drivers(&old).await {
                error!(error = %again, "cannot restore the previous driver configuration either");
            }
            return Err(e);
        }
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog.clone());
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings;

        for request in kept {
            let why = match self.requester_now(&catalog, &request).await {
                Some(who) => evaluate(&catalog, &who, &request.ask(), request.requester_addr)
                    .err()
                    .map(|e| format!("config reload: {e}")),
                None => Some(format!("config reload: user {} no longer exists", request.requester)),
            };
            if let Some(why) = why {
                withdrawn += self.withdraw_on_reload(&request, why).await;
            }
        }
        self.record(vec![NewAuditEvent {
            at: self.now(),
            actor: Actor::System.label(),
            action: Action::ConfigReloaded,
            target: None,
            source: None,
            request_id: None,
            subject: None,
            reason: None,
            data: json!({ "targets": catalog.targets.len(), "policies": catalog.policies.len(), "withdrawn": withdrawn }),
        }])
        .await
    }

    /// Withdraws `request` after a reload, audited with `why`; 1 if it was
    /// withdrawn, else 0.
    async fn withdraw_on_reload(&self, request: &Request, why: String) -> usize {
        let Some(change) = request.withdraw(why, self.now()) else { return 0 };
        if let Err(e) = self.apply(request, change).await {
            warn!(request = %request.id, error = %e, "cannot withdraw a request after reload");
        }
        1
    }

    /// The requester as a reload judges them: a config user with their
    /// groups in `catalog`; else an SSO (or bearer token) identity with the
    /// groups of its latest sign-in, so that a group the provider took away
    /// is gone once they signed in again; `None` when they are neither. A
    /// database error is no reason to withdraw anyone's access: the groups
    /// they had when they asked are used then.
    async fn requester_now(&self, catalog: &Catalog, request: &Request) -> Option<Principal> {
        if let Some(user) = catalog.user(request.requester.as_str()) {
            return Some(Principal::new(user.name.clone(), user.groups.iter().cloned()));
        }
        match self.store.identity(request.requester.as_str()).await {
            Ok(Some(identity)) => Some(Principal::new(request.requester.clone(), identity.groups)),
            Ok(None) => None,
            Err(e) => {
                warn!(request = %request.id, error = %e, "cannot read the requester's identity; judging by the groups they asked with");
                Some(request.requester_principal())
            }
        }
    }

    // ---- audit log --------------------------------------------------------

    pub async fn audit_page(&self, who: &Principal, after: i64, limit: u32) -> Result<Vec<AuditEvent>, CoreError> {
        let scope = if who.may_read_all_audit(&self.catalog()) {
            AuditScope::All
        } else {
            AuditScope::Person(who.name.to_string())
        };
        Ok(self.store.audit_page(&scope, after, limit.clamp(1, 1000)).await?)
    }

    /// Searches the audit log, newest first, within what `who` may read.
    pub async fn audit_search(
        &self,
        who: &Principal,
        filter: &ajar_store::AuditFilter,
        before: i64,
        limit: u32,
    ) -> Result<Vec<AuditEvent>, CoreError> {
        let scope = if who.may_read_all_audit(&self.catalog()) {
            AuditScope::All
        } else {
            AuditScope::Person(who.name.to_string())
        };
        Ok(self.store.audit_search(&scope, filter, before, limit.clamp(1, 1000)).await?)
    }
}

/// What a driver needs to know about the active grant `request`.
fn grant_spec(request: &Request, target: Target, ends_at: Timestamp) -> GrantSpec {
    GrantSpec { id: request.id.clone(), target, requester: request.requester.clone(), source: request.source, ends_at }
}
