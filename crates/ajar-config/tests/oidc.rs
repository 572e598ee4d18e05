//! The `[oidc]` section: the documented example parses into its settings,
//! defaults apply, and each mistake is reported at its line and key with a
//! message that says what is allowed.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ajar_config::{parse, Config, SecretRef, UnmappedGroups};

fn text(toml: &str) -> String {
    toml.strip_prefix('\n').unwrap_or(toml).to_owned()
}

fn ok(toml: &str) -> Config {
    match parse(Path::new("/etc/ajar/ajar.toml"), &text(toml)) {
        Ok(config) => config,
        Err(errors) => panic!("expected the file to parse, got:\n{errors}"),
    }
}

/// Parses `toml` and asserts that exactly the `want`ed errors come out, as
/// (line, key, part of the message).
fn check(toml: &str, want: &[(usize, &str, &str)]) {
    let errors = match parse(Path::new("ajar.toml"), &text(toml)) {
        Ok(_) => panic!("expected errors {want:?}, but the file parsed:\n{}", text(toml)),
        Err(errors) => errors,
    };
    let shown = errors.to_string();
    for (line, key, says) in want {
        let found = errors.iter().any(|e| e.line == *line && e.key == *key && e.message.contains(says));
        assert!(found, "no error on line {line} for {key:?} saying {says:?}; got:\n{shown}");
    }
    assert_eq!(errors.0.len(), want.len(), "unexpected number of errors:\n{shown}");
}

const EXAMPLE: &str = r#"
[server]

[access]
admins = ["group:sre"]
groups = ["idp-dev"]

[[targets]]
name = "db"
address = "10.0.0.1:5432"
driver = "gateway"
gateway = { listen = "127.0.0.1:0" }

[[policies]]
name = "dba"
subjects = ["group:dba", "group:idp-dev"]
targets = ["db"]
max_duration = "1h"
approvals = 1
approvers = ["group:sre"]

[oidc]
issuer = "https://login.example.com/tenant"
client_id = "ajar"
client_secret_file = "secrets/oidc"
scopes = ["openid", "email", "groups", "offline_access"]
groups_claim = "roles"
group_map = { "Engineering DBA" = "dba", "SRE" = "sre" }
allowed_email_domains = ["Example.com", "@corp.example.org"]
local_users = false
redirect_url = "https://ajar.example.com/sso/callback"
clock_skew = "30s"

[[oidc.trusted_tokens]]
issuer = "https://token.actions.example.com"
audience = "urn:ajar"
name_claim = "repository_owner"
"#;

#[test]
fn the_example_parses_into_settings() {
    let oidc = ok(EXAMPLE).oidc.unwrap();
    assert_eq!(oidc.issuer, "https://login.example.com/tenant");
    assert_eq!(oidc.client_id, "ajar");
    assert_eq!(oidc.client_secret, Some(SecretRef::File(PathBuf::from("/etc/ajar/secrets/oidc"))));
    assert_eq!(oidc.scopes, ["openid", "email", "groups", "offline_access"]);
    assert_eq!(oidc.groups_claim, "roles");
    let map: Vec<(&str, &str)> = oidc.group_map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(map, [("Engineering DBA", "dba"), ("SRE", "sre")]);
    assert_eq!(oidc.allowed_email_domains, ["example.com", "corp.example.org"]);
    assert!(!oidc.local_users);
    assert_eq!(oidc.redirect_url, "https://ajar.example.com/sso/callback");
    assert_eq!(oidc.clock_skew, Duration::from_secs(30));
    assert_eq!(oidc.trusted_tokens.len(), 1);
    let trusted = &oidc.trusted_tokens[0];
    assert_eq!(trusted.issuer, "https://token.actions.example.com");
    assert_eq!(trusted.audience, "urn:ajar");
    assert_eq!(trusted.name_claim, "repository_owner");
    assert_eq!(trusted.groups_claim, "roles", "defaults to the section's groups claim");
}

