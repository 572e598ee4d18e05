//! One OpenID Connect provider as ajar talks to it: discovery, the JWKS
//! cache (refetched on an unknown key id, so rotation needs no restart),
//! token verification, and the authorization-code and device flows.

use std::time::{Duration, Instant};

use ajar_config::Secret;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::claims::{self, TokenError};

/// How long discovery and keys are trusted before they are fetched again:
/// a key the provider retires stops working here within this time (at
/// once when a token signed by a new key arrives first).
const CACHE_FOR: Duration = Duration::from_secs(900);
/// An unknown key id triggers a JWKS fetch at most this often, so that a
/// flood of forged key ids cannot turn ajar into a load on the provider.
const REFETCH_AFTER: Duration = Duration::from_secs(2);

/// The parts of the discovery document ajar uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
}

/// The client ajar is at the provider.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    pub id: String,
    pub secret: Option<Secret>,
}

/// A successful token response.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub id_token: Option<String>,
}

/// The answer to a device authorization request (RFC 8628).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct DeviceStart {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default)]
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    #[serde(default = "five")]
    pub interval: u64,
}

fn five() -> u64 {
    5
}

/// Where a device sign-in stands.
#[derive(Debug, Clone)]
pub enum DevicePoll {
    /// The user has not finished yet; poll again after the interval
    /// (longer when the provider asked to slow down).
    Pending {
        slow_down: bool,
    },
    Done(Tokens),
    /// Denied, expired or otherwise over, with the provider's words.
    Failed(String),
}

/// Why talking to the provider failed (not a verdict on a token).
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the identity provider at {issuer} cannot be reached: {cause}")]
    Unreachable { issuer: String, cause: String },
    #[error("the identity provider answered in a way ajar cannot use: {0}")]
    Protocol(String),
    #[error("the identity provider refused: {0}")]
    Refused(String),
}

#[derive(Default)]
struct Cache {
    metadata: Option<(Metadata, Instant)>,
    keys: Vec<jsonwebtoken::jwk::Jwk>,
    keys_fetched: Option<Instant>,
}

