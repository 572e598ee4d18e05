//! The kernel DNAT driver, written once for both tools: [`NatDriver`] keeps
//! the bookkeeping of `configure`, `open`, `close` and `observe` (which set
//! serves which target, the notes, the kernel timeouts, the host checks and
//! what the sets say is open), and a [`Backend`] only reads and writes one
//! tool's sets and rules (`nft -j -f -`, or `iptables-restore` and `ipset`).

use std::collections::BTreeMap;
use std::sync::Arc;

use ajar_domain::{DriverKind, RequestId, SourceNet, Target, Timestamp};
use ajar_enforce::clock::Clock;
use ajar_enforce::{Driver, DriverError, GrantSpec, Observation, Opened};
use ipnet::IpNet;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::host;
use crate::note::{self, NoteEntry};
use crate::rules::{self, TargetRules};

/// ajar's sets in the kernel by name, with their elements.
pub type Sets = BTreeMap<String, Vec<Element>>;

/// One element of one of ajar's sets, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub source: IpNet,
    /// `None` when the element's comment is not a note ajar wrote.
    pub notes: Option<Vec<NoteEntry>>,
}

/// What one tool knows: how to read ajar's sets back and how to write
/// rules and elements. Everything a backend writes is ajar's alone (a table
/// or chains and sets of its own), and each write applies whole or not at
/// all as far as the tool allows.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The driver this backend is; messages and logs name it.
    const KIND: DriverKind;
    /// The program the driver runs, as the CAP_NET_ADMIN check names it.
    const TOOL: &'static str;
    /// What holds a set element's note, for the error when too many grants
    /// share one element (`more than {NOTE_HOLDER}`).
    const NOTE_HOLDER: &'static str;

    /// Whether the tools to read and remove what an earlier run left are
    /// installed, so that a server without targets of this driver can tidy
    /// up without needing them.
    fn installed() -> bool;

    /// The programs (name, Debian package) serving `rules` runs.
    fn programs(rules: &[TargetRules]) -> Vec<(&'static str, &'static str)>;

    /// Fails, saying what to fix, unless this host can serve `targets`
    /// (whose rules are `rules`): the programs, CAP_NET_ADMIN and IP
    /// forwarding. Both tools keep this; tests of the shared logic, which
    /// must not change the host, replace it.
    fn check_host(rules: &[TargetRules], targets: &[Target]) -> Result<(), DriverError> {
        host::require_programs(Self::KIND.as_str(), &Self::programs(rules))?;
        host::require_net_admin(Self::TOOL)?;
        host::require_forwarding(Self::KIND.as_str(), &targets.iter().collect::<Vec<_>>())
    }

    /// The set holding the granted sources of `rules`' target.
    fn set_name(rules: &TargetRules) -> String;

    /// ajar's sets and their elements, read from the kernel; empty when
    /// there are none.
    async fn sets(&self) -> Result<Sets, DriverError>;

    /// Brings the kernel to `rules`: creates their sets unless they exist
    /// (keeping the elements, and so the grants, of existing ones),
    /// rewrites ajar's rules, and deletes the `stale` sets, which no rule
    /// names any more.
    async fn apply(&self, rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError>;

    /// Replaces the element for `source` in `set` (where one `exists`) by
    /// what it is to be: with `Some((timeout, note))` it admits `source`
    /// for `timeout` seconds and carries `note`; with `None` it is removed.
    async fn put(&self, set: &str, source: &IpNet, exists: bool, to: Option<(u32, &str)>) -> Result<(), DriverError>;

    /// Removes everything this tool holds of ajar's (`ajar server
    /// --cleanup`) and says what went. `targets` are the configured
    /// targets of this driver: with none, a host without the tool is left
    /// alone.
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError>;
}

/// The kernel-enforced DNAT driver over backend `B`. Every change goes
/// through one mutex: opening and closing read an element, then replace it.
pub struct NatDriver<B> {
    backend: B,
    clock: Arc<dyn Clock>,
    /// Set name → target name, for the targets last configured.
    sets: Mutex<BTreeMap<String, String>>,
}

impl<B: Backend + Default> NatDriver<B> {
    /// A driver that has configured nothing yet and reads the time from
    /// `clock`. It touches the kernel only once a target uses it.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { backend: B::default(), clock, sets: Mutex::new(BTreeMap::new()) }
    }
}

