//! The data-plane seam: the [`Driver`] trait every way of opening a network
//! path implements, and the pure [`plan`] that tells a reconciler how to
//! bring what a driver has actually opened back to what should be open.

pub mod clock;

use std::collections::{BTreeMap, BTreeSet};

use ajar_domain::{DriverKind, Name, RequestId, SourceNet, Target, Timestamp};

/// A grant as a driver needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSpec {
    pub id: RequestId,
    pub target: Target,
    /// Who asked: cloud drivers name them on what they create.
    pub requester: Name,
    pub source: SourceNet,
    pub ends_at: Timestamp,
}

/// What a driver reports as actually open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: RequestId,
    pub target: String,
    pub source: SourceNet,
    pub ends_at: Timestamp,
}

/// What a driver reports on a reconcile pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Everything this driver has actually opened right now.
    pub open: Vec<Observed>,
    /// Grants whose paths ended on their own since they were opened.
    pub ended_early: Vec<EndedEarly>,
}

/// A grant whose path ended on its own before the grant did, such as an
/// app server that powered itself off after idling; the control plane ends
/// the grant instead of opening the path again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedEarly {
    pub id: RequestId,
    /// Why, in words, for the audit log.
    pub why: String,
}

/// Where a client reaches an opened grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Opened {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DriverError {
    pub message: String,
    /// Transient errors are retried by the reconciler; permanent ones need a
    /// person (a config change, a permission) and are shown to the user.
    pub transient: bool,
}

impl DriverError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: true }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), transient: false }
    }

    /// The same error, said as the failure of `doing` (`cannot remove
    /// ajar's nftables table: ...`); it stays as transient as it was.
    pub fn context(self, doing: impl std::fmt::Display) -> Self {
        Self { message: format!("{doing}: {}", self.message), transient: self.transient }
    }

    /// A target of another driver was handed to `driver`. The core hands
    /// each driver only the targets of its own kind, so this is a bug in
    /// ajar, not something a config can cause; it is permanent because
    /// retrying cannot help.
    pub fn wrong_driver(driver: DriverKind, target: &Target) -> Self {
        Self::permanent(format!(
            "the {driver} driver was handed target {}, which uses the {} driver; this is a bug in ajar (each driver gets only its own targets), please report it",
            target.name,
            target.kind()
        ))
    }
}

/// One way of opening a network path. Implementations must be idempotent:
/// opening an open grant or closing a closed one is a no-op, so that the
/// reconciler can call them again after any crash.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Prepares per-target state (listeners, tables) for the targets this
    /// driver serves. Called at start and on every config reload with the
    /// whole list; targets missing from it are torn down.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError>;

    /// Opens the path for `grant` until `grant.ends_at`. A driver that can
    /// keep its own deadline must, so that access closes on time even when
    /// the control plane is slow or gone.
    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError>;

    /// Closes the path of grant `id` and cuts its live connections.
    async fn close(&self, id: &RequestId) -> Result<(), DriverError>;

    /// What this driver has actually opened right now, and which grants'
    /// paths ended on their own (the control plane then ends those grants
    /// instead of opening them again).
    async fn observe(&self) -> Result<Observation, DriverError>;

    /// Where a client connects for `target`, if the driver can tell without
    /// opening anything. `Some(id)` asks for the open grant `id`, for
    /// drivers whose address differs per grant (an instance launched for
    /// it); `None` asks for the target as a whole.
    fn connect_info(&self, target: &Target, grant: Option<&RequestId>) -> Option<Opened>;

    /// Every address a client may use, the preferred one first: where
    /// several agents serve a target, each has its own.
    fn connect_all(&self, target: &Target, grant: Option<&RequestId>) -> Vec<Opened> {
        self.connect_info(target, grant).into_iter().collect()
    }

    /// Removes everything this driver ever installed for ajar (`ajar server
    /// --cleanup`), for the given targets of its kind; returns sentences
    /// saying what was removed (empty when nothing was there).
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError>;
}

/// What a reconciler must do to converge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Grants that should be open but are not (or are open with the wrong
    /// deadline or source).
    pub open: Vec<GrantSpec>,
    /// Grants that are open but should not be.
    pub close: Vec<RequestId>,
    /// Grants that are open exactly as they should be although the store
    /// does not record them as open (the driver opened them just before a
    /// crash, or a retried open succeeded): to be recorded as opened.
    pub adopt: Vec<RequestId>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty() && self.close.is_empty() && self.adopt.is_empty()
    }
}

