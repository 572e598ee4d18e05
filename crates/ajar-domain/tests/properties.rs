//! Property tests over the request state machine and the policy engine:
//! whatever sequence of commands, approvers and clock jumps, no grant
//! outlives its approved window, self-approval never counts, and a denied,
//! cancelled or timed-out request never becomes active.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ajar_domain::policy::{evaluate, Ask, Principal};
use ajar_domain::{
    Access, Catalog, DriverSettings, GatewaySettings, GrantDuration, Name, Policy, Request, RequestId, RequestState,
    SourceNet, Subject, Target, TargetSelector, Timestamp, User,
};
use proptest::prelude::*;

fn name(s: &str) -> Name {
    Name::parse(s).expect("test names are valid")
}

const USERS: usize = 5;

/// Users u0..u4; `approver_mask` says who is in group `sre`.
fn catalog(approvals: u32, max_secs: u64, approver_mask: u8, sources: Vec<SourceNet>) -> Catalog {
    let users = (0..USERS)
        .map(|i| User {
            name: name(&format!("u{i}")),
            password_hash: String::new(),
            groups: if approver_mask & (1 << i) != 0 { vec![name("sre"), name("dev")] } else { vec![name("dev")] },
        })
        .collect();
    Catalog {
        access: Access::default(),
        users,
        targets: vec![Target {
            name: name("db"),
            address: "10.0.0.1:5432".into(),
            labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            driver: DriverSettings::Gateway(GatewaySettings {
                listen: "127.0.0.1:15432".parse().expect("addr"),
                public_host: None,
            }),
            agent_group: None,
        }],
        policies: vec![Policy {
            name: name("p"),
            subjects: vec![Subject::Group(name("dev"))],
            targets: vec![TargetSelector::Label { key: "env".into(), value: "prod".into() }],
            max_duration: GrantDuration::from_secs(max_secs).expect("positive"),
            reason_required: true,
            approvals,
            approvers: vec![Subject::Group(name("sre"))],
            sources,
        }],
    }
}

fn principal(catalog: &Catalog, i: usize) -> Principal {
    let user = &catalog.users[i % USERS];
    Principal::new(user.name.clone(), user.groups.clone())
}

#[derive(Debug, Clone)]
enum Command {
    Approve(usize),
    Deny(usize),
    Cancel(usize),
    Release(usize),
    Revoke(usize),
    Tick(i64),
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (0..USERS).prop_map(Command::Approve),
        1 => (0..USERS).prop_map(Command::Deny),
        1 => (0..USERS).prop_map(Command::Cancel),
        1 => (0..USERS).prop_map(Command::Release),
        1 => (0..USERS).prop_map(Command::Revoke),
        3 => (0i64..4000).prop_map(Command::Tick),
    ]
}