#[test]
fn defaults_apply_and_no_section_means_no_sso() {
    assert!(ok("[server]\n").oidc.is_none());
    let oidc = ok(r#"
[server]
[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "ajar"
client_secret_env = "AJAR_OIDC_SECRET"
redirect_url = "http://127.0.0.1:8080/sso/callback"
"#)
    .oidc
    .unwrap();
    assert_eq!(oidc.client_secret, Some(SecretRef::Env("AJAR_OIDC_SECRET".to_owned())));
    assert_eq!(oidc.scopes, ["openid", "email", "groups"]);
    assert_eq!(oidc.groups_claim, "groups");
    assert!(oidc.local_users);
    assert!(oidc.group_map.is_empty() && oidc.allowed_email_domains.is_empty() && oidc.trusted_tokens.is_empty());
    assert_eq!(oidc.clock_skew, Duration::from_secs(60));
    assert_eq!(oidc.redirect_url, "http://127.0.0.1:8080/sso/callback");
    assert_eq!(oidc.unmapped_groups, UnmappedGroups::Drop, "only mapped groups count by default");
    assert!(oidc.require_verified_email, "an e-mail must be verified by default");
}

#[test]
fn an_inline_secret_never_prints() {
    let oidc = ok(r#"
[server]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
client_secret = "hunter2-very-secret"
redirect_url = "https://ajar.example.com/sso/callback"
"#)
    .oidc
    .unwrap();
    match &oidc.client_secret {
        Some(SecretRef::Value(secret)) => assert_eq!(secret.expose(), "hunter2-very-secret"),
        other => panic!("expected an inline secret, got {other:?}"),
    }
    assert!(!format!("{oidc:?}").contains("hunter2"), "{oidc:?}");
}

#[test]
fn mistakes_are_located_and_explained() {
    check(
        r#"
[server]
[oidc]
issuer = "http://login.example.com"
client_secret = "a"
client_secret_env = "B"
scopes = ["email"]
group_map = { admins = "not a name" }
allowed_email_domains = ["nodot"]
clock_skew = "1h"
redirect_url = "https://ajar.example.com/cb?x=1"
local_user = false

[[oidc.trusted_tokens]]
issuer = "https://ci.example.com"
"#,
        &[
            (2, "oidc.client_id", "this required key is missing from oidc"),
            (3, "oidc.issuer", "is not an https URL"),
            (5, "oidc.client_secret_env", "give the client secret one way only"),
            (6, "oidc.scopes", "must include \"openid\""),
            (7, "oidc.group_map.admins", "is not a valid name"),
            (8, "oidc.allowed_email_domains[0]", "is not an e-mail domain"),
            (9, "oidc.clock_skew", "use 5m or less"),
            (10, "oidc.redirect_url", "without query or fragment"),
            (11, "oidc.local_user", "unknown key \"local_user\" (did you mean \"local_users\"?)"),
            (13, "oidc.trusted_tokens[0].audience", "this required key is missing"),
        ],
    );
}

#[test]
fn mapped_groups_may_be_named_by_policies() {
    let toml = r#"
[server]
[access]
admins = ["group:platform"]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
group_map = { "Platform Team" = "platform" }
redirect_url = "https://ajar.example.com/sso/callback"
"#;
    ok(toml);
    check(
        &toml.replace("group:platform", "group:platfrom"),
        &[(3, "access.admins[0]", "no user is in group \"platfrom\" and access.groups does not list it")],
    );
}

#[test]
fn redirect_url_is_required_and_never_guessed() {
    check(
        r#"
[server]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
"#,
        &[(2, "oidc.redirect_url", "this required key is missing from oidc: ajar must know its own address")],
    );
    let errors = parse(
        Path::new("ajar.toml"),
        "[server]\n[oidc]\nissuer = \"https://login.example.com\"\nclient_id = \"ajar\"\n",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        errors.contains("ajar.toml:2:1: oidc.redirect_url:") && errors.contains("redirect_url = \"https://"),
        "the message is located and shows the fix: {errors}"
    );
}

#[test]
fn unmapped_groups_and_email_verification_are_chosen_explicitly() {
    let oidc = ok(r#"
[server]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
redirect_url = "https://ajar.example.com/sso/callback"
unmapped_groups = "keep"
require_verified_email = false

[[oidc.trusted_tokens]]
issuer = "https://ci.example.com"
audience = "urn:ajar"

[[oidc.trusted_tokens]]
issuer = "https://other-ci.example.com"
audience = "urn:ajar"
unmapped_groups = "drop"
"#)
    .oidc
    .unwrap();
    assert_eq!(oidc.unmapped_groups, UnmappedGroups::Keep);
    assert!(!oidc.require_verified_email);
    assert_eq!(oidc.trusted_tokens[0].unmapped_groups, UnmappedGroups::Keep, "defaults to the section's");
    assert_eq!(oidc.trusted_tokens[1].unmapped_groups, UnmappedGroups::Drop);
    let default = ok(r#"
[server]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
redirect_url = "https://ajar.example.com/sso/callback"
[[oidc.trusted_tokens]]
issuer = "https://ci.example.com"
audience = "urn:ajar"
"#)
    .oidc
    .unwrap();
    assert_eq!(default.trusted_tokens[0].unmapped_groups, UnmappedGroups::Drop);

    check(
        r#"
[server]
[oidc]
issuer = "https://login.example.com"
client_id = "ajar"
redirect_url = "https://ajar.example.com/sso/callback"
unmapped_groups = "all"
require_verified_email = "yes"

[[oidc.trusted_tokens]]
issuer = "https://ci.example.com"
audience = "urn:ajar"
unmapped_groups = true
"#,
        &[
            (6, "oidc.unmapped_groups", "write \"drop\" (the default: only groups in group_map count) or \"keep\""),
            (7, "oidc.require_verified_email", "true or false"),
            (12, "oidc.trusted_tokens[0].unmapped_groups", "a string"),
        ],
    );
}

#[test]
fn redirect_url_defaults_to_the_public_urls_callback() {
    let text = "[server]\npublic_url = \"https://ajar.example.com\"\n\n[oidc]\nissuer = \"https://login.example.com\"\nclient_id = \"ajar\"\nclient_secret_env = \"AJAR_OIDC_SECRET\"\n";
    let config = ajar_config::parse(std::path::Path::new("ajar.toml"), text).expect("parses");
    let oidc = config.oidc.as_ref().expect("oidc settings");
    assert_eq!(oidc.redirect_url, "https://ajar.example.com/sso/callback");
}
