//! The store's contract, run against SQLite (a later backend runs the same
//! suite): atomic change-plus-audit, compare-and-set, filters, tokens.

use std::net::IpAddr;

use ajar_domain::policy::{Ask, Principal, Verdict};
use ajar_domain::{Action, GrantDuration, Name, NewAuditEvent, Request, RequestId, RequestState, SourceNet, Timestamp};
use ajar_store::{AuditFilter, AuditScope, PgStore, RequestFilter, SqliteStore, Store, StoreError, TokenSelector};

fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + secs * 1000).expect("valid")
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid")
}

fn pending(id: u8, requester: &str, approvals: u32) -> Request {
    let who = Principal::new(name(requester), [name("dev")]);
    let addr: IpAddr = [10, 0, 0, id].into();
    let ask = Ask {
        target: "db".into(),
        duration: GrantDuration::from_secs(600).expect("positive"),
        reason: "INC-1".into(),
        source: None,
    };
    let verdict = Verdict {
        target: name("db"),
        source: SourceNet::host(addr),
        max_duration: GrantDuration::from_secs(3600).expect("positive"),
        approvals_required: approvals,
        approver_sets: vec![vec![ajar_domain::Subject::Group(name("sre"))]],
        policies: vec![name("p")],
    };
    Request::create(RequestId::from_random([id; 12]), &who, addr, &ask, &verdict, at(0), GrantDuration::MAX).next
}

fn event(action: Action, reason: &str) -> NewAuditEvent {
    NewAuditEvent {
        at: at(1),
        actor: "alice".into(),
        target: Some("db".into()),
        source: None,
        request_id: None,
        subject: Some("alice".into()),
        reason: Some(reason.into()),
        data: payload(action),
    }
}

/// A payload of the right shape for `action` (the tests here are about
/// where events go, not what they say).
fn payload(action: Action) -> ajar_domain::AuditData {
    use ajar_domain::audit::SignIn;
    use ajar_domain::AuditData;
    match action {
        Action::Requested => AuditData::Requested { duration_seconds: 60, approvals_required: 1, policies: vec![] },
        Action::Approved => AuditData::Approved {},
        Action::Activated => AuditData::Activated { starts_at: None, ends_at: None, approvals: 1 },
        Action::Opened => AuditData::Opened { host: "127.0.0.1".into(), port: 1, open_ms: 0 },
        Action::Closed => AuditData::Closed {},
        Action::Denied => AuditData::Denied {},
        Action::Cancelled => AuditData::Cancelled {},
        Action::Expired => AuditData::Expired { ends_at: None },
        Action::Revoked => AuditData::Revoked {},
        Action::Released => AuditData::Released {},
        Action::TimedOut => AuditData::TimedOut {},
        Action::Login => AuditData::Login(SignIn::Password {}),
        Action::Logout => AuditData::Logout {},
        Action::TokensRevoked => AuditData::TokensRevoked {},
        other => panic!("no test payload for {other}"),
    }
}

async fn all_events(store: &dyn Store) -> Vec<ajar_domain::AuditEvent> {
    store.audit_page(&AuditScope::All, 0, 1000).await.expect("audit")
}

/// The PostgreSQL server to test against (`postgres://user@host:port`,
/// without a database): ./scripts/test.sh starts one and sets it. Outside CI
/// the PostgreSQL half of the suite is skipped, saying why; in CI it runs.
fn postgres_server() -> Option<String> {
    match std::env::var("AJAR_TEST_POSTGRES") {
        Ok(url) => Some(url),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("AJAR_TEST_POSTGRES is not set; ./scripts/test.sh starts PostgreSQL and sets it")
        }
        Err(_) => {
            eprintln!("skipping PostgreSQL: AJAR_TEST_POSTGRES is not set (./scripts/test.sh sets it)");
            None
        }
    }
}

/// A fresh, empty database on the test server.
async fn fresh_postgres(server: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    let name = format!("ajar_store_{}_{}_{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let admin = sqlx::PgPool::connect(&format!("{server}/postgres")).await.expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create a test database");
    admin.close().await;
    format!("{server}/{name}")
}