fn t0() -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_state_machine_keeps_its_promises(
        approvals in 0u32..4,
        max_secs in 1u64..7200,
        asked_secs in 1u64..7200,
        approver_mask in any::<u8>(),
        requester in 0..USERS,
        commands in proptest::collection::vec(command(), 0..40),
    ) {
        let catalog = catalog(approvals, max_secs, approver_mask, vec![]);
        let who = principal(&catalog, requester);
        let addr: IpAddr = [10, 8, 0, 1].into();
        let ask = Ask {
            target: "db".into(),
            duration: GrantDuration::from_secs(asked_secs).expect("positive"),
            reason: "INC-1".into(),
            source: None,
        };
        let verdict = match evaluate(&catalog, &who, &ask, addr) {
            Ok(v) => v,
            Err(_) => {
                // Refused only for asking longer than the policy allows.
                prop_assert!(asked_secs > max_secs);
                return Ok(());
            }
        };
        prop_assert!(asked_secs <= max_secs);
        let timeout = GrantDuration::from_secs(3600).expect("positive");
        let mut now = t0();
        let mut request = Request::create(RequestId::from_random([7; 12]), &who, addr, &ask, &verdict, now, timeout).next;
        let mut was_refused = false;

        for command in commands {
            let before = request.clone();
            let change = match command {
                Command::Approve(i) => request.approve(&principal(&catalog, i), &verdict, None, now).ok(),
                Command::Deny(i) => request.deny(&principal(&catalog, i), &verdict, None, now).ok(),
                Command::Cancel(i) => request.cancel(&principal(&catalog, i), now).ok(),
                Command::Release(i) => request.release(&principal(&catalog, i), now).ok(),
                Command::Revoke(i) => {
                    let by = principal(&catalog, i);
                    let allowed = ajar_domain::request::may_revoke(&request, &by, Some(&verdict), false);
                    request.revoke(&by, allowed, None, now).ok()
                }
                Command::Tick(secs) => {
                    now += chrono::Duration::seconds(secs);
                    request.expire(now).or_else(|| request.time_out(now))
                }
            };
            if let Some(change) = change {
                request = change.next;
            }

            // Final states are final.
            if before.state.is_final() {
                prop_assert_eq!(&request, &before);
            }
            // Deadlines are never anticipated.
            if request.state == RequestState::Expired && before.state == RequestState::Active {
                prop_assert!(now >= before.ends_at.expect("active has an end"));
            }
            if request.state == RequestState::TimedOut && before.state == RequestState::Pending {
                prop_assert!(now >= before.decide_by);
            }
            if matches!(request.state, RequestState::Denied | RequestState::Cancelled | RequestState::TimedOut) {
                was_refused = true;
            }
            // A refused request never becomes active.
            prop_assert!(!(was_refused && request.starts_at.is_some()));
            // Self-approval never counts; nobody counts twice; only eligible approvers count.
            prop_assert!(request.approvals.iter().all(|a| a.approver != request.requester));
            let mut approvers: Vec<&Name> = request.approvals.iter().map(|a| &a.approver).collect();
            approvers.sort();
            approvers.dedup();
            prop_assert_eq!(approvers.len(), request.approvals.len());
            for a in &request.approvals {
                let i: usize = a.approver.as_str()[1..].parse().expect("u<i>");
                prop_assert!(approver_mask & (1 << i) != 0);
            }
            // Active only with enough approvals.
            if request.starts_at.is_some() {
                prop_assert!(request.approvals.len() as u32 >= approvals);
            }
            // No grant outlives its approved window.
            if let (Some(start), Some(end)) = (request.starts_at, request.ends_at) {
                prop_assert!(end >= start);
                let window = (end - start).num_seconds() as u64;
                prop_assert!(window <= asked_secs.min(max_secs));
                prop_assert!(request.duration.as_secs() <= max_secs);
            }
        }
    }

    #[test]
    fn sources_stay_inside_what_the_policy_allows(
        allowed_prefix in 8u8..=32,
        asked in (any::<[u8; 4]>(), 0u8..=32),
        explicit in any::<bool>(),
    ) {
        let allowed_net = format!("10.0.0.0/{allowed_prefix}");
        let allowed = SourceNet::parse(
            &ipnet::Ipv4Net::new([10, 0, 0, 0].into(), allowed_prefix).expect("prefix").trunc().to_string(),
        ).expect(&allowed_net);
        let catalog = catalog(0, 3600, 0, vec![allowed]);
        let who = principal(&catalog, 0);
        let requester: IpAddr = [192, 0, 2, 10].into();
        let asked_net = ipnet::Ipv4Net::new(asked.0.into(), asked.1).expect("prefix").trunc();
        let source = SourceNet::parse(&asked_net.to_string());
        let ask = Ask {
            target: "db".into(),
            duration: GrantDuration::from_secs(60).expect("positive"),
            reason: "x".into(),
            source: if explicit { source.clone().ok() } else { None },
        };
        // /0 never parses, so it can never be asked for.
        prop_assert_eq!(asked.1 == 0, source.is_err());
        match evaluate(&catalog, &who, &ask, requester) {
            Ok(verdict) => {
                prop_assert!(verdict.source.prefix_len() > 0);
                prop_assert!(verdict.source.within(&allowed) || verdict.source == SourceNet::host(requester));
            }
            Err(_) => {
                let s = ask.source.expect("only an explicit source can be refused");
                prop_assert!(!s.within(&allowed));
            }
        }
    }
}

#[test]
fn the_longest_duration_wins_nothing() {
    let mut catalog = catalog(0, 3600, 0, vec![]);
    let mut strict = catalog.policies[0].clone();
    strict.name = name("strict");
    strict.max_duration = GrantDuration::from_secs(600).expect("positive");
    catalog.policies.push(strict);
    let who = principal(&catalog, 0);
    let addr: IpAddr = [10, 0, 0, 1].into();
    let ask = |secs| Ask {
        target: "db".into(),
        duration: GrantDuration::from_secs(secs).expect("positive"),
        reason: "x".into(),
        source: None,
    };
    assert!(evaluate(&catalog, &who, &ask(1200), addr).is_err());
    let verdict = evaluate(&catalog, &who, &ask(600), addr).expect("within both");
    assert_eq!(verdict.max_duration.as_secs(), 600);
}
