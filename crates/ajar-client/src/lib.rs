//! A typed client for ajar's HTTP API, used by the CLI. The wire types are
//! `ajar-wire`'s, the same the server answers with, so client and server
//! cannot disagree about a field; this crate pulls in none of the server.

use std::fmt;

pub use ajar_wire::{
    AuditPage, AuditVerifyDto, CommentBody, CreateRequestBody, EnforcementStatus, LoginBody, LoginResponse, RequestDto,
    RequestState, SsoDevice, SsoDevicePoll, SsoHandoff, SsoInfo, SsoStatus, TargetDto, TokensRevoked, UnknownState,
    WhoAmI,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// An RFC 9457 problem as the server sent it.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a problem; `detail` is meant for the user.
    #[error("{}", .0.detail)]
    Api(Problem),
    #[error("cannot reach the ajar server at {url}: {cause}; check --server or AJAR_SERVER, and that the server runs")]
    Unreachable { url: String, cause: String },
    #[error(
        "the server at {url} answered {status} with something that is not ajar's API ({cause}); is --server right?"
    )]
    Unexpected { url: String, status: u16, cause: String },
}

impl ClientError {
    /// The problem's slug (`urn:ajar:problem:<slug>`), if the server sent one.
    pub fn slug(&self) -> Option<&str> {
        match self {
            ClientError::Api(p) => p.kind.strip_prefix("urn:ajar:problem:"),
            _ => None,
        }
    }
}

/// Which requests to list: every field that is set must match.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Any of these states; empty means any state.
    pub states: Vec<RequestState>,
    pub target: Option<String>,
    pub requester: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl fmt::Debug for Client {
    /// Leaves the token out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish_non_exhaustive()
    }
}

/// A request verb on `/requests/{id}/{verb}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Approve,
    Deny,
    Cancel,
    Release,
    Revoke,
}

impl Verb {
    fn path(self) -> &'static str {
        match self {
            Verb::Approve => "approve",
            Verb::Deny => "deny",
            Verb::Cancel => "cancel",
            Verb::Release => "release",
            Verb::Revoke => "revoke",
        }
    }
}

impl Client {
    /// `server` is the base URL, such as `http://127.0.0.1:8080`.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("ajar-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Unreachable { url: server.to_owned(), cause: e.to_string() })?;
        Ok(Self { base: server.trim_end_matches('/').to_owned(), http, token })
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&[(&str, String)]>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}/api/v1{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(query) = query {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), cause: root_cause(&e) })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| ClientError::Unreachable { url: self.base.clone(), cause: root_cause(&e) })?;
        let unexpected =
            |cause: String| ClientError::Unexpected { url: self.base.clone(), status: status.as_u16(), cause };
        if status.is_success() {
            // No content (204) reads as JSON null, which `()` accepts.
            let body: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            serde_json::from_slice(body).map_err(|e| unexpected(e.to_string()))
        } else {
            match serde_json::from_slice::<Problem>(&bytes) {
                Ok(problem) if !problem.detail.is_empty() => Err(ClientError::Api(problem)),
                _ if status == StatusCode::NOT_FOUND => Err(unexpected("no such endpoint".to_owned())),
                _ => Err(unexpected(String::from_utf8_lossy(&bytes).chars().take(200).collect())),
            }
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<LoginResponse, ClientError> {
        let body = LoginBody { username: username.to_owned(), password: password.to_owned() };
        self.call(Method::POST, "/login", None, Some(&body)).await
    }

    /// Whether and how the server signs people in through SSO.
    pub async fn sso_info(&self) -> Result<SsoInfo, ClientError> {
        self.call::<(), _>(Method::GET, "/sso", None, None).await
    }

    /// Starts a device sign-in at the server's identity provider.
    pub async fn sso_device_start(&self) -> Result<SsoDevice, ClientError> {
        self.call::<(), _>(Method::POST, "/sso/device", None, None).await
    }

    pub async fn sso_device_poll(&self, device_code: &str) -> Result<SsoStatus, ClientError> {
        let body = SsoDevicePoll { device_code: device_code.to_owned() };
        self.call(Method::POST, "/sso/device/token", None, Some(&body)).await
    }

    /// Redeems a loopback sign-in's one-time code with its verifier.
    pub async fn sso_loopback_token(&self, code: &str, verifier: &str) -> Result<LoginResponse, ClientError> {
        let body = SsoHandoff { code: code.to_owned(), verifier: verifier.to_owned() };
        self.call(Method::POST, "/sso/loopback/token", None, Some(&body)).await
    }

    /// Signs out: the token stops working on the server at once.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call::<(), ()>(Method::POST, "/logout", None, None).await
    }

    /// Ends every session of `user` (admins).
    pub async fn revoke_tokens(&self, user: &str) -> Result<TokensRevoked, ClientError> {
        self.call::<(), _>(Method::POST, &format!("/users/{}/revoke-tokens", encode(user)), None, None).await
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.call::<(), _>(Method::GET, "/whoami", None, None).await
    }

    pub async fn targets(&self) -> Result<Vec<TargetDto>, ClientError> {
        self.call::<(), _>(Method::GET, "/targets", None, None).await
    }

    pub async fn create_request(&self, body: &CreateRequestBody) -> Result<RequestDto, ClientError> {
        self.call(Method::POST, "/requests", None, Some(body)).await
    }

    pub async fn get_request(&self, id: &str) -> Result<RequestDto, ClientError> {
        self.call::<(), _>(Method::GET, &format!("/requests/{}", encode(id)), None, None).await
    }

    pub async fn list_requests(&self, query: &ListQuery) -> Result<Vec<RequestDto>, ClientError> {
        let mut pairs = Vec::new();
        if !query.states.is_empty() {
            let states: Vec<&str> = query.states.iter().map(|s| s.as_str()).collect();
            pairs.push(("state", states.join(",")));
        }
        for (key, value) in [("target", &query.target), ("requester", &query.requester)] {
            if let Some(v) = value {
                pairs.push((key, v.clone()));
            }
        }
        self.call::<(), _>(Method::GET, "/requests", Some(&pairs), None).await
    }

    pub async fn act(&self, id: &str, verb: Verb, comment: Option<String>) -> Result<RequestDto, ClientError> {
        let path = format!("/requests/{}/{}", encode(id), verb.path());
        match verb {
            Verb::Cancel | Verb::Release => self.call::<(), _>(Method::POST, &path, None, None).await,
            _ => self.call(Method::POST, &path, None, Some(&CommentBody { comment })).await,
        }
    }

    pub async fn audit(&self, after: i64, limit: u32) -> Result<AuditPage, ClientError> {
        let query = [("after", after.to_string()), ("limit", limit.to_string())];
        self.call::<(), _>(Method::GET, "/audit", Some(&query), None).await
    }

    pub async fn verify_audit(&self) -> Result<AuditVerifyDto, ClientError> {
        self.call::<(), _>(Method::GET, "/audit/verify", None, None).await
    }
}

/// A path segment: request ids are letters and digits, and anything else a
/// user typed (a user name may be an e-mail address) is percent-encoded so
/// that it cannot change the path.
fn encode(segment: &str) -> String {
    utf8_percent_encode(segment, NON_ALPHANUMERIC).to_string()
}

/// The innermost cause of a transport error, which is the one that says
/// what went wrong ("Connection refused").
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_keep_only_letters_and_digits() {
        assert_eq!(encode("r7Kq2"), "r7Kq2");
        assert_eq!(encode("../admin?x=1"), "%2E%2E%2Fadmin%3Fx%3D1");
        assert_eq!(encode("jo é"), "jo%20%C3%A9");
    }
}
