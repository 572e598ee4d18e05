//! What the drivers report about a grant, as domain transitions: each
//! returns the next request and the audit event it implies, and a failure
//! the grant already records is not audited again.

use std::net::IpAddr;

use ajar_domain::policy::{Ask, Principal, Verdict};
use ajar_domain::{
    Action, AuditData, EnforcementStatus, GrantDuration, Name, Request, RequestId, RequestState, SourceNet, Timestamp,
};

fn at(secs: i64) -> Timestamp {
    chrono::DateTime::from_timestamp_millis(1_800_000_000_000 + secs * 1000).expect("valid")
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid")
}

/// A grant that needed no approval, just activated.
fn active() -> Request {
    let who = Principal::new(name("alice"), [name("dev")]);
    let addr: IpAddr = [10, 0, 0, 7].into();
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
        approvals_required: 0,
        approver_sets: vec![],
        policies: vec![name("p")],
    };
    let change =
        Request::create(RequestId::from_random([7; 12]), &who, addr, &ask, &verdict, at(0), GrantDuration::MAX);
    assert_eq!(change.actions(), vec![Action::Requested, Action::Activated]);
    assert_eq!(change.next.enforcement.status, EnforcementStatus::Opening);
    change.next
}

#[test]
fn an_open_is_recorded_with_where_to_connect() {
    let grant = active();
    let change = grant.opened("gw.example".into(), 2222, 12, at(1));
    assert_eq!(change.next.enforcement.status, EnforcementStatus::Open);
    assert_eq!(change.next.state, RequestState::Active);
    assert_eq!(change.effect, None);
    let [event] = change.events.as_slice() else { panic!("one event: {:?}", change.events) };
    assert_eq!(event.actor, "ajar:system");
    assert_eq!(event.request_id.as_deref(), Some(grant.id.as_str()));
    assert_eq!(event.at, at(1));
    assert_eq!(event.data, AuditData::Opened { host: "gw.example".into(), port: 2222, open_ms: 12 });
}

#[test]
fn the_same_open_failure_is_audited_once_and_a_new_one_again() {
    let grant = active();
    let first = grant.open_failed("the security group is full", true, 30, at(1)).expect("first failure");
    assert_eq!(first.next.enforcement.status, EnforcementStatus::Failed);
    assert_eq!(first.next.enforcement.error.as_deref(), Some("the security group is full"));
    assert_eq!(first.actions(), vec![Action::OpenFailed]);
    let failed = first.next;
    // The reconciler retries every pass: the same failure again says nothing.
    assert!(failed.open_failed("the security group is full", true, 31, at(11)).is_none());
    // Another failure is news.
    let other = failed.open_failed("access denied", false, 5, at(21)).expect("a different failure");
    assert_eq!(
        other.events[0].data,
        AuditData::OpenFailed { error: "access denied".into(), transient: false, open_ms: 5 }
    );
    // And success after failures clears the error.
    let opened = other.next.opened("127.0.0.1".into(), 1, 1, at(31));
    assert_eq!(opened.next.enforcement.error, None);
}

#[test]
fn closes_and_close_failures_are_recorded_every_time() {
    let grant = active();
    let ended = grant.release(&Principal::new(name("alice"), []), at(60)).expect("release");
    assert_eq!(ended.next.enforcement.status, EnforcementStatus::Closing);
    let ended = ended.next;
    let failed = ended.close_failed("nft: busy", true, at(61));
    assert_eq!(failed.next.enforcement.status, EnforcementStatus::Failed);
    assert_eq!(failed.events[0].data, AuditData::CloseFailed { error: "nft: busy".into(), transient: true });
    // A close that keeps failing is audited each time: a path that stays
    // open after its grant ended must not go quiet.
    let again = failed.next.close_failed("nft: busy", true, at(71));
    assert_eq!(again.actions(), vec![Action::CloseFailed]);
    let closed = again.next.closed(at(81));
    assert_eq!(closed.next.enforcement.status, EnforcementStatus::Closed);
    assert_eq!(closed.next.enforcement.error, None);
    assert_eq!(closed.next.state, RequestState::Released);
    assert_eq!(closed.events[0].data, AuditData::Closed {});
}
