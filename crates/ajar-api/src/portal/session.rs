//! Portal sessions and CSRF tokens.

use std::net::IpAddr;

use ajar_domain::policy::Principal;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::AppState;

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
        match &state.public_url {
            Some(url) => {
                let https = url.starts_with("https://");
                Self { secure: https, host_prefix: https }
            }
            None => Self { secure: state.tls, host_prefix: false },
        }
    }

    /// Whether cookies carry `Secure`.
    pub fn secure(self) -> bool {
        self.secure
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

    /// `__Host-` cookies must be on `/`; the plain one is sent to the
    /// sign-in form only.
    pub fn login_csrf_path(self) -> &'static str {
        if self.host_prefix {
            "/"
        } else {
            "/login"
        }
    }

    /// `Set-Cookie` for the session cookie (`None` clears it).
    pub fn set_session(self, token: Option<&str>, max_age: u64) -> String {
        set_cookie(self.session(), token.unwrap_or(""), "/", Some(max_age), self.secure)
    }

    /// `Set-Cookie` for the sign-in form's double-submit cookie.
    pub fn set_login_csrf(self, value: &str, max_age: u64) -> String {
        set_cookie(self.login_csrf(), value, self.login_csrf_path(), Some(max_age), self.secure)
    }
}

/// A signed-in person, with the token their session cookie holds.
pub struct Session {
    pub principal: Principal,
    pub token: String,
    pub admin: bool,
    pub auditor: bool,
    pub addr: IpAddr,
}

impl Session {
    /// The CSRF token of this session: a hash of the session token, which
    /// a page on another site can neither read (HttpOnly) nor derive.
    pub fn csrf(&self) -> String {
        csrf_for(&self.token)
    }

    /// Checks a submitted CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> bool {
        same(submitted, &self.csrf())
    }
}

pub fn csrf_for(token: &str) -> String {
    hex::encode(Sha256::digest(format!("ajar-portal-csrf:{token}").as_bytes()))
}

/// Compares two strings in time that depends only on their lengths.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

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

/// `Set-Cookie` value for a cookie only this site's requests carry.
pub fn set_cookie(name: &str, value: &str, path: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// Without a valid session: back to the sign-in page.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl<S> FromRequestParts<S> for Session
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let token = cookie(&parts.headers, Cookies::of(&state).session()).ok_or(SignIn)?;
        let principal = state.core.authenticate(&token).await.map_err(|_| SignIn)?;
        let addr = <crate::caller::ClientAddr as FromRequestParts<AppState>>::from_request_parts(parts, &state)
            .await
            .map_err(|_| SignIn)?
            .0;
        let catalog = state.core.catalog();
        Ok(Session {
            admin: principal.is_admin(&catalog),
            auditor: principal.may_read_all_audit(&catalog),
            principal,
            token,
            addr,
        })
    }
}

/// A fresh random token for the sign-in form's double-submit check.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}
