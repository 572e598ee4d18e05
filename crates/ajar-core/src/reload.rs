//! Changing the config of a running server: a new catalog and settings, and
//! what that means for requests already made (withdrawn when the config no
//! longer allows them or their target now leads elsewhere). A file that
//! does not load is refused whole ([`Core::reload_rejected`]).

use ajar_domain::policy::{evaluate, Principal};
use ajar_domain::{AuditData, Catalog, NewAuditEvent, Request};
use tracing::{error, warn};

use crate::{Core, CoreError, CoreSettings};

impl Core {
    /// Switches to a new catalog. Requests the new config no longer allows
    /// are withdrawn (active grants revoked, pending requests denied), each
    /// audited, and so are those whose target now leads to another
    /// destination (approvals were for the old one). If a driver cannot
    /// apply the new targets, the old catalog stays in force; requests
    /// withdrawn for a changed destination stay withdrawn all the same.
    pub async fn reload(&self, catalog: Catalog, settings: CoreSettings) -> Result<(), CoreError> {
        let old = self.catalog();
        let live = self.live_requests().await?;

        // A target whose destination changes is withdrawn from before the
        // drivers learn the new one, so that no connection under an old
        // approval reaches the new destination even for a moment. The old
        // catalog is still in force here, so the close goes to the driver
        // that opened the grant.
        let mut withdrawn = 0;
        let mut kept = Vec::new();
        for request in live {
            match moved(&old, &catalog, &request) {
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
        self.swap_catalog(catalog.clone(), settings);

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
        let reloaded =
            AuditData::ConfigReloaded { targets: catalog.targets.len(), policies: catalog.policies.len(), withdrawn };
        self.record(vec![NewAuditEvent::system(self.now(), reloaded)]).await
    }

    /// Audits a reload that was refused (the file did not load, or a driver
    /// could not apply it); the running config stays.
    pub async fn reload_rejected(&self, errors: Vec<String>) -> Result<(), CoreError> {
        self.record(vec![NewAuditEvent::system(self.now(), AuditData::ConfigRejected { errors })]).await
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
}

/// Why `request` must be withdrawn because its target leads somewhere else
/// under `new` than under `old`; `None` when it leads to the same place.
fn moved(old: &Catalog, new: &Catalog, request: &Request) -> Option<String> {
    let (before, after) = old.target(request.target.as_str()).zip(new.target(request.target.as_str()))?;
    let (from, to) = (before.destination(), after.destination());
    let what = if before.address != after.address {
        format!("address changed from {} to {}", before.address, after.address)
    } else if from != to {
        format!("destination changed from {from} to {to}")
    } else {
        return None;
    };
    Some(format!("config reload: target {}'s {what}; ask again", request.target))
}
