//! The one place that reads the wall clock.

use ajar_domain::Timestamp;

/// Where the current time comes from; tests substitute their own.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock, truncated to milliseconds so that every
/// timestamp ajar stores round-trips exactly.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = chrono::Utc::now();
        chrono::DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }
}
