//! The periodic reconcile loop: converges drivers and store after crashes,
//! failed driver calls and missed timers.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use crate::Core;

/// Runs [`Core::reconcile_once`] every `interval` until `shutdown` turns
/// true, and audits the repeats of failed sign-ins whose minute is over
/// (all of them at shutdown).
pub fn spawn(core: Arc<Core>, interval: Duration, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; start() has just reconciled.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(e) = core.reconcile_once().await {
                        warn!(error = %e, "reconcile failed; trying again next round");
                    }
                    core.close_failed_sign_ins(false).await;
                }
                _ = shutdown.changed() => {
                    core.close_failed_sign_ins(true).await;
                    break;
                }
            }
        }
    })
}