pub struct Provider {
    issuer: String,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl Provider {
    pub fn new(issuer: &str, http: reqwest::Client) -> Self {
        Self { issuer: issuer.to_owned(), http, cache: Mutex::new(Cache::default()) }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ProviderError {
        ProviderError::Unreachable { issuer: self.issuer.clone(), cause: e.to_string() }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, ProviderError> {
        let response = self.http.get(url).send().await.map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return Err(ProviderError::Protocol(format!("GET {url} answered {}", response.status())));
        }
        response.json().await.map_err(|e| ProviderError::Protocol(format!("GET {url}: {e}")))
    }

    /// The discovery document, cached for [`CACHE_FOR`]. Its `issuer` must be
    /// exactly the configured one (OpenID Connect Discovery, section 4.3).
    pub async fn metadata(&self) -> Result<Metadata, ProviderError> {
        let mut cache = self.cache.lock().await;
        if let Some((metadata, at)) = &cache.metadata {
            if at.elapsed() < CACHE_FOR {
                return Ok(metadata.clone());
            }
        }
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let metadata: Metadata = self.get_json(&url).await?;
        if metadata.issuer != self.issuer {
            return Err(ProviderError::Protocol(format!(
                "the discovery document names the issuer {:?}, not {:?}; set oidc.issuer to exactly the provider's issuer",
                metadata.issuer, self.issuer
            )));
        }
        cache.metadata = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    /// The key for `kid` (or the only key, when the token names none).
    /// Unknown key ids refetch the JWKS, at most every [`REFETCH_AFTER`].
    async fn key(&self, kid: Option<&str>) -> Result<jsonwebtoken::jwk::Jwk, TokenError> {
        let find = |keys: &[jsonwebtoken::jwk::Jwk]| match kid {
            Some(kid) => keys.iter().find(|k| k.common.key_id.as_deref() == Some(kid)).cloned(),
            None if keys.len() == 1 => keys.first().cloned(),
            None => None,
        };
        let unavailable = |e: ProviderError| TokenError::Unavailable(e.to_string());
        let metadata = self.metadata().await.map_err(unavailable)?;
        let mut cache = self.cache.lock().await;
        let fresh = cache.keys_fetched.is_some_and(|at| at.elapsed() < CACHE_FOR);
        if fresh {
            if let Some(key) = find(&cache.keys) {
                return Ok(key);
            }
        }
        let may_fetch = cache.keys_fetched.is_none_or(|at| at.elapsed() >= REFETCH_AFTER);
        if may_fetch {
            let set: jsonwebtoken::jwk::JwkSet = self.get_json(&metadata.jwks_uri).await.map_err(unavailable)?;
            info!(issuer = %self.issuer, keys = set.keys.len(), "fetched the identity provider's signing keys");
            cache.keys = set.keys;
            cache.keys_fetched = Some(Instant::now());
        }
        find(&cache.keys).ok_or_else(|| TokenError::UnknownKey(kid.unwrap_or("none").chars().take(80).collect()))
    }

    /// Verifies `token`'s signature against the provider's keys, its issuer,
    /// that `audience` is among its audiences, and its times (`now` in Unix
    /// seconds, with `skew`). Returns its claims.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
        now: i64,
        skew: Duration,
    ) -> Result<Map<String, Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ];
        if !allowed.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| TokenError::UnknownKey(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[audience]);
        // Times are checked below against ajar's clock, with the
        // configured skew.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims = ["iss".to_owned(), "aud".to_owned()].into();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            let unverified = || unverified_claims(token).unwrap_or_default();
            match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidAudience => TokenError::WrongAudience(claims::audiences(&unverified())),
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer(
                    unverified().get("iss").and_then(Value::as_str).unwrap_or("none").chars().take(200).collect(),
                ),
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::MissingClaim("aud"),
                ErrorKind::MissingRequiredClaim(_) => TokenError::MissingClaim("iss"),
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm(format!("{:?}", header.alg)),
                _ => TokenError::Malformed(e.to_string()),
            }
        })?;
        let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
        claims::check_times(&data.claims, now, skew)?;
        Ok(data.claims)
    }

    /// Where to send the browser to sign in (authorization code flow with
    /// PKCE S256, `state` and `nonce`).
    pub async fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        nonce: &str,
        challenge: &str,
    ) -> Result<String, ProviderError> {
        let metadata = self.metadata().await?;
        let mut url = reqwest::Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| ProviderError::Protocol(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes.join(" "))
            .append_pair("state", state)
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    fn token_request(&self, url: &str, client: &ClientAuth, mut form: Vec<(&str, String)>) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        match &client.secret {
            // client_secret_basic: RFC 6749 section 2.3.1 wants both parts
            // form-encoded inside the Basic credentials.
            Some(secret) => request.basic_auth(form_encode(&client.id), Some(form_encode(secret.expose()))).form(&form),
            None => {
                form.push(("client_id", client.id.clone()));
                request.form(&form)
            }
        }
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        client: &ClientAuth,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Tokens, ProviderError> {
        let metadata = self.metadata().await?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
            ("code_verifier", verifier.to_owned()),
        ];
        let response =
            self.token_request(&metadata.token_endpoint, client, form).send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return response.json().await.map_err(|e| ProviderError::Protocol(format!("token response: {e}")));
        }
        let error = response.json::<ErrorBody>().await.map_err(|e| ProviderError::Protocol(e.to_string()))?;
        Err(ProviderError::Refused(describe(&error)))
    }

    /// Whether the provider offers the device authorization grant.
    pub async fn supports_device_flow(&self) -> Result<bool, ProviderError> {
        Ok(self.metadata().await?.device_authorization_endpoint.is_some())
    }

    /// Starts a device sign-in (RFC 8628).
    pub async fn device_start(&self, client: &ClientAuth, scopes: &[String]) -> Result<DeviceStart, ProviderError> {
        let metadata = self.metadata().await?;
        let Some(endpoint) = metadata.device_authorization_endpoint else {
            return Err(ProviderError::Protocol("the provider offers no device authorization endpoint".into()));
        };
        let form = vec![("scope", scopes.join(" "))];
        let response = self.token_request(&endpoint, client, form).send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return response.json().await.map_err(|e| ProviderError::Protocol(format!("device response: {e}")));
        }
        let error = response.json::<ErrorBody>().await.map_err(|e| ProviderError::Protocol(e.to_string()))?;
        Err(ProviderError::Refused(describe(&error)))
    }

    /// Asks once whether the device sign-in has finished.
    pub async fn device_poll(&self, client: &ClientAuth, device_code: &str) -> Result<DevicePoll, ProviderError> {
        let metadata = self.metadata().await?;
        let form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code".to_owned()),
            ("device_code", device_code.to_owned()),
        ];
        let response =
            self.token_request(&metadata.token_endpoint, client, form).send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            let tokens = response.json().await.map_err(|e| ProviderError::Protocol(format!("token response: {e}")))?;
            return Ok(DevicePoll::Done(tokens));
        }
        let error = response.json::<ErrorBody>().await.map_err(|e| ProviderError::Protocol(e.to_string()))?;
        Ok(match error.error.as_str() {
            "authorization_pending" => DevicePoll::Pending { slow_down: false },
            "slow_down" => DevicePoll::Pending { slow_down: true },
            _ => {
                warn!(issuer = %self.issuer, error = %error.error, "device sign-in ended at the provider");
                DevicePoll::Failed(describe(&error))
            }
        })
    }
}

fn describe(error: &ErrorBody) -> String {
    match &error.error_description {
        Some(d) => format!("{} ({d})", error.error),
        None => error.error.clone(),
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    reqwest::Url::parse_with_params("x:", [("v", value)])
        .ok()
        .and_then(|u| u.query().map(|q| q.trim_start_matches("v=").to_owned()))
        .unwrap_or_else(|| value.to_owned())
}

/// The claims of a JWT without checking anything: only to pick the issuer
/// a token claims to come from and to word error messages.
pub fn unverified_claims(token: &str) -> Option<Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(form_encode("ajar"), "ajar");
        assert_eq!(form_encode("a b:c&d"), "a+b%3Ac%26d");
    }

    #[test]
    fn unverified_claims_read_the_payload_only() {
        // {"iss":"https://idp"} in base64url.
        let token = "e30.eyJpc3MiOiJodHRwczovL2lkcCJ9.c2ln";
        let claims = unverified_claims(token).expect("claims");
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some("https://idp"));
        assert!(unverified_claims("not-a-jwt").is_none());
    }
}
