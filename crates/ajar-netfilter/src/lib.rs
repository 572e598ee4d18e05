//! What the two kernel DNAT drivers (`ajar-driver-nftables` and
//! `ajar-driver-iptables`) share: the driver itself (`driver`: one
//! [`NatDriver`] over a tool's [`Backend`]), the start-up checks of the
//! gateway host (`host`), the note each kernel set element carries about the
//! grants it stands for (`note`), and a target's DNAT as both see it
//! (`rules`). What is left to each tool is rendering its own rules and
//! reading its own sets back.

pub mod driver;
pub mod host;
pub mod note;
pub mod rules;

pub use driver::{Backend, Element, NatDriver, Sets};
