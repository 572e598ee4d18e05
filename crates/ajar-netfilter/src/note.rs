//! The note each kernel set element carries: which grants it stands for and
//! when each ends. The kernel holds one element per (target, source), so
//! two grants for the same source share it; the note keeps them apart, and
//! it is what `observe` reads back after a restart.

use ajar_domain::{RequestId, SourceNet, Timestamp};
use ajar_enforce::Observed;
use chrono::DateTime;

/// nftables caps an element comment at 128 bytes (ipset at 255); four grants
/// of 28 bytes each fit.
pub const MAX_NOTE_LEN: usize = 127;

/// One grant in a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteEntry {
    pub id: RequestId,
    pub ends_at: Timestamp,
}

/// Renders `r0123456789ab@1700000000.250 r…` (ids with their end as Unix
/// seconds and milliseconds), sorted by id so the same grants always give
/// the same text.
pub fn render(entries: &[NoteEntry]) -> String {
    let mut sorted: Vec<&NoteEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
    sorted
        .iter()
        .map(|e| format!("{}@{}.{:03}", e.id, e.ends_at.timestamp(), e.ends_at.timestamp_subsec_millis()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a note back; `None` when it is not one ajar wrote.
pub fn parse(text: &str) -> Option<Vec<NoteEntry>> {
    text.split_whitespace()
        .map(|part| {
            let (id, end) = part.split_once('@')?;
            let (secs, millis) = end.split_once('.')?;
            let at = DateTime::from_timestamp(secs.parse().ok()?, millis.parse::<u32>().ok()?.checked_mul(1_000_000)?)?;
            Some(NoteEntry { id: RequestId::parse(id)?, ends_at: at })
        })
        .collect::<Option<Vec<_>>>()
        .filter(|entries| !entries.is_empty())
}

/// The note of an element that now also admits grant `id` until `ends_at`
/// (an earlier entry of `id` is replaced).
pub fn granting(current: Option<Vec<NoteEntry>>, id: &RequestId, ends_at: Timestamp) -> Vec<NoteEntry> {
    let mut entries: Vec<NoteEntry> = current.unwrap_or_default().into_iter().filter(|e| &e.id != id).collect();
    entries.push(NoteEntry { id: id.clone(), ends_at });
    entries
}

/// The note left once grant `id` is gone, or `None` when `id` is not in it.
pub fn without(entries: &[NoteEntry], id: &RequestId) -> Option<Vec<NoteEntry>> {
    entries.iter().any(|e| &e.id == id).then(|| entries.iter().filter(|e| &e.id != id).cloned().collect())
}

/// The grants an element of `target`'s set admitting `source` stands for
/// that have not ended at `now`.
pub fn observed(entries: Vec<NoteEntry>, target: &str, source: SourceNet, now: Timestamp) -> Vec<Observed> {
    entries
        .into_iter()
        .filter(|e| e.ends_at > now)
        .map(|e| Observed { id: e.id, target: target.to_owned(), source, ends_at: e.ends_at })
        .collect()
}

/// The kernel timeout for an element whose grants end at `ends_at`, in whole
/// seconds (nft's JSON and ipset take no finer unit), rounded to the nearest
/// second so the kernel closes at most half a second early or late; `None`
/// when the end has passed.
pub fn timeout_secs(ends_at: Timestamp, now: Timestamp) -> Option<u32> {
    let millis = (ends_at - now).num_milliseconds();
    if millis < 500 {
        return None;
    }
    u32::try_from((millis + 500) / 1000).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: u32) -> Timestamp {
        DateTime::from_timestamp(secs, millis * 1_000_000).unwrap()
    }

    fn id(byte: u8) -> RequestId {
        RequestId::from_random([byte; 12])
    }

    #[test]
    fn notes_round_trip_and_are_sorted_by_id() {
        let entries = vec![
            NoteEntry { id: id(9), ends_at: at(1_700_000_100, 5) },
            NoteEntry { id: id(1), ends_at: at(1_700_000_000, 250) },
        ];
        let text = render(&entries);
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], entries[1]);
        assert_eq!(parsed[1], entries[0]);
        assert!(text.contains("@1700000000.250 "), "{text}");
        // Four grants fit in the kernel's comment limit.
        let four: Vec<NoteEntry> = (0..4).map(|i| NoteEntry { id: id(i), ends_at: at(4_000_000_000, 999) }).collect();
        assert!(render(&four).len() <= MAX_NOTE_LEN, "{}", render(&four));
    }

    #[test]
    fn granting_replaces_only_its_own_entry_and_without_removes_it() {
        let old = vec![NoteEntry { id: id(1), ends_at: at(100, 0) }, NoteEntry { id: id(2), ends_at: at(200, 0) }];
        let now = granting(Some(old), &id(1), at(300, 0));
        assert_eq!(now.len(), 2);
        assert!(now.contains(&NoteEntry { id: id(1), ends_at: at(300, 0) }), "{now:?}");
        assert!(now.contains(&NoteEntry { id: id(2), ends_at: at(200, 0) }), "{now:?}");
        assert_eq!(without(&now, &id(2)), Some(vec![NoteEntry { id: id(1), ends_at: at(300, 0) }]));
        assert_eq!(without(&now, &id(3)), None, "a grant not in the note leaves nothing to write");
        let source = SourceNet::parse("10.0.0.1/32").unwrap();
        let seen = observed(now, "db", source, at(250, 0));
        assert_eq!(seen.len(), 1, "ended grants are not observed: {seen:?}");
        assert_eq!((seen[0].id.clone(), seen[0].target.as_str(), seen[0].source), (id(1), "db", source));
    }

    #[test]
    fn foreign_comments_are_not_notes() {
        for text in ["", "hello", "r0123@12", "rAAAAAAAAAAAA@x.1", "added by hand"] {
            assert_eq!(parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn timeouts_round_to_the_nearest_second_and_vanish_when_over() {
        let now = at(1_000, 0);
        assert_eq!(timeout_secs(at(1_030, 0), now), Some(30));
        assert_eq!(timeout_secs(at(1_030, 499), now), Some(30));
        assert_eq!(timeout_secs(at(1_030, 500), now), Some(31));
        assert_eq!(timeout_secs(at(1_000, 600), now), Some(1));
        assert_eq!(timeout_secs(at(1_000, 400), now), None);
        assert_eq!(timeout_secs(at(999, 0), now), None);
    }
}
