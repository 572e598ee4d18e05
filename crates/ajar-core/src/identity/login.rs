//! Password sign-in, bearer tokens and sessions: signing in, resolving a
//! token to a principal, signing out, and an admin ending someone's
//! sessions.

use std::net::IpAddr;

use ajar_domain::audit::{FailedSignIn, SignIn};
use ajar_domain::policy::Principal;
use ajar_domain::{text, AuditData, Name, NewAuditEvent, Timestamp};
use ajar_store::TokenSelector;
use tracing::{info, warn};

use super::auth;
use crate::{Core, CoreError};

/// How long a sign-in waits for a free password check before it is asked
/// to retry.
const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Passwords longer than this are never checked for real.
const MAX_PASSWORD_BYTES: usize = 1024;

impl Core {
    /// Checks a local user's password and issues a bearer token. The
    /// attempt counts against the limits before the (deliberately slow)
    /// password check, and at most a few checks run at once; the rest wait
    /// briefly, then are told to retry.
    pub async fn login(&self, username: &str, password: &str, addr: IpAddr) -> Result<(String, Timestamp), CoreError> {
        if !self.settings().local_users {
            return Err(CoreError::Forbidden(
                "password sign-in is turned off on this server; sign in with SSO (`ajar login --sso`, or the portal's Sign in with SSO)",
            ));
        }
        let shown = text::shown(username, 64);
        let attempt = self
            .limiter
            .begin(&shown, addr, std::time::Instant::now())
            .map_err(|retry_after_secs| CoreError::RateLimited { retry_after_secs })?;
        let Ok(Ok(permit)) = tokio::time::timeout(HASH_WAIT, self.hashing.clone().acquire_owned()).await else {
            self.limiter.abandon(attempt);
            warn!(%addr, "too many password checks at once; asking the client to retry");
            return Err(CoreError::Busy { retry_after_secs: 1 });
        };
        let catalog = self.catalog();
        let user = catalog.user(username);
        let hash = user.map_or(auth::decoy_hash().to_owned(), |u| u.password_hash.clone());
        let attempt_password = password.to_owned();
        // argon2 is deliberately slow; keep it off the async workers. A
        // password longer than anyone types is checked against the decoy,
        // so that it costs no more than any other.
        let mut memory = self.hash_memory.take();
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let (password, hash) = if attempt_password.len() > MAX_PASSWORD_BYTES {
                ("", auth::decoy_hash().to_owned())
            } else {
                (attempt_password.as_str(), hash)
            };
            let matches = auth::verify_password_in(password, &hash, &mut memory);
            (matches, memory)
        })
        .await
        .map_err(|e| CoreError::Internal(format!("password check failed: {e}")))?;
        let (matches, memory) = checked;
        self.hash_memory.put(memory);
        let now = self.now();
        let event = |data| NewAuditEvent::session(now, shown.clone(), Some(shown.clone()), addr, data);
        match user {
            Some(user) if matches => {
                self.limiter.succeeded(attempt);
                let token = auth::new_token();
                let expires_at = now + self.settings().token_ttl.as_chrono();
                self.store.insert_token(&auth::token_hash(&token), user.name.as_str(), now, expires_at).await?;
                self.record(vec![event(AuditData::Login(SignIn::Password {}))]).await?;
                info!(user = %user.name, %addr, "login");
                Ok((token, expires_at))
            }
            _ => {
                let why = if user.is_some() { "wrong password" } else { "unknown user" };
                self.record(vec![event(AuditData::LoginFailed(FailedSignIn::Password {})).with_reason(why)]).await?;
                warn!(user = %shown, %addr, why, "failed login");
                Err(CoreError::Unauthenticated("the user name or password is wrong"))
            }
        }
    }

    /// The principal a bearer token stands for, with the groups the config
    /// gives them now.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, CoreError> {
        let expired = || CoreError::Unauthenticated("your token is invalid or has expired; run `ajar login` again");
        if !token.starts_with("ajar_") || token.len() > 128 {
            return Err(expired());
        }
        let user = self.store.token_user(&auth::token_hash(token), self.now()).await?.ok_or_else(expired)?;
        let catalog = self.catalog();
        match catalog.user(&user) {
            Some(local) if self.settings().local_users => {
                Ok(Principal::new(local.name.clone(), local.groups.iter().cloned()))
            }
            Some(_) => Err(expired()),
            // Not a local user: someone who signed in through SSO, with the
            // groups of their latest sign-in.
            None => self.external_principal(&user).await?.ok_or_else(expired),
        }
    }

    /// Ends `who`'s session: `token` stops working at once, on every
    /// replica, audited in the same transaction. A JWT bearer token is the
    /// identity provider's to revoke, not ajar's.
    pub async fn logout(&self, who: &Principal, token: &str, addr: IpAddr) -> Result<(), CoreError> {
        if !token.starts_with("ajar_") {
            return Err(CoreError::Unprocessable(
                "this is a token of your identity provider, which ajar cannot revoke; it ends when it expires, or revoke it at the provider",
            ));
        }
        let name = who.name.to_string();
        let event = NewAuditEvent::session(self.now(), name.clone(), Some(name), addr, AuditData::Logout {});
        let (_, written) = self.store.revoke_tokens(&TokenSelector::Hash(auth::token_hash(token)), vec![event]).await?;
        self.after_audit(&written).await;
        info!(user = %who.name, %addr, "logout");
        Ok(())
    }

    /// An admin ends every session of `user` (local or SSO): all of their
    /// ajar tokens stop working at once. Returns how many there were.
    pub async fn revoke_tokens_of(&self, admin: &Principal, user: &str, addr: IpAddr) -> Result<u64, CoreError> {
        if !admin.is_admin(&self.catalog()) {
            return Err(CoreError::Forbidden("only admins may end other people's sessions"));
        }
        let name = Name::parse(user).map_err(|e| CoreError::Invalid(e.to_string()))?;
        let event = NewAuditEvent::session(
            self.now(),
            admin.name.to_string(),
            Some(name.to_string()),
            addr,
            AuditData::TokensRevoked {},
        );
        let (removed, written) = self.store.revoke_tokens(&TokenSelector::User(name.to_string()), vec![event]).await?;
        self.after_audit(&written).await;
        info!(admin = %admin.name, user = %name, removed, "revoked every token of a user");
        Ok(removed)
    }
}
