//! Kernel-enforced DNAT drivers for a Linux gateway host: `nftables`, whose
//! set elements carry kernel timeouts so access ends on time even while ajar
//! is down, and `iptables`, the same model with ipset timeouts for hosts
//! that must stay on iptables. See `docs/drivers/nftables.md`.

mod host;
mod nft;
pub mod note;
pub mod render;

pub use crate::nft::Nftables;

use std::net::SocketAddr;

use ajar_enforce::Opened;

fn opened(listen: &SocketAddr) -> Opened {
    crate::nft::listen_opened(listen)
}
