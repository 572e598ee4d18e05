//! The portal's pages and form actions, one file per page; `shared` holds
//! what several of them use.

pub mod access;
pub mod actions;
pub mod admin;
pub mod approvals;
pub mod audit;
pub mod export;
pub mod live;
mod shared;
pub mod sign_in;
pub mod targets;
