//! The `iptables` driver: writes ajar's chains with `iptables-restore
//! --noflush` (one commit per table), keeps granted sources in ipsets whose
//! elements time out in the kernel, and reads them back with `ipset save`,
//! so the kernel is the only copy of what is open.

use std::collections::BTreeMap;
use std::process::Stdio;

use ajar_domain::{DriverKind, RequestId, SourceNet, Target};
use ajar_enforce::{Driver, DriverError, GrantSpec, Observed, Opened};
use ajar_netfilter::note::{self, NoteEntry};
use ajar_netfilter::{host, rules};
use chrono::Utc;
use ipnet::IpNet;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::render::{self, Family, SavedElement, TargetRules};

/// The kernel-enforced DNAT driver on iptables and ipset. Every change goes
/// through one mutex: opening and closing read an element, then replace it.
pub struct Iptables {
    /// Set name → target name, for the targets last configured.
    sets: Mutex<BTreeMap<String, String>>,
}

impl Default for Iptables {
    fn default() -> Self {
        Self::new()
    }
}

impl Iptables {
    pub fn new() -> Self {
        Self { sets: Mutex::new(BTreeMap::new()) }
    }

    /// Deletes ajar's jump rules, chains and sets in both families, and so
    /// every rule and granted source ajar installed (`ajar server
    /// --cleanup`). Returns whether there was anything to remove.
    pub async fn cleanup() -> Result<bool, DriverError> {
        host::require_programs("iptables", &[("iptables", "iptables"), ("ipset", "ipset")])?;
        host::require_net_admin("iptables")?;
        let mut removed = false;
        for family in Family::ALL {
            // Read first, so that a host where ajar never ran iptables gets
            // no table created by the deletes below.
            if !host::on_path(family.save()) || !run(family.save(), &[], None).await?.contains(":AJAR-") {
                continue;
            }
            for jump in render::JUMPS {
                // A jump inserted twice (by hand, or by two racing starts)
                // goes too; deleting stops at the first failure.
                while run(family.iptables(), &render::jump("-D", jump), None).await.is_ok() {
                    removed = true;
                }
            }
            for (table, _, chain) in render::JUMPS {
                let flush = ["-w", "-t", table, "-F", chain].map(str::to_owned);
                if run(family.iptables(), &flush, None).await.is_ok() {
                    let delete = ["-w", "-t", table, "-X", chain].map(str::to_owned);
                    run(family.iptables(), &delete, None).await?;
                    removed = true;
                }
            }
        }
        for (set, _) in saved_sets().await? {
            run("ipset", &["destroy".to_owned(), set], None).await?;
            removed = true;
        }
        Ok(removed)
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
                "{} grants share source {source} on one target, more than ajar records in one element's comment; end one of them first",
                live.len()
            )));
        }
        match timeout {
            Some(secs) => run("ipset", &render::add_element(set, source, secs, &text), None).await.map(drop),
            None if exists => run("ipset", &render::delete_element(set, source), None).await.map(drop),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Driver for Iptables {
    /// Checks the host, creates the sets of `targets` (keeping the elements
    /// of existing ones), rewrites ajar's chains, makes sure the jumps to
    /// them exist, and destroys the sets of targets that are gone.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let mut sets = self.sets.lock().await;
        let rules = targets.iter().map(TargetRules::of).collect::<Result<Vec<_>, _>>()?;
        if rules.is_empty() && sets.is_empty() {
            // No target uses iptables, so this server needs neither the
            // tools nor CAP_NET_ADMIN; sets left from an earlier run are
            // removed if this process may, else they expire on their own.
            if host::on_path("ipset") && host::on_path("iptables") {
                if let Ok(existing) = saved_sets().await {
                    if !existing.is_empty() {
                        let stale: Vec<String> = existing.into_iter().map(|(s, _)| s).collect();
                        apply(&[], &stale).await?;
                        info!(removed_sets = stale.len(), "iptables: no target uses iptables; removed ajar's sets");
                    }
                }
            }
            return Ok(());
        }
        let mut programs = vec![("ipset", "ipset")];
        for family in Family::ALL {
            if rules.iter().any(|r| render::family_of(r) == family) {
                programs.extend([(family.iptables(), "iptables"), (family.restore(), "iptables")]);
            }
        }
        host::require_programs("iptables", &programs)?;
        host::require_net_admin("iptables")?;
        host::require_forwarding("iptables", &targets.iter().collect::<Vec<_>>())?;
        let wanted: BTreeMap<String, String> = rules.iter().map(|r| (render::set_of(r), r.target.clone())).collect();
        let stale: Vec<String> =
            saved_sets().await?.into_iter().map(|(s, _)| s).filter(|s| !wanted.contains_key(s)).collect();
        apply(&rules, &stale).await?;
        info!(targets = rules.len(), removed_sets = stale.len(), "iptables: ajar's chains and sets are in place");
        *sets = wanted;
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let sets = self.sets.lock().await;
        let rules = TargetRules::of(&grant.target)?;
        let set = render::set_of(&rules);
        if !sets.contains_key(&set) {
            return Err(DriverError::transient(format!(
                "target {} is not configured in iptables yet; it will be at the next reconcile",
                rules.target
            )));
        }
        rules.check_source(&grant.source)?;
        let source = grant.source.net();
        let elements = saved_sets().await?.into_iter().find(|(s, _)| *s == set).map(|(_, e)| e).unwrap_or_default();
        let current = elements.iter().find(|e| e.source == source);
        let entries =
            note::granting(current.and_then(|e| e.comment.as_deref().and_then(note::parse)), &grant.id, grant.ends_at);
        Self::write(&set, &source, current.is_some(), &entries).await?;
        info!(grant = %grant.id, target_name = %rules.target, source = %grant.source, ends_at = %grant.ends_at, "iptables: grant opened");
        Ok(rules.opened())
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let sets = self.sets.lock().await;
        if sets.is_empty() {
            return Ok(());
        }
        for (set, elements) in saved_sets().await? {
            if !sets.contains_key(&set) {
                continue;
            }
            for element in elements {
                let notes = element.comment.as_deref().and_then(note::parse);
                let Some(rest) = notes.and_then(|notes| note::without(&notes, id)) else { continue };
                Self::write(&set, &element.source, true, &rest).await?;
                info!(grant = %id, source = %element.source, "iptables: grant closed");
            }
        }
        Ok(())
    }

    /// Every grant ajar's sets still hold. Elements that carry no note of
    /// ajar's (added by hand) grant nothing ajar knows of, so they are
    /// removed here.
    async fn observe(&self) -> Result<Vec<Observed>, DriverError> {
        let sets = self.sets.lock().await;
        let now = Utc::now();
        let mut observed = Vec::new();
        if sets.is_empty() {
            return Ok(observed);
        }
        for (set, elements) in saved_sets().await? {
            let Some(target) = sets.get(&set) else { continue };
            for SavedElement { source, comment, .. } in elements {
                match comment.as_deref().and_then(note::parse) {
                    Some(notes) => {
                        let Ok(source) = SourceNet::parse(&source.to_string()) else { continue };
                        observed.extend(note::observed(notes, target, source, now));
                    }
                    None => {
                        warn!(set = %set, source = %source, "iptables: removing an element ajar did not add");
                        run("ipset", &render::delete_element(&set, &source), None).await?;
                    }
                }
            }
        }
        Ok(observed)
    }

    fn connect_info(&self, target: &Target) -> Option<Opened> {
        rules::connect_info(target, DriverKind::Iptables)
    }
}

