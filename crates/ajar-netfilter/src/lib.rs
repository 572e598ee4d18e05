//! What the two kernel DNAT drivers (`ajar-driver-nftables` and
//! `ajar-driver-iptables`) share: the start-up checks of the gateway host
//! (`host`) and the note each kernel set element carries about the grants
//! it stands for (`note`). No driver logic lives here.

pub mod host;
pub mod note;
