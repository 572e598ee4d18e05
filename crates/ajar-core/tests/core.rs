//! The use cases in process, in milliseconds: a real `Core` over an
//! in-memory SQLite store, a driver that records what it is told, and a
//! clock that moves only when the test says so. The black-box suites in
//! `crates/ajar/tests` check the same promises with the real binary and
//! real sockets; these make each rule cheap to pin down.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ajar_core::{Core, CoreSettings, ManualClock, RequestQuery};
use ajar_domain::policy::{Ask, Principal};
use ajar_domain::{
    Action, DriverKind, EnforcementStatus, GrantDuration, Placement, RequestId, RequestState, Target, Timestamp,
};
use ajar_enforce::{Driver, DriverError, GrantSpec, Observation, Observed, Opened};
use ajar_store::{AuditScope, SqliteStore, Store};

/// What a [`Recording`] driver has open, and what it was told.
#[derive(Default)]
struct Paths {
    open: BTreeMap<RequestId, GrantSpec>,
    calls: Vec<String>,
    /// When set, every open fails with this message.
    failing: Option<String>,
}

/// A driver that opens nothing on the network: it keeps what is open in
/// memory, so that tests can look at it and change it behind ajar's back.
#[derive(Default)]
struct Recording(Mutex<Paths>);

impl Recording {
    fn paths(&self) -> std::sync::MutexGuard<'_, Paths> {
        self.0.lock().unwrap()
    }

    fn is_open(&self, id: &RequestId) -> bool {
        self.paths().open.contains_key(id)
    }
}

#[async_trait::async_trait]
impl Driver for Recording {
    async fn configure(&self, _targets: &[Target]) -> Result<(), DriverError> {
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let mut paths = self.paths();
        paths.calls.push(format!("open {}", grant.id));
        if let Some(error) = paths.failing.clone() {
            return Err(DriverError::transient(error));
        }
        paths.open.insert(grant.id.clone(), grant.clone());
        Ok(Opened { host: "127.0.0.1".into(), port: 2222 })
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let mut paths = self.paths();
        paths.calls.push(format!("close {id}"));
        paths.open.remove(id);
        Ok(())
    }

    async fn observe(&self) -> Result<Observation, DriverError> {
        let open = self
            .paths()
            .open
            .values()
            .map(|g| Observed {
                id: g.id.clone(),
                target: g.target.name.to_string(),
                source: g.source,
                ends_at: g.ends_at,
            })
            .collect();
        Ok(Observation { open, ended_early: Vec::new() })
    }

    fn connect_info(&self, _target: &Target, _grant: Option<&RequestId>) -> Option<Opened> {
        Some(Opened { host: "127.0.0.1".into(), port: 2222 })
    }

    async fn cleanup(&self, _targets: &[Target]) -> Result<Vec<String>, DriverError> {
        let closed = std::mem::take(&mut self.paths().open);
        Ok(closed.keys().map(|id| format!("closed {id}")).collect())
    }
}

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:8080"

[[users]]
name = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$YWphci10ZXN0LXNhbHQ$Dr2LHxGcovvpPjW4f/Hmg9KX/mWptTQcznoIWe3Pas0"
groups = ["dev"]

[[users]]
name = "bob"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$YWphci10ZXN0LXNhbHQ$Dr2LHxGcovvpPjW4f/Hmg9KX/mWptTQcznoIWe3Pas0"
groups = ["sre"]

[[targets]]
name = "db"
address = "127.0.0.1:5432"
driver = "gateway"
labels = { env = "prod" }
gateway = { listen = "127.0.0.1:15432" }

[[targets]]
name = "scratch"
address = "127.0.0.1:6000"
driver = "gateway"
labels = { env = "dev" }
gateway = { listen = "127.0.0.1:16000" }

[[policies]]
name = "prod-needs-sre"
subjects = ["group:dev"]
targets = ["env=prod"]
max_duration = "1h"
approvals = 1
approvers = ["group:sre"]

[[policies]]
name = "dev-self-service"
subjects = ["group:dev"]
targets = ["env=dev"]
max_duration = "30m"
approvals = 0
"#;

fn start() -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

struct World {
    core: Arc<Core>,
    store: Arc<SqliteStore>,
    clock: Arc<ManualClock>,
    driver: Arc<Recording>,
}

fn settings() -> CoreSettings {
    CoreSettings {
        approval_timeout: GrantDuration::from_secs(1800).unwrap(),
        token_ttl: GrantDuration::from_secs(3600).unwrap(),
        max_pending_per_requester: 10_000,
        local_users: true,
    }
}

/// One replica over `store` with its own recording driver.
fn replica(store: Arc<SqliteStore>, clock: Arc<ManualClock>) -> World {
    let config = ajar_config::parse(Path::new("test.toml"), CONFIG).unwrap();
    let driver = Arc::new(Recording::default());
    let drivers = BTreeMap::from([(Placement::Local(DriverKind::Gateway), driver.clone() as Arc<dyn Driver>)]);
    let core = Core::new(store.clone(), config.catalog, settings(), drivers, clock.clone(), None);
    World { core, store, clock, driver }
}

