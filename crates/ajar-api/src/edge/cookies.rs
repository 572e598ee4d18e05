//! The cookies the portal and the browser sign-in set and read: their
//! names and flags (from [`PublicOrigin`]), building `Set-Cookie` values,
//! reading a cookie back, and comparing secrets in constant time.

use axum::http::{header, HeaderMap};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::host::PublicOrigin;
use crate::AppState;

/// The cookie that holds a browser sign-in in flight.
const SSO_COOKIE: &str = "ajar_sso";

/// How this server's portal cookies are named and flagged.
///
/// With `[server] public_url = "https://..."` the session and sign-in CSRF
/// cookies are `__Host-` cookies: the browser keeps them only when they are
/// `Secure`, on `Path=/` and without `Domain`, so no other host (a sibling
/// subdomain, a plain-HTTP page on the same name) can set or overwrite
/// them. Behind a proxy that terminates TLS this is what makes them
/// `Secure` at all. Without `public_url` they keep their plain names and are
/// `Secure` exactly when the server speaks TLS itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cookies {
    secure: bool,
    host_prefix: bool,
}

impl Cookies {
    pub fn of(state: &AppState) -> Self {
        let origin = PublicOrigin::of(state);
        Self { secure: origin.https, host_prefix: origin.https && origin.declared }
    }

    pub fn session(self) -> &'static str {
        if self.host_prefix {
            "__Host-ajar_session"
        } else {
            "ajar_session"
        }
    }

    pub fn login_csrf(self) -> &'static str {
        if self.host_prefix {
            "__Host-ajar_login_csrf"
        } else {
            "ajar_login_csrf"
        }
    }

    pub fn sso(self) -> &'static str {
        SSO_COOKIE
    }

    /// `__Host-` cookies must be on `/`; the plain one is sent to the
    /// sign-in form only.
    fn login_csrf_path(self) -> &'static str {
        if self.host_prefix {
            "/"
        } else {
            "/login"
        }
    }

    /// `Set-Cookie` for the session cookie (`None` clears it).
    pub fn set_session(self, token: Option<&str>, max_age: u64) -> String {
        self.build(self.session(), token.unwrap_or(""), "/", SameSite::Strict, max_age)
    }

    /// `Set-Cookie` for the sign-in form's double-submit cookie.
    pub fn set_login_csrf(self, value: &str, max_age: u64) -> String {
        self.build(self.login_csrf(), value, self.login_csrf_path(), SameSite::Strict, max_age)
    }

    /// `Set-Cookie` for a browser sign-in in flight (an empty value with
    /// `max_age` 0 clears it). `SameSite=Lax`, not `Strict`: it must come
    /// back on the provider's top-level redirect. `Path=/sso` keeps it from
    /// every other page, which rules out the `__Host-` prefix (that needs
    /// `Path=/`); it is `Secure` like the others.
    pub fn set_sso(self, value: &str, max_age: u64) -> String {
        self.build(SSO_COOKIE, value, "/sso", SameSite::Lax, max_age)
    }

    /// A `Set-Cookie` value; no page script can read the cookie (`HttpOnly`).
    fn build(self, name: &str, value: &str, path: &str, same_site: SameSite, max_age: u64) -> String {
        let same_site = match same_site {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
        };
        let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age}");
        if self.secure {
            cookie.push_str("; Secure");
        }
        cookie
    }
}

#[derive(Debug, Clone, Copy)]
enum SameSite {
    /// Sent only with requests this site starts.
    Strict,
    /// Also sent when another site links or redirects here.
    Lax,
}

/// Adds a `Set-Cookie` header to `response`. Every cookie ajar sets is
/// its own ASCII (hex and base64url values), so the value is always a
/// valid header; one that were not would be left out rather than sent
/// broken.
pub fn add(response: &mut Response, cookie: &str) {
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The `Max-Age` of a cookie that holds a token expiring at `expires_at`:
/// the whole seconds from `now`, 0 once it has passed.
pub fn max_age(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    u64::try_from((expires_at - now).num_seconds()).unwrap_or(0)
}

/// The value of the cookie `name` in the request, if it sent one.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Compares two strings in time that depends only on their lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cookies_are_flagged_as_the_origin_allows() {
        let plain = Cookies { secure: false, host_prefix: false };
        assert_eq!(
            plain.set_session(Some("ajar_t0k"), 3600),
            "ajar_session=ajar_t0k; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        assert_eq!(plain.set_login_csrf("", 0), "ajar_login_csrf=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0");
        assert_eq!(plain.set_sso("p~1~c", 600), "ajar_sso=p~1~c; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=600");

        let public = Cookies { secure: true, host_prefix: true };
        assert_eq!(
            public.set_session(None, 0),
            "__Host-ajar_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure"
        );
        assert_eq!(
            public.set_login_csrf("ab", 3600),
            "__Host-ajar_login_csrf=ab; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600; Secure"
        );
        assert_eq!(public.set_sso("", 0), "ajar_sso=; Path=/sso; HttpOnly; SameSite=Lax; Max-Age=0; Secure");
    }

    #[test]
    fn a_cookie_is_read_back_by_its_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; ajar_session=t0k".parse().unwrap());
        headers.append(header::COOKIE, "__Host-ajar_session=t1k".parse().unwrap());
        assert_eq!(cookie(&headers, "ajar_session").as_deref(), Some("t0k"));
        assert_eq!(cookie(&headers, "__Host-ajar_session").as_deref(), Some("t1k"));
        assert_eq!(cookie(&headers, "ajar"), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
