//! What a caller may ask for, and where they will connect.

use ajar_domain::policy::{self, Principal};
use ajar_domain::{GrantDuration, Target};
use ajar_enforce::Opened;

use crate::Core;

/// A target as a caller may see it: with the combined limits of the
/// policies that let them request it.
#[derive(Debug, Clone)]
pub struct TargetView {
    pub target: Target,
    pub max_duration: GrantDuration,
    pub reason_required: bool,
    pub approvals_required: u32,
    pub approvers: Vec<String>,
    pub policies: Vec<String>,
    pub connect: Option<Opened>,
    /// Other addresses that reach the target (other agents of its group).
    pub also: Vec<Opened>,
}

impl Core {
    pub fn targets(&self, who: &Principal) -> Vec<TargetView> {
        let catalog = self.catalog();
        policy::offers(&catalog, who)
            .into_iter()
            .map(|offer| {
                let mut all = self
                    .drivers
                    .get(&offer.target.placement())
                    .map(|d| d.connect_all(offer.target, None))
                    .unwrap_or_default();
                let connect = (!all.is_empty()).then(|| all.remove(0));
                TargetView {
                    target: offer.target.clone(),
                    max_duration: offer.max_duration,
                    reason_required: offer.reason_required,
                    approvals_required: offer.approvals_required,
                    approvers: offer.approvers.iter().map(|s| s.to_string()).collect(),
                    policies: offer.policies.iter().map(|p| p.to_string()).collect(),
                    connect,
                    also: all,
                }
            })
            .collect()
    }
}
