//! What every route shares at the HTTP edge, JSON API and portal alike:
//! who calls and from where ([`caller`]), errors as problem+json
//! ([`problem`]), cookies ([`cookies`]) and how the client reached the
//! server ([`host`]). The routes and the portal depend on this module,
//! never on each other.

pub mod caller;
pub mod cookies;
pub mod host;
pub mod problem;