impl<B: Backend> NatDriver<B> {
    /// Writes the element for `source` in `set` with `entries` (dropping the
    /// ended ones), or deletes it when none is left.
    async fn write(&self, set: &str, source: &IpNet, exists: bool, entries: &[NoteEntry]) -> Result<(), DriverError> {
        let now = self.clock.now();
        let live: Vec<NoteEntry> = entries.iter().filter(|e| e.ends_at > now).cloned().collect();
        let timeout = latest_end(&live).and_then(|end| note::timeout_secs(end, now));
        let text = note::render(&live);
        if text.len() > note::MAX_NOTE_LEN {
            return Err(DriverError::permanent(format!(
                "{} grants share source {source} on one target, more than {}; end one of them first",
                live.len(),
                B::NOTE_HOLDER
            )));
        }
        if !exists && timeout.is_none() {
            return Ok(());
        }
        self.backend.put(set, source, exists, timeout.map(|t| (t, text.as_str()))).await
    }
}

fn latest_end(entries: &[NoteEntry]) -> Option<Timestamp> {
    entries.iter().map(|e| e.ends_at).max()
}

#[async_trait::async_trait]
impl<B: Backend> Driver for NatDriver<B> {
    /// Checks the host, then creates or adopts ajar's rules and sets for
    /// `targets`. Sets of targets that remain keep their elements.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let mut sets = self.sets.lock().await;
        let rules = targets.iter().map(|t| TargetRules::of(t, B::KIND)).collect::<Result<Vec<_>, _>>()?;
        let name = B::KIND.as_str();
        if rules.is_empty() && sets.is_empty() {
            // No target uses this driver, so this server needs neither its
            // tools nor CAP_NET_ADMIN; sets left from an earlier run are
            // removed if this process may, else their elements expire on
            // their own.
            if B::installed() {
                if let Ok(existing) = self.backend.sets().await {
                    if !existing.is_empty() {
                        let stale: Vec<String> = existing.into_keys().collect();
                        self.backend.apply(&[], &stale).await?;
                        info!(removed_sets = stale.len(), "{name}: no target uses {name}; removed ajar's sets");
                    }
                }
            }
            return Ok(());
        }
        B::check_host(&rules, targets)?;
        let wanted: BTreeMap<String, String> = rules.iter().map(|r| (B::set_name(r), r.target.clone())).collect();
        let stale: Vec<String> = self.backend.sets().await?.into_keys().filter(|s| !wanted.contains_key(s)).collect();
        self.backend.apply(&rules, &stale).await?;
        info!(targets = rules.len(), removed_sets = stale.len(), "{name}: ajar's rules and sets are in place");
        *sets = wanted;
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let sets = self.sets.lock().await;
        let rules = TargetRules::of(&grant.target, B::KIND)?;
        let set = B::set_name(&rules);
        if !sets.contains_key(&set) {
            return Err(DriverError::transient(format!(
                "target {} is not configured in {} yet; it will be at the next reconcile",
                rules.target,
                B::KIND
            )));
        }
        rules.check_source(&grant.source)?;
        let source = grant.source.net();
        let elements = self.backend.sets().await?.remove(&set).unwrap_or_default();
        let current = elements.into_iter().find(|e| e.source == source);
        let exists = current.is_some();
        let entries = note::granting(current.and_then(|e| e.notes), &grant.id, grant.ends_at);
        self.write(&set, &source, exists, &entries).await?;
        info!(grant = %grant.id, target_name = %rules.target, source = %grant.source, ends_at = %grant.ends_at, "{}: grant opened", B::KIND);
        Ok(rules.opened())
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let sets = self.sets.lock().await;
        if sets.is_empty() {
            return Ok(());
        }
        for (set, elements) in self.backend.sets().await? {
            if !sets.contains_key(&set) {
                continue;
            }
            for element in elements {
                let Some(rest) = element.notes.as_deref().and_then(|notes| note::without(notes, id)) else { continue };
                self.write(&set, &element.source, true, &rest).await?;
                info!(grant = %id, source = %element.source, "{}: grant closed", B::KIND);
            }
        }
        Ok(())
    }

    /// Every grant ajar's sets still hold. Elements that carry no note of
    /// ajar's (added by hand) grant nothing ajar knows of, so they are
    /// removed here. Kernel paths do not end on their own before their
    /// grants, so nothing is reported as ended early.
    async fn observe(&self) -> Result<Observation, DriverError> {
        let sets = self.sets.lock().await;
        let now = self.clock.now();
        let mut open = Vec::new();
        if sets.is_empty() {
            return Ok(Observation::default());
        }
        for (set, elements) in self.backend.sets().await? {
            let Some(target) = sets.get(&set) else { continue };
            for element in elements {
                match element.notes {
                    Some(notes) => {
                        let Ok(source) = SourceNet::parse(&element.source.to_string()) else { continue };
                        open.extend(note::observed(notes, target, source, now));
                    }
                    None => {
                        warn!(set = %set, source = %element.source, "{}: removing an element ajar did not add", B::KIND);
                        self.backend.put(&set, &element.source, true, None).await?;
                    }
                }
            }
        }
        Ok(Observation { open, ended_early: Vec::new() })
    }

    /// The listen address: the same for every grant.
    fn connect_info(&self, target: &Target, _grant: Option<&RequestId>) -> Option<Opened> {
        rules::connect_info(target, B::KIND)
    }

    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError> {
        self.backend.cleanup(targets).await
    }
}

