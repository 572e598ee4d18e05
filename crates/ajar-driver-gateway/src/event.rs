//! The connection events the gateway emits are domain values: the core
//! audits them (`ajar_domain::audit::AuditData::Connection`).

pub use ajar_domain::connection::{ConnectionEvent, ConnectionEventKind, EndedBy};
