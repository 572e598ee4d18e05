//! The audit log's second copy: JSON lines in `data_dir/audit.jsonl`.
//!
//! The store is the source of truth. The file follows it: after every
//! commit, [`AuditFile::sync`] appends the committed events when they follow
//! the file's last line, and otherwise whatever the store holds beyond that
//! line, so events reach the file in sequence order even when commits
//! finish out of order, and a crash between commit and write is repaired at
//! the next sync. Verification compares both copies, so
//! rewriting the database's whole chain still shows.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ajar_domain::AuditEvent;
use ajar_store::{AuditScope, Store, StoreError};
use tokio::sync::Mutex;

pub struct AuditFile {
    path: PathBuf,
    /// The sequence number of the last line in the file.
    last_seq: Mutex<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditFileError {
    #[error("cannot use the audit file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the audit file {path} ends with a line that is not an audit event ({detail}); move it aside to start a new one")]
    Garbled { path: PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

const PAGE: u32 = 1000;

impl AuditFile {
    /// Opens (creating) the file and reads the sequence number of its last
    /// line.
    pub fn open(path: &Path) -> Result<Self, AuditFileError> {
        let io = |source| AuditFileError::Io { path: path.to_owned(), source };
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io)?;
        let last = last_line(&mut file).map_err(io)?;
        let last_seq = match last {
            None => 0,
            Some(line) => {
                let event: AuditEvent = serde_json::from_str(&line)
                    .map_err(|e| AuditFileError::Garbled { path: path.to_owned(), detail: e.to_string() })?;
                event.seq
            }
        };
        Ok(Self { path: path.to_owned(), last_seq: Mutex::new(last_seq) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the file up to `written` (events just committed): appends
    /// them directly when they follow the file's last line, and otherwise
    /// (commits finishing out of order, lines missing since a crash, or no
    /// events given) appends every event the store has beyond that line.
    /// Events an earlier call already wrote cost nothing, so a burst of
    /// commits shares few writes and fsyncs.
    pub async fn sync(&self, store: &dyn Store, written: &[AuditEvent]) -> Result<(), AuditFileError> {
        let mut last_seq = self.last_seq.lock().await;
        if written.last().is_some_and(|e| e.seq <= *last_seq) {
            return Ok(());
        }
        if written.first().is_some_and(|e| e.seq == *last_seq + 1) {
            *last_seq = self.append(written).await?;
            return Ok(());
        }
        loop {
            let events = store.audit_page(&AuditScope::All, *last_seq, PAGE).await?;
            if events.is_empty() {
                return Ok(());
            }
            *last_seq = self.append(&events).await?;
        }
    }

    /// Appends `events` and waits until they are on disk; returns the last
    /// sequence number written.
    async fn append(&self, events: &[AuditEvent]) -> Result<i64, AuditFileError> {
        let mut text = String::new();
        for event in events {
            // An AuditEvent always serializes.
            text.push_str(&serde_json::to_string(event).unwrap_or_default());
            text.push('\n');
        }
        let last = events.last().map_or(0, |e| e.seq);
        let path = self.path.clone();
        // Writing and fsyncing block: keep them off the runtime's threads.
        let done = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::OpenOptions::new().append(true).open(&path)?;
            file.write_all(text.as_bytes())?;
            file.sync_data()
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        done.map_err(|source| AuditFileError::Io { path: self.path.clone(), source })?;
        Ok(last)
    }

    /// A reader of the file's lines from byte `offset`, which is the start
    /// of line `line` (1-based): 0 and 1 for the whole file.
    pub fn reader_at(&self, offset: u64, line: u64) -> Result<AuditFileReader, AuditFileError> {
        let io = |source| AuditFileError::Io { path: self.path.clone(), source };
        let mut file = std::fs::File::open(&self.path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        Ok(AuditFileReader { path: self.path.clone(), reader: BufReader::new(file), offset, line, buf: Vec::new() })
    }

    /// The file's length now, in bytes.
    pub fn size(&self) -> Result<u64, AuditFileError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|source| AuditFileError::Io { path: self.path.clone(), source })
    }
}

/// Reads the file line by line, holding one line at a time, so that
/// verifying a long log takes memory for one page, not for the whole file.
pub struct AuditFileReader {
    path: PathBuf,
    reader: BufReader<std::fs::File>,
    /// Where the next line starts, and its number.
    offset: u64,
    line: u64,
    buf: Vec<u8>,
}

/// One line of the audit file.
#[derive(Debug)]
pub struct FileLine {
    /// 1-based.
    pub number: u64,
    /// The event it holds, or why it is not one.
    pub event: Result<AuditEvent, String>,
    /// The byte offset just after it.
    pub end: u64,
}

impl AuditFileReader {
    /// The next whole line, skipping blank ones. `None` at the end of the
    /// file, and before a last line without its newline: that line is being
    /// written (appends write whole lines, so a reader may see one half
    /// done) and is read whole next time.
    pub fn next_line(&mut self) -> Result<Option<FileLine>, AuditFileError> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|source| AuditFileError::Io { path: self.path.clone(), source })?;
            if n == 0 || self.buf.last() != Some(&b'\n') {
                return Ok(None);
            }
            let number = self.line;
            self.offset += n as u64;
            self.line += 1;
            let text = String::from_utf8_lossy(&self.buf);
            if text.trim().is_empty() {
                continue;
            }
            let event = serde_json::from_str::<AuditEvent>(text.trim_end()).map_err(|e| e.to_string());
            return Ok(Some(FileLine { number, event, end: self.offset }));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How much of the file's end is read at a time when looking for its last
/// line.
const TAIL_CHUNK: u64 = 64 * 1024;

/// The last non-empty line of a file, read from its end in chunks until the
/// newline before it, however long the line is (an event's size has no
/// fixed bound: its reason, comment and data come from outside).
fn last_line(file: &mut std::fs::File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    // The bytes from `start` to the end of the file, read so far.
    let mut tail: Vec<u8> = Vec::new();
    let mut start = len;
    loop {
        // Trailing newlines and blank lines end no line.
        let content_end = tail.iter().rposition(|b| !b.is_ascii_whitespace()).map(|i| i + 1);
        if let Some(end) = content_end {
            if let Some(newline) = tail[..end].iter().rposition(|b| *b == b'\n') {
                return Ok(Some(String::from_utf8_lossy(&tail[newline + 1..end]).into_owned()));
            }
        }
        if start == 0 {
            return Ok(content_end.map(|end| String::from_utf8_lossy(&tail[..end]).into_owned()));
        }
        let chunk = TAIL_CHUNK.min(start);
        start -= chunk;
        file.seek(SeekFrom::Start(start))?;
        let mut read = vec![0u8; usize::try_from(chunk).unwrap_or(usize::MAX)];
        file.read_exact(&mut read)?;
        read.extend_from_slice(&tail);
        tail = read;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write;

    use ajar_domain::audit::GENESIS;
    use ajar_domain::{AuditData, NewAuditEvent};

    use super::*;

    fn event(seq: i64, reason: String) -> AuditEvent {
        NewAuditEvent {
            at: chrono::DateTime::from_timestamp(1_700_000_000 + seq, 0).unwrap(),
            actor: "alice".into(),
            target: Some("db".into()),
            source: None,
            request_id: None,
            subject: Some("alice".into()),
            reason: Some(reason),
            data: AuditData::Requested { duration_seconds: seq as u64, approvals_required: 1, policies: vec![] },
        }
        .chain(seq - 1, GENESIS)
    }

    fn write(path: &Path, events: &[AuditEvent], tail: &str) {
        let mut file = std::fs::File::create(path).unwrap();
        for e in events {
            writeln!(file, "{}", serde_json::to_string(e).unwrap()).unwrap();
        }
        file.write_all(tail.as_bytes()).unwrap();
    }

    #[test]
    fn a_last_event_longer_than_a_chunk_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        // 200 KiB of reason: three chunks and then some, with multi-byte
        // characters that a chunk boundary may split.
        let long = "é".repeat(100 * 1024 + 7);
        let events = [event(1, "short".into()), event(2, long.clone())];
        write(&path, &events, "");
        let line = last_line(&mut std::fs::File::open(&path).unwrap()).unwrap().unwrap();
        let parsed: AuditEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed, events[1]);
        assert_eq!(parsed.reason.as_deref(), Some(long.as_str()));
        assert_eq!(AuditFile::open(&path).unwrap().last_seq.try_lock().map(|s| *s).unwrap(), 2);
    }

    #[test]
    fn the_last_line_is_found_in_every_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let last = |tail: &str, events: &[AuditEvent]| {
            write(&path, events, tail);
            last_line(&mut std::fs::File::open(&path).unwrap()).unwrap()
        };
        assert_eq!(last("", &[]), None);
        assert_eq!(last("\n\n  \n", &[]), None);
        assert_eq!(last("only", &[]).as_deref(), Some("only"));
        // A single event with no line before it, longer than a chunk.
        let big = event(1, "x".repeat(3 * 64 * 1024));
        let text = serde_json::to_string(&big).unwrap();
        assert_eq!(last("", std::slice::from_ref(&big)).as_deref(), Some(text.as_str()));
        // Blank lines after the last event, and a newline exactly at a
        // chunk boundary.
        assert_eq!(last("\n\n", std::slice::from_ref(&big)).as_deref(), Some(text.as_str()));
        let exact = "y".repeat(64 * 1024 - 1);
        assert_eq!(last(&format!("{exact}\n"), std::slice::from_ref(&big)).as_deref(), Some(exact.as_str()));
    }

    #[test]
    fn the_reader_skips_blank_lines_and_stops_before_a_half_written_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let events = [event(1, "a".into()), event(2, "b".into())];
        write(&path, &events, "\n{\"seq\":3");
        let file = AuditFile { path: path.clone(), last_seq: Mutex::new(2) };
        let mut reader = file.reader_at(0, 1).unwrap();
        let first = reader.next_line().unwrap().unwrap();
        assert_eq!((first.number, first.event.as_ref().ok()), (1, Some(&events[0])));
        let second = reader.next_line().unwrap().unwrap();
        assert_eq!((second.number, second.event.as_ref().ok()), (2, Some(&events[1])));
        assert!(reader.next_line().unwrap().is_none(), "a line without its newline is not read yet");
        // Reading again from where the second line ended finds the same end.
        let mut again = file.reader_at(first.end, 2).unwrap();
        assert_eq!(again.next_line().unwrap().unwrap().end, second.end);
    }
}
