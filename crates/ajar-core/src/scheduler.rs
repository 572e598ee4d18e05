//! Exact expiry: a delay queue keyed by each request's next deadline
//! (`ends_at` of a grant, `decide_by` of a pending request). No polling: the
//! task sleeps until the earliest deadline.

use std::sync::Arc;
use std::time::Duration;

use ajar_domain::{RequestId, Timestamp};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::time::DelayQueue;

use crate::Core;

/// "Look at this request again at this instant."
#[derive(Debug, Clone)]
pub struct Deadline {
    pub id: RequestId,
    pub at: Timestamp,
}

/// Starts the scheduler for `core`; it stops when `shutdown` turns true.
pub fn spawn(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Deadline>();
    core.set_scheduler(tx);
    tokio::spawn(async move {
        let mut queue: DelayQueue<RequestId> = DelayQueue::new();
        loop {
            tokio::select! {
                Some(deadline) = rx.recv() => {
                    let wait = (deadline.at - core.now()).to_std().unwrap_or(Duration::ZERO);
                    queue.insert(deadline.id, wait);
                }
                Some(expired) = queue.next(), if !queue.is_empty() => {
                    let core = core.clone();
                    let id = expired.into_inner();
                    tokio::spawn(async move { core.on_deadline(&id).await });
                }
                _ = shutdown.changed() => break,
            }
        }
    })
}