async fn stores() -> Vec<(&'static str, Box<dyn Store>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = SqliteStore::open(&dir.path().join("ajar.db")).await.expect("open file");
    let memory = SqliteStore::in_memory().await.expect("open memory");
    let mut stores: Vec<(&'static str, Box<dyn Store>, Option<tempfile::TempDir>)> =
        vec![("sqlite-file", Box::new(file), Some(dir)), ("sqlite-memory", Box::new(memory), None)];
    if let Some(server) = postgres_server() {
        let pg = PgStore::connect(&fresh_postgres(&server).await).await.expect("open PostgreSQL");
        stores.push(("postgres", Box::new(pg), None));
    }
    stores
}

#[tokio::test]
async fn a_request_round_trips_exactly() {
    for (backend, store, _dir) in stores().await {
        let request = pending(1, "alice", 1);
        store.insert_request(&request, vec![event(Action::Requested, "INC-1")]).await.expect("insert");
        let loaded = store.get_request(&request.id).await.expect("get").expect("exists");
        assert_eq!(loaded, request, "{backend}");
        assert!(matches!(store.insert_request(&request, vec![]).await, Err(StoreError::Duplicate { .. })));
    }
}

#[tokio::test]
async fn compare_and_set_refuses_stale_writers_and_writes_no_audit_then() {
    for (backend, store, _dir) in stores().await {
        let request = pending(2, "alice", 2);
        store.insert_request(&request, vec![event(Action::Requested, "r")]).await.expect("insert");
        let bob = Principal::new(name("bob"), [name("sre")]);
        let carol = Principal::new(name("carol"), [name("sre")]);
        let verdict = Verdict {
            target: name("db"),
            source: request.source,
            max_duration: GrantDuration::from_secs(3600).expect("positive"),
            approvals_required: 2,
            approver_sets: vec![vec![ajar_domain::Subject::Group(name("sre"))]],
            policies: vec![name("p")],
        };
        // Both approvers read the same pending request...
        let by_bob = request.approve(&bob, &verdict, None, at(5)).expect("bob may approve");
        let by_carol = request.approve(&carol, &verdict, None, at(5)).expect("carol may approve");
        // ...the first write wins, the second is refused instead of erasing it.
        store.update_request(&request, &by_bob.next, vec![event(Action::Approved, "bob")]).await.expect("bob");
        let stale = store.update_request(&request, &by_carol.next, vec![event(Action::Approved, "carol")]).await;
        assert!(matches!(stale, Err(StoreError::Conflict { .. })), "{backend}: {stale:?}");
        let stored = store.get_request(&request.id).await.expect("get").expect("exists");
        assert_eq!(stored.approvals.len(), 1, "{backend}");
        assert_eq!(stored.approvals[0].approver, name("bob"));
        let reasons: Vec<_> = all_events(store.as_ref()).await.into_iter().map(|e| e.reason).collect();
        assert_eq!(reasons, vec![Some("r".to_owned()), Some("bob".to_owned())], "{backend}");
    }
}

#[tokio::test]
async fn events_form_an_intact_chain_across_writes() {
    for (backend, store, _dir) in stores().await {
        for i in 0..5u8 {
            store
                .insert_request(&pending(10 + i, "alice", 1), vec![event(Action::Requested, "a")])
                .await
                .expect("insert");
            store.append_audit(vec![event(Action::Login, "b"), event(Action::Login, "c")]).await.expect("append");
        }
        let events = all_events(store.as_ref()).await;
        assert_eq!(events.len(), 15, "{backend}");
        let (seq, _) = ajar_domain::audit::verify(&events, None).expect("intact chain");
        assert_eq!(seq, 15);
        // Paging continues the chain.
        let first = store.audit_page(&AuditScope::All, 0, 7).await.expect("page");
        let head = ajar_domain::audit::verify(&first, None).expect("first page");
        let rest = store.audit_page(&AuditScope::All, 7, 100).await.expect("page");
        assert!(ajar_domain::audit::verify(&rest, Some(head)).is_ok());
        // A person's scope holds only what concerns them.
        let mut other = event(Action::Login, "x");
        other.actor = "zed".into();
        other.subject = Some("zed".into());
        store.append_audit(vec![other]).await.expect("append");
        let zed = store.audit_page(&AuditScope::Person("zed".into()), 0, 100).await.expect("page");
        assert_eq!(zed.len(), 1, "{backend}");
    }
}

/// Writers arriving together share one group commit: a unit that loses its
/// compare-and-set or repeats an id fails alone, every other unit commits,
/// and the chain stays intact and in commit order.
#[tokio::test]
async fn concurrent_writers_share_commits_and_one_bad_unit_fails_alone() {
    for (backend, store, _dir) in stores().await {
        let store: std::sync::Arc<dyn Store> = std::sync::Arc::from(store);
        // Ids take 5 bits a byte: spell each one out so none collide by accident.
        let numbered = |i: u8, requester: &str| {
            let mut record = pending(i, requester, 1).record().clone();
            record.id = RequestId::from_random([i % 32, i / 32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
            Request::restore(record)
        };
        let existing = numbered(200, "alice");
        store.insert_request(&existing, vec![event(Action::Requested, "first")]).await.expect("insert");
        let cancelled = existing.cancel(&Principal::new(name("alice"), [name("dev")]), at(2)).expect("cancel");
        let mut writers = Vec::new();
        for i in 0..120u8 {
            let store = store.clone();
            let (existing, cancelled) = (existing.clone(), cancelled.next.clone());
            writers.push(tokio::spawn(async move {
                match i {
                    // The same id again.
                    7 => store.insert_request(&existing, vec![event(Action::Requested, "dup")]).await.map(|_| ()),
                    // Two writers race on one request: exactly one may win.
                    20 | 21 => store
                        .update_request(&existing, &cancelled, vec![event(Action::Cancelled, "cancel")])
                        .await
                        .map(|_| ()),
                    _ => store
                        .insert_request(
                            &numbered(i, "bob"),
                            vec![event(Action::Requested, "new"), event(Action::Login, "x")],
                        )
                        .await
                        .map(|_| ()),
                }
            }));
        }
        let mut outcomes = Vec::new();
        for writer in writers {
            outcomes.push(writer.await.expect("writer"));
        }
        assert!(matches!(outcomes[7], Err(StoreError::Duplicate { .. })), "{backend}: {:?}", outcomes[7]);
        let cancels: Vec<_> = [&outcomes[20], &outcomes[21]].into_iter().filter(|o| o.is_ok()).collect();
        assert_eq!(cancels.len(), 1, "{backend}: exactly one cancel wins: {:?} {:?}", outcomes[20], outcomes[21]);
        let lost = if outcomes[20].is_ok() { &outcomes[21] } else { &outcomes[20] };
        assert!(matches!(lost, Err(StoreError::Conflict { .. })), "{backend}: {lost:?}");
        let errors: Vec<_> =
            outcomes.iter().enumerate().filter_map(|(i, o)| o.as_ref().err().map(|e| (i, e.to_string()))).collect();
        assert_eq!(errors.len(), 2, "{backend}: every other writer committed: {errors:?}");
        let events = store.audit_page(&AuditScope::All, 0, 10_000).await.expect("audit");
        // 1 first event, 117 inserts with two events each, one cancel.
        assert_eq!(events.len(), 1 + 117 * 2 + 1, "{backend}");
        assert!(ajar_domain::audit::verify(&events, None).is_ok(), "{backend}: the chain is intact");
        assert!(events.iter().all(|e| e.reason.as_deref() != Some("dup")), "{backend}: the duplicate left no event");
        let live = store.list_requests(&RequestFilter::default()).await.expect("list");
        assert_eq!(live.len(), 118, "{backend}");
    }
}

#[tokio::test]
async fn filters_select_by_state_target_and_requester() {
    for (backend, store, _dir) in stores().await {
        let a = pending(20, "alice", 1);
        let b = pending(21, "bob", 0);
        store.insert_request(&a, vec![]).await.expect("insert");
        store.insert_request(&b, vec![]).await.expect("insert");
        let filter = |states: Vec<RequestState>, requester: Option<&str>| RequestFilter {
            states,
            requester: requester.map(str::to_owned),
            ..Default::default()
        };
        let pending_only = store.list_requests(&filter(vec![RequestState::Pending], None)).await.expect("list");
        assert_eq!(pending_only.len(), 1, "{backend}");
        let active_only = store.list_requests(&filter(vec![RequestState::Active], None)).await.expect("list");
        assert_eq!(active_only.len(), 1, "{backend}");
        let bobs = store.list_requests(&filter(vec![], Some("bob"))).await.expect("list");
        assert_eq!(bobs.iter().map(|r| r.requester.as_str()).collect::<Vec<_>>(), vec!["bob"]);
        let limited = store.list_requests(&RequestFilter { limit: 1, ..Default::default() }).await.expect("list");
        assert_eq!(limited.len(), 1);
    }
}

#[tokio::test]
async fn tokens_expire_and_are_purged() {
    for (backend, store, _dir) in stores().await {
        store.insert_token("h1", "alice", at(0), at(60)).await.expect("insert");
        assert_eq!(store.token_user("h1", at(59)).await.expect("lookup").as_deref(), Some("alice"), "{backend}");
        assert_eq!(store.token_user("h1", at(60)).await.expect("lookup"), None);
        assert_eq!(store.token_user("other", at(0)).await.expect("lookup"), None);
        assert_eq!(store.purge_tokens(at(61)).await.expect("purge"), 1);
    }
}

#[tokio::test]
async fn revoking_tokens_forgets_them_and_audits_in_one_transaction() {
    for (backend, store, _dir) in stores().await {
        for (hash, user) in [("a1", "alice"), ("a2", "alice"), ("b1", "bob")] {
            store.insert_token(hash, user, at(0), at(600)).await.expect("insert");
        }
        let one = TokenSelector::Hash("a1".into());
        let (removed, written) = store.revoke_tokens(&one, vec![event(Action::Logout, "x")]).await.expect("logout");
        assert_eq!((removed, written.len()), (1, 1), "{backend}");
        assert_eq!(store.token_user("a1", at(1)).await.expect("lookup"), None, "{backend}");
        // The same token again: nothing to forget, so nothing is audited.
        let (removed, written) = store.revoke_tokens(&one, vec![event(Action::Logout, "x")]).await.expect("again");
        assert_eq!((removed, written.len()), (0, 0), "{backend}");
        let alice = TokenSelector::User("alice".into());
        let (removed, written) =
            store.revoke_tokens(&alice, vec![event(Action::TokensRevoked, "x")]).await.expect("all of alice's");
        assert_eq!((removed, written.len()), (1, 1), "{backend}");
        assert_eq!(store.token_user("a2", at(1)).await.expect("lookup"), None, "{backend}");
        assert_eq!(store.token_user("b1", at(1)).await.expect("lookup").as_deref(), Some("bob"), "{backend}");
        let chain = store.audit_page(&AuditScope::All, 0, 10).await.expect("page");
        assert_eq!(chain.iter().map(|e| e.action).collect::<Vec<_>>(), [Action::Logout, Action::TokensRevoked]);
        ajar_domain::audit::verify(&chain, None).expect("the chain is intact");
    }
}

#[tokio::test]
async fn audit_search_filters_newest_first_and_tokens_can_be_deleted() {
    for (backend, store, _dir) in stores().await {
        let mut events = Vec::new();
        for (i, actor) in ["alice", "bob", "alice", "carol"].iter().enumerate() {
            let mut e = event(if i % 2 == 0 { Action::Login } else { Action::Requested }, "x");
            e.actor = (*actor).into();
            e.subject = Some((*actor).into());
            e.at = at(i as i64 * 10);
            events.push(e);
        }
        store.append_audit(events).await.expect("append");
        let all = AuditFilter::default();
        let newest_first = store.audit_search(&AuditScope::All, &all, i64::MAX, 10).await.expect("search");
        assert_eq!(newest_first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 3, 2, 1], "{backend}");
        let alice = AuditFilter { actor: Some("alice".into()), ..Default::default() };
        assert_eq!(store.audit_search(&AuditScope::All, &alice, i64::MAX, 10).await.expect("search").len(), 2);
        let logins = AuditFilter { action: Some(Action::Login), since: Some(at(10)), ..Default::default() };
        let found = store.audit_search(&AuditScope::All, &logins, i64::MAX, 10).await.expect("search");
        assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        let paged = store.audit_search(&AuditScope::All, &all, 3, 10).await.expect("search");
        assert_eq!(paged.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 1]);
        let bobs_view =
            store.audit_search(&AuditScope::Person("bob".into()), &all, i64::MAX, 10).await.expect("search");
        assert_eq!(bobs_view.len(), 1);

        store.insert_token("h", "alice", at(0), at(100)).await.expect("insert");
        assert!(store.delete_token("h").await.expect("delete"));
        assert!(!store.delete_token("h").await.expect("delete"));
        assert_eq!(store.token_user("h", at(1)).await.expect("lookup"), None);
    }
}

#[tokio::test]
async fn replicas_on_postgres_keep_one_chain_and_hear_each_others_changes() {
    let Some(server) = postgres_server() else { return };
    let url = fresh_postgres(&server).await;
    // Two stores on one database stand for two replicas.
    let a = std::sync::Arc::new(PgStore::connect(&url).await.expect("replica a"));
    let b = std::sync::Arc::new(PgStore::connect(&url).await.expect("replica b"));
    let mut feed = b.watch_changes().await.expect("listen").expect("PostgreSQL has a change feed");

    let mut writers = Vec::new();
    for (replica, store) in [("a", a.clone()), ("b", b.clone())] {
        writers.push(tokio::spawn(async move {
            for i in 0..40u8 {
                let mut record = pending(1, "alice", 1).record().clone();
                let side = if replica == "a" { 1 } else { 2 };
                record.id = RequestId::from_random([i % 32, i / 32, side, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                let request = Request::restore(record);
                store.insert_request(&request, vec![event(Action::Requested, replica)]).await.expect("insert");
                store.append_audit(vec![event(Action::Login, replica)]).await.expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let events = a.audit_page(&AuditScope::All, 0, 1000).await.expect("audit");
    assert_eq!(events.len(), 160);
    assert!(ajar_domain::audit::verify(&events, None).is_ok(), "one intact chain under concurrent replicas");

    // b hears about requests a inserted.
    let first = RequestId::from_random([0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).to_string();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut heard = false;
    while !heard {
        let id = tokio::time::timeout_at(deadline, feed.recv()).await.expect("a change within 5 s").expect("feed");
        heard = id == first;
    }
    // SQLite has no other process to hear from.
    let sqlite = SqliteStore::in_memory().await.expect("sqlite");
    assert!(sqlite.watch_changes().await.expect("ok").is_none());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_ajar_is_refused_in_words() {
    // A migration this version does not know stands for a newer ajar.
    let forge = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES (99990101000000, 'from the future', TRUE, X'00', 0)";
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ajar.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    let url = format!("sqlite://{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("open");
    sqlx::query(forge).execute(&pool).await.expect("forge a future migration");
    pool.close().await;
    let error = SqliteStore::open(&path).await.err().expect("refused").to_string();
    assert!(error.contains("newer ajar") && error.contains("99990101000000"), "{error}");

    if let Some(server) = postgres_server() {
        let url = fresh_postgres(&server).await;
        drop(PgStore::connect(&url).await.expect("create"));
        let pool = sqlx::PgPool::connect(&url).await.expect("open");
        sqlx::query(&forge.replace("X'00'", "'\\x00'::bytea")).execute(&pool).await.expect("forge");
        pool.close().await;
        let error = PgStore::connect(&url).await.err().expect("refused").to_string();
        assert!(error.contains("newer ajar"), "{error}");
    }
}

fn agent_record(agent: &str, serial: &str) -> ajar_domain::AgentRecord {
    ajar_domain::AgentRecord {
        name: name(agent),
        group: name("vpc-a"),
        cert_serial: serial.to_owned(),
        cert_not_after: at(86_400),
        enrolled_at: at(10),
        version: "0.1.0".to_owned(),
        last_seen: None,
        revoked_at: None,
        revoked_by: None,
    }
}

fn agent_event(agent: &str) -> NewAuditEvent {
    NewAuditEvent::system(at(10), ajar_domain::AuditData::AgentRefused { agent: agent.to_owned() })
}

#[tokio::test]
async fn an_enrolment_token_works_once_before_it_expires_and_revocation_sticks() {
    use ajar_store::EnrolRefusal;
    for (backend, store, _dir) in stores().await {
        let token = ajar_domain::AgentToken {
            hash: "h1".into(),
            group: name("vpc-a"),
            created_by: name("admin"),
            created_at: at(0),
            expires_at: at(900),
        };
        store.insert_agent_token(&token, vec![agent_event("t")]).await.expect("token");
        let events_before = all_events(store.as_ref()).await.len();

        // Unknown and expired tokens are refused and change nothing.
        let unknown = store.enroll_agent("nope", at(10), &agent_record("a1", "01"), vec![agent_event("a1")]).await;
        assert_eq!(unknown.expect("store"), Err(EnrolRefusal::UnknownToken), "{backend}");
        let late = store.enroll_agent("h1", at(900), &agent_record("a1", "01"), vec![agent_event("a1")]).await;
        assert!(matches!(late.expect("store"), Err(EnrolRefusal::Expired { .. })), "{backend}");
        assert_eq!(all_events(store.as_ref()).await.len(), events_before, "{backend}: a refusal wrote events");

        // The first use enrols, with its event; the second is refused.
        let first = store.enroll_agent("h1", at(10), &agent_record("a1", "01"), vec![agent_event("a1")]).await;
        assert_eq!(first.expect("store").expect("enrolled").len(), 1, "{backend}");
        let again = store.enroll_agent("h1", at(11), &agent_record("a2", "02"), vec![agent_event("a2")]).await;
        assert_eq!(again.expect("store"), Err(EnrolRefusal::Used { by: "a1".into() }), "{backend}");

        // A second token cannot take a name in use.
        let token2 = ajar_domain::AgentToken { hash: "h2".into(), ..token.clone() };
        store.insert_agent_token(&token2, vec![agent_event("t")]).await.expect("token");
        let taken = store.enroll_agent("h2", at(12), &agent_record("a1", "03"), vec![agent_event("a1")]).await;
        assert!(matches!(taken.expect("store"), Err(EnrolRefusal::NameTaken { .. })), "{backend}");

        // Renewal is a compare-and-set on the serial.
        let renewed = store.renew_agent("a1", "01", "04", at(90_000), vec![agent_event("a1")]).await.expect("renew");
        assert!(renewed.is_some(), "{backend}");
        let stale = store.renew_agent("a1", "01", "05", at(90_000), vec![agent_event("a1")]).await.expect("renew");
        assert!(stale.is_none(), "{backend}: a stale serial renewed");
        assert_eq!(store.agent("a1").await.expect("read").expect("agent").cert_serial, "04", "{backend}");

        // Revocation sticks, and frees the name for a new enrolment.
        let revoked = store.revoke_agent("a1", at(20), &name("admin"), vec![agent_event("a1")]).await.expect("revoke");
        assert!(revoked.is_some(), "{backend}");
        let twice = store.revoke_agent("a1", at(21), &name("admin"), vec![agent_event("a1")]).await.expect("revoke");
        assert!(twice.is_none(), "{backend}");
        let record = store.agent("a1").await.expect("read").expect("agent");
        assert!(record.is_revoked(), "{backend}");
        assert!(store.renew_agent("a1", "04", "06", at(90_000), vec![]).await.expect("renew").is_none(), "{backend}");
        let back = store.enroll_agent("h2", at(22), &agent_record("a1", "07"), vec![agent_event("a1")]).await;
        assert!(back.expect("store").is_ok(), "{backend}");
        let record = store.agent("a1").await.expect("read").expect("agent");
        assert!(!record.is_revoked() && record.cert_serial == "07", "{backend}: {record:?}");
        assert_eq!(store.list_agents().await.expect("list").len(), 1, "{backend}");
    }
}
