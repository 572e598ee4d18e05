//! Who is calling and from where: the bearer-token extractor (ajar's own
//! tokens, and JWTs from trusted issuers) and the client address
//! (believing `X-Forwarded-For` only from trusted proxies).

use std::net::{IpAddr, SocketAddr};

use ajar_domain::policy::Principal;
use ajar_oidc::SsoError;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use ipnet::IpNet;

use super::problem::Problem;
use crate::AppState;

/// An authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let missing = || {
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this needs a bearer token: run `ajar login`, or send `Authorization: Bearer <token>` from POST /api/v1/login",
            )
        };
        let token = bearer_token(&parts.headers).ok_or_else(missing)?.to_owned();
        if ajar_oidc::Sso::looks_like_jwt(&token) {
            let addr = client_addr(parts, state)?;
            return Ok(Caller(jwt_principal(state, &token, addr).await?));
        }
        let principal = state.core.authenticate(&token).await?;
        Ok(Caller(principal))
    }
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    Some(value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim())
}

/// The principal of a JWT bearer token from a trusted issuer, or a 401 that
/// says why not (audited).
async fn jwt_principal(state: &AppState, token: &str, addr: IpAddr) -> Result<Principal, Problem> {
    let Some(sso) = state.sso.as_ref().filter(|s| !s.settings().trusted_tokens.is_empty()) else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "this server accepts no JWT bearer tokens (no oidc.trusted_tokens are configured); run `ajar login`",
        ));
    };
    // An address that keeps sending bad tokens waits before any more of
    // them are verified (or audited).
    state.core.sign_in_allowed(addr)?;
    match sso.verify_bearer(token, state.core.now().timestamp()).await {
        Ok(identity) => Ok(state.core.bearer_principal(&identity, token, addr).await?),
        Err(e) => Err(failed_sign_in(state, addr, "jwt", e).await),
    }
}

/// Audits a failed sign-in (a JWT, or an SSO flow that `method` names) and
/// turns it into the problem the caller sees.
pub async fn failed_sign_in(state: &AppState, addr: IpAddr, method: &str, e: SsoError) -> Problem {
    let why = match &e {
        SsoError::Token(t) => format!("{}: {t}", t.kind()),
        other => other.to_string(),
    };
    if let Err(audit) = state.core.record_failed_sign_in(None, addr, method, &why).await {
        tracing::error!(error = %audit, "cannot audit a failed sign-in");
    }
    Problem::from_sso(&e)
}

/// The address the caller's packets come from, as far as ajar can tell.
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        client_addr(parts, state).map(ClientAddr)
    }
}

/// [`ClientAddr`] for extractors that need it on the way.
pub fn client_addr(parts: &Parts, state: &AppState) -> Result<IpAddr, Problem> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .ok_or_else(|| Problem::bad_request("no-peer-address", "the server cannot tell your address"))?;
    client_ip(peer.ip(), &parts.headers, &state.trusted_proxies)
}

/// The client's address. A peer that is not a trusted proxy is the client.
/// Behind trusted proxies, the right-most `X-Forwarded-For` hop that is not
/// itself a trusted proxy is. A trusted proxy that sends no usable header
/// is refused rather than taken as the client: a grant bound to a proxy's
/// address would admit everyone behind it.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Result<IpAddr, Problem> {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Ok(peer);
    }
    let unusable = || {
        Problem::bad_request(
            "bad-forwarded-for",
            "the request came through a trusted proxy without a usable X-Forwarded-For header, so ajar cannot tell your address; fix the proxy to send it",
        )
    };
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().map_err(|_| unusable())?;
        for hop in text.split(',') {
            let ip: IpAddr = hop.trim().parse().map_err(|_| unusable())?;
            hops.push(ip.to_canonical());
        }
    }
    hops.into_iter().rev().find(|ip| !is_trusted(ip)).ok_or_else(unusable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn believes_forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().expect("net")];
        // Untrusted peer: header ignored.
        assert_eq!(client_ip(ip("192.0.2.9"), &headers(&["203.0.113.5"]), &trusted).ok(), Some(ip("192.0.2.9")));
        // Trusted peer: right-most untrusted hop, skipping a chain of proxies.
        let h = headers(&["198.51.100.1, 203.0.113.5", "10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.5"), &h, &trusted).ok(), Some(ip("203.0.113.5")));
        // Trusted peer without a usable header: refused.
        assert!(client_ip(ip("10.0.0.5"), &headers(&[]), &trusted).is_err());
        assert!(client_ip(ip("10.0.0.5"), &headers(&["garbage"]), &trusted).is_err());
        // IPv4-mapped peers are their IPv4 address.
        assert_eq!(client_ip(ip("::ffff:192.0.2.1"), &headers(&[]), &[]).ok(), Some(ip("192.0.2.1")));
    }
}
