//! The `[oidc]` section: single sign-on through an OpenID Connect provider,
//! and provider-issued JWTs accepted as bearer tokens for automation.
//!
//! ```toml
//! [oidc]
//! issuer = "https://login.example.com"     # exactly as the provider writes `iss`
//! client_id = "ajar"
//! client_secret_env = "AJAR_OIDC_SECRET"    # or client_secret_file, or client_secret
//! scopes = ["openid", "email", "groups"]    # the default
//! groups_claim = "groups"                   # the default
//! group_map = { "Engineering-DBA" = "dba" } # IdP group -> ajar group
//! unmapped_groups = "drop"                  # the default; "keep": IdP names become ajar groups
//! allowed_email_domains = ["example.com"]
//! require_verified_email = true             # the default
//! local_users = true                        # false: only SSO signs in
//! redirect_url = "https://ajar.example.com/sso/callback"   # required
//! clock_skew = "60s"
//!
//! [[oidc.trusted_tokens]]                   # JWT bearer tokens for automation
//! issuer = "https://login.example.com"
//! audience = "urn:ajar"
//! name_claim = "sub"                        # the default
//! unmapped_groups = "drop"                  # defaults to the section's
//! ```
//!
//! Secrets named by file or environment variable are not read here (parsing
//! stays pure); the server reads them when it starts.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ajar_domain::{GrantDuration, Name};

use crate::reader::{Field, Located, Reader, TableView};

/// Single sign-on settings, from `[oidc]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// The provider's issuer URL, compared byte for byte with `iss`.
    pub issuer: String,
    pub client_id: String,
    /// Absent for a public client (PKCE alone).
    pub client_secret: Option<SecretRef>,
    /// Always contains `openid`.
    pub scopes: Vec<String>,
    /// The ID token claim that lists the user's groups.
    pub groups_claim: String,
    /// IdP group name → ajar group.
    pub group_map: BTreeMap<String, Name>,
    /// What becomes of IdP groups that `group_map` does not list.
    pub unmapped_groups: UnmappedGroups,
    /// Lower-case domains a user's e-mail must be in; empty allows any.
    pub allowed_email_domains: Vec<String>,
    /// Whether a sign-in needs `email_verified: true` in the ID token
    /// (when `false`, only an explicit `email_verified: false` refuses).
    pub require_verified_email: bool,
    /// Whether the `[[users]]` of the file may still sign in with a
    /// password.
    pub local_users: bool,
    /// Where the provider sends the browser back. Always configured, never
    /// taken from a request: a `Host` header is the client's to choose.
    pub redirect_url: String,
    /// How far the provider's clock may be off from ajar's.
    pub clock_skew: Duration,
    /// Issuers and audiences whose JWT access tokens are accepted as bearer
    /// tokens.
    pub trusted_tokens: Vec<TrustedTokens>,
}

/// What becomes of an IdP group that `group_map` does not list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmappedGroups {
    /// Ignored: only mapped groups count (the default). An IdP group that
    /// happens to be called like an ajar group (`admins`) gives nothing.
    #[default]
    Drop,
    /// Kept under its own name when that is a valid ajar name: whoever
    /// manages groups at the provider then manages ajar's groups too.
    Keep,
}

impl UnmappedGroups {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "drop" => Ok(Self::Drop),
            "keep" => Ok(Self::Keep),
            other => Err(format!(
                "{other:?} is not a choice for unmapped groups: write \"drop\" (the default: only groups in group_map count) or \"keep\" (IdP groups not in group_map keep their own name as ajar groups)"
            )),
        }
    }
}

/// Where the client secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Value(Secret),
    File(PathBuf),
    Env(String),
}

/// A secret that never appears in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// JWT access tokens from `issuer` for `audience` stand for the principal
/// named by their `name_claim`, with the groups in `groups_claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedTokens {
    pub issuer: String,
    pub audience: String,
    pub name_claim: String,
    pub groups_claim: String,
    /// Defaults to the section's `unmapped_groups`.
    pub unmapped_groups: UnmappedGroups,
}

const OIDC_KEYS: &[&str] = &[
    "issuer",
    "client_id",
    "client_secret",
    "client_secret_file",
    "client_secret_env",
    "scopes",
    "groups_claim",
    "group_map",
    "unmapped_groups",
    "allowed_email_domains",
    "require_verified_email",
    "local_users",
    "redirect_url",
    "clock_skew",
    "trusted_tokens",
];
const TRUSTED_KEYS: &[&str] = &["issuer", "audience", "name_claim", "groups_claim", "unmapped_groups"];