async fn world() -> World {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    replica(store, Arc::new(ManualClock::new(start())))
}

fn user(world: &World, name: &str) -> Principal {
    let user = world.core.catalog().users.iter().find(|u| u.name.as_str() == name).cloned().unwrap();
    Principal::new(user.name, user.groups)
}

fn ask(target: &str, minutes: u64) -> Ask {
    Ask {
        target: target.into(),
        duration: GrantDuration::from_secs(minutes * 60).unwrap(),
        reason: "CHG-1".into(),
        source: None,
    }
}

const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

async fn actions(world: &World, id: &RequestId) -> Vec<Action> {
    let events = world.store.audit_page(&AuditScope::All, 0, 1000).await.unwrap();
    events.into_iter().filter(|e| e.request_id.as_deref() == Some(id.as_str())).map(|e| e.action).collect()
}

#[tokio::test]
async fn a_grant_expires_at_its_end_and_its_path_closes() {
    let w = world().await;
    let alice = user(&w, "alice");
    let view = w.core.create_request(&alice, ADDR, ask("scratch", 10)).await.unwrap();
    let id = view.request.id.clone();
    assert_eq!(view.request.state, RequestState::Active);
    assert_eq!(view.request.enforcement.status, EnforcementStatus::Open);
    assert!(w.driver.is_open(&id));
    let ends_at = view.request.ends_at.unwrap();
    assert_eq!(ends_at, start() + chrono::Duration::minutes(10));

    // A timer that fires a moment early changes nothing.
    w.clock.set(ends_at - chrono::Duration::milliseconds(1));
    w.core.on_deadline(&id).await;
    assert!(w.driver.is_open(&id));

    // Noticed late (the machine was busy): the grant still ended at its end.
    w.clock.set(ends_at + chrono::Duration::seconds(3));
    w.core.on_deadline(&id).await;
    let stored = w.store.get_request(&id).await.unwrap().unwrap();
    assert_eq!(stored.state, RequestState::Expired);
    assert_eq!(stored.ends_at, Some(ends_at));
    assert_eq!(stored.enforcement.status, EnforcementStatus::Closed);
    assert!(!w.driver.is_open(&id));
    assert_eq!(
        actions(&w, &id).await,
        vec![Action::Requested, Action::Activated, Action::Opened, Action::Expired, Action::Closed]
    );
    let events = w.store.audit_page(&AuditScope::All, 0, 1000).await.unwrap();
    let expired = events.iter().find(|e| e.action == Action::Expired).unwrap();
    assert_eq!(expired.data["ends_at"], serde_json::json!(ends_at));
    assert_eq!(expired.at, ends_at + chrono::Duration::seconds(3));
}

#[tokio::test]
async fn a_pending_request_times_out_once() {
    let w = world().await;
    let view = w.core.create_request(&user(&w, "alice"), ADDR, ask("db", 10)).await.unwrap();
    let id = view.request.id.clone();
    assert_eq!(view.request.state, RequestState::Pending);
    w.clock.advance(chrono::Duration::minutes(31));
    w.core.on_deadline(&id).await;
    w.core.on_deadline(&id).await;
    w.core.reconcile_once().await.unwrap();
    assert_eq!(actions(&w, &id).await, vec![Action::Requested, Action::TimedOut]);
    assert!(w.driver.paths().calls.is_empty(), "nothing was ever opened: {:?}", w.driver.paths().calls);
}

#[tokio::test]
async fn reconcile_reopens_a_lost_path_closes_a_stray_one_and_expires_what_ended_while_down() {
    let w = world().await;
    let alice = user(&w, "alice");
    let kept = w.core.create_request(&alice, ADDR, ask("scratch", 30)).await.unwrap().request;
    let short = w.core.create_request(&alice, ADDR, ask("scratch", 5)).await.unwrap().request;

    // The driver lost one path (a reboot emptied the kernel's table) and
    // has one no grant explains.
    w.driver.paths().open.remove(&kept.id);
    let mut stray = w.driver.paths().open.get(&short.id).cloned().unwrap();
    stray.id = RequestId::from_random([9; 12]);
    w.driver.paths().open.insert(stray.id.clone(), stray.clone());

    // ajar was down past the short grant's end.
    w.clock.advance(chrono::Duration::minutes(6));
    w.core.reconcile_once().await.unwrap();

    assert!(w.driver.is_open(&kept.id), "the lost path is open again");
    assert!(!w.driver.is_open(&stray.id), "the stray path is closed");
    assert!(!w.driver.is_open(&short.id), "the ended grant's path is closed");
    let short_now = w.store.get_request(&short.id).await.unwrap().unwrap();
    assert_eq!(short_now.state, RequestState::Expired);
    assert_eq!(short_now.ends_at, short.ends_at, "expired at its own end, not when ajar noticed");
    assert_eq!(
        actions(&w, &kept.id).await,
        vec![Action::Requested, Action::Activated, Action::Opened, Action::Opened],
        "the reopen is audited"
    );
    // A second pass finds nothing to do.
    let calls = w.driver.paths().calls.len();
    w.core.reconcile_once().await.unwrap();
    assert_eq!(w.driver.paths().calls.len(), calls, "{:?}", &w.driver.paths().calls[calls..]);
}

