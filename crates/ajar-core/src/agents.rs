//! Agents as use cases: enrolment tokens, enrolment, the check every agent
//! connection passes, certificate renewal, revocation and the audit of an
//! agent's link. The cryptography and the wire live behind [`AgentPlane`]
//! (implemented by `ajar-agent`), so this file decides and records only.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ajar_domain::policy::Principal;
use ajar_domain::{text, AgentRecord, AgentToken, AuditData, LinkState, Name, NewAuditEvent, Timestamp};
use ajar_store::EnrolRefusal;
use tracing::{info, warn};

use crate::{Core, CoreError};

/// The shortest and longest life of an enrolment token.
pub const TOKEN_TTL: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));
/// The longest version string ajar records of an agent.
pub const MAX_VERSION: usize = 64;
/// The largest certificate request ajar reads (a P-256 CSR is under 1 KiB).
pub const MAX_CSR: usize = 16 * 1024;

/// What the core needs from the agent plane: tokens, certificates and what
/// is connected right now.
pub trait AgentPlane: Send + Sync {
    /// A new enrolment token: the text shown once to the admin, and the
    /// hash of its secret, which is all the server keeps.
    fn new_token(&self) -> (String, String);
    /// The hash of a token's secret, or why the text is not a token.
    fn token_hash(&self, token: &str) -> Result<String, String>;
    /// Signs `csr_pem` for agent `agent`, valid `lifetime` from `now`.
    fn issue(&self, csr_pem: &str, agent: &Name, now: Timestamp, lifetime: Duration) -> Result<IssuedCert, String>;
    /// The agents connected to this server now.
    fn live(&self) -> BTreeMap<Name, LiveAgent>;
    /// How long agent certificates live.
    fn cert_lifetime(&self) -> Duration;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub serial: String,
    pub not_after: Timestamp,
}

/// An agent's link as this server sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveAgent {
    pub address: IpAddr,
    pub connected_at: Timestamp,
    /// When it last sent anything (a heartbeat at least every few seconds).
    pub last_heard: Timestamp,
    /// How many grants it reports enforcing.
    pub enforced: usize,
    /// Where clients reach it, as it advertises.
    pub advertise: String,
}

/// A token just created; `token` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: String,
    pub group: Name,
    pub expires_at: Timestamp,
}

/// One row of `ajar agents`.
#[derive(Debug, Clone)]
pub struct AgentView {
    pub record: AgentRecord,
    pub link: LinkState,
    pub live: Option<LiveAgent>,
}

/// Why an agent was turned away, in one line it prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AgentRefused(pub String);

impl Core {
    fn plane(&self) -> Result<&dyn AgentPlane, CoreError> {
        self.agent_plane.get().map(|p| p.as_ref()).ok_or(CoreError::Unprocessable(
            "agents are off on this server: add an [agents] section with listen = \"0.0.0.0:8443\" to the config and restart it",
        ))
    }

    /// Puts the agent plane in place (once, at start).
    pub fn set_agent_plane(&self, plane: std::sync::Arc<dyn AgentPlane>) {
        let _ = self.agent_plane.set(plane);
    }

    /// Names of agents revoked on this server, as it happens: the agent
    /// listener drops their links at once.
    pub fn agent_revocations(&self) -> tokio::sync::broadcast::Receiver<Name> {
        self.agent_revoked.subscribe()
    }

