//! Verifying the audit log: the database's hash chain and its copy in the
//! audit file, walked together page by page (memory for one page, whatever
//! the log's length), every file line re-hashed from its own content and
//! compared field by field with the database's event.
//!
//! The portal's audit page shows the verdict on every view. Walking 25,000
//! events took 357 ms, so the core remembers the point up to which both
//! copies verified (sequence number, hash, and where that event's line ends
//! in the file) and [`Core::verify_audit_recent`] checks only what came
//! after it: the next event must link to the remembered hash, so a database
//! whose older events were rewritten is caught at the first new event. A
//! view walks the whole log again when the last whole walk is older than
//! [`WHOLE_LOG_EVERY`]; `GET /api/v1/audit/verify` (`ajar audit --verify`)
//! always walks all of it.

use ajar_domain::{audit, AuditEvent, Timestamp};
use ajar_store::{AuditScope, StoreError};
use tokio::sync::Mutex;

use super::file::{AuditFileReader, FileLine};
use super::{AuditProblem, AuditReport};
use crate::Core;
use crate::CoreError;

/// How long a view trusts the events it already verified.
const WHOLE_LOG_EVERY: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Events read from the store at a time.
const PAGE: u32 = 1000;

/// A point up to which the chain verified and the file agreed with it.
#[derive(Debug, Clone)]
struct Point {
    seq: i64,
    hash: String,
    /// Where the next line of the audit file starts, and its number.
    file_offset: u64,
    file_line: u64,
}

impl Point {
    fn genesis() -> Self {
        Self { seq: 0, hash: audit::GENESIS.to_owned(), file_offset: 0, file_line: 1 }
    }
}

#[derive(Debug)]
struct Cached {
    point: Point,
    whole_log_at: Timestamp,
    /// A problem found earlier: the log does not heal by itself, so views
    /// keep showing it until a whole-log check finds the log intact.
    broken: Option<AuditReport>,
}

/// The remembered verification, behind a lock that also keeps two views
/// from walking the same events at once.
#[derive(Debug, Default)]
pub(crate) struct Checked(Mutex<Option<Cached>>);

impl Core {
    /// Verifies the whole chain in the store and that the audit file agrees
    /// with it event by event.
    pub async fn verify_audit(&self) -> Result<AuditReport, CoreError> {
        let mut cached = self.audit_checked.0.lock().await;
        self.check_from(&mut cached, None).await
    }

    /// The verdict on the log as of now, checking only the events written
    /// since the last verification (the whole log when that is older than
    /// ten minutes, or when the file is shorter than what was checked).
    pub async fn verify_audit_recent(&self) -> Result<AuditReport, CoreError> {
        let mut cached = self.audit_checked.0.lock().await;
        let fresh = cached.as_ref().filter(|c| self.now() - c.whole_log_at < WHOLE_LOG_EVERY);
        let from = match fresh {
            Some(Cached { broken: Some(report), .. }) => return Ok(report.clone()),
            Some(c) => {
                // A file cut shorter than what was verified cannot be read
                // from the remembered offset: check everything.
                let shorter = match self.audit_file() {
                    Some(file) => file.size().map_err(|e| CoreError::Internal(e.to_string()))? < c.point.file_offset,
                    None => false,
                };
                (!shorter).then(|| c.point.clone())
            }
            None => None,
        };
        self.check_from(&mut cached, from).await
    }

    /// Verifies from `from` (everything when `None`) and remembers the
    /// outcome.
    async fn check_from(&self, cached: &mut Option<Cached>, from: Option<Point>) -> Result<AuditReport, CoreError> {
        let whole = from.is_none();
        let Walk { mut report, point } = self.walk(from.unwrap_or_else(Point::genesis)).await?;
        self.metrics().record_verification(u64::try_from(report.checked).unwrap_or(0), whole);
        let whole_log_at = match (&*cached, whole) {
            (Some(c), false) => c.whole_log_at,
            _ => self.now(),
        };
        report.whole_log_checked_at = Some(whole_log_at);
        let previous = cached.take().map(|c| c.point);
        *cached = Some(Cached {
            // A broken walk keeps the point it started from.
            point: point.or(previous).unwrap_or_else(Point::genesis),
            whole_log_at,
            broken: (!report.ok).then(|| report.clone()),
        });
        Ok(report)
    }

