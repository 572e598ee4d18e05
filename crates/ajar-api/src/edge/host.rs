//! Where the client reached the server: the host name its request names
//! (the connect address of a gateway that listens on a wildcard address)
//! and whether browsers come over HTTPS (`[server] public_url`, else
//! `[server] tls`).

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use crate::AppState;

/// The host name the client used to reach the API, for connect addresses
/// of gateways that listen on a wildcard address.
pub fn request_host(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned()
}

/// [`request_host`] as an extractor.
pub struct Host(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Host {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Host(request_host(&parts.headers)))
    }
}

/// What the config says about how browsers reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicOrigin {
    /// Browsers use HTTPS.
    pub https: bool,
    /// `public_url` says so, rather than ajar guessing from its own TLS:
    /// behind a proxy that terminates TLS only `public_url` can tell.
    pub declared: bool,
}

impl PublicOrigin {
    pub fn of(state: &AppState) -> Self {
        match &state.public_url {
            Some(url) => Self { https: url.starts_with("https://"), declared: true },
            None => Self { https: state.tls, declared: false },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn host(value: &str) -> String {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, value.parse().unwrap());
        request_host(&headers)
    }

    #[test]
    fn the_host_drops_its_port_and_brackets() {
        assert_eq!(host("ajar.example.com:8443"), "ajar.example.com");
        assert_eq!(host("ajar.example.com"), "ajar.example.com");
        assert_eq!(host("[::1]:8080"), "::1");
        assert_eq!(host("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(request_host(&HeaderMap::new()), "localhost");
    }
}
