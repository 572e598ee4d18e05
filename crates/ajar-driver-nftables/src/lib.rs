//! The kernel-enforced DNAT driver for a Linux gateway host: `nftables`,
//! whose set elements carry kernel timeouts so access ends on time even
//! while ajar is down. See `docs/drivers/nftables.md`.

mod nft;
pub mod render;

pub use crate::nft::Nftables;
