//! Repair: after crashes, failed driver calls and missed timers, one pass
//! brings the store and every driver back in line, in three phases —
//! [`Core::end_overdue`], [`Core::converge_drivers`] (what to open, close and
//! adopt is the pure [`ajar_enforce::plan`]) and [`Core::finish_closes`] —
//! run at start and then every `reconcile_interval` by [`spawn`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ajar_domain::{EnforcementStatus, Request, RequestState, Timestamp};
use ajar_enforce::{plan, EndedEarly, GrantSpec};
use ajar_store::RequestFilter;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::enforcement::grant_spec;
use crate::{Core, CoreError};

impl Core {
    /// Brings the drivers up for the current catalog and repairs whatever
    /// happened while ajar was not running.
    pub async fn start(&self) -> Result<(), CoreError> {
        self.configure_drivers(&self.catalog()).await?;
        self.reconcile_once().await
    }

    /// One pass of repair: closes what is overdue, then makes every driver's
    /// actual state match the store's, in both directions, then closes again
    /// what did not close.
    pub async fn reconcile_once(&self) -> Result<(), CoreError> {
        let now = self.now();
        let active = self.end_overdue(now).await?;
        self.converge_drivers(active, now).await;
        self.finish_closes().await?;
        if let Err(e) = self.store.purge_tokens(now).await {
            warn!(error = %e, "cannot purge expired tokens");
        }
        Ok(())
    }

    /// Phase 1: expires the grants and times out the requests whose
    /// deadline passed (while ajar was down, or a timer was missed), and
    /// schedules the rest. Returns the grants still active.
    async fn end_overdue(&self, now: Timestamp) -> Result<Vec<Request>, CoreError> {
        let live = self.live_requests().await?;
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
        Ok(active)
    }

    /// Phase 2: for each driver, ends the grants whose paths ended on their
    /// own, then opens what should be open, closes what should not, and
    /// records as opened what is open but not recorded so.
    async fn converge_drivers(&self, mut active: Vec<Request>, now: Timestamp) {
        let catalog = self.catalog();
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
            let mine: Vec<&Request> = active
                .iter()
                .filter(|r| catalog.target(r.target.as_str()).is_some_and(|t| t.placement() == *kind))
                .collect();
            let desired: Vec<GrantSpec> = mine
                .iter()
                .filter_map(|r| Some(grant_spec(r, catalog.target(r.target.as_str())?.clone(), r.ends_at?)))
                .collect();
            let recorded_open: BTreeSet<_> =
                mine.iter().filter(|r| r.enforcement.status == EnforcementStatus::Open).map(|r| r.id.clone()).collect();
            let plan = plan(&desired, &recorded_open, &observed);
            for spec in &plan.open {
                if let Some(request) = mine.iter().find(|r| r.id == spec.id) {
                    info!(request = %request.id, driver = %kind, "reconcile: opening a grant that should be open");
                    self.open_grant((*request).clone()).await;
                }
            }
            for id in &plan.close {
                // The active grants were listed before the driver was
                // observed: one that became active in between is open
                // because it should be. Look again before closing.
                match self.store.get_request(id).await {
                    Ok(Some(r))
                        if r.state == RequestState::Active
                            && catalog.target(r.target.as_str()).is_some_and(|t| t.placement() == *kind) =>
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
            // Open as it should be, but the store does not say so yet (the
            // driver opened it just before a crash, or a retry succeeded).
            for id in &plan.adopt {
                if let Some(request) = mine.iter().find(|r| r.id == *id) {
                    self.open_grant((*request).clone()).await;
                }
            }
        }
    }

    /// Phase 3: ended grants whose close did not complete are closed again.
    async fn finish_closes(&self) -> Result<(), CoreError> {
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
        Ok(())
    }
}

/// Runs [`Core::reconcile_once`] every `interval` until `shutdown` turns
/// true, and audits the repeats of failed sign-ins whose minute is over
/// (all of them at shutdown).
pub fn spawn(core: Arc<Core>, interval: Duration, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; start() has just reconciled.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = core.reconcile_once().await {
                        warn!(error = %e, "reconcile failed; trying again next round");
                    }
                    core.close_failed_sign_ins(false).await;
                }
                _ = shutdown.changed() => {
                    core.close_failed_sign_ins(true).await;
                    break;
                }
            }
        }
    })
}