/// The shared logic on an in-memory kernel: which element each grant
/// lands in, the timeout the clock gives it, and what observing reads back.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use ajar_domain::{DriverSettings, GatewaySettings, Name, NatSettings};
    use ajar_enforce::clock::ManualClock;
    use chrono::DateTime;

    use super::*;

    /// Sets in memory, and the timeout each element was last written with.
    #[derive(Default)]
    struct Memory {
        sets: StdMutex<Sets>,
        timeouts: StdMutex<BTreeMap<(String, IpNet), u32>>,
    }

    #[async_trait::async_trait]
    impl Backend for Memory {
        const KIND: DriverKind = DriverKind::Nftables;
        const TOOL: &'static str = "memory";
        const NOTE_HOLDER: &'static str = "a test element holds";

        fn installed() -> bool {
            true
        }

        fn programs(_rules: &[TargetRules]) -> Vec<(&'static str, &'static str)> {
            Vec::new()
        }

        /// This host is never checked or changed.
        fn check_host(_rules: &[TargetRules], _targets: &[Target]) -> Result<(), DriverError> {
            Ok(())
        }

        fn set_name(rules: &TargetRules) -> String {
            format!("set-{}", rules.target)
        }

        async fn sets(&self) -> Result<Sets, DriverError> {
            Ok(self.sets.lock().unwrap().clone())
        }

        async fn apply(&self, rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError> {
            let mut sets = self.sets.lock().unwrap();
            for r in rules {
                sets.entry(Self::set_name(r)).or_default();
            }
            for set in stale {
                sets.remove(set);
            }
            Ok(())
        }

        async fn put(&self, set: &str, source: &IpNet, had: bool, to: Option<(u32, &str)>) -> Result<(), DriverError> {
            let mut sets = self.sets.lock().unwrap();
            let elements = sets.get_mut(set).unwrap();
            assert_eq!(elements.iter().any(|e| e.source == *source), had, "{set} {source}");
            elements.retain(|e| e.source != *source);
            if let Some((timeout, text)) = to {
                elements.push(Element { source: *source, notes: note::parse(text) });
                self.timeouts.lock().unwrap().insert((set.to_owned(), *source), timeout);
            }
            Ok(())
        }

        async fn cleanup(&self, _targets: &[Target]) -> Result<Vec<String>, DriverError> {
            Ok(Vec::new())
        }
    }

    fn at(secs: i64) -> Timestamp {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn target(name: &str, listen: &str) -> Target {
        Target {
            name: Name::parse(name).unwrap(),
            address: "10.77.2.2:22".into(),
            labels: BTreeMap::new(),
            driver: DriverSettings::Nftables(NatSettings {
                listen: listen.parse().unwrap(),
                destination: "10.77.2.2:22".parse().unwrap(),
                enable_forwarding: false,
            }),
            agent_group: None,
        }
    }

    fn grant(n: u8, target: &Target, source: &str, ends_at: i64) -> GrantSpec {
        GrantSpec {
            id: RequestId::from_random([n; 12]),
            target: target.clone(),
            requester: Name::parse("alice").unwrap(),
            source: SourceNet::parse(source).unwrap(),
            ends_at: at(ends_at),
        }
    }

    fn driver(now: i64) -> (NatDriver<Memory>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(at(now)));
        (NatDriver::new(clock.clone()), clock)
    }

    fn open_ids(observation: &Observation) -> Vec<RequestId> {
        let mut ids: Vec<RequestId> = observation.open.iter().map(|o| o.id.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn grants_of_one_source_share_an_element_timed_by_the_clock() {
        let (nat, clock) = driver(1_000);
        let ssh = target("ssh", "10.77.1.1:2222");
        nat.configure(std::slice::from_ref(&ssh)).await.unwrap();
        let (first, second) = (grant(1, &ssh, "10.77.0.2/32", 1_030), grant(2, &ssh, "10.77.0.2/32", 1_090));
        assert_eq!(nat.open(&first).await.unwrap(), Opened { host: "10.77.1.1".into(), port: 2222 });
        nat.open(&second).await.unwrap();
        let key = ("set-ssh".to_owned(), second.source.net());
        assert_eq!(nat.backend.timeouts.lock().unwrap()[&key], 90, "the later end, counted from the clock");
        assert_eq!(nat.backend.sets.lock().unwrap()["set-ssh"].len(), 1, "one element for both grants");
        assert_eq!(open_ids(&nat.observe().await.unwrap()), vec![first.id.clone(), second.id.clone()]);

        // The clock, not the system's, says which grants have ended.
        clock.set(at(1_040));
        let observed = nat.observe().await.unwrap();
        assert_eq!(open_ids(&observed), vec![second.id.clone()]);
        assert!(observed.ended_early.is_empty());

        // Closing one grant rewrites the element for the other; closing the
        // last removes it.
        nat.close(&first.id).await.unwrap();
        assert_eq!(nat.backend.timeouts.lock().unwrap()[&key], 50);
        nat.close(&second.id).await.unwrap();
        assert!(nat.backend.sets.lock().unwrap()["set-ssh"].is_empty());
        assert_eq!(nat.observe().await.unwrap(), Observation::default());
    }

    #[tokio::test]
    async fn what_cannot_be_opened_says_why() {
        let (nat, _clock) = driver(1_000);
        let ssh = target("ssh", "10.77.1.1:2222");
        let early = nat.open(&grant(1, &ssh, "10.77.0.2/32", 1_030)).await.unwrap_err();
        assert!(early.transient && early.message.contains("not configured in nftables yet"), "{early:?}");
        nat.configure(std::slice::from_ref(&ssh)).await.unwrap();
        let v6 = nat.open(&grant(1, &ssh, "fd77::2/128", 1_030)).await.unwrap_err();
        assert!(!v6.transient && v6.message.contains("different IP families"), "{v6:?}");
        let mut gateway = ssh.clone();
        gateway.driver =
            DriverSettings::Gateway(GatewaySettings { listen: "127.0.0.1:2222".parse().unwrap(), public_host: None });
        let wrong = nat.open(&grant(1, &gateway, "10.77.0.2/32", 1_030)).await.unwrap_err();
        assert!(!wrong.transient && wrong.message.contains("bug in ajar"), "{wrong:?}");
        assert!(nat.configure(&[gateway]).await.is_err(), "a gateway target is not an nftables target");
        // An ended grant leaves nothing behind.
        nat.open(&grant(2, &ssh, "10.77.0.3/32", 999)).await.unwrap();
        assert!(nat.backend.sets.lock().unwrap()["set-ssh"].is_empty());
    }

    #[tokio::test]
    async fn elements_ajar_did_not_write_and_sets_of_gone_targets_are_removed() {
        let (nat, _clock) = driver(1_000);
        let (ssh, db) = (target("ssh", "10.77.1.1:2222"), target("db", "10.77.1.1:5432"));
        nat.configure(&[ssh.clone(), db]).await.unwrap();
        let foreign: IpNet = "192.0.2.0/24".parse().unwrap();
        nat.backend.sets.lock().unwrap().get_mut("set-ssh").unwrap().push(Element { source: foreign, notes: None });
        assert_eq!(nat.observe().await.unwrap(), Observation::default());
        assert!(nat.backend.sets.lock().unwrap()["set-ssh"].is_empty(), "the hand-made element is gone");

        nat.configure(std::slice::from_ref(&ssh)).await.unwrap();
        let names: Vec<String> = nat.backend.sets.lock().unwrap().keys().cloned().collect();
        assert_eq!(names, ["set-ssh"]);
        // A fresh driver without targets removes what an earlier run left.
        let (fresh, _clock) = driver(1_000);
        fresh.backend.sets.lock().unwrap().insert("set-old".into(), Vec::new());
        fresh.configure(&[]).await.unwrap();
        assert!(fresh.backend.sets.lock().unwrap().is_empty());
    }
}