    /// Walks the store's events after `start` with the file's lines after
    /// it, side by side.
    async fn walk(&self, start: Point) -> Result<Walk, CoreError> {
        let internal = |e: super::file::AuditFileError| CoreError::Internal(e.to_string());
        let mut head = (start.seq, start.hash.clone());
        let mut agreed = start.clone();
        let mut file = match self.audit_file() {
            Some(f) => Some(f.reader_at(start.file_offset, start.file_line).map_err(internal)?),
            None => None,
        };
        // A line read but not yet matched with an event.
        let mut waiting: Option<FileLine> = None;
        // The file has no further whole line (it lags behind the store,
        // which is repaired at the next write).
        let mut file_ended = file.is_none();
        let mut looked_again = false;
        let mut checked = 0i64;
        loop {
            let page = match self.store.audit_page(&AuditScope::All, head.0, PAGE).await {
                Ok(page) => page,
                Err(StoreError::Corrupt(what)) => {
                    let next = head.0 + 1;
                    return Ok(Walk::broken(head, next, format!("an event cannot be read: {what}"), checked));
                }
                Err(e) => return Err(e.into()),
            };
            if page.is_empty() {
                let Some(reader) = file.as_mut().filter(|_| !file_ended) else { break };
                let Some(line) = take_line(&mut waiting, reader).map_err(internal)? else { break };
                // The store had nothing more a moment ago, and the file
                // only holds committed events: look once more, in case the
                // event was committed meanwhile.
                if looked_again {
                    let seq = line.event.as_ref().map_or(head.0 + 1, |e| e.seq);
                    let message = format!(
                        "{} holds event {seq} (line {}) that the database does not: events were deleted from the database",
                        reader.path().display(),
                        line.number
                    );
                    return Ok(Walk::broken(head, seq, message, checked));
                }
                waiting = Some(line);
                looked_again = true;
                continue;
            }
            looked_again = false;
            let new_head = match audit::verify(&page, Some(head.clone())) {
                Ok(new_head) => new_head,
                Err(brk) => return Ok(Walk::broken(head, brk.seq(), brk.to_string(), checked)),
            };
            for event in &page {
                checked += 1;
                let Some(reader) = file.as_mut() else {
                    agreed = Point { seq: event.seq, hash: event.hash.clone(), file_offset: 0, file_line: 1 };
                    continue;
                };
                if file_ended {
                    continue;
                }
                match take_line(&mut waiting, reader).map_err(internal)? {
                    None => file_ended = true,
                    Some(line) => {
                        if let Some(message) = differs(reader, &line, event) {
                            return Ok(Walk::broken(head, event.seq, message, checked));
                        }
                        agreed = Point {
                            seq: event.seq,
                            hash: event.hash.clone(),
                            file_offset: line.end,
                            file_line: line.number + 1,
                        };
                    }
                }
            }
            head = new_head;
        }
        Ok(Walk { report: AuditReport::ok(head, checked), point: Some(agreed) })
    }
}

/// The outcome of a walk: the report, and the point to remember.
struct Walk {
    report: AuditReport,
    point: Option<Point>,
}

impl Walk {
    fn broken(head: (i64, String), seq: i64, message: String, checked: i64) -> Self {
        let report = AuditReport {
            ok: false,
            events: head.0,
            head_hash: head.1,
            problem: Some(AuditProblem { seq, message }),
            checked,
            whole_log_checked_at: None,
        };
        Self { report, point: None }
    }
}

impl AuditReport {
    fn ok(head: (i64, String), checked: i64) -> Self {
        Self { ok: true, events: head.0, head_hash: head.1, problem: None, checked, whole_log_checked_at: None }
    }
}

fn take_line(
    waiting: &mut Option<FileLine>,
    reader: &mut AuditFileReader,
) -> Result<Option<FileLine>, super::file::AuditFileError> {
    match waiting.take() {
        Some(line) => Ok(Some(line)),
        None => reader.next_line(),
    }
}

/// What is wrong with the file's `line` as the copy of the store's `event`,
/// if anything. The line is judged by its own content: its hash is computed
/// again, and every field must equal the database's.
fn differs(reader: &AuditFileReader, line: &FileLine, event: &AuditEvent) -> Option<String> {
    let path = reader.path().display();
    let number = line.number;
    match &line.event {
        Err(e) => Some(format!("line {number} of {path} is not an audit event: {e}")),
        Ok(copy) if copy.seq != event.seq => Some(format!(
            "line {number} of {path} holds event {} where the database's event {} belongs: events were deleted from or inserted into one of the two",
            copy.seq, event.seq
        )),
        Ok(copy) if copy.compute_hash() != copy.hash => Some(format!(
            "event {} in {path} (line {number}) was edited: its content no longer matches its hash",
            copy.seq
        )),
        Ok(copy) if copy != event => Some(format!(
            "the database's event {} differs from the one in {path} (line {number}): one of the two was altered",
            event.seq
        )),
        Ok(_) => None,
    }
}
