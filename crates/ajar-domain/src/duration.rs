//! Grant durations: parsed from `15m`, `1h30m`, `90s` or `2d`, always positive
//! and never longer than [`GrantDuration::MAX`].

use std::fmt;

/// A positive whole number of seconds, at most 30 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantDuration(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidDuration {
    #[error("{0:?} is not a duration: write a number followed by s, m, h or d, such as \"15m\", \"1h30m\" or \"90s\"")]
    Syntax(String),
    #[error("a duration must be longer than zero seconds")]
    Zero,
    #[error("{value} is longer than the longest duration ajar accepts (30d)")]
    TooLong { value: String },
}

impl GrantDuration {
    /// Thirty days: longer than any sensible just-in-time grant, short enough
    /// that `now + duration` can never overflow a timestamp.
    pub const MAX: GrantDuration = GrantDuration(30 * 24 * 3600);

    pub fn from_secs(secs: u64) -> Result<Self, InvalidDuration> {
        match secs {
            0 => Err(InvalidDuration::Zero),
            s if s > Self::MAX.0 => Err(InvalidDuration::TooLong { value: GrantDuration(s).to_string() }),
            s => Ok(Self(s)),
        }
    }

    pub fn parse(text: &str) -> Result<Self, InvalidDuration> {
        let syntax = || InvalidDuration::Syntax(text.to_owned());
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(syntax());
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        for c in trimmed.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(syntax()),
            };
            // Nine digits of any unit already exceed MAX; refusing longer
            // numbers keeps the arithmetic below far from overflow.
            if digits.is_empty() || digits.len() > 9 {
                return Err(syntax());
            }
            let n: u64 = digits.parse().map_err(|_| syntax())?;
            total = total.saturating_add(n.saturating_mul(unit));
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(syntax());
        }
        Self::from_secs(total)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    pub fn as_chrono(self) -> chrono::Duration {
        // MAX fits comfortably in i64 seconds.
        chrono::Duration::seconds(self.0 as i64)
    }
}

impl fmt::Display for GrantDuration {
    /// Shortest form that parses back to the same value: `1h30m`, `45s`, `2d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut wrote = false;
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            let n = rest / secs;
            rest %= secs;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                wrote = true;
            }
        }
        if !wrote {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl serde::Serialize for GrantDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_people_write() {
        let cases = [("15m", 900), ("1h30m", 5400), ("90s", 90), ("2d", 172_800), ("1h", 3600)];
        for (text, secs) in cases {
            assert_eq!(GrantDuration::parse(text).map(|d| d.as_secs()), Ok(secs), "{text}");
        }
    }

    #[test]
    fn rejects_nonsense_zero_and_too_long() {
        for bad in ["", "15", "m", "1.5h", "-5m", "1hh", "1 h", "99999999999999999999s", "5w"] {
            assert!(matches!(GrantDuration::parse(bad), Err(InvalidDuration::Syntax(_))), "{bad}");
        }
        assert_eq!(GrantDuration::parse("0m"), Err(InvalidDuration::Zero));
        assert!(matches!(GrantDuration::parse("31d"), Err(InvalidDuration::TooLong { .. })));
    }

    #[test]
    fn display_round_trips() {
        for secs in [1, 59, 60, 61, 3600, 5400, 86_400, 90_061, GrantDuration::MAX.0] {
            let d = GrantDuration::from_secs(secs).expect("valid");
            assert_eq!(GrantDuration::parse(&d.to_string()), Ok(d));
        }
    }
}
