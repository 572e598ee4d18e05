//! What a verified token's claims mean to ajar: time checks with skew, the
//! nonce, and who the token stands for (name, e-mail, mapped groups). Pure:
//! the time is a parameter and nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

use ajar_config::{OidcSettings, TrustedTokens, UnmappedGroups};
use ajar_domain::{ExternalIdentity, Name};
use serde_json::{Map, Value};

/// Why a token is refused. Each message says what is wrong and what to do,
/// and none repeats the token or any secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT ({0}); send the token exactly as the identity provider issued it")]
    Malformed(String),
    #[error("the token is signed with {0}, which ajar does not accept; configure the provider to sign with RS256, PS256, ES256 or EdDSA")]
    Algorithm(String),
    #[error("the token was signed by an unknown key (key id {0:?} is not in the provider's JWKS); get a new token from the provider")]
    UnknownKey(String),
    #[error("the token's signature does not match its content: it was altered or was not issued by the provider")]
    BadSignature,
    #[error("the token expired at {0} (Unix time); get a new one")]
    Expired(i64),
    #[error("the token is not valid before {0} (Unix time); check the clocks of ajar and the identity provider")]
    NotYetValid(i64),
    #[error("the token was issued by {0:?}, an issuer ajar does not trust")]
    WrongIssuer(String),
    #[error(
        "the token is for another audience ({0}), not for ajar; ask the provider for a token whose audience is ajar's"
    )]
    WrongAudience(String),
    #[error("the token lacks the {0:?} claim ajar needs")]
    MissingClaim(&'static str),
    #[error("the ID token does not answer this sign-in (nonce mismatch); start the sign-in again")]
    Nonce,
    #[error("the identity provider cannot be reached to check the token ({0}); try again shortly")]
    Unavailable(String),
}

impl TokenError {
    /// A short stable word for logs and the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::Algorithm(_) => "algorithm",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired(_) => "expired",
            TokenError::NotYetValid(_) => "not_yet_valid",
            TokenError::WrongIssuer(_) => "wrong_issuer",
            TokenError::WrongAudience(_) => "wrong_audience",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::Nonce => "nonce",
            TokenError::Unavailable(_) => "provider_unavailable",
        }
    }
}

/// Why a valid token still does not let its holder in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the identity provider did not say who you are by e-mail; ask your administrator to release the email claim (scope \"email\") to ajar")]
    NoEmail,
    #[error("the identity provider has not verified the e-mail address {0}; verify it there and sign in again")]
    UnverifiedEmail(String),
    #[error("the identity provider did not say that it verified the e-mail address {0} (the ID token has no email_verified claim); ask your administrator to have the provider release email_verified to ajar, or, if this provider verifies every address, to set oidc.require_verified_email = false")]
    VerificationUnknown(String),
    #[error("{email} is not in a domain allowed to sign in ({allowed}); sign in with your organisation's account")]
    DomainNotAllowed { email: String, allowed: String },
    #[error("{0:?} cannot be an ajar user name; ask your administrator to map this identity to a name of letters, digits, '.', '_', '-' and '@'")]
    BadName(String),
}

/// Checks `exp` (required), `nbf` and `iat` against `now` (Unix seconds),
/// allowing `skew` seconds either way.
pub fn check_times(claims: &Map<String, Value>, now: i64, skew: i64) -> Result<(), TokenError> {
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or(TokenError::MissingClaim("exp"))?;
    if now > exp.saturating_add(skew) {
        return Err(TokenError::Expired(exp));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
        if now.saturating_add(skew) < nbf {
            return Err(TokenError::NotYetValid(nbf));
        }
    }
    if let Some(iat) = claims.get("iat").and_then(Value::as_i64) {
        if now.saturating_add(skew) < iat {
            return Err(TokenError::NotYetValid(iat));
        }
    }
    Ok(())
}

