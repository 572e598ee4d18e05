//! The kernel-enforced DNAT driver for a Linux gateway host: `nftables`,
//! whose set elements carry kernel timeouts so access ends on time even
//! while ajar is down. See `docs/drivers/nftables.md`.
//!
//! The driver's logic is `ajar_netfilter`'s [`NatDriver`], shared with the
//! iptables driver; this crate is its nftables backend: `render` (the nft
//! JSON, pure) and `nft` (running it and reading the sets back).

mod nft;
pub mod render;

use ajar_netfilter::NatDriver;

pub use crate::nft::Nft;

/// The nftables driver: `Nftables::new(clock)`.
pub type Nftables = NatDriver<Nft>;
