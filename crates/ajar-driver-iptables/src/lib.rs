//! The kernel-enforced DNAT driver for Linux gateway hosts that must stay on
//! iptables: DNAT and cut rules in ajar's own chains, granted sources in
//! ipsets whose elements carry kernel timeouts, so access ends on time even
//! while ajar is down. See `docs/drivers/iptables.md`.
//!
//! The driver's logic is `ajar_netfilter`'s [`NatDriver`], shared with the
//! nftables driver; this crate is its iptables backend: `render` (the
//! restore input and ipset commands, pure) and `ipt` (running them and
//! reading `ipset save` back).

mod ipt;
pub mod render;

use ajar_netfilter::NatDriver;

pub use crate::ipt::Ipt;

/// The iptables driver: `Iptables::new(clock)`.
pub type Iptables = NatDriver<Ipt>;