/// The ID token must carry the nonce this sign-in sent.
pub fn check_nonce(claims: &Map<String, Value>, expected: &str) -> Result<(), TokenError> {
    match claims.get("nonce").and_then(Value::as_str) {
        Some(nonce) if constant_time_eq(nonce.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(TokenError::Nonce),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The audiences a token names, for the error message.
pub fn audiences(claims: &Map<String, Value>) -> String {
    match claims.get("aud") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "),
        _ => "none".to_owned(),
    }
}

/// IdP groups → ajar groups: mapped when `map` lists them; any other is
/// dropped, unless `unmapped` says to keep it under its own name (when
/// that is a valid ajar name).
pub fn map_groups(idp_groups: &[String], map: &BTreeMap<String, Name>, unmapped: UnmappedGroups) -> BTreeSet<Name> {
    idp_groups
        .iter()
        .filter_map(|g| match (map.get(g), unmapped) {
            (Some(mapped), _) => Some(mapped.clone()),
            (None, UnmappedGroups::Keep) => Name::parse(g).ok(),
            (None, UnmappedGroups::Drop) => None,
        })
        .collect()
}

/// Whether the provider vouches for the e-mail address: `email_verified`
/// must be `true` (a few providers write the string `"true"`). Without the
/// claim the address counts as verified only when `require` is off.
fn email_verified(claims: &Map<String, Value>, require: bool) -> Option<bool> {
    match claims.get("email_verified") {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) => Some(s == "true"),
        Some(_) => Some(false),
        None => (!require).then_some(true),
    }
}

/// The strings of the claim `name` (a list, or one string).
fn strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn subject(claims: &Map<String, Value>) -> Result<String, TokenError> {
    claims.get("sub").and_then(Value::as_str).map(str::to_owned).ok_or(TokenError::MissingClaim("sub"))
}

fn issuer(claims: &Map<String, Value>) -> Result<String, TokenError> {
    claims.get("iss").and_then(Value::as_str).map(str::to_owned).ok_or(TokenError::MissingClaim("iss"))
}

/// Who a verified ID token signs in: named by the e-mail address, which
/// the provider must have verified (`email_verified: true`; without the
/// claim only when `require_verified_email` is off) and which must be in an
/// allowed domain.
pub fn person(
    claims: &Map<String, Value>,
    settings: &OidcSettings,
) -> Result<Result<ExternalIdentity, Refused>, TokenError> {
    let (issuer, subject) = (issuer(claims)?, subject(claims)?);
    let Some(email) = claims.get("email").and_then(Value::as_str).map(str::to_ascii_lowercase) else {
        return Ok(Err(Refused::NoEmail));
    };
    match email_verified(claims, settings.require_verified_email) {
        Some(true) => {}
        Some(false) => return Ok(Err(Refused::UnverifiedEmail(email))),
        None => return Ok(Err(Refused::VerificationUnknown(email))),
    }
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    if !settings.allowed_email_domains.is_empty() && !settings.allowed_email_domains.iter().any(|d| d == domain) {
        let allowed = settings.allowed_email_domains.join(", ");
        return Ok(Err(Refused::DomainNotAllowed { email, allowed }));
    }
    let Ok(name) = Name::parse(&email) else {
        return Ok(Err(Refused::BadName(email)));
    };
    let groups = map_groups(&strings(claims, &settings.groups_claim), &settings.group_map, settings.unmapped_groups);
    Ok(Ok(ExternalIdentity { name, issuer, subject, email: Some(email), groups }))
}

/// Who a verified JWT bearer token stands for, by `trusted.name_claim`.
pub fn machine(
    claims: &Map<String, Value>,
    trusted: &TrustedTokens,
    map: &BTreeMap<String, Name>,
) -> Result<Result<ExternalIdentity, Refused>, TokenError> {
    let (issuer, subject) = (issuer(claims)?, subject(claims)?);
    let Some(raw) = claims.get(&trusted.name_claim).and_then(Value::as_str) else {
        return Err(TokenError::MissingClaim("name claim"));
    };
    let Ok(name) = Name::parse(raw) else {
        return Ok(Err(Refused::BadName(raw.chars().take(64).collect())));
    };
    let groups = map_groups(&strings(claims, &trusted.groups_claim), map, trusted.unmapped_groups);
    Ok(Ok(ExternalIdentity { name, issuer, subject, email: None, groups }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("tests pass objects"),
        }
    }

    fn settings() -> OidcSettings {
        OidcSettings {
            issuer: "https://idp.example.com".into(),
            client_id: "ajar".into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            group_map: [("Engineering DBA".to_owned(), Name::parse("dba").expect("valid"))].into(),
            unmapped_groups: UnmappedGroups::Drop,
            allowed_email_domains: vec!["example.com".into()],
            require_verified_email: true,
            local_users: true,
            redirect_url: "https://ajar.example.com/sso/callback".into(),
            clock_skew: std::time::Duration::from_secs(60),
            trusted_tokens: Vec::new(),
        }
    }

    #[test]
    fn times_are_checked_with_skew() {
        let c = claims(json!({ "exp": 1000, "nbf": 900, "iat": 900 }));
        let cases = [
            (950, 0, Ok(())),
            (1000, 0, Ok(())),
            (1001, 0, Err(TokenError::Expired(1000))),
            (1030, 60, Ok(())),
            (1061, 60, Err(TokenError::Expired(1000))),
            (899, 0, Err(TokenError::NotYetValid(900))),
            (850, 60, Ok(())),
        ];
        for (now, skew, want) in cases {
            assert_eq!(check_times(&c, now, skew), want, "now {now} skew {skew}");
        }
        assert_eq!(check_times(&claims(json!({})), 0, 0), Err(TokenError::MissingClaim("exp")));
    }

    #[test]
    fn nonce_must_match_exactly() {
        let c = claims(json!({ "nonce": "abc" }));
        assert_eq!(check_nonce(&c, "abc"), Ok(()));
        assert_eq!(check_nonce(&c, "abd"), Err(TokenError::Nonce));
        assert_eq!(check_nonce(&c, "ab"), Err(TokenError::Nonce));
        assert_eq!(check_nonce(&claims(json!({})), "abc"), Err(TokenError::Nonce));
    }

    fn names(groups: &BTreeSet<Name>) -> Vec<&str> {
        groups.iter().map(Name::as_str).collect()
    }

    #[test]
    fn only_mapped_groups_count_unless_unmapped_ones_are_kept() {
        let map = settings().group_map;
        let idp: Vec<String> = ["Engineering DBA", "staff", "admins", "Domain Users"].map(String::from).into();
        // The default: an IdP group called `admins` is not ajar's admins.
        assert_eq!(names(&map_groups(&idp, &map, UnmappedGroups::Drop)), ["dba"]);
        // Opted in: valid names are kept, invalid ones still dropped.
        assert_eq!(names(&map_groups(&idp, &map, UnmappedGroups::Keep)), ["admins", "dba", "staff"]);
        assert!(map_groups(&["admins".into()], &BTreeMap::new(), UnmappedGroups::Drop).is_empty());
    }

    #[test]
    fn a_person_is_named_by_verified_email_in_an_allowed_domain() {
        let base = json!({ "iss": "https://idp.example.com", "sub": "u1", "email": "Carol@Example.com",
                           "email_verified": true, "groups": ["Engineering DBA", "staff"] });
        let who = person(&claims(base.clone()), &settings()).expect("claims").expect("allowed");
        assert_eq!(who.name.as_str(), "carol@example.com");
        assert_eq!(who.subject, "u1");
        assert_eq!(names(&who.groups), ["dba"], "staff is not in group_map");
        let keep = OidcSettings { unmapped_groups: UnmappedGroups::Keep, ..settings() };
        let who = person(&claims(base.clone()), &keep).expect("claims").expect("allowed");
        assert_eq!(names(&who.groups), ["dba", "staff"]);

        let with = |key: &str, value: Value| {
            let mut c = claims(base.clone());
            c.insert(key.to_owned(), value);
            person(&c, &settings())
        };
        let unverified = Ok(Err(Refused::UnverifiedEmail("carol@example.com".into())));
        assert_eq!(with("email_verified", json!(false)), unverified);
        assert_eq!(with("email_verified", json!("false")), unverified);
        assert_eq!(with("email_verified", json!(1)), unverified);
        assert!(with("email_verified", json!("true")).is_ok_and(|who| who.is_ok()));
        assert!(matches!(with("email", json!("eve@evil.test")), Ok(Err(Refused::DomainNotAllowed { .. }))));
        assert!(matches!(with("email", json!("not an address@example.com")), Ok(Err(Refused::BadName(_)))));
        // Without the claim the address is not known to be verified:
        // refused, unless the administrator opted out.
        let mut silent = claims(base.clone());
        silent.remove("email_verified");
        assert_eq!(person(&silent, &settings()), Ok(Err(Refused::VerificationUnknown("carol@example.com".into()))));
        let lax = OidcSettings { require_verified_email: false, ..settings() };
        assert!(person(&silent, &lax).is_ok_and(|who| who.is_ok()));
        let mut no_email = claims(base.clone());
        no_email.remove("email");
        assert_eq!(person(&no_email, &settings()), Ok(Err(Refused::NoEmail)));
        let mut no_sub = claims(base);
        no_sub.remove("sub");
        assert_eq!(person(&no_sub, &settings()), Err(TokenError::MissingClaim("sub")));
    }

    #[test]
    fn a_machine_is_named_by_its_claim() {
        let trusted = TrustedTokens {
            issuer: "https://idp.example.com".into(),
            audience: "urn:ajar".into(),
            name_claim: "client_id".into(),
            groups_claim: "groups".into(),
            unmapped_groups: UnmappedGroups::Drop,
        };
        let map: BTreeMap<String, Name> = [("ci".to_owned(), Name::parse("deployers").expect("valid"))].into();
        let c = claims(
            json!({ "iss": "https://idp.example.com", "sub": "x", "client_id": "ci", "groups": ["ci", "admins"] }),
        );
        let who = machine(&c, &trusted, &map).expect("claims").expect("valid name");
        assert_eq!((who.name.as_str(), who.email.clone()), ("ci", None));
        assert_eq!(names(&who.groups), ["deployers"], "an unmapped admins group is dropped");
        let keep = TrustedTokens { unmapped_groups: UnmappedGroups::Keep, ..trusted.clone() };
        let who = machine(&c, &keep, &map).expect("claims").expect("valid name");
        assert_eq!(names(&who.groups), ["admins", "deployers"]);
        let bad = claims(json!({ "iss": "i", "sub": "x", "client_id": "repo:org/app" }));
        assert!(matches!(machine(&bad, &trusted, &BTreeMap::new()), Ok(Err(Refused::BadName(_)))));
    }

    #[test]
    fn audiences_are_listed_for_messages() {
        assert_eq!(audiences(&claims(json!({ "aud": "a" }))), "a");
        assert_eq!(audiences(&claims(json!({ "aud": ["a", "b"] }))), "a, b");
        assert_eq!(audiences(&claims(json!({}))), "none");
    }
}
