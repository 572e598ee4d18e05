//! The `nftables` driver: applies the ruleset of `render` through
//! `nft -j -f -` (the `nftables` crate) and reads granted sources back from
//! the kernel's sets, so the kernel is the only copy of what is open.

use std::collections::BTreeMap;

use ajar_domain::{DriverKind, RequestId, SourceNet, Target};
use ajar_enforce::{Driver, DriverError, GrantSpec, Observed, Opened};
use ajar_netfilter::note::{self, NoteEntry};
use ajar_netfilter::{host, rules};
use chrono::Utc;
use ipnet::IpNet;
use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{NfListObject, NfObject, Nftables as Batch};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::render::{self, TargetRules, FAMILY, TABLE};

/// The kernel-enforced DNAT driver. Every change goes through one mutex:
/// opening and closing read an element, then replace it.
pub struct Nftables {
    /// Set name → target name, for the targets last configured.
    sets: Mutex<BTreeMap<String, String>>,
}

impl Default for Nftables {
    fn default() -> Self {
        Self::new()
    }
}

/// One element of a set as read back from the kernel.
#[derive(Debug, Clone)]
struct Element {
    source: IpNet,
    /// `None` when the comment is not a note ajar wrote.
    notes: Option<Vec<NoteEntry>>,
}

impl Nftables {
    pub fn new() -> Self {
        Self { sets: Mutex::new(BTreeMap::new()) }
    }

    /// Deletes ajar's table and so every rule and granted source in it
    /// (`ajar server --cleanup`). Returns whether there was one.
    pub async fn cleanup() -> Result<bool, DriverError> {
        host::require_programs("nftables", &[("nft", "nftables")])?;
        host::require_net_admin("nft")?;
        if list_table().await?.is_none() {
            return Ok(false);
        }
        apply(render::remove_table()).await?;
        Ok(true)
    }

    /// The elements of `set`, read from the kernel.
    async fn elements(set: &str) -> Result<Vec<Element>, DriverError> {
        Ok(list_table().await?.map(|sets| sets.get(set).cloned().unwrap_or_default()).unwrap_or_default())
    }

    /// Writes the element for `source` in `set` with `entries` (dropping the
    /// ended ones), or deletes it when none is left.
    async fn write(set: &str, source: &IpNet, exists: bool, entries: &[NoteEntry]) -> Result<(), DriverError> {
        let now = Utc::now();
        let live: Vec<NoteEntry> = entries.iter().filter(|e| e.ends_at > now).cloned().collect();
        let latest = live.iter().map(|e| e.ends_at).max();
        let timeout = latest.and_then(|end| note::timeout_secs(end, now));
        let text = note::render(&live);
        if text.len() > note::MAX_NOTE_LEN {
            return Err(DriverError::permanent(format!(
                "{} grants share source {source} on one target, more than the kernel's element comment can record; end one of them first",
                live.len()
            )));
        }
        if !exists && timeout.is_none() {
            return Ok(());
        }
        apply(render::replace_element(set, source, exists, timeout.map(|t| (t, text.as_str())))).await
    }
}