/// The longest clock skew accepted: more would keep expired tokens alive.
const MAX_SKEW: Duration = Duration::from_secs(300);

/// Reads `[oidc]`; `None` after reporting what is wrong with it.
/// `public_url` is `[server] public_url`, the default base of
/// `redirect_url`.
pub(crate) fn oidc(
    r: &mut Reader<'_>,
    field: &Field<'_>,
    base: &Path,
    public_url: Option<&str>,
) -> Option<OidcSettings> {
    let t = r.table(field, OIDC_KEYS)?;
    let issuer = r.required(&t, "issuer", "issuer = \"https://login.example.com\"").and_then(|f| url(r, &f));
    let client_id = r.required(&t, "client_id", "client_id = \"ajar\"").and_then(|f| non_empty(r, &f));
    let client_secret = secret(r, &t, base);
    let scopes = match t.get("scopes") {
        Some(f) => r.list(&f, "[\"openid\", \"email\", \"groups\"]", |r, e| non_empty(r, e)).and_then(|scopes| {
            if scopes.iter().any(|s| s == "openid") {
                Some(scopes)
            } else {
                r.error(&f.loc, "the scopes must include \"openid\", or the provider issues no ID token; add it");
                None
            }
        }),
        None => Some(vec!["openid".to_owned(), "email".to_owned(), "groups".to_owned()]),
    };
    let groups_claim = match t.get("groups_claim") {
        Some(f) => non_empty(r, &f),
        None => Some("groups".to_owned()),
    };
    let group_map = match t.get("group_map") {
        Some(f) => group_map(r, &f),
        None => Some(BTreeMap::new()),
    };
    let unmapped_groups = match t.get("unmapped_groups") {
        Some(f) => r.parse(&f, UnmappedGroups::parse).map(|u| u.value),
        None => Some(UnmappedGroups::Drop),
    };
    let allowed_email_domains = match t.get("allowed_email_domains") {
        Some(f) => r.parsed_list(&f, "[\"example.com\"]", domain).map(|d| d.into_iter().map(|d| d.value).collect()),
        None => Some(Vec::new()),
    };
    let require_verified_email = match t.get("require_verified_email") {
        Some(f) => r.bool(&f),
        None => Some(true),
    };
    let local_users = match t.get("local_users") {
        Some(f) => r.bool(&f),
        None => Some(true),
    };
    let redirect_url = match (t.get("redirect_url"), public_url) {
        (Some(f), _) => url(r, &f),
        // The server's own public address, when the config gives it; never
        // the request's Host header.
        (None, Some(public)) => Some(format!("{public}/sso/callback")),
        (None, None) => {
            r.error(
                &t.loc.child("redirect_url", None),
                "this required key is missing from oidc: ajar must know its own address to send the provider, \
                 and never takes it from a request; add it, such as \
                 redirect_url = \"https://ajar.example.com/sso/callback\" (the redirect URI registered at the provider), \
                 or set [server] public_url, whose /sso/callback is then the default",
            );
            None
        }
    };
    let clock_skew = match t.get("clock_skew") {
        Some(f) => r.parse(&f, GrantDuration::parse).and_then(|d| {
            let skew = Duration::from_secs(d.value.as_secs());
            if skew <= MAX_SKEW {
                return Some(skew);
            }
            r.error(
                &f.loc,
                format!("{} of clock skew would accept tokens that long after they expire; use 5m or less", d.value),
            );
            None
        }),
        None => Some(Duration::from_secs(60)),
    };
    let trusted_tokens = match t.get("trusted_tokens") {
        Some(f) => {
            let tables = r.tables(&f, TRUSTED_KEYS);
            let default_groups = groups_claim.clone().unwrap_or_else(|| "groups".to_owned());
            let default_unmapped = unmapped_groups.unwrap_or_default();
            tables.iter().map(|t| trusted(r, t, &default_groups, default_unmapped)).collect::<Option<Vec<_>>>()
        }
        None => Some(Vec::new()),
    };
    Some(OidcSettings {
        issuer: issuer?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes: scopes?,
        groups_claim: groups_claim?,
        group_map: group_map?,
        unmapped_groups: unmapped_groups?,
        allowed_email_domains: allowed_email_domains?,
        require_verified_email: require_verified_email?,
        local_users: local_users?,
        redirect_url: redirect_url?,
        clock_skew: clock_skew?,
        trusted_tokens: trusted_tokens?,
    })
}

/// The ajar groups that `group_map` can give, so that policies may name
/// them although no local user is in them.
pub(crate) fn mapped_groups(settings: &Option<OidcSettings>) -> Vec<Name> {
    settings.iter().flat_map(|s| s.group_map.values().cloned()).collect()
}

