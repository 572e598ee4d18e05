//! Portal sessions and CSRF tokens.

use std::net::IpAddr;

use ajar_domain::policy::Principal;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::edge::caller::client_addr;
use crate::edge::cookies::{cookie, same, Cookies};
use crate::AppState;

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

/// Without a valid session: back to the sign-in page.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, Cookies::of(state).session()).ok_or(SignIn)?;
        let principal = state.core.authenticate(&token).await.map_err(|_| SignIn)?;
        let addr = client_addr(parts, state).map_err(|_| SignIn)?;
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
