//! The kernel-enforced DNAT driver for Linux gateway hosts that must stay on
//! iptables: DNAT and cut rules in ajar's own chains, granted sources in
//! ipsets whose elements carry kernel timeouts, so access ends on time even
//! while ajar is down. See `docs/drivers/iptables.md`.

mod ipt;
pub mod render;

pub use crate::ipt::Iptables;