/// The difference between what should be open (`desired`, of which the
/// store records `recorded_open` as open) and what is (`observed`).
pub fn plan(desired: &[GrantSpec], recorded_open: &BTreeSet<RequestId>, observed: &[Observed]) -> Plan {
    let observed: BTreeMap<&RequestId, &Observed> = observed.iter().map(|o| (&o.id, o)).collect();
    let desired_ids: BTreeMap<&RequestId, &GrantSpec> = desired.iter().map(|g| (&g.id, g)).collect();
    let open: Vec<GrantSpec> = desired
        .iter()
        .filter(|g| match observed.get(&g.id) {
            None => true,
            Some(o) => o.source != g.source || o.ends_at != g.ends_at || o.target != g.target.name.as_str(),
        })
        .cloned()
        .collect();
    let close = observed.keys().filter(|id| !desired_ids.contains_key(*id)).map(|id| (*id).clone()).collect();
    let adopt = desired
        .iter()
        .filter(|g| !recorded_open.contains(&g.id))
        .filter(|g| !open.iter().any(|o| o.id == g.id))
        .map(|g| g.id.clone())
        .collect();
    Plan { open, close, adopt }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ajar_domain::{DriverSettings, GatewaySettings};
    use proptest::prelude::*;

    fn target(name: &str) -> Target {
        Target {
            name: Name::parse(name).expect("valid"),
            address: "127.0.0.1:1".into(),
            labels: Default::default(),
            driver: DriverSettings::Gateway(GatewaySettings {
                listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                public_host: None,
            }),
            agent_group: None,
        }
    }

    fn grant(i: u8, end: i64) -> GrantSpec {
        GrantSpec {
            id: RequestId::from_random([i; 12]),
            target: target("t"),
            requester: Name::parse("alice").expect("valid"),
            source: SourceNet::host(std::net::IpAddr::from([10, 0, 0, i])),
            ends_at: chrono::DateTime::from_timestamp(end, 0).unwrap_or_default(),
        }
    }

    fn observe(g: &GrantSpec) -> Observed {
        Observed { id: g.id.clone(), target: g.target.name.to_string(), source: g.source, ends_at: g.ends_at }
    }

    proptest! {
        /// Applying the plan to the observed state yields exactly the desired
        /// state, whatever both were.
        #[test]
        fn applying_the_plan_converges(
            desired in proptest::collection::btree_map(0u8..32, 0i64..4, 0..16),
            observed in proptest::collection::btree_map(0u8..32, 0i64..4, 0..16),
        ) {
            let desired: Vec<GrantSpec> = desired.into_iter().map(|(i, e)| grant(i, e)).collect();
            let observed: Vec<Observed> = observed.into_iter().map(|(i, e)| observe(&grant(i, e))).collect();
            let plan = plan(&desired, &BTreeSet::new(), &observed);
            let mut after: BTreeMap<RequestId, Observed> =
                observed.iter().map(|o| (o.id.clone(), o.clone())).collect();
            for id in &plan.close { after.remove(id); }
            for g in &plan.open { after.insert(g.id.clone(), observe(g)); }
            let want: BTreeMap<RequestId, Observed> = desired.iter().map(|g| (g.id.clone(), observe(g))).collect();
            prop_assert_eq!(after, want);
            // And a converged state needs nothing more.
            let again: Vec<Observed> = desired.iter().map(observe).collect();
            let recorded: BTreeSet<RequestId> = desired.iter().map(|g| g.id.clone()).collect();
            prop_assert!(super::plan(&desired, &recorded, &again).is_empty());
        }

        /// A grant is adopted exactly when it is open as it should be but
        /// not recorded as open; opening or adopting leaves every desired
        /// grant open and recorded so.
        #[test]
        fn grants_open_but_unrecorded_are_adopted_and_nothing_else(
            desired in proptest::collection::btree_map(0u8..32, 0i64..4, 0..16),
            observed in proptest::collection::btree_map(0u8..32, 0i64..4, 0..16),
            recorded in proptest::collection::btree_set(0u8..32, 0..16),
        ) {
            let desired: Vec<GrantSpec> = desired.into_iter().map(|(i, e)| grant(i, e)).collect();
            let observed: Vec<Observed> = observed.into_iter().map(|(i, e)| observe(&grant(i, e))).collect();
            let recorded: BTreeSet<RequestId> = recorded.into_iter().map(|i| RequestId::from_random([i; 12])).collect();
            let plan = plan(&desired, &recorded, &observed);
            for g in &desired {
                let open_right = observed.iter().any(|o| *o == observe(g));
                let adopted = plan.adopt.contains(&g.id);
                prop_assert_eq!(adopted, open_right && !recorded.contains(&g.id));
                prop_assert!(!(adopted && plan.open.iter().any(|o| o.id == g.id)), "adopted and opened");
                // After the pass the store records it open.
                let opened = plan.open.iter().any(|o| o.id == g.id);
                prop_assert!(recorded.contains(&g.id) || adopted || opened);
            }
            prop_assert!(plan.adopt.iter().all(|id| desired.iter().any(|g| g.id == *id)), "only desired grants");
        }
    }
}
