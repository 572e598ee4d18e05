//! The identity table: a sign-in creates, a later one refreshes groups, a
//! name cannot change hands, and the audit events commit with the change.

use std::collections::BTreeSet;

use ajar_domain::audit::SignIn;
use ajar_domain::{AuditData, ExternalIdentity, Name, NewAuditEvent, Timestamp};
use ajar_store::{AuditScope, IdentityStore, SqliteStore, Store, StoreError};

fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + secs * 1000).expect("valid")
}

fn carol(subject: &str, groups: &[&str]) -> ExternalIdentity {
    ExternalIdentity {
        name: Name::parse("carol@example.com").expect("valid"),
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
        email: Some("carol@example.com".into()),
        groups: groups.iter().map(|g| Name::parse(g).expect("valid")).collect::<BTreeSet<_>>(),
    }
}

fn login() -> NewAuditEvent {
    NewAuditEvent {
        at: at(1),
        actor: "carol@example.com".into(),
        target: None,
        source: None,
        request_id: None,
        subject: Some("carol@example.com".into()),
        reason: None,
        data: AuditData::Login(SignIn::Provider {
            method: "sso".into(),
            issuer: "https://idp.example.com".into(),
            groups: vec![],
        }),
    }
}

#[tokio::test]
async fn sign_ins_create_then_refresh_and_names_do_not_change_hands() {
    let store = SqliteStore::in_memory().await.expect("store");
    assert_eq!(store.identity("carol@example.com").await.expect("read"), None);

    let first = carol("sub-1", &["dev"]);
    let written = store.save_identity(&first, at(1), vec![login()]).await.expect("first sign-in");
    assert_eq!(written.len(), 1);
    assert_eq!(store.identity("carol@example.com").await.expect("read"), Some(first));

    let later = carol("sub-1", &["dev", "oncall"]);
    store.save_identity(&later, at(2), vec![login()]).await.expect("later sign-in");
    assert_eq!(store.identity("carol@example.com").await.expect("read"), Some(later.clone()));

    // Another account at the provider with the same e-mail is refused, and
    // its audit event is not written either.
    let impostor = carol("sub-2", &["admins"]);
    match store.save_identity(&impostor, at(3), vec![login()]).await {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.identity("carol@example.com").await.expect("read"), Some(later));
    let events = store.audit_page(&AuditScope::All, 0, 10).await.expect("audit");
    assert_eq!(events.len(), 2);
}
