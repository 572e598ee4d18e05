//! Who is calling and from where: the bearer-token extractor and the
//! client address (believing `X-Forwarded-For` only from trusted proxies).

use std::net::{IpAddr, SocketAddr};

use ajar_domain::policy::Principal;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use ipnet::IpNet;

use crate::{AppState, Problem};

/// An authenticated caller.
pub struct Caller(pub Principal);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let missing = || {
            Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "this needs a bearer token: run `ajar login`, or send `Authorization: Bearer <token>` from POST /api/v1/login",
            )
        };
        let token = bearer_token(&parts.headers).ok_or_else(missing)?.to_owned();
        if ajar_oidc::Sso::looks_like_jwt(&token) {
            let addr = <ClientAddr as FromRequestParts<AppState>>::from_request_parts(parts, &state).await?.0;
            return Ok(Caller(crate::sso::bearer(&state, &token, addr).await?));
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

/// The address the caller's packets come from, as far as ajar can tell.
pub struct ClientAddr(pub IpAddr);

impl<S> FromRequestParts<S> for ClientAddr
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .ok_or_else(|| Problem::bad_request("no-peer-address", "the server cannot tell your address"))?;
        client_ip(peer.ip(), &parts.headers, &state.trusted_proxies).map(ClientAddr)
    }
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
