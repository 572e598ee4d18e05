//! Asking for access and deciding on it: create, approve, deny, cancel,
//! release, revoke, and who may see which request.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ajar_domain::policy::{self, evaluate, Ask, Principal, Verdict};
use ajar_domain::request::may_revoke;
use ajar_domain::{Catalog, Change, EnforcementStatus, Name, Rejected, Request, RequestId, RequestState, Timestamp};
use ajar_enforce::Opened;
use ajar_store::RequestFilter;
use tracing::info;

use crate::{Core, CoreError};

/// A request with where to connect once its path is open.
#[derive(Debug, Clone)]
pub struct RequestView {
    pub request: Request,
    pub connect: Option<Opened>,
    /// Other addresses that reach the same grant (other agents of the group).
    pub also: Vec<Opened>,
}

/// How many requests a listing returns at most.
const LIST_LIMIT: u32 = 500;

/// How many requests a listing reads at most to fill a page with the ones
/// its caller may see, so that a caller who may see few cannot make one
/// listing read the whole table.
const LIST_SCAN: u32 = 20 * LIST_LIMIT;

impl Core {
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
                return Err(Rejected::TooManyPending { max }.into());
            }
        }
        let Change { next, events, effect } = change;
        let written = self.store.insert_request(&next, events).await?;
        self.after_audit(&written).await;
        info!(request = %next.id, requester = %who.name, target = %ask.target, state = %next.state, "request");
        let request = self.enforce(next, effect).await;
        Ok(self.view(request))
    }

    /// Waits until no other request of `who` is being created.
    async fn requester_turn(&self, who: &Name) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut turns = self.creating.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the locks nobody holds or waits for.
            turns.retain(|_, lock| Arc::strong_count(lock) > 1);
            turns.entry(who.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    pub(crate) fn view(&self, request: Request) -> RequestView {
        let open = request.state == RequestState::Active && request.enforcement.status == EnforcementStatus::Open;
        let mut all = if open {
            self.catalog()
                .target(request.target.as_str())
                .and_then(|t| self.drivers.get(&t.placement()).map(|d| d.connect_all(t, Some(&request.id))))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let connect = (!all.is_empty()).then(|| all.remove(0));
        RequestView { request, connect, also: all }
    }

    /// The requester as the policy engine should see them now: with their
    /// current groups if they are still a user, else as they were.
    fn requester(&self, catalog: &Catalog, request: &Request) -> Principal {
        match catalog.user(request.requester.as_str()) {
            Some(user) => Principal::new(user.name.clone(), user.groups.iter().cloned()),
            None => request.requester_principal(),
        }
    }

    fn verdict(&self, catalog: &Catalog, request: &Request) -> Result<Verdict, Rejected> {
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
    fn current_verdict(&self, catalog: &Catalog, request: &Request, action: &'static str) -> Result<Verdict, Rejected> {
        if request.state != RequestState::Pending {
            return Err(Rejected::WrongState { state: request.state.as_str(), action });
        }
        self.verdict(catalog, request).map_err(|e| Rejected::NoLongerAllowed(e.to_string()))
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

    /// The newest requests matching `filter` that `who` may see, at most
    /// `filter.limit` (and never more than 500). Visibility depends on the
    /// policy, not on a column, so the store is read page by page until the
    /// listing is full or the matches run out (or [`LIST_SCAN`] were read).
    pub(crate) async fn list_requests(
        &self,
        who: &Principal,
        filter: RequestFilter,
    ) -> Result<Vec<RequestView>, CoreError> {
        let want = if filter.limit == 0 { LIST_LIMIT } else { filter.limit.min(LIST_LIMIT) };
        let catalog = self.catalog();
        let mut seen = HashSet::new();
        let mut visible = Vec::new();
        let mut offset = 0;
        while offset < LIST_SCAN {
            let page = self.store.list_requests(&RequestFilter { limit: LIST_LIMIT, offset, ..filter.clone() }).await?;
            let read = page.len();
            for request in page {
                // A request created meanwhile shifts the pages; never list
                // one twice.
                if seen.insert(request.id.clone()) && self.may_see(&catalog, who, &request) {
                    visible.push(request);
                }
            }
            if visible.len() >= want as usize || read < LIST_LIMIT as usize {
                break;
            }
            offset += LIST_LIMIT;
        }
        visible.truncate(want as usize);
        Ok(visible.into_iter().map(|r| self.view(r)).collect())
    }

    async fn command(
        &self,
        who: &Principal,
        id: &str,
        decide: impl FnOnce(&Catalog, &Request, Timestamp) -> Result<Change, Rejected>,
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
}
