//! The tags that mark what ajar made in AWS, and the one format ajar writes
//! ends in. After a restart, ajar knows its rules and instances only from
//! these tags.

use ajar_domain::{RequestId, Timestamp};
use chrono::{DateTime, SecondsFormat, Utc};

/// On every rule and instance ajar makes: the target it serves.
pub const TARGET: &str = "ajar:target";
/// On a security-group rule: one tag per grant it stands for,
/// `ajar:grant:<id>` = the grant's end.
pub const GRANT_PREFIX: &str = "ajar:grant:";
/// On an instance launched for (or claimed by) a grant.
pub const GRANT: &str = "ajar:grant";
pub const SOURCE: &str = "ajar:source";
pub const ENDS_AT: &str = "ajar:ends-at";
/// On an unassigned warm-pool instance: the target it waits for.
pub const POOL: &str = "ajar:pool";
/// On every instance: a digest of the launch settings, so that instances
/// launched under an older config are not handed out.
pub const CONFIG: &str = "ajar:config";

/// `2026-12-01T03:00:00.250Z`: milliseconds, so that the end read back is
/// exactly the grant's.
pub fn end_text(at: Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_end(text: &str) -> Option<Timestamp> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

/// The grant a security-group rule tag stands for, and its end.
pub fn rule_grant(key: &str, value: &str) -> Option<(RequestId, Timestamp)> {
    let id = RequestId::parse(key.strip_prefix(GRANT_PREFIX)?)?;
    Some((id, parse_end(value)?))
}

/// A 64-bit FNV-1a digest in hex: stable across builds, unlike std's
/// hasher, so instances launched by an earlier ajar are still recognised.
pub fn digest(parts: &[&str]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.bytes().chain([0u8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ends_round_trip_to_the_millisecond() {
        let at = DateTime::from_timestamp(1_764_558_000, 250_000_000).unwrap();
        assert_eq!(end_text(at), "2025-12-01T03:00:00.250Z");
        assert_eq!(parse_end(&end_text(at)), Some(at));
        let id = RequestId::from_random([7; 12]);
        assert_eq!(rule_grant(&format!("{GRANT_PREFIX}{id}"), &end_text(at)), Some((id, at)));
        assert_eq!(rule_grant("ajar:grant:nonsense", &end_text(at)), None);
        assert_eq!(rule_grant(TARGET, "web"), None);
    }

    #[test]
    fn digests_differ_by_part_boundaries() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["x"]), digest(&["x"]));
    }
}
