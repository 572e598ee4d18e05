//! Exact expiry: a delay queue with one timer per live request, set to its
//! next deadline (`ends_at` of a grant, `decide_by` of a pending request).
//! No polling: the task sleeps until the earliest deadline, then
//! [`Core::on_deadline`] expires the grant or times out the request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ajar_domain::{RequestId, RequestState, Timestamp};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_util::time::{delay_queue, DelayQueue};
use tracing::{debug, error, warn};

use crate::{Core, CoreError};

impl Core {
    /// Called by the scheduler when a request's deadline has come.
    pub async fn on_deadline(&self, id: &RequestId) {
        let request = match self.store.get_request(id).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                error!(request = %id, error = %e, "cannot load a request whose deadline came; the reconciler will retry");
                return;
            }
        };
        let now = self.now();
        match request.expire(now).or_else(|| request.time_out(now)) {
            Some(change) => {
                if change.next.state == RequestState::Expired {
                    if let Some(end) = request.ends_at {
                        let lag = (now - end).num_milliseconds().max(0);
                        self.metrics().record_expiry_lag(u64::try_from(lag).unwrap_or(0));
                    }
                }
                match self.apply(&request, change).await {
                    Ok(_) => {}
                    // Another replica's timer won: it expired the grant and
                    // closes it; this replica's path closes on its notice.
                    Err(CoreError::Conflict) => debug!(request = %id, "another replica handled this deadline"),
                    Err(e) => {
                        warn!(request = %id, error = %e, "closing at the deadline failed; the reconciler will retry")
                    }
                }
            }
            // The timer fired a moment before the wall clock reached the
            // deadline: look again then.
            None => self.schedule(&request),
        }
    }
}

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
        let mut queue = Deadlines::default();
        loop {
            tokio::select! {
                Some(deadline) = rx.recv() => {
                    let wait = (deadline.at - core.now()).to_std().unwrap_or(Duration::ZERO);
                    queue.set(deadline.id, wait);
                }
                Some(id) = queue.next(), if !queue.is_empty() => {
                    let core = core.clone();
                    tokio::spawn(async move { core.on_deadline(&id).await });
                }
                _ = shutdown.changed() => break,
            }
        }
    })
}

/// One timer per request: setting a request's deadline again moves its
/// timer instead of adding another, so the reconcile loop re-announcing
/// every live request each pass costs no memory and fires nothing twice.
#[derive(Default)]
struct Deadlines {
    queue: DelayQueue<RequestId>,
    keys: HashMap<RequestId, delay_queue::Key>,
}

impl Deadlines {
    fn set(&mut self, id: RequestId, wait: Duration) {
        match self.keys.get(&id) {
            Some(key) => self.queue.reset(key, wait),
            None => {
                let key = self.queue.insert(id.clone(), wait);
                self.keys.insert(id, key);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The next request whose deadline has come.
    async fn next(&mut self) -> Option<RequestId> {
        let expired = self.queue.next().await?;
        let id = expired.into_inner();
        self.keys.remove(&id);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> RequestId {
        RequestId::from_random([n; 12])
    }

    #[tokio::test]
    async fn setting_a_deadline_again_moves_it_instead_of_adding_one() {
        let mut deadlines = Deadlines::default();
        for _ in 0..1000 {
            deadlines.set(id(1), Duration::from_secs(10));
        }
        deadlines.set(id(2), Duration::from_millis(200));
        assert_eq!(deadlines.len(), 2);
        // Moving request 1 earlier than request 2 makes it fire first, once.
        deadlines.set(id(1), Duration::from_millis(10));
        assert_eq!(deadlines.next().await, Some(id(1)));
        assert_eq!(deadlines.next().await, Some(id(2)));
        assert!(deadlines.is_empty());
        assert_eq!(deadlines.len(), 0);
    }
}