    /// An admin creates a one-time enrolment token for an agent of `group`,
    /// valid for `ttl`.
    pub async fn create_agent_token(
        &self,
        who: &Principal,
        group: &str,
        ttl: Duration,
    ) -> Result<CreatedToken, CoreError> {
        if !who.is_admin(&self.catalog()) {
            return Err(CoreError::Forbidden("only admins may create agent enrolment tokens"));
        }
        let plane = self.plane()?;
        let group = Name::parse(group).map_err(|e| CoreError::Invalid(format!("agent group: {e}")))?;
        if !self.catalog().targets.iter().any(|t| t.agent_group.as_ref() == Some(&group)) {
            let known: std::collections::BTreeSet<String> =
                self.catalog().targets.iter().filter_map(|t| t.agent_group.as_ref().map(|g| g.to_string())).collect();
            return Err(CoreError::Invalid(format!(
                "no target is enforced by agent group {group:?}; the groups in the config are: {}; add agent_group = \"{group}\" to a target first",
                if known.is_empty() { "none".to_owned() } else { known.into_iter().collect::<Vec<_>>().join(", ") }
            )));
        }
        if !(TOKEN_TTL.0..=TOKEN_TTL.1).contains(&ttl) {
            return Err(CoreError::Invalid(format!(
                "an enrolment token lives 1m to 24h, not {}s; use --ttl 15m",
                ttl.as_secs()
            )));
        }
        let now = self.now();
        let expires_at = now + chrono::Duration::from_std(ttl).map_err(|e| CoreError::Internal(e.to_string()))?;
        let (token, hash) = plane.new_token();
        let record =
            AgentToken { hash, group: group.clone(), created_by: who.name.clone(), created_at: now, expires_at };
        let event = NewAuditEvent {
            actor: who.name.to_string(),
            ..NewAuditEvent::system(now, AuditData::AgentTokenCreated { group: group.clone(), expires_at })
        };
        let written = self.store.insert_agent_token(&record, vec![event]).await?;
        self.after_audit(&written).await;
        info!(group = %group, by = %who.name, "agent enrolment token created");
        Ok(CreatedToken { token, group, expires_at })
    }

    /// Audits a refusal of an agent connection and returns it.
    async fn refuse_agent(&self, claimed: &str, peer: IpAddr, why: String) -> AgentRefused {
        let claimed = text::shown(claimed, 64);
        warn!(agent = %claimed, %peer, why = %why, "agent refused");
        let event = NewAuditEvent {
            actor: format!("agent:{claimed}"),
            source: Some(peer.to_string()),
            ..NewAuditEvent::system(self.now(), AuditData::AgentRefused { agent: claimed.clone() })
        }
        .with_reason(why.clone());
        if let Err(e) = self.record(vec![event]).await {
            warn!(error = %e, "cannot audit an agent refusal");
        }
        AgentRefused(why)
    }

    /// An agent without a certificate enrols with a token: on success its
    /// certificate (PEM) and its group.
    pub async fn enroll_agent(
        &self,
        token: &str,
        name: &str,
        csr_pem: &str,
        version: &str,
        peer: IpAddr,
    ) -> Result<(String, Name), AgentRefused> {
        let Ok(plane) = self.plane() else {
            return Err(AgentRefused("agents are off on this server".into()));
        };
        let agent = match Name::parse(name) {
            Ok(n) => n,
            Err(e) => return Err(self.refuse_agent(name, peer, format!("the agent name is not valid: {e}")).await),
        };
        if version.len() > MAX_VERSION || version.chars().any(text::forbidden) {
            return Err(self.refuse_agent(name, peer, "the agent's version string is not valid".into()).await);
        }
        if csr_pem.len() > MAX_CSR {
            return Err(self
                .refuse_agent(name, peer, format!("the certificate request is larger than {MAX_CSR} bytes"))
                .await);
        }
        let hash = match plane.token_hash(token) {
            Ok(h) => h,
            Err(e) => return Err(self.refuse_agent(name, peer, e).await),
        };
        let now = self.now();
        let state = match self.store.agent_token(&hash).await {
            Ok(Some(s)) => s,
            Ok(None) => return Err(self.refuse_agent(name, peer, refusal_text(&EnrolRefusal::UnknownToken)).await),
            Err(e) => {
                return Err(AgentRefused(format!("the server cannot reach its database ({e}); try again shortly")))
            }
        };
        let early = match (&state.used_by, state.expires_at <= now) {
            (Some(by), _) => Some(EnrolRefusal::Used { by: by.clone() }),
            (None, true) => Some(EnrolRefusal::Expired { at: state.expires_at }),
            (None, false) => None,
        };
        if let Some(refusal) = early {
            return Err(self.refuse_agent(name, peer, refusal_text(&refusal)).await);
        }
        let issued = match plane.issue(csr_pem, &agent, now, plane.cert_lifetime()) {
            Ok(i) => i,
            Err(e) => {
                return Err(self.refuse_agent(name, peer, format!("the certificate request was refused: {e}")).await)
            }
        };
        let record = AgentRecord {
            name: agent.clone(),
            group: state.group.clone(),
            cert_serial: issued.serial.clone(),
            cert_not_after: issued.not_after,
            enrolled_at: now,
            version: version.to_owned(),
            last_seen: None,
            revoked_at: None,
            revoked_by: None,
        };
        let event = NewAuditEvent {
            actor: format!("agent:{agent}"),
            source: Some(peer.to_string()),
            ..NewAuditEvent::system(
                now,
                AuditData::AgentEnrolled {
                    agent: agent.clone(),
                    group: state.group.clone(),
                    serial: issued.serial.clone(),
                    not_after: issued.not_after,
                },
            )
        };
        match self.store.enroll_agent(&hash, now, &record, vec![event]).await {
            Ok(Ok(written)) => {
                self.after_audit(&written).await;
                info!(agent = %agent, group = %state.group, "agent enrolled");
                Ok((issued.cert_pem, state.group))
            }
            Ok(Err(refusal)) => Err(self.refuse_agent(name, peer, refusal_text(&refusal)).await),
            Err(e) => Err(AgentRefused(format!("the server cannot record the enrolment ({e}); try again shortly"))),
        }
    }