fn non_empty(r: &mut Reader<'_>, field: &Field<'_>) -> Option<String> {
    let text = r.string(field)?;
    if text.trim().is_empty() {
        r.error(&field.loc, "this value is empty; write the value the identity provider gave you");
        return None;
    }
    Some(text.to_owned())
}

/// An `https` URL, or `http` to this machine only (a provider on loopback,
/// as in development); never a query or fragment.
fn url(r: &mut Reader<'_>, field: &Field<'_>) -> Option<String> {
    r.parse(field, |s| {
        let rest = s
            .strip_prefix("https://")
            .or_else(|| {
                let loopback = ["127.0.0.1", "localhost", "[::1]"];
                let rest = s.strip_prefix("http://")?;
                let host = rest.split(['/', ':']).next().unwrap_or_default();
                let host = if rest.starts_with("[::1]") { "[::1]" } else { host };
                loopback.contains(&host).then_some(rest)
            })
            .ok_or_else(|| {
                format!("{s:?} is not an https URL; the provider must be reached over https (plain http is allowed only to 127.0.0.1 or localhost)")
            })?;
        if rest.is_empty() || rest.starts_with('/') || s.contains(['?', '#', ' ']) {
            return Err(format!("{s:?} is not a usable URL: write a host and an optional path, without query or fragment, such as \"https://login.example.com\""));
        }
        Ok(s.to_owned())
    })
    .map(|u| u.value)
}

/// At most one of `client_secret`, `client_secret_file` and
/// `client_secret_env`. The outer `Option` is validity, the inner one
/// presence.
fn secret(r: &mut Reader<'_>, t: &TableView<'_>, base: &Path) -> Option<Option<SecretRef>> {
    let given: Vec<Field<'_>> =
        ["client_secret", "client_secret_file", "client_secret_env"].iter().filter_map(|k| t.get(k)).collect();
    if given.len() > 1 {
        r.error(
            &given[1].loc,
            "give the client secret one way only: client_secret, client_secret_file or client_secret_env",
        );
        return None;
    }
    let Some(field) = given.first() else {
        return Some(None);
    };
    let value = non_empty(r, field)?;
    let key = field.loc.key.rsplit('.').next().unwrap_or_default();
    Some(Some(match key {
        "client_secret_file" => SecretRef::File(base.join(value)),
        "client_secret_env" => SecretRef::Env(value),
        _ => SecretRef::Value(Secret::new(value)),
    }))
}

fn group_map(r: &mut Reader<'_>, field: &Field<'_>) -> Option<BTreeMap<String, Name>> {
    let t = r.any_table(field)?;
    let mut map = BTreeMap::new();
    let mut valid = true;
    for (key, value) in t.entries() {
        let parsed: Option<Located<Name>> = r.parse(&value, |s| {
            Name::parse(s).map_err(|e| format!("{e}; map the IdP group to an ajar group name such as \"dba\""))
        });
        match parsed {
            Some(name) => {
                map.insert(key.value, name.value);
            }
            None => valid = false,
        }
    }
    valid.then_some(map)
}

fn domain(text: &str) -> Result<String, String> {
    let domain = text.trim_start_matches('@').to_ascii_lowercase();
    let ok = !domain.is_empty()
        && domain.contains('.')
        && domain.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !domain.starts_with(['.', '-']);
    if ok {
        Ok(domain)
    } else {
        Err(format!("{text:?} is not an e-mail domain; write one such as \"example.com\""))
    }
}

fn trusted(
    r: &mut Reader<'_>,
    t: &TableView<'_>,
    default_groups: &str,
    default_unmapped: UnmappedGroups,
) -> Option<TrustedTokens> {
    let issuer = r.required(t, "issuer", "issuer = \"https://login.example.com\"").and_then(|f| url(r, &f));
    let audience = r.required(t, "audience", "audience = \"urn:ajar\"").and_then(|f| non_empty(r, &f));
    let name_claim = match t.get("name_claim") {
        Some(f) => non_empty(r, &f),
        None => Some("sub".to_owned()),
    };
    let groups_claim = match t.get("groups_claim") {
        Some(f) => non_empty(r, &f),
        None => Some(default_groups.to_owned()),
    };
    let unmapped_groups = match t.get("unmapped_groups") {
        Some(f) => r.parse(&f, UnmappedGroups::parse).map(|u| u.value),
        None => Some(default_unmapped),
    };
    Some(TrustedTokens {
        issuer: issuer?,
        audience: audience?,
        name_claim: name_claim?,
        groups_claim: groups_claim?,
        unmapped_groups: unmapped_groups?,
    })
}
