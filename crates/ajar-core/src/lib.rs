//! ajar's use cases: the imperative shell around the pure domain, one file
//! per use case, each an `impl Core` block.
//!
//! Every command follows the same shape ([`Core::apply`] in `shell.rs`):
//! load the request, let `ajar-domain` decide, commit the next state and
//! its audit events in one store transaction, and only then act on the
//! network through a driver (`enforcement.rs`). `deadline.rs` closes
//! grants at their exact end and `reconcile.rs` repairs any drift between
//! the store and the drivers.

pub mod agents;
pub mod audit;
pub mod deadline;
mod enforcement;
mod error;
pub mod identity;
pub mod metrics;
mod queries;
pub mod reconcile;
mod reload;
mod requests;
mod shell;
mod targets;

pub use ajar_enforce::clock::{Clock, ManualClock, SystemClock};
pub use ajar_enforce::Opened;
pub use audit::{AuditProblem, AuditReport};
pub use error::CoreError;
pub use identity::auth;
pub use queries::{AuditQuery, NotReady, RequestQuery};
pub use requests::RequestView;
pub use shell::{Core, CoreSettings};
pub use targets::TargetView;