/// Brings the kernel to `rules`: sets first (a rule cannot name a missing
/// set), then each family's chains in one restore per family, then the
/// jumps, and last the `stale` sets, which no rule names any more. A family
/// is touched only when a target or a stale set uses it, and gets its jumps
/// only when a target uses it.
async fn apply(rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError> {
    for r in rules {
        run("ipset", &render::create_set(&render::set_of(r), render::family_of(r)), None).await?;
    }
    for family in Family::ALL {
        let serves = rules.iter().any(|r| render::family_of(r) == family);
        if !serves && !stale.iter().any(|s| render::set_family(s) == Some(family)) {
            continue;
        }
        let input = render::restore(family, rules);
        run(family.restore(), &["-w".to_owned(), "--noflush".to_owned()], Some(&input)).await?;
        if !serves {
            // Emptied only to free the stale sets; no jump is needed.
            continue;
        }
        for jump in render::JUMPS {
            if run(family.iptables(), &render::jump("-C", jump), None).await.is_err() {
                run(family.iptables(), &render::jump("-I", jump), None).await?;
            }
        }
    }
    for set in stale {
        run("ipset", &["destroy".to_owned(), set.clone()], None).await?;
    }
    Ok(())
}

/// ajar's sets and their elements, read from the kernel.
async fn saved_sets() -> Result<Vec<(String, Vec<SavedElement>)>, DriverError> {
    Ok(render::parse_save(&run("ipset", &["save".to_owned()], None).await?))
}

/// Runs `program args`, feeding it `input`, and returns its stdout; a
/// failure carries the program's own complaint.
async fn run(program: &str, args: &[String], input: Option<&str>) -> Result<String, DriverError> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DriverError::permanent(format!(
                    "the iptables driver runs {program} but it is not on PATH; install it (on Debian: apt-get install iptables ipset)"
                ))
            } else {
                DriverError::transient(format!("cannot run {program}: {e}"))
            }
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| DriverError::transient(format!("cannot feed {program}: {e}")))?;
    }
    let out =
        child.wait_with_output().await.map_err(|e| DriverError::transient(format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        debug!(program, args = %args.join(" "), input = input.unwrap_or_default(), "a firewall command failed");
        Err(DriverError::transient(format!("{program} {} failed: {}", args.join(" "), stderr.trim())))
    }
}