    /// Checks a connection that presented a certificate of ajar's agent CA
    /// for `name` with `serial`: the agent must exist, not be revoked, and
    /// this must be its current certificate.
    pub async fn admit_agent(&self, name: &str, serial: &str, peer: IpAddr) -> Result<AgentRecord, AgentRefused> {
        let record = match self.store.agent(name).await {
            Ok(r) => r,
            Err(e) => {
                return Err(AgentRefused(format!("the server cannot reach its database ({e}); try again shortly")))
            }
        };
        let why = match &record {
            None => format!("there is no agent {name:?} on this server; enrol it again with a new token"),
            Some(r) if r.is_revoked() => format!(
                "agent {name} was revoked{}; an admin must create a new token to enrol it again",
                r.revoked_by.as_ref().map(|b| format!(" by {b}")).unwrap_or_default()
            ),
            Some(r) if r.cert_serial != serial => format!(
                "this certificate of agent {name} was replaced (a newer one was issued); the agent must use its newest certificate or enrol again"
            ),
            Some(r) => return Ok(r.clone()),
        };
        Err(self.refuse_agent(name, peer, why).await)
    }

    /// Records an agent's link coming up or going down.
    pub async fn agent_link(&self, record: &AgentRecord, version: &str, peer: IpAddr, up: Option<usize>, why: &str) {
        let data = match up {
            Some(enforced) => AuditData::AgentConnected {
                agent: record.name.clone(),
                group: record.group.clone(),
                version: text::shown(version, MAX_VERSION),
                enforced,
            },
            None => AuditData::AgentDisconnected { agent: record.name.clone(), group: record.group.clone() },
        };
        let mut event = NewAuditEvent {
            actor: format!("agent:{}", record.name),
            source: Some(peer.to_string()),
            ..NewAuditEvent::system(self.now(), data)
        };
        if up.is_none() {
            event = event.with_reason(text::shown(why, 200));
        }
        match self
            .store
            .agent_seen(record.name.as_str(), &text::shown(version, MAX_VERSION), self.now(), vec![event])
            .await
        {
            Ok(written) => self.after_audit(&written).await,
            Err(e) => warn!(error = %e, agent = %record.name, "cannot record an agent's link"),
        }
    }

    /// Audits what a returning agent enforced differently and was corrected.
    pub async fn agent_converged(&self, agent: &Name, opened: Vec<String>, closed: Vec<String>) {
        if opened.is_empty() && closed.is_empty() {
            return;
        }
        let event = NewAuditEvent {
            actor: format!("agent:{agent}"),
            ..NewAuditEvent::system(self.now(), AuditData::AgentConverged { agent: agent.clone(), opened, closed })
        };
        if let Err(e) = self.record(vec![event]).await {
            warn!(error = %e, "cannot audit an agent's convergence");
        }
    }

