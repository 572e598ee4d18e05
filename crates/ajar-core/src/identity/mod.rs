//! Who a caller is: password sign-in and sessions ([`login`]), single
//! sign-on and JWT bearer tokens ([`sso`]), the password and token
//! primitives ([`auth`]) and the limits on failed attempts ([`limits`]).

pub mod auth;
pub mod limits;
mod login;
mod sso;

pub use sso::challenge_of;
