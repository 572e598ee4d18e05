//! The nftables backend of the kernel DNAT driver: applies the ruleset of
//! `render` through `nft -j -f -` (the `nftables` crate) and reads granted
//! sources back from the kernel's sets, so the kernel is the only copy of
//! what is open.

use std::collections::BTreeMap;

use ajar_domain::{DriverKind, Target};
use ajar_enforce::DriverError;
use ajar_netfilter::note;
use ajar_netfilter::rules::TargetRules;
use ajar_netfilter::{host, Backend, Element, Sets};
use ipnet::IpNet;
use nftables::expr::{Expression, NamedExpression};
use nftables::schema::{NfListObject, NfObject, Nftables as Batch};
use serde_json::Value;

use crate::render::{self, FAMILY, TABLE};

/// The program this backend runs, with its Debian package.
const NFT: (&str, &str) = ("nft", "nftables");

/// nftables, through its JSON interface: each change is one `nft -j -f -`
/// transaction in table `inet ajar`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Nft;

#[async_trait::async_trait]
impl Backend for Nft {
    const KIND: DriverKind = DriverKind::Nftables;
    const TOOL: &'static str = "nft";
    const NOTE_HOLDER: &'static str = "the kernel's element comment can record";

    fn installed() -> bool {
        host::on_path(NFT.0)
    }

    fn programs(_rules: &[TargetRules]) -> Vec<(&'static str, &'static str)> {
        vec![NFT]
    }

    fn set_name(rules: &TargetRules) -> String {
        render::set_name(&rules.target, &rules.listen)
    }

    async fn sets(&self) -> Result<Sets, DriverError> {
        Ok(list_table().await?.unwrap_or_default())
    }

    async fn apply(&self, rules: &[TargetRules], stale: &[String]) -> Result<(), DriverError> {
        apply(render::configure(rules, stale)).await
    }

    async fn put(&self, set: &str, source: &IpNet, exists: bool, to: Option<(u32, &str)>) -> Result<(), DriverError> {
        apply(render::replace_element(set, source, exists, to)).await
    }

    /// Deletes ajar's table and so every rule and granted source in it.
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError> {
        // Without nft there is no table of ajar's unless a target uses
        // nftables, and then the check below says what is missing.
        if targets.is_empty() && !host::on_path(NFT.0) {
            return Ok(Vec::new());
        }
        let removed = remove_table().await.map_err(|e| e.context("cannot remove ajar's nftables table"))?;
        Ok(removed
            .then(|| {
                "removed nftables table inet ajar: every DNAT rule and granted source ajar had installed is gone"
                    .to_owned()
            })
            .into_iter()
            .collect())
    }
}

/// Deletes table `inet ajar`; returns whether there was one.
async fn remove_table() -> Result<bool, DriverError> {
    host::require_programs(Nft::KIND.as_str(), &[NFT])?;
    host::require_net_admin(Nft::TOOL)?;
    if list_table().await?.is_none() {
        return Ok(false);
    }
    apply(render::remove_table()).await?;
    Ok(true)
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
async fn list_table() -> Result<Option<Sets>, DriverError> {
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