#[async_trait::async_trait]
impl Driver for Nftables {
    /// Checks the host, then creates or adopts `inet ajar` for `targets` in
    /// one transaction. Sets of targets that remain keep their elements.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let mut sets = self.sets.lock().await;
        let rules = target_rules(targets)?;
        if rules.is_empty() && sets.is_empty() {
            // No target uses nftables, so this server needs neither nft nor
            // CAP_NET_ADMIN; a table left from an earlier run is emptied if
            // this process may, else its elements expire on their own.
            if host::on_path("nft") {
                if let Ok(Some(existing)) = list_table().await {
                    if !existing.is_empty() {
                        let stale: Vec<String> = existing.into_keys().collect();
                        apply(render::configure(&[], &stale)).await?;
                        info!(removed_sets = stale.len(), "nftables: no target uses nftables; emptied table inet ajar");
                    }
                }
            }
            return Ok(());
        }
        host::require_programs("nftables", &[("nft", "nftables")])?;
        host::require_net_admin("nft")?;
        host::require_forwarding("nftables", &targets.iter().collect::<Vec<_>>())?;
        let wanted: BTreeMap<String, String> =
            rules.iter().map(|r| (render::set_name(&r.target, &r.listen), r.target.clone())).collect();
        let existing = list_table().await?.unwrap_or_default();
        let stale: Vec<String> = existing.keys().filter(|s| !wanted.contains_key(*s)).cloned().collect();
        apply(render::configure(&rules, &stale)).await?;
        info!(targets = rules.len(), removed_sets = stale.len(), "nftables: table inet ajar is in place");
        *sets = wanted;
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let sets = self.sets.lock().await;
        let rules = TargetRules::of(&grant.target)?;
        let set = render::set_name(&rules.target, &rules.listen);
        if !sets.contains_key(&set) {
            return Err(DriverError::transient(format!(
                "target {} is not configured in nftables yet; it will be at the next reconcile",
                rules.target
            )));
        }
        rules.check_source(&grant.source)?;
        let source = grant.source.net();
        let elements = Self::elements(&set).await?;
        let current = elements.iter().find(|e| e.source == source);
        let entries = note::granting(current.and_then(|e| e.notes.clone()), &grant.id, grant.ends_at);
        Self::write(&set, &source, current.is_some(), &entries).await?;
        info!(grant = %grant.id, target_name = %rules.target, source = %grant.source, ends_at = %grant.ends_at, "nftables: grant opened");
        Ok(rules.opened())
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let sets = self.sets.lock().await;
        if sets.is_empty() {
            return Ok(());
        }
        let table = list_table().await?.unwrap_or_default();
        for (set, elements) in &table {
            if !sets.contains_key(set) {
                continue;
            }
            for element in elements {
                let Some(rest) = element.notes.as_deref().and_then(|notes| note::without(notes, id)) else { continue };
                Self::write(set, &element.source, true, &rest).await?;
                info!(grant = %id, source = %element.source, "nftables: grant closed");
            }
        }
        Ok(())
    }

    /// Every grant the kernel's sets still hold. Elements that carry no note
    /// of ajar's (added by hand) grant nothing ajar knows of, so they are
    /// removed here.
    async fn observe(&self) -> Result<Vec<Observed>, DriverError> {
        let sets = self.sets.lock().await;
        let now = Utc::now();
        let mut observed = Vec::new();
        if sets.is_empty() {
            return Ok(observed);
        }
        for (set, elements) in list_table().await?.unwrap_or_default() {
            let Some(target) = sets.get(&set) else { continue };
            for element in elements {
                match element.notes {
                    Some(notes) => {
                        let Ok(source) = SourceNet::parse(&element.source.to_string()) else { continue };
                        observed.extend(note::observed(notes, target, source, now));
                    }
                    None => {
                        warn!(set = %set, source = %element.source, "nftables: removing an element ajar did not add");
                        apply(render::replace_element(&set, &element.source, true, None)).await?;
                    }
                }
            }
        }
        Ok(observed)
    }

    fn connect_info(&self, target: &Target) -> Option<Opened> {
        rules::connect_info(target, DriverKind::Nftables)
    }
}

fn target_rules(targets: &[Target]) -> Result<Vec<TargetRules>, DriverError> {
    targets.iter().map(TargetRules::of).collect()
}

/// Runs one batch as one nft transaction: all of it applies or none.
async fn apply(batch: Value) -> Result<(), DriverError> {
    let typed: Batch = serde_json::from_value(batch)
        .map_err(|e| DriverError::permanent(format!("ajar rendered nft JSON that nft's schema rejects: {e}")))?;
    let result = nftables::helper::apply_ruleset_async(&typed).await.map_err(nft_error);
    if let Err(e) = &result {
        tracing::debug!(error = %e, batch = %serde_json::to_string(&typed).unwrap_or_default(), "nft rejected a batch");
    }
    result
}

fn nft_error(e: nftables::helper::NftablesError) -> DriverError {
    match e {
        nftables::helper::NftablesError::NftFailed { stderr, stdout, hint, .. } => {
            DriverError::transient(format!("nft failed while {hint}: {} {}", stderr.trim(), stdout.trim()))
        }
        other => DriverError::transient(format!("cannot run nft: {other}")),
    }
}

/// The sets of `inet ajar` with their elements, or `None` when the table
/// does not exist.
async fn list_table() -> Result<Option<BTreeMap<String, Vec<Element>>>, DriverError> {
    let listed = nftables::helper::get_current_ruleset_with_args_async(
        nftables::helper::DEFAULT_NFT,
        &["list", "table", FAMILY, TABLE],
    )
    .await;
    let ruleset = match listed {
        Ok(r) => r,
        Err(nftables::helper::NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            return Ok(None)
        }
        Err(e) => return Err(nft_error(e)),
    };
    let mut sets = BTreeMap::new();
    for object in ruleset.objects.iter() {
        let NfObject::ListObject(NfListObject::Set(set)) = object else { continue };
        // Only ajar's own table, whatever nft chose to list.
        if set.table != TABLE || set.family != nftables::types::NfFamily::INet {
            continue;
        }
        let elements = set.elem.as_deref().unwrap_or_default().iter().filter_map(element).collect();
        sets.insert(set.name.to_string(), elements);
    }
    Ok(Some(sets))
}

fn element(expr: &Expression<'_>) -> Option<Element> {
    let (val, comment) = match expr {
        Expression::Named(NamedExpression::Elem(e)) => (&*e.val, e.comment.as_deref()),
        other => (other, None),
    };
    let source = match val {
        Expression::String(addr) => IpNet::from(addr.parse::<std::net::IpAddr>().ok()?),
        Expression::Named(NamedExpression::Prefix(p)) => match &*p.addr {
            Expression::String(addr) => IpNet::new(addr.parse().ok()?, u8::try_from(p.len).ok()?).ok()?,
            _ => return None,
        },
        _ => return None,
    };
    Some(Element { source, notes: comment.and_then(note::parse) })
}
