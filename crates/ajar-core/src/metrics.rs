//! Counters the server exports at `/metrics`, kept as plain atomics so that
//! the core does not depend on a metrics library.

use std::sync::atomic::{AtomicU64, Ordering};

use ajar_domain::Action;

#[derive(Debug, Default)]
pub struct Metrics {
    events: [AtomicU64; Action::ALL.len()],
    /// Sum and count of how late grants were closed after `ends_at`, in
    /// milliseconds.
    expiry_lag_ms_sum: AtomicU64,
    expiry_lag_count: AtomicU64,
    expiry_lag_ms_max: AtomicU64,
}

impl Metrics {
    pub fn record(&self, action: Action) {
        if let Some(i) = Action::ALL.iter().position(|a| *a == action) {
            self.events[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn record_expiry_lag(&self, lag_ms: u64) {
        self.expiry_lag_ms_sum.fetch_add(lag_ms, Ordering::Relaxed);
        self.expiry_lag_count.fetch_add(1, Ordering::Relaxed);
        self.expiry_lag_ms_max.fetch_max(lag_ms, Ordering::Relaxed);
    }

    /// `(action, count)` for every action.
    pub fn events(&self) -> Vec<(Action, u64)> {
        Action::ALL.iter().zip(&self.events).map(|(a, c)| (*a, c.load(Ordering::Relaxed))).collect()
    }

    /// `(sum_ms, count, max_ms)` of expiry lag.
    pub fn expiry_lag(&self) -> (u64, u64, u64) {
        (
            self.expiry_lag_ms_sum.load(Ordering::Relaxed),
            self.expiry_lag_count.load(Ordering::Relaxed),
            self.expiry_lag_ms_max.load(Ordering::Relaxed),
        )
    }
}