    /// Renews the certificate of a connected agent (from half its life).
    pub async fn renew_agent(&self, record: &AgentRecord, csr_pem: &str) -> Result<String, AgentRefused> {
        let Ok(plane) = self.plane() else {
            return Err(AgentRefused("agents are off on this server".into()));
        };
        if csr_pem.len() > MAX_CSR {
            return Err(AgentRefused(format!("the renewal request is larger than {MAX_CSR} bytes")));
        }
        let now = self.now();
        let issued = plane
            .issue(csr_pem, &record.name, now, plane.cert_lifetime())
            .map_err(|e| AgentRefused(format!("the renewal request was refused: {e}")))?;
        let event = NewAuditEvent {
            actor: format!("agent:{}", record.name),
            ..NewAuditEvent::system(
                now,
                AuditData::AgentRenewed {
                    agent: record.name.clone(),
                    serial: issued.serial.clone(),
                    not_after: issued.not_after,
                },
            )
        };
        match self
            .store
            .renew_agent(record.name.as_str(), &record.cert_serial, &issued.serial, issued.not_after, vec![event])
            .await
        {
            Ok(Some(written)) => {
                self.after_audit(&written).await;
                Ok(issued.cert_pem)
            }
            Ok(None) => Err(AgentRefused(format!("agent {} was revoked or re-enrolled meanwhile", record.name))),
            Err(e) => Err(AgentRefused(format!("the server cannot record the renewal ({e}); try again shortly"))),
        }
    }

    /// An admin revokes agent `name`: its certificate is refused from now
    /// on, and its link is dropped at once.
    pub async fn revoke_agent(&self, who: &Principal, name: &str) -> Result<AgentRecord, CoreError> {
        if !who.is_admin(&self.catalog()) {
            return Err(CoreError::Forbidden("only admins may revoke agents"));
        }
        let Some(record) = self.store.agent(name).await? else {
            return Err(CoreError::Invalid(format!(
                "there is no agent {:?}; `ajar agents` lists them",
                text::shown(name, 64)
            )));
        };
        if record.is_revoked() {
            return Err(CoreError::Invalid(format!("agent {name} is already revoked")));
        }
        let now = self.now();
        let event = NewAuditEvent {
            actor: who.name.to_string(),
            ..NewAuditEvent::system(
                now,
                AuditData::AgentRevoked { agent: record.name.clone(), group: record.group.clone() },
            )
        };
        let Some(written) = self.store.revoke_agent(name, now, &who.name, vec![event]).await? else {
            return Err(CoreError::Conflict);
        };
        self.after_audit(&written).await;
        let _ = self.agent_revoked.send(record.name.clone());
        info!(agent = %record.name, by = %who.name, "agent revoked");
        Ok(AgentRecord { revoked_at: Some(now), revoked_by: Some(who.name.clone()), ..record })
    }

    /// Every agent with its link state (admins and auditors).
    pub async fn list_agents(&self, who: &Principal) -> Result<Vec<AgentView>, CoreError> {
        if !who.may_read_all_audit(&self.catalog()) {
            return Err(CoreError::Forbidden("only admins and auditors may list agents"));
        }
        let live = self.agent_plane.get().map(|p| p.live()).unwrap_or_default();
        let records = self.store.list_agents().await?;
        Ok(records
            .into_iter()
            .map(|record| {
                let live = live.get(&record.name).cloned();
                let link = match (&live, record.is_revoked()) {
                    (_, true) => LinkState::Revoked,
                    (Some(_), false) => LinkState::Online,
                    (None, false) => LinkState::Offline,
                };
                AgentView { record, link, live }
            })
            .collect())
    }
}

fn refusal_text(refusal: &EnrolRefusal) -> String {
    match refusal {
        EnrolRefusal::UnknownToken => {
            "the enrolment token is not known to this server; create one with `ajar agent-token create --group G`".into()
        }
        EnrolRefusal::Used { by } => format!(
            "the enrolment token was already used (by agent {by}); tokens work once: create a new one with `ajar agent-token create`"
        ),
        EnrolRefusal::Expired { at } => format!(
            "the enrolment token expired at {}; create a new one with `ajar agent-token create`",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        EnrolRefusal::NameTaken { group } => format!(
            "an agent with this name is already enrolled (group {group}); choose another --name, or revoke the old one with `ajar agents revoke NAME`"
        ),
    }
}
