//! Single sign-on with OpenID Connect: discovery, a JWKS cache that follows
//! key rotation, ID token and JWT access token verification, and the
//! sign-in flows (authorization code with PKCE, state and nonce; the device
//! authorization grant). [`Sso`] is what the API holds; what a verified
//! token means (who, which groups) is the pure [`claims`] module.

pub mod answer;
pub mod claims;
mod provider;

use std::collections::BTreeMap;
use std::sync::Arc;

use ajar_config::{OidcSettings, Secret, SecretRef};
use ajar_domain::ExternalIdentity;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use claims::{Refused, TokenError};
pub use provider::{unverified_claims, ClientAuth, DevicePoll, DeviceStart, Provider, ProviderError, Tokens};

/// Reads the client secret the config names (file or environment
/// variable), at server start.
pub fn resolve_secret(secret: &SecretRef) -> Result<Secret, String> {
    match secret {
        SecretRef::Value(value) => Ok(value.clone()),
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map(|s| Secret::new(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| format!("cannot read the OIDC client secret from {}: {e}", path.display())),
        SecretRef::Env(var) => std::env::var(var).map(Secret::new).map_err(|_| {
            format!(
                "the environment variable {var} (oidc.client_secret_env) is not set; set it to the OIDC client secret"
            )
        }),
    }
}

/// A fresh random value for `state`, `nonce` or a PKCE verifier: 32 bytes,
/// base64url.
pub fn random_value() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// What a browser sign-in keeps between leaving for the provider and
/// coming back: it travels in a short-lived cookie, so any replica can
/// finish the sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

impl Pending {
    pub fn new() -> Self {
        Self { state: random_value(), nonce: random_value(), verifier: random_value() }
    }

    /// `state.nonce.verifier`: all three are base64url, which has no dot.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.state, self.nonce, self.verifier)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let (state, nonce, verifier) = (parts.next()?, parts.next()?, parts.next()?);
        let valid = |s: &str| {
            !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (parts.next().is_none() && valid(state) && valid(nonce) && valid(verifier)).then(|| Self {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }
}

impl Default for Pending {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a sign-in or a bearer token did not produce an identity.
#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("the provider sent no ID token; make sure the scopes include \"openid\"")]
    NoIdToken,
}

/// Single sign-on as the server runs it: the settings, the sign-in
/// provider and the providers of trusted bearer tokens.
pub struct Sso {
    settings: OidcSettings,
    client: ClientAuth,
    provider: Arc<Provider>,
    /// Issuer → provider, for `trusted_tokens`.
    trusted: BTreeMap<String, Arc<Provider>>,
}

impl Sso {
    /// Builds the providers; nothing is fetched until first use, so a
    /// provider that is down does not keep ajar from starting.
    pub fn new(settings: OidcSettings, secret: Option<Secret>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client for OIDC: {e}"))?;
        let provider = Arc::new(Provider::new(&settings.issuer, http.clone()));
        let mut trusted = BTreeMap::new();
        for t in &settings.trusted_tokens {
            let p = if t.issuer == settings.issuer {
                provider.clone()
            } else {
                Arc::new(Provider::new(&t.issuer, http.clone()))
            };
            trusted.insert(t.issuer.clone(), p);
        }
        let client = ClientAuth { id: settings.client_id.clone(), secret };
        Ok(Self { settings, client, provider, trusted })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    pub fn local_users(&self) -> bool {
        self.settings.local_users
    }

    /// Where to send the browser, and what to remember until it is back.
    pub async fn begin(&self, redirect_uri: &str) -> Result<(String, Pending), SsoError> {
        let pending = Pending::new();
        let url = self
            .provider
            .authorize_url(
                &self.client.id,
                redirect_uri,
                &self.settings.scopes,
                &pending.state,
                &pending.nonce,
                &pkce_challenge(&pending.verifier),
            )
            .await?;
        Ok((url, pending))
    }

    /// Finishes a browser sign-in: exchanges the code, verifies the ID
    /// token (signature, issuer, audience, times, nonce) and says who it is.
    /// The caller has already compared `state` with `pending.state`.
    pub async fn finish(
        &self,
        code: &str,
        pending: &Pending,
        redirect_uri: &str,
        now: i64,
    ) -> Result<ExternalIdentity, SsoError> {
        let tokens = self.provider.exchange_code(&self.client, code, redirect_uri, &pending.verifier).await?;
        let claims = self.verify_id_token(tokens.id_token.as_deref(), now).await?;
        claims::check_nonce(&claims, &pending.nonce)?;
        Ok(claims::person(&claims, &self.settings)??)
    }

    async fn verify_id_token(
        &self,
        id_token: Option<&str>,
        now: i64,
    ) -> Result<serde_json::Map<String, serde_json::Value>, SsoError> {
        let id_token = id_token.ok_or(SsoError::NoIdToken)?;
        Ok(self.provider.verify(id_token, &self.client.id, now, self.settings.clock_skew).await?)
    }

    pub async fn supports_device_flow(&self) -> Result<bool, SsoError> {
        Ok(self.provider.supports_device_flow().await?)
    }

    pub async fn device_start(&self) -> Result<DeviceStart, SsoError> {
        Ok(self.provider.device_start(&self.client, &self.settings.scopes).await?)
    }

    /// Polls a device sign-in once; `Ok(None)` while the user is not done.
    pub async fn device_poll(
        &self,
        device_code: &str,
        now: i64,
    ) -> Result<Result<Option<ExternalIdentity>, String>, SsoError> {
        match self.provider.device_poll(&self.client, device_code).await? {
            DevicePoll::Pending { .. } => Ok(Ok(None)),
            DevicePoll::Failed(why) => Ok(Err(why)),
            DevicePoll::Done(tokens) => {
                // The device grant carries no nonce: the device code itself,
                // bound to ajar's client at the provider, ties the token to
                // this sign-in.
                let claims = self.verify_id_token(tokens.id_token.as_deref(), now).await?;
                Ok(Ok(Some(claims::person(&claims, &self.settings)??)))
            }
        }
    }

    /// Whether `token` looks like a JWT (three base64url parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        let parts: Vec<&str> = token.split('.').collect();
        parts.len() == 3
            && parts[..2].iter().all(|p| !p.is_empty())
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }

    /// Verifies a JWT bearer token from a trusted issuer for a trusted
    /// audience and says who it stands for.
    pub async fn verify_bearer(&self, token: &str, now: i64) -> Result<ExternalIdentity, SsoError> {
        let unverified = unverified_claims(token).ok_or_else(|| TokenError::Malformed("unreadable payload".into()))?;
        let issuer = unverified.get("iss").and_then(serde_json::Value::as_str).unwrap_or_default();
        let provider =
            self.trusted.get(issuer).ok_or_else(|| TokenError::WrongIssuer(issuer.chars().take(200).collect()))?;
        let candidates: Vec<_> = self.settings.trusted_tokens.iter().filter(|t| t.issuer == issuer).collect();
        let mut last = None;
        for trusted in candidates {
            match provider.verify(token, &trusted.audience, now, self.settings.clock_skew).await {
                Ok(claims) => return Ok(claims::machine(&claims, trusted, &self.settings.group_map)??),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TokenError::WrongIssuer(issuer.to_owned())).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips_and_rejects_junk() {
        let p = Pending::new();
        assert_eq!(Pending::decode(&p.encode()), Some(p));
        for junk in ["", "a.b", "a.b.c.d", "a.b.c d", "a..c"] {
            assert_eq!(Pending::decode(junk), None, "{junk}");
        }
    }

    #[test]
    fn pkce_challenge_matches_rfc_7636_example() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn jwt_shape_is_recognised() {
        assert!(Sso::looks_like_jwt("eyJh.eyJi.sig"));
        assert!(!Sso::looks_like_jwt("ajar_0123"));
        assert!(!Sso::looks_like_jwt("a.b"));
        assert!(!Sso::looks_like_jwt("a.b.c d"));
    }

    #[test]
    fn secrets_come_from_files_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("ajar-oidc-secret-{}", std::process::id()));
        std::fs::write(&dir, "s3cret\n").expect("write");
        let from_file = resolve_secret(&SecretRef::File(dir.clone())).expect("file");
        assert_eq!(from_file.expose(), "s3cret");
        let _ = std::fs::remove_file(&dir);
        let missing = resolve_secret(&SecretRef::Env("AJAR_TEST_SURELY_UNSET_VARIABLE".into())).expect_err("unset");
        assert!(missing.contains("AJAR_TEST_SURELY_UNSET_VARIABLE"), "{missing}");
    }
}
