//! Identities an identity provider vouches for: SSO sign-ins (which issue
//! an ajar token like a password login), JWT bearer tokens for automation,
//! and failed attempts of either, each audited. The API verifies tokens
//! (crate `ajar-oidc`); this module decides what a verified identity may
//! become and records it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ajar_domain::audit::{FailedSignIn, SignIn};
use ajar_domain::policy::Principal;
use ajar_domain::{text, AuditData, ExternalIdentity, Name, NewAuditEvent, Timestamp};
use ajar_store::StoreError;
use tracing::{info, warn};

use super::auth;
use super::limits::FailureVerdict;
use crate::{Core, CoreError};

/// How many distinct bearer tokens are remembered as already audited
/// before the memory is cleared.
const SEEN_BEARERS: usize = 10_000;

/// The PKCE S256 challenge of a verifier (RFC 7636).
pub fn challenge_of(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

fn handoff_hash(code: &str, challenge: &str) -> String {
    auth::token_hash(&format!("ajar-sso-handoff:{code}:{challenge}"))
}

/// Why an identity's name is not its to take.
enum IdentityClash {
    LocalUser,
    OtherAccount,
}

fn names(groups: &BTreeSet<Name>) -> Vec<Name> {
    groups.iter().cloned().collect()
}

impl Core {
    fn identity_event(&self, identity: &ExternalIdentity, addr: IpAddr, data: AuditData) -> NewAuditEvent {
        let name = identity.name.to_string();
        NewAuditEvent::session(self.now(), name.clone(), Some(name), addr, data)
    }

    /// Refuses an identity ajar will not let the provider vouch for: one
    /// with the name of a local user, or with a name first used by another
    /// account at the provider. Every refusal is audited. Runs at every use
    /// of a bearer token, not only at its first. Returns the identity as
    /// last saved, if any.
    async fn admit(
        &self,
        identity: &ExternalIdentity,
        addr: IpAddr,
        method: &str,
    ) -> Result<Option<ExternalIdentity>, CoreError> {
        if self.catalog().user(identity.name.as_str()).is_some() {
            return Err(self.refuse_identity(identity, addr, method, IdentityClash::LocalUser).await);
        }
        let previous = self.store.identity(identity.name.as_str()).await?;
        if previous.as_ref().is_some_and(|p| !p.same_account(identity)) {
            return Err(self.refuse_identity(identity, addr, method, IdentityClash::OtherAccount).await);
        }
        Ok(previous)
    }

    async fn refuse_identity(
        &self,
        identity: &ExternalIdentity,
        addr: IpAddr,
        method: &str,
        clash: IdentityClash,
    ) -> CoreError {
        let (why, answer) = match clash {
            IdentityClash::LocalUser => (
                "the name belongs to a local user",
                "this identity has the name of a local user of the config file, so ajar will not let the identity provider sign in as them; an administrator must rename or remove the local user",
            ),
            IdentityClash::OtherAccount => (
                "the name belongs to another account at the identity provider",
                "your identity provider account is not the one this name was first used by (an e-mail address that changed hands?), so ajar refuses it; an administrator must resolve this",
            ),
        };
        if let Err(e) = self.record_failed_sign_in(Some(identity.name.as_str()), addr, method, why).await {
            return e;
        }
        CoreError::Forbidden(answer)
    }

    /// Records `identity`'s sign-in (creating it at the first, refreshing
    /// its groups) with a `login` event and, when its groups differ from
    /// last time, a `groups_changed` event, in one transaction. A name that
    /// belongs to a local user or to another account is refused.
    async fn save_sign_in(&self, identity: &ExternalIdentity, addr: IpAddr, method: &str) -> Result<(), CoreError> {
        let previous = self.admit(identity, addr, method).await?;
        let signed_in = SignIn::Provider {
            method: method.to_owned(),
            issuer: identity.issuer.clone(),
            groups: names(&identity.groups),
        };
        let mut events = vec![self.identity_event(identity, addr, AuditData::Login(signed_in))];
        let before = previous.as_ref().map(|p| p.groups.clone());
        if before.as_ref() != Some(&identity.groups) {
            let before = before.unwrap_or_default();
            let changed = AuditData::GroupsChanged {
                before: names(&before),
                after: names(&identity.groups),
                added: identity.groups.difference(&before).cloned().collect(),
                removed: before.difference(&identity.groups).cloned().collect(),
                first_sign_in: previous.is_none(),
            };
            events.push(self.identity_event(identity, addr, changed));
        }
        match self.store.save_identity(identity, self.now(), events).await {
            Ok(written) => {
                self.after_audit(&written).await;
                Ok(())
            }
            // Another account took the name between the check and the
            // write: the store's own check is the one that counts.
            Err(StoreError::Conflict { .. }) => {
                Err(self.refuse_identity(identity, addr, method, IdentityClash::OtherAccount).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Signs in an identity the provider vouched for (portal or CLI SSO)
    /// and issues an ajar token, as a password login does.
    pub async fn sso_login(
        &self,
        identity: &ExternalIdentity,
        addr: IpAddr,
        method: &str,
    ) -> Result<(String, Timestamp), CoreError> {
        self.save_sign_in(identity, addr, method).await?;
        info!(user = %identity.name, %addr, method, groups = ?identity.groups, "sso login");
        self.issue_token(identity.name.as_str()).await
    }

    async fn issue_token(&self, name: &str) -> Result<(String, Timestamp), CoreError> {
        let token = auth::new_token();
        let now = self.now();
        let expires_at = now + self.settings().token_ttl.as_chrono();
        self.store.insert_token(&auth::token_hash(&token), name, now, expires_at).await?;
        Ok((token, expires_at))
    }

    /// Signs in an identity for a CLI waiting on a loopback redirect: the
    /// browser carries back only a one-time code, worth a token (within two
    /// minutes, once) to whoever also holds the verifier whose SHA-256 is
    /// `challenge` — the CLI that started the sign-in. The code is kept in
    /// the token table under a hash that no bearer token can have, so every
    /// replica can redeem it.
    pub async fn sso_handoff(
        &self,
        identity: &ExternalIdentity,
        addr: IpAddr,
        challenge: &str,
    ) -> Result<String, CoreError> {
        self.save_sign_in(identity, addr, "sso-loopback").await?;
        let code = auth::new_token().replacen("ajar_", "", 1);
        let now = self.now();
        let expires_at = now + chrono::Duration::seconds(120);
        self.store.insert_token(&handoff_hash(&code, challenge), identity.name.as_str(), now, expires_at).await?;
        Ok(code)
    }

    /// Redeems a loopback one-time code with its verifier for a token.
    pub async fn redeem_handoff(&self, code: &str, verifier: &str) -> Result<(String, String, Timestamp), CoreError> {
        let refused = || {
            CoreError::Unauthenticated("this sign-in code is invalid, used or expired; run `ajar login --sso` again")
        };
        let challenge = challenge_of(verifier);
        let hash = handoff_hash(code, &challenge);
        let name = self.store.token_user(&hash, self.now()).await?.ok_or_else(refused)?;
        // Deleting is what makes the code single-use, even across replicas.
        if !self.store.delete_token(&hash).await? {
            return Err(refused());
        }
        let (token, expires_at) = self.issue_token(&name).await?;
        Ok((name, token, expires_at))
    }

    /// The principal a verified JWT bearer token stands for. Every use
    /// passes the same checks (not a local user's name, not a name another
    /// account holds); a refused token stays refused. The first use of each
    /// token is audited as a login, and a use whose groups differ from the
    /// identity's saved ones records the change.
    pub async fn bearer_principal(
        &self,
        identity: &ExternalIdentity,
        token: &str,
        addr: IpAddr,
    ) -> Result<Principal, CoreError> {
        let previous = self.admit(identity, addr, "jwt").await?;
        let hash = auth::token_hash(token);
        let seen = self.seen_bearers.lock().unwrap_or_else(|e| e.into_inner()).contains(&hash);
        let groups_changed = previous.as_ref().is_none_or(|p| p.groups != identity.groups);
        if !seen || groups_changed {
            self.save_sign_in(identity, addr, "jwt").await?;
            // Remembered only once the sign-in is saved, so that a token
            // whose first use failed is checked and saved again next time.
            let mut seen = self.seen_bearers.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() >= SEEN_BEARERS {
                seen.clear();
            }
            seen.insert(hash);
        }
        Ok(Principal::new(identity.name.clone(), identity.groups.iter().cloned()))
    }

    /// `Err` with how long to wait while `addr` has failed to sign in with
    /// SSO or a bearer token too often; checked before a token is verified.
    pub fn sign_in_allowed(&self, addr: IpAddr) -> Result<(), CoreError> {
        self.failed_sign_ins
            .check(addr, std::time::Instant::now())
            .map_err(|retry_after_secs| CoreError::RateLimited { retry_after_secs })
    }

    /// Audits a failed SSO sign-in or a refused bearer token. `who` is the
    /// name the attempt claimed, when it is known. Anyone can cause these
    /// without a password, so the first of a kind from an address is
    /// audited at once and its repeats within a minute are audited as one
    /// event with their count ([`Core::close_failed_sign_ins`]).
    pub async fn record_failed_sign_in(
        &self,
        who: Option<&str>,
        addr: IpAddr,
        method: &str,
        why: &str,
    ) -> Result<(), CoreError> {
        let shown = who.map(|w| text::shown(w, 64));
        let why = text::shown(why, 300);
        let verdict = self.failed_sign_ins.note(addr, method, &why, shown.as_deref(), std::time::Instant::now());
        warn!(user = shown.as_deref().unwrap_or("unknown"), %addr, method, why = %why, "failed sso login");
        if verdict == FailureVerdict::Counted {
            return Ok(());
        }
        let failed = FailedSignIn::Provider { method: method.to_owned() };
        self.record(vec![self.failed_sign_in_event(shown, addr, why, failed)]).await
    }

    fn failed_sign_in_event(
        &self,
        who: Option<String>,
        addr: IpAddr,
        reason: String,
        failed: FailedSignIn,
    ) -> NewAuditEvent {
        let actor = who.clone().unwrap_or_else(|| "unknown".to_owned());
        NewAuditEvent::session(self.now(), actor, who, addr, AuditData::LoginFailed(failed)).with_reason(reason)
    }

    /// Audits the repeats of failed sign-ins whose minute has passed (all of
    /// them with `everything`, at shutdown) as one event each, with their
    /// count. The reconcile loop calls this every pass.
    pub async fn close_failed_sign_ins(&self, everything: bool) {
        let closed = self.failed_sign_ins.close(std::time::Instant::now(), everything);
        if closed.is_empty() {
            return;
        }
        let window = self.failed_sign_ins.window().as_secs();
        let events = closed
            .into_iter()
            .map(|(method, r)| {
                let reason = format!(
                    "{} more failed sign-ins of this kind within {window} s, the latest: {}",
                    r.count, r.last_reason
                );
                let repeated = FailedSignIn::Repeated { method, repeats: r.count, window_seconds: window };
                self.failed_sign_in_event(r.who, r.last_addr, reason, repeated)
            })
            .collect();
        if let Err(e) = self.record(events).await {
            warn!(error = %e, "cannot audit the repeats of failed sign-ins");
        }
    }

    /// An SSO user as the policy engine sees them: with the groups of their
    /// latest sign-in.
    pub(crate) async fn external_principal(&self, name: &str) -> Result<Option<Principal>, CoreError> {
        Ok(self.store.identity(name).await?.map(|i| Principal::new(i.name, i.groups)))
    }
}