#[tokio::test]
async fn a_failing_open_is_audited_once_and_a_path_that_opened_anyway_is_adopted() {
    let w = world().await;
    w.driver.paths().failing = Some("the security group is full".into());
    let grant = w.core.create_request(&user(&w, "alice"), ADDR, ask("scratch", 30)).await.unwrap().request;
    assert_eq!(grant.enforcement.status, EnforcementStatus::Failed);
    for _ in 0..3 {
        w.core.reconcile_once().await.unwrap();
    }
    assert_eq!(actions(&w, &grant.id).await, vec![Action::Requested, Action::Activated, Action::OpenFailed]);

    // The path is open after all (the open succeeded at the provider, then
    // the answer was lost): reconcile records it instead of failing on.
    w.driver.paths().failing = None;
    let spec = GrantSpec {
        id: grant.id.clone(),
        target: w.core.catalog().target("scratch").cloned().unwrap(),
        requester: grant.requester.clone(),
        source: grant.source,
        ends_at: grant.ends_at.unwrap(),
    };
    w.driver.paths().open.insert(grant.id.clone(), spec);
    w.core.reconcile_once().await.unwrap();
    let now = w.store.get_request(&grant.id).await.unwrap().unwrap();
    assert_eq!(now.enforcement.status, EnforcementStatus::Open);
    assert_eq!(now.enforcement.error, None);
    assert_eq!(
        actions(&w, &grant.id).await,
        vec![Action::Requested, Action::Activated, Action::OpenFailed, Action::Opened]
    );
}

#[tokio::test]
async fn another_replica_enforces_what_one_replica_decided() {
    let a = world().await;
    let b = replica(a.store.clone(), a.clock.clone());
    let alice = user(&a, "alice");
    let bob = user(&a, "bob");
    let pending = a.core.create_request(&alice, ADDR, ask("db", 10)).await.unwrap().request;
    b.core.on_remote_change(pending.id.as_str()).await;
    assert!(!b.driver.is_open(&pending.id), "nothing to open while pending");

    a.core.approve(&bob, pending.id.as_str(), Some("ok".into())).await.unwrap();
    assert!(a.driver.is_open(&pending.id));
    b.core.on_remote_change(pending.id.as_str()).await;
    assert!(b.driver.is_open(&pending.id), "replica b opens its own path too");

    a.core.release(&alice, pending.id.as_str()).await.unwrap();
    assert!(!a.driver.is_open(&pending.id));
    b.core.on_remote_change(pending.id.as_str()).await;
    assert!(!b.driver.is_open(&pending.id), "and closes it when a ends the grant");
    // Only the replica that acted recorded anything.
    assert_eq!(
        actions(&a, &pending.id).await,
        vec![Action::Requested, Action::Approved, Action::Activated, Action::Opened, Action::Released, Action::Closed]
    );
}

#[tokio::test]
async fn a_listing_is_filled_with_what_the_caller_may_see_however_much_else_is_newer() {
    let w = world().await;
    let alice = user(&w, "alice");
    let bob = user(&w, "bob");
    // Three requests bob may decide on, then 600 newer ones he may not see
    // (self-service grants nobody approves; bob is neither admin nor
    // auditor).
    let mut mine = BTreeSet::new();
    for _ in 0..3 {
        mine.insert(w.core.create_request(&alice, ADDR, ask("db", 10)).await.unwrap().request.id.clone());
        w.clock.advance(chrono::Duration::milliseconds(1));
    }
    for _ in 0..600 {
        w.core.create_request(&alice, ADDR, ask("scratch", 10)).await.unwrap();
        w.clock.advance(chrono::Duration::milliseconds(1));
    }
    let listed = w.core.find_requests(&bob, &RequestQuery::default()).await.unwrap();
    let listed: BTreeSet<RequestId> = listed.into_iter().map(|v| v.request.id.clone()).collect();
    assert_eq!(listed, mine);
    // The requester sees the newest 500 of their own.
    let own = w.core.find_requests(&alice, &RequestQuery::default()).await.unwrap();
    assert_eq!(own.len(), 500);
    let limited = w.core.find_requests(&bob, &RequestQuery { limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(limited.len(), 2);
}
