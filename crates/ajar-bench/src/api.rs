//! The HTTP calls the bench makes, with just the fields it reads. The bench
//! talks to the server as any client would: JSON over HTTP, bearer token
//! from one login (argon2 is deliberately slow, so logging in per request
//! would measure the password hash, not ajar).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::server::{PASSWORD, TARGET, USER};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Grant {
    pub id: String,
    pub state: String,
    pub ends_at: Option<DateTime<Utc>>,
    pub enforcement: Enforcement,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Enforcement {
    pub status: String,
}

#[derive(Debug, Deserialize)]
struct Login {
    token: String,
}

#[derive(Debug, Deserialize)]
struct TargetInfo {
    name: String,
    connect: Option<Connect>,
}

#[derive(Debug, Deserialize)]
struct Connect {
    host: String,
    port: u16,
}

/// A client whose connection pool keeps at most `idle` idle connections.
pub fn http_client(idle: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(idle)
        .timeout(Duration::from_secs(120))
        .tcp_nodelay(true)
        .build()?)
}

impl Api {
    /// Logs the bench user in once.
    pub async fn login(http: reqwest::Client, base: &str) -> anyhow::Result<Self> {
        let response = http
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "username": USER, "password": PASSWORD }))
            .send()
            .await?
            .error_for_status()?;
        let login: Login = response.json().await?;
        Ok(Self { http, base: base.to_owned(), token: login.token })
    }

    /// The same login over another connection pool.
    pub fn with_http(&self, http: reqwest::Client) -> Self {
        Self { http, base: self.base.clone(), token: self.token.clone() }
    }

    /// Where the gateway listens for the bench target.
    pub async fn gateway(&self) -> anyhow::Result<SocketAddr> {
        let targets: Vec<TargetInfo> = self
            .http
            .get(format!("{}/api/v1/targets", self.base))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let connect = targets
            .into_iter()
            .find(|t| t.name == TARGET)
            .and_then(|t| t.connect)
            .ok_or_else(|| anyhow!("the server offers no connect address for target {TARGET}"))?;
        format!("{}:{}", connect.host, connect.port).parse().context("the gateway's connect address")
    }

    /// Asks for an auto-approved grant for `source` lasting `secs`.
    pub async fn request(&self, source: Ipv4Addr, secs: u64) -> Result<Grant, CallError> {
        let body = json!({ "target": TARGET, "duration": format!("{secs}s"), "source": format!("{source}/32") });
        let response = self
            .http
            .post(format!("{}/api/v1/requests", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(CallError::transport)?;
        let grant: Grant = decode(response).await?;
        if grant.state != "active" || grant.enforcement.status != "open" {
            return Err(CallError(format!("not open: {} / {}", grant.state, grant.enforcement.status)));
        }
        Ok(grant)
    }

    /// Ends a grant early.
    pub async fn release(&self, id: &str) -> Result<(), CallError> {
        let response = self
            .http
            .post(format!("{}/api/v1/requests/{id}/release", self.base))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await
            .map_err(CallError::transport)?;
        let _: serde_json::Value = decode(response).await?;
        Ok(())
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.http.get(format!("{}/metrics", self.base)).send().await?.error_for_status()?.text().await?)
    }

    /// The value of one sample line of `/metrics`, such as
    /// `ajar_requests{state="active"}`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .ok_or_else(|| anyhow!("/metrics has no {name}"))?;
        Ok(line.split_whitespace().nth(1).unwrap_or_default().parse()?)
    }
}

/// A failed call, reduced to its kind (for "errors by kind").
#[derive(Debug, Clone)]
pub struct CallError(pub String);

impl CallError {
    fn transport(e: reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timeout".to_owned()
        } else if e.is_connect() {
            "cannot connect".to_owned()
        } else {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("transport: {cause}")
        };
        Self(kind)
    }
}

async fn decode<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, CallError> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(CallError::transport)?;
    if !status.is_success() {
        #[derive(Deserialize)]
        struct Problem {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let kind = serde_json::from_slice::<Problem>(&bytes).ok().and_then(|p| p.kind).unwrap_or_default();
        return Err(CallError(format!("HTTP {} {kind}", status.as_u16()).trim_end().to_owned()));
    }
    serde_json::from_slice(&bytes).map_err(|e| CallError(format!("bad JSON: {e}")))
}
