//! Carrying out what a committed change means for the network: opening and
//! closing grants on the driver of their target, recording what the driver
//! did (through the domain's [`Request::opened`] and friends), and applying
//! changes other replicas committed to this replica's drivers.

use std::sync::Arc;
use std::time::Instant;

use ajar_domain::{Catalog, Change, Effect, Request, RequestId, RequestState, Target, Timestamp};
use ajar_enforce::{Driver, DriverError, GrantSpec};
use ajar_store::StoreError;
use tracing::{debug, error, warn};

use crate::{Core, CoreError};

/// What a driver needs to know about the active grant `request`.
pub(crate) fn grant_spec(request: &Request, target: Target, ends_at: Timestamp) -> GrantSpec {
    GrantSpec { id: request.id.clone(), target, requester: request.requester.clone(), source: request.source, ends_at }
}

impl Core {
    /// Carries out a committed change's effect on the network, and keeps the
    /// scheduler up to date with the request's next deadline.
    pub(crate) async fn enforce(&self, request: Request, effect: Option<Effect>) -> Request {
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

    pub(crate) fn driver_for(
        &self,
        catalog: &Catalog,
        request: &Request,
    ) -> Result<(Target, Arc<dyn Driver>), DriverError> {
        let target = catalog.target(request.target.as_str()).ok_or_else(|| {
            DriverError::permanent(format!("target {} is no longer in the configuration", request.target))
        })?;
        let driver = self.drivers.get(&target.placement()).ok_or_else(|| match target.placement() {
            ajar_domain::Placement::Agents => DriverError::permanent(
                "agents are off on this server: add an [agents] section to the config and restart it",
            ),
            placement => DriverError::permanent(format!("driver {placement} is not running on this server")),
        })?;
        Ok((target.clone(), driver.clone()))
    }

    /// Brings the drivers up for `catalog`'s targets, each driver with those
    /// it runs (its kind on this server, or the agents).
    pub(crate) async fn configure_drivers(&self, catalog: &Catalog) -> Result<(), CoreError> {
        for (kind, driver) in &self.drivers {
            let targets: Vec<Target> = catalog.targets.iter().filter(|t| t.placement() == *kind).cloned().collect();
            driver
                .configure(&targets)
                .await
                .map_err(|e| CoreError::Internal(format!("driver {kind} cannot apply the configuration: {e}")))?;
        }
        Ok(())
    }

    /// Opens the path of an active grant and records how that went.
    pub(crate) async fn open_grant(&self, request: Request) -> Request {
        let catalog = self.catalog();
        let started = Instant::now();
        let outcome = match self.driver_for(&catalog, &request) {
            Ok((target, driver)) => {
                let Some(ends_at) = request.ends_at else { return request };
                let spec = grant_spec(&request, target, ends_at);
                driver.open(&spec).await.map(|opened| (opened, driver))
            }
            Err(e) => Err(e),
        };
        // How long opening took, for the audit event.
        let open_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let now = self.now();
        let (change, driver) = match outcome {
            Ok((opened, driver)) => (request.opened(opened.host, opened.port, open_ms, now), Some(driver)),
            Err(e) => match request.open_failed(&e.message, e.transient, open_ms, now) {
                Some(change) => {
                    warn!(request = %request.id, error = %e, "opening the grant failed; the reconciler will retry");
                    (change, None)
                }
                None => {
                    warn!(request = %request.id, error = %e, "opening the grant still fails; the reconciler retries");
                    return request;
                }
            },
        };
        match self.record_enforcement(&request, change).await {
            Ok(next) => next,
            Err(now) => {
                // The grant ended while the driver was opening it: make sure
                // what was just opened is closed again. (If it is still
                // active, someone else recorded its status first.)
                let still_active = now.as_ref().is_some_and(|r| r.state == RequestState::Active);
                if let (false, Some(driver)) = (still_active, driver) {
                    if let Err(e) = driver.close(&request.id).await {
                        warn!(request = %request.id, error = %e, "closing a grant that ended while opening failed; the reconciler will retry");
                    }
                }
                now.unwrap_or(request)
            }
        }
    }

    /// Closes the path of a grant that has ended and records how that went.
    pub(crate) async fn close_grant(&self, request: Request) -> Request {
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
        let now = self.now();
        let change = match result {
            Ok(()) => request.closed(now),
            Err(e) => {
                error!(request = %request.id, error = %e, "closing the grant failed; the reconciler will retry");
                request.close_failed(&e.message, e.transient, now)
            }
        };
        let next = change.next.clone();
        match self.record_enforcement(&request, change).await {
            Ok(next) => next,
            // Another replica recorded the close first: exactly one "closed"
            // per grant, and our own path is closed all the same.
            Err(now) => {
                debug!(request = %request.id, "another replica recorded this close first");
                now.unwrap_or(next)
            }
        }
    }

    /// Records what a driver did to `before`. `Err` when the request changed
    /// meanwhile (another replica or command got there first), with the
    /// request as stored now if it can be read.
    async fn record_enforcement(&self, before: &Request, change: Change) -> Result<Request, Option<Request>> {
        let Change { next, events, .. } = change;
        match self.store.update_request(before, &next, events).await {
            Ok(written) => {
                self.after_audit(&written).await;
                Ok(next)
            }
            Err(StoreError::Conflict { .. }) => Err(self.store.get_request(&before.id).await.ok().flatten()),
            Err(e) => {
                error!(request = %before.id, error = %e, "cannot record the enforcement status");
                Ok(next)
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
        if target.placement().is_shared() {
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
}
