//! The audit log's second copy: JSON lines in `data_dir/audit.jsonl`.
//!
//! The store is the source of truth. The file follows it: after every
//! commit, [`AuditFile::sync`] appends the committed events when they follow
//! the file's last line, and otherwise whatever the store holds beyond that
//! line, so events reach the file in sequence order even when commits
//! finish out of order, and a crash between commit and write is repaired at
//! the next sync. Verification compares both copies, so
//! rewriting the database's whole chain still shows.

use std::io::{Read, Seek, SeekFrom, Write};
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

    /// Every event in the file, in file order.
    pub fn read_all(&self) -> Result<Vec<Result<AuditEvent, String>>, AuditFileError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|source| AuditFileError::Io { path: self.path.clone(), source })?;
        Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<AuditEvent>(l).map_err(|e| e.to_string()))
            .collect())
    }
}

/// The last non-empty line of a file, read from its end.
fn last_line(file: &mut std::fs::File) -> std::io::Result<Option<String>> {
    let len = file.seek(SeekFrom::End(0))?;
    // Events are well under 64 KiB each (reasons are capped at 1000 chars).
    let start = len.saturating_sub(64 * 1024);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    // The window may start inside a multi-byte character; only the last
    // line matters and it is whole.
    let tail = String::from_utf8_lossy(&tail);
    Ok(tail.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_owned))
}
