//! Free text that people type and ajar keeps: reasons and comments. It is
//! bounded in length and may not hold characters that rewrite a terminal
//! or a log line (control characters such as ESC or a line break) or that
//! reorder what a reader sees (Unicode bidirectional overrides).

use std::borrow::Cow;
use std::fmt::Write;

use crate::Rejected;

/// The longest reason or comment ajar stores, in characters.
pub const MAX_TEXT_CHARS: usize = 1000;

/// Whether `c` may not appear in text ajar shows to people: C0 and C1
/// control characters (ESC, CR, LF, DEL, ...) and the bidirectional
/// embedding, override and isolate marks that make a terminal or a web page
/// show text in another order than it is stored.
pub fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A short name for a forbidden character, for error messages.
fn describe(c: char) -> String {
    let name = match c {
        '\n' => " (a line break)",
        '\r' => " (a carriage return)",
        '\t' => " (a tab)",
        '\u{1b}' => " (ESC, which starts terminal escape sequences)",
        '\u{7f}' => " (DEL)",
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{200E}' | '\u{200F}' => {
            " (a bidirectional text control)"
        }
        _ => "",
    };
    format!("U+{:04X}{name}", u32::from(c))
}

/// Checks a reason or comment: at most `max` characters, none of them
/// [`forbidden`]. `field` names it in the refusal ("reason", "comment").
pub fn check(field: &'static str, value: &str, max: usize) -> Result<(), Rejected> {
    let length = value.chars().count();
    if length > max {
        return Err(Rejected::TextTooLong { field, length, max });
    }
    if let Some((position, c)) = value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
        return Err(Rejected::ForbiddenCharacter { field, character: describe(c), position: position + 1 });
    }
    Ok(())
}

/// `value` with every [`forbidden`] character written as `\u{..}`, for
/// printing text that did not pass [`check`] (a claimed user name, an
/// identity provider's message) to a terminal or a log.
pub fn escape(value: &str) -> Cow<'_, str> {
    if !value.chars().any(forbidden) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if forbidden(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// At most `max` characters of `value`, escaped: what ajar records of
/// text it does not accept as free text (e.g. the name a failed sign-in
/// claimed).
pub fn shown(value: &str, max: usize) -> String {
    let cut: String = value.chars().take(max).collect();
    escape(&cut).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_text_in_any_script() {
        for ok in ["", "INC-4521: restart the primary", "Überprüfung der Datenbank", "数据库维护", "emoji 🔧 ok"]
        {
            assert_eq!(check("reason", ok, MAX_TEXT_CHARS), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_control_and_bidi_characters_naming_which_and_where() {
        let refusal = check("comment", "ok\u{1b}[2J", 100).expect_err("ESC");
        assert_eq!(
            refusal,
            Rejected::ForbiddenCharacter {
                field: "comment",
                character: "U+001B (ESC, which starts terminal escape sequences)".into(),
                position: 3
            }
        );
        assert!(refusal.to_string().contains("character 3"), "{refusal}");
        for bad in ["a\nb", "a\rb", "tab\there", "\u{7f}", "\u{85}", "abc\u{202E}fed", "x\u{2066}y"] {
            assert!(check("reason", bad, 100).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        assert_eq!(check("reason", &"é".repeat(10), 10), Ok(()));
        assert_eq!(
            check("reason", &"é".repeat(11), 10),
            Err(Rejected::TextTooLong { field: "reason", length: 11, max: 10 })
        );
    }

    #[test]
    fn escape_makes_text_inert_and_keeps_the_rest() {
        assert_eq!(escape("plain"), Cow::Borrowed("plain"));
        assert_eq!(escape("evil\u{1b}[31m\nline"), "evil\\u{1b}[31m\\u{a}line");
        assert_eq!(shown("a\nbcdef", 3), "a\\u{a}b");
        assert!(!escape("\u{202E}x").chars().any(forbidden));
    }
}
