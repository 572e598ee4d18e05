//! ajar's use cases: the imperative shell around the pure domain.
//!
//! Every command follows the same shape: load the request, let
//! `ajar-domain` decide, commit the next state and its audit events in one
//! store transaction, and only then act on the network through a driver.
//! The [`scheduler`] closes grants at their exact end and the [`reconcile`]
//! loop repairs any drift between the store and the drivers.

pub mod audit_file;
pub mod auth;
mod error;
pub mod metrics;
mod queries;
pub mod reconcile;
pub mod scheduler;
mod service;

pub use ajar_enforce::clock::{Clock, ManualClock, SystemClock};
pub use error::CoreError;
pub use queries::{AuditQuery, NotReady, RequestQuery};
pub use service::{Core, CoreSettings, RequestView, TargetView};
