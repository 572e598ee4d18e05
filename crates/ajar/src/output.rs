//! Human output: aligned tables and times shown relative to now.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// Text from the server made safe for a terminal: control characters
/// (ESC sequences, line breaks) and bidirectional overrides are shown as
/// `\u{..}` instead of acting on the terminal. The server refuses them in
/// what people type, but older records or names claimed by a failed
/// sign-in may hold them.
pub fn clean(text: &str) -> Cow<'_, str> {
    ajar_domain::text::escape(text)
}

/// Prints rows under headers, each column as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    table_with(headers, rows, true);
}

/// Like [`table`], optionally without the header line (for pages that
/// continue a table, as `audit --follow` prints). Every cell is
/// [`clean`]ed.
pub fn table_with(headers: &[&str], rows: &[Vec<String>], show_header: bool) {
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|c| clean(c).into_owned()).collect()).collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<width$}", width = *w)).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    if show_header {
        line(headers.to_vec());
    }
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `1h5m`, `42s`: a span of seconds in the largest two units.
pub fn span(secs: i64) -> String {
    let secs = secs.unsigned_abs();
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// `in 14m32s` or `3m05s ago`.
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (at - now).num_seconds();
    if secs > 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(secs))
    }
}

/// Local wall-clock time for people, e.g. `14:03:12 UTC`.
pub fn clock(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(5), "5s");
        assert_eq!(span(65), "1m05s");
        assert_eq!(span(3725), "1h02m");
        assert_eq!(span(90_000), "1d1h");
        assert_eq!(span(-65), "1m05s");
    }
}
