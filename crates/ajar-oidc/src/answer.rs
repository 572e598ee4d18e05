//! What ajar makes of an error the provider sends back to the redirect URI
//! (`?error=...&error_description=...`). Anyone can send a browser to that
//! URL with any text, so none of it is shown as ajar's words: the user sees
//! ajar's own sentence, with the error code only when it is one the
//! standards define, and the provider's description goes to the log only,
//! shortened and with control characters escaped. Pure.

/// The error codes an authorization response may carry: RFC 6749 section
/// 4.1.2.1 and OpenID Connect Core 1.0 section 3.1.2.6.
const REGISTERED: &[&str] = &[
    "invalid_request",
    "unauthorized_client",
    "access_denied",
    "unsupported_response_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "interaction_required",
    "login_required",
    "account_selection_required",
    "consent_required",
    "invalid_request_uri",
    "invalid_request_object",
    "request_not_supported",
    "request_uri_not_supported",
    "registration_not_supported",
];

/// The longest piece of provider text that goes into the log.
pub const LOG_CAP: usize = 200;

/// `code` when it is a registered authorization error code, else `None`.
pub fn registered_error(code: &str) -> Option<&'static str> {
    REGISTERED.iter().copied().find(|known| *known == code)
}

/// What the user reads after the provider answered with `code`: ajar's
/// sentence, naming the code only if it is a registered one.
pub fn failure_sentence(code: &str) -> String {
    match registered_error(code) {
        Some("access_denied") => "Sign-in was not completed: the identity provider refused it (access_denied). \
                                  Start again from the sign-in page, or ask your administrator whether your account may use ajar."
            .to_owned(),
        Some(
            known @ ("temporarily_unavailable" | "server_error"),
        ) => format!(
            "Sign-in was not completed: the identity provider could not handle it right now ({known}). Try again in a moment."
        ),
        Some(known) => format!(
            "Sign-in was not completed: the identity provider answered with an error ({known}). \
             Start again from the sign-in page; if it keeps failing, your administrator finds the provider's details in ajar's log."
        ),
        None => "Sign-in was not completed: the identity provider answered with an error. \
                 Start again from the sign-in page; if it keeps failing, your administrator finds the provider's details in ajar's log."
            .to_owned(),
    }
}

/// Provider text made safe for a log line: at most [`LOG_CAP`] characters
/// (an ellipsis says when it was cut), control characters escaped so that
/// the text cannot forge log lines or terminal escapes.
pub fn for_log(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LOG_CAP {
            out.push('…');
            break;
        }
        if c.is_control() || is_bidi_control(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that reorder text on screen (Unicode bidirectional controls):
/// not `is_control`, but as able to mislead a reader.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_registered_codes_are_named() {
        assert_eq!(registered_error("access_denied"), Some("access_denied"));
        assert_eq!(registered_error("login_required"), Some("login_required"));
        assert_eq!(registered_error("Access_Denied"), None);
        assert_eq!(registered_error("call 555-0100 for help"), None);
        assert!(failure_sentence("access_denied").contains("(access_denied)"));
        let unknown = failure_sentence("Your account is locked: visit https://evil.example");
        assert!(!unknown.contains("evil") && !unknown.contains('('), "{unknown}");
        assert!(failure_sentence("temporarily_unavailable").contains("Try again"));
    }

    #[test]
    fn log_text_is_capped_and_escaped() {
        assert_eq!(for_log("plain words"), "plain words");
        assert_eq!(for_log("a\nb\r\u{1b}[31m"), "a\\u{a}b\\u{d}\\u{1b}[31m");
        assert_eq!(for_log("x\u{202e}y"), "x\\u{202e}y");
        let long = "é".repeat(500);
        let cut = for_log(&long);
        assert_eq!(cut.chars().count(), LOG_CAP + 1);
        assert!(cut.ends_with('…'));
    }
}
