//! What the two kernel DNAT drivers (`ajar-driver-nftables` and
//! `ajar-driver-iptables`) share: the start-up checks of the gateway host
//! (`host`), the note each kernel set element carries about the grants it
//! stands for (`note`), and a target's DNAT as both see it (`rules`). No
//! tool-specific logic lives here.

pub mod host;
pub mod note;
pub mod rules;
