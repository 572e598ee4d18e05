//! The AWS drivers end to end: the real `ajar` binary against moto server
//! (the AWS API emulator that ./scripts/test.sh starts on 127.0.0.1 and
//! names in AJAR_TEST_MOTO). Every test builds its own VPC, subnet and
//! security groups and uses target names of its own, so tests share one
//! emulator without seeing each other's rules or instances. The app
//! server's boot script runs in network namespaces standing in for the
//! client, the instance and the critical server.

mod common;
mod netns;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, IpPermission, IpRange, ResourceType, SecurityGroupRule, Tag, TagSpecification};
use aws_sdk_ec2::Client;
use base64::Engine as _;
use chrono::Utc;
use common::*;
use serde_json::Value;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The emulator's URL, or `None` (after saying why) when this machine has
/// none; in CI a missing emulator fails the test.
fn moto_url(test: &str) -> Option<String> {
    match std::env::var("AJAR_TEST_MOTO") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = "AJAR_TEST_MOTO is not set (./scripts/test.sh installs moto server and sets it)";
            if std::env::var_os("CI").is_some() {
                panic!("{test} cannot run in CI: {why}");
            }
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

fn ec2(url: &str) -> Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new("ajar-test", "ajar-test", None, None, "test"))
        .build();
    Client::from_conf(config)
}

/// A name no other test (or earlier run against the same emulator) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// A VPC with one subnet, made for one test.
struct Vpc {
    ec2: Client,
    vpc: String,
    subnet: String,
}

impl Vpc {
    async fn new(ec2: &Client) -> Self {
        let vpc = ec2.create_vpc().cidr_block("10.70.0.0/16").send().await.expect("create a VPC");
        let vpc = vpc.vpc().and_then(|v| v.vpc_id()).expect("VPC id").to_owned();
        let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.70.1.0/24").send().await.expect("create a subnet");
        let subnet = subnet.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_owned();
        Self { ec2: ec2.clone(), vpc, subnet }
    }

    async fn security_group(&self) -> String {
        let name = unique("ajar-test");
        let group = self
            .ec2
            .create_security_group()
            .group_name(&name)
            .description("ajar test")
            .vpc_id(&self.vpc)
            .send()
            .await
            .expect("create a security group");
        group.group_id().expect("group id").to_owned()
    }
}

/// Adds an ingress rule for `cidr` on tcp/`port`, with `tags`.
async fn add_rule(ec2: &Client, group: &str, cidr: &str, port: i32, tags: &[(&str, &str)]) -> String {
    let mut call = ec2.authorize_security_group_ingress().group_id(group).ip_permissions(
        IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(port)
            .to_port(port)
            .ip_ranges(IpRange::builder().cidr_ip(cidr).build())
            .build(),
    );
    if !tags.is_empty() {
        let mut spec = TagSpecification::builder().resource_type(ResourceType::SecurityGroupRule);
        for (k, v) in tags {
            spec = spec.tags(Tag::builder().key(*k).value(*v).build());
        }
        call = call.tag_specifications(spec.build());
    }
    let answer = call.send().await.expect("add a rule");
    answer.security_group_rules()[0].security_group_rule_id().expect("rule id").to_owned()
}

/// Every rule of `group`.
async fn rules(ec2: &Client, group: &str) -> Vec<SecurityGroupRule> {
    ec2.describe_security_group_rules()
        .filters(Filter::builder().name("group-id").values(group).build())
        .send()
        .await
        .expect("list rules")
        .security_group_rules
        .unwrap_or_default()
}

fn tags_of(rule: &SecurityGroupRule) -> BTreeMap<String, String> {
    rule.tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}

fn is_ajars(rule: &SecurityGroupRule) -> bool {
    tags_of(rule).contains_key("ajar:target")
}

/// The rules ajar did not make, in a form that compares whole.
fn untouched(rules: &[SecurityGroupRule]) -> Vec<String> {
    let mut out: Vec<String> = rules.iter().filter(|r| !is_ajars(r)).map(|r| format!("{r:?}")).collect();
    out.sort();
    out
}

async fn ajar_rules(ec2: &Client, group: &str) -> Vec<SecurityGroupRule> {
    rules(ec2, group).await.into_iter().filter(is_ajars).collect()
}

/// The `ajar:target` tag, with a test's own target name.
fn sg_target(name: &str, address: &str, group: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = {name:?}\naddress = {address:?}\ndriver = \"aws-sg\"\naws_sg = {{ security_group_id = {group:?}, region = \"us-east-1\", endpoint_url = {endpoint:?}{extra} }}\n"
    )
}

fn instance_target(name: &str, address: &str, vpc: &Vpc, group: &str, endpoint: &str, extra: &str) -> String {
    format!(
        "[[targets]]\nname = {name:?}\naddress = {address:?}\ndriver = \"aws-instance\"\naws_instance = {{ ami = \"ami-0abc1234\", instance_type = \"t3.micro\", subnet_id = {subnet:?}, security_group_ids = [{group:?}], listen_port = 15432, region = \"us-east-1\", endpoint_url = {endpoint:?}{extra} }}\n",
        subnet = vpc.subnet
    )
}

/// A config with `targets` (whole sections) and an auto-approving policy
/// for dev on them; sources within 10.0.0.0/8 may be named explicitly.
fn config(targets: &[String], names: &[&str]) -> Config {
    config_every(targets, names, "1s")
}

/// [`config`] with reconcile passes every `interval`.
fn config_every(targets: &[String], names: &[&str], interval: &str) -> Config {
    let mut config = Config::new()
        .server(&format!("reconcile_interval = {interval:?}"))
        .policy(Policy::auto("aws", &["group:dev"], names).sources(&["10.0.0.0/8", "127.0.0.0/8", "fd00::/16"]));
    for t in targets {
        config = config.section(t);
    }
    config
}

/// The grant once its enforcement status is one of `states`.
async fn enforcement_in(session: &Session, id: &str, states: &[&str]) -> Value {
    eventually(&format!("the grant's enforcement becomes {}", states.join(" or ")), Duration::from_secs(30), || async {
        let r = session.get_request(id).await;
        r["enforcement"]["status"].as_str().is_some_and(|s| states.contains(&s)).then_some(r)
    })
    .await
}

/// The grant once its enforcement is settled (open or failed).
async fn settled(session: &Session, id: &str) -> Value {
    enforcement_in(session, id, &["open", "failed"]).await
}

async fn ask_from(session: &Session, target: &str, duration: &str, source: &str) -> Value {
    session
        .post(
            "/api/v1/requests",
            serde_json::json!({ "target": target, "duration": duration, "reason": "INC-4 aws", "source": source }),
        )
        .await
        .ok(201, "create a request")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_security_group_grant_adds_exactly_one_tagged_rule_and_every_ending_removes_it() {
    let Some(url) = moto_url("aws-sg grant") else { return };
    let ec2 = ec2(&url);
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    // Someone's standing rule that ajar must never touch.
    add_rule(&ec2, &group, "10.9.9.9/32", 443, &[]).await;
    let tiny = vpc.security_group().await;
    add_rule(&ec2, &tiny, "10.9.9.1/32", 22, &[]).await;
    add_rule(&ec2, &tiny, "10.9.9.2/32", 22, &[]).await;
    let (web, full) = (unique("web"), unique("full"));
    let before = untouched(&rules(&ec2, &group).await);

    let targets = [
        sg_target(&web, "10.0.1.5:22", &group, &url, ""),
        sg_target(&full, "10.0.1.6:22", &tiny, &url, ", rule_quota = 2"),
    ];
    let server = TestServer::start(config(&targets, &[&web, &full])).await;
    let alice = server.login("alice").await;
    let adam = server.login("adam").await;

    // Granted: one rule for the caller's /32 on the target's port, tagged
    // with the target and the grant's end, described in words.
    let grant = alice.request(&web, "3s", "INC-4 expiry").await;
    let gid = id(&grant);
    let grant = settled(&alice, &gid).await;
    assert_eq!(grant["enforcement"]["status"], "open", "{grant:#}");
    assert_eq!(grant["connect"]["host"], "10.0.1.5", "clients connect straight to the target: {grant:#}");
    assert_eq!(grant["connect"]["port"], 22, "{grant:#}");
    let mine = ajar_rules(&ec2, &group).await;
    assert_eq!(mine.len(), 1, "exactly one rule: {mine:#?}");
    let rule = &mine[0];
    assert_eq!(rule.cidr_ipv4(), Some("127.0.0.1/32"));
    assert_eq!((rule.ip_protocol(), rule.from_port(), rule.to_port()), (Some("tcp"), Some(22), Some(22)));
    let tags = tags_of(rule);
    assert_eq!(tags.get("ajar:target"), Some(&web), "{tags:?}");
    let ends = time(&grant, "ends_at");
    assert_eq!(
        tags.get(&format!("ajar:grant:{gid}")).map(|t| t.parse::<chrono::DateTime<Utc>>().ok()),
        Some(Some(ends))
    );
    let description = rule.description().unwrap_or_default();
    assert!(
        description.contains(&gid) && description.contains("alice") && description.contains("until"),
        "{description}"
    );
    let opened = alice
        .wait_audit("opened", Duration::from_secs(5), |e| e["action"] == "opened" && e["request_id"] == gid.as_str())
        .await;
    assert!(opened["data"]["open_ms"].as_u64().is_some(), "the audit says how long opening took: {opened:#}");

    // Expiry removes it.
    alice.wait_state(&gid, "expired", Duration::from_secs(10)).await;
    eventually("the expired grant's rule is revoked", Duration::from_secs(10), || async {
        ajar_rules(&ec2, &group).await.is_empty().then_some(())
    })
    .await;

    // Release removes it; two grants from one source share one rule, and
    // the rule stays until the last of them ends.
    let first = id(&alice.request(&web, "10m", "INC-4 one").await);
    let second = id(&alice.request(&web, "10m", "INC-4 two").await);
    settled(&alice, &first).await;
    settled(&alice, &second).await;
    let shared = ajar_rules(&ec2, &group).await;
    assert_eq!(shared.len(), 1, "one rule per source: {shared:#?}");
    let tags = tags_of(&shared[0]);
    assert!(
        tags.contains_key(&format!("ajar:grant:{first}")) && tags.contains_key(&format!("ajar:grant:{second}")),
        "{tags:?}"
    );
    alice.act(&first, "release").await.ok(200, "release");
    let left = ajar_rules(&ec2, &group).await;
    assert_eq!(left.len(), 1, "the other grant still needs the rule: {left:#?}");
    assert!(!tags_of(&left[0]).contains_key(&format!("ajar:grant:{first}")), "{left:#?}");
    alice.act(&second, "release").await.ok(200, "release");
    assert!(ajar_rules(&ec2, &group).await.is_empty(), "released: no rule left");

    // An IPv6 source gets a /128 rule, removed the same way.
    let six = id(&ask_from(&alice, &web, "10m", "fd00::7").await);
    assert_eq!(settled(&alice, &six).await["enforcement"]["status"], "open");
    let v6 = ajar_rules(&ec2, &group).await;
    assert_eq!(v6.len(), 1, "{v6:#?}");
    assert_eq!((v6[0].cidr_ipv6(), v6[0].cidr_ipv4()), (Some("fd00::7/128"), None), "{v6:#?}");
    alice.act(&six, "release").await.ok(200, "release");
    assert!(ajar_rules(&ec2, &group).await.is_empty(), "released: no IPv6 rule left");

    // Revoke removes it.
    let third = id(&alice.request(&web, "10m", "INC-4 three").await);
    settled(&alice, &third).await;
    assert_eq!(ajar_rules(&ec2, &group).await.len(), 1);
    adam.act_with(&third, "revoke", "done here").await.ok(200, "revoke");
    assert!(ajar_rules(&ec2, &group).await.is_empty(), "revoked: no rule left");
    assert_eq!(untouched(&rules(&ec2, &group).await), before, "nothing else in the group changed");

    // A full group fails the grant with a sentence naming the quota, and
    // adds nothing.
    let over = id(&alice.request(&full, "10m", "INC-4 full").await);
    let failed = settled(&alice, &over).await;
    assert_eq!(failed["enforcement"]["status"], "failed", "{failed:#}");
    let error = failed["enforcement"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("quota") && error.contains("rule_quota") && error.contains(&tiny), "{error}");
    assert!(ajar_rules(&ec2, &tiny).await.is_empty());
    alice
        .wait_audit("open_failed", Duration::from_secs(5), |e| {
            e["action"] == "open_failed" && e["request_id"] == over.as_str()
        })
        .await;
    // Reconcile retries every second; the same failure is audited once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = server.login("erin").await.audit().await;
    let failures = events.iter().filter(|e| e["action"] == "open_failed" && e["request_id"] == over.as_str()).count();
    assert_eq!(failures, 1, "one event per distinct failure, not one per retry");
    assert_eq!(alice.get_request(&over).await["enforcement"]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_kill_9_reconcile_removes_stale_and_orphan_rules_and_leaves_others_alone() {
    let Some(url) = moto_url("aws-sg reconcile") else { return };
    let ec2 = ec2(&url);
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let web = unique("web");
    let targets = [sg_target(&web, "10.0.1.5:22", &group, &url, "")];
    let mut server = TestServer::start(config(&targets, &[&web])).await;
    let alice = server.login("alice").await;

    let short = id(&alice.request(&web, "2s", "INC-4 crash").await);
    let long = id(&alice.calling_from("127.0.0.5".parse().expect("ip")).request(&web, "10m", "INC-4 stays").await);
    settled(&alice, &short).await;
    settled(&alice, &long).await;
    assert_eq!(ajar_rules(&ec2, &group).await.len(), 2);
    server.kill9();

    // While ajar is down: its grant expires, someone adds a rule tagged as
    // ajar's for a grant that does not exist, and an untagged rule.
    let end = (Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    let ghost = format!("ajar:grant:r{}", "a".repeat(12));
    let orphan = add_rule(&ec2, &group, "10.1.1.1/32", 22, &[("ajar:target", &web), (&ghost, &end)]).await;
    let foreign = add_rule(&ec2, &group, "10.2.2.2/32", 22, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stale: Vec<String> = ajar_rules(&ec2, &group)
        .await
        .iter()
        .filter(|r| tags_of(r).contains_key(&format!("ajar:grant:{short}")))
        .map(|r| r.security_group_rule_id().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(stale.len(), 1, "the expired grant's rule outlived the crash, as AWS keeps it");

    server.restart().await;
    alice.wait_state(&short, "expired", Duration::from_secs(10)).await;
    let left = eventually("reconcile removes the stale and the orphan rule", Duration::from_secs(15), || async {
        let ids: Vec<String> = rules(&ec2, &group)
            .await
            .iter()
            .map(|r| r.security_group_rule_id().unwrap_or_default().to_owned())
            .collect();
        (!ids.contains(&stale[0]) && !ids.contains(&orphan)).then_some(ids)
    })
    .await;
    assert!(left.contains(&foreign), "the untagged rule is untouched: {left:?}");
    let live = ajar_rules(&ec2, &group).await;
    assert_eq!(live.len(), 1, "the active grant keeps its rule: {live:#?}");
    assert!(tags_of(&live[0]).contains_key(&format!("ajar:grant:{long}")));
    let events = server.login("erin").await.audit().await;
    let actions = actions_for(&events, &short);
    assert!(actions.contains(&"expired".to_owned()) && actions.contains(&"closed".to_owned()), "{actions:?}");
}

/// The instances ajar made for target `name` that are not terminated.
async fn instances(ec2: &Client, name: &str) -> Vec<aws_sdk_ec2::types::Instance> {
    ec2.describe_instances()
        .filters(Filter::builder().name("tag:ajar:target").values(name).build())
        .filters(Filter::builder().name("instance-state-name").values("pending").values("running").build())
        .send()
        .await
        .expect("list instances")
        .reservations()
        .iter()
        .flat_map(|r| r.instances().to_vec())
        .collect()
}

fn instance_tags(instance: &aws_sdk_ec2::types::Instance) -> BTreeMap<String, String> {
    instance
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or_default().to_owned(), t.value().unwrap_or_default().to_owned()))
        .collect()
}

async fn state_of(ec2: &Client, instance: &str) -> String {
    let answer = ec2.describe_instances().instance_ids(instance).send().await.expect("describe the instance");
    let found = answer.reservations().iter().flat_map(|r| r.instances()).next().cloned();
    found.and_then(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned())).unwrap_or_default()
}

async fn user_data(ec2: &Client, instance: &str) -> String {
    let answer = ec2
        .describe_instance_attribute()
        .instance_id(instance)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("read the user data");
    let encoded = answer.user_data().and_then(|u| u.value()).unwrap_or_default();
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).expect("base64")).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_grant_launches_one_tagged_app_server_whose_script_admits_only_the_source() {
    let Some(url) = moto_url("aws-instance grant") else { return };
    let netns = netns::can_run_with("aws-instance grant", &["iptables"]);
    // The instance's boot script runs in the "gateway" namespace, between
    // client A (the grant's source), client B and the server.
    let topo = netns.then(|| netns::Topology::new("awsi"));
    let (source, server_addr) = match &topo {
        Some(t) => (t.host(1, netns::Family::V4), SocketAddr::new(t.host(3, netns::Family::V4), 5432)),
        None => ("10.203.0.2".parse().expect("ip"), "10.203.2.2:5432".parse().expect("addr")),
    };
    let echo = topo.as_ref().map(|t| netns::EchoServer::start(t, netns::Family::V4, 5432));

    let ec2 = ec2(&url);
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let db = unique("db");
    let targets = [instance_target(&db, &server_addr.to_string(), &vpc, &group, &url, ", idle_timeout = \"1h\"")];
    let server = TestServer::start(config(&targets, &[&db])).await;
    let alice = server.login("alice").await;

    let grant = ask_from(&alice, &db, "20s", &source.to_string()).await;
    let gid = id(&grant);
    let grant = settled(&alice, &gid).await;
    assert_eq!(grant["enforcement"]["status"], "open", "{grant:#}");
    let launched = instances(&ec2, &db).await;
    assert_eq!(launched.len(), 1, "one instance per grant: {launched:#?}");
    let instance = &launched[0];
    let instance_id = instance.instance_id().expect("id").to_owned();
    let tags = instance_tags(instance);
    assert_eq!(tags.get("ajar:grant"), Some(&gid), "{tags:?}");
    assert_eq!(tags.get("ajar:source").map(String::as_str), Some(format!("{source}/32").as_str()), "{tags:?}");
    assert_eq!(
        tags.get("ajar:ends-at").and_then(|t| t.parse::<chrono::DateTime<Utc>>().ok()),
        Some(time(&grant, "ends_at"))
    );
    assert_eq!(grant["connect"]["host"], instance.private_ip_address().expect("address"), "{grant:#}");
    assert_eq!(grant["connect"]["port"], 15432);
    let opened = alice
        .wait_audit("opened", Duration::from_secs(5), |e| e["action"] == "opened" && e["request_id"] == gid.as_str())
        .await;
    let open_ms = opened["data"]["open_ms"].as_u64().expect("open_ms in the opened event");
    eprintln!("aws-instance: a cold launch opened in {open_ms} ms against moto");

    let script = user_data(&ec2, &instance_id).await;
    for line in [
        format!("SOURCE={source}/32\n"),
        format!("DESTINATION_IP={}\n", server_addr.ip()),
        "DESTINATION_PORT=5432\n".to_owned(),
        "LISTEN_PORT=15432\n".to_owned(),
        format!("ENDS={}\n", time(&grant, "ends_at").timestamp()),
        "IDLE=3600\n".to_owned(),
    ] {
        assert!(script.contains(&line), "missing {line:?} in the user data:\n{script}");
    }

    if let (Some(topo), Some(echo)) = (&topo, &echo) {
        let marker = tempfile::tempdir().expect("temp dir");
        let off = marker.path().join("powered-off");
        let out = topo.exec(&topo.gw, &["env", &format!("AJAR_POWEROFF=touch {}", off.display()), "sh", "-c", &script]);
        assert!(out.status.success(), "the boot script failed: {}", String::from_utf8_lossy(&out.stderr));
        let listen = SocketAddr::new(topo.gateway(netns::Family::V4), 15432);
        topo.try_reach(&topo.a, listen).unwrap_or_else(|e| panic!("the grant's source cannot reach the server: {e}"));
        let accepted = |log: String| log.matches("accepting connection from").count();
        let served = accepted(echo.log());
        assert!(served >= 1, "{}", echo.log());
        assert!(!topo.reaches(&topo.b, listen), "another source got through the app server");
        assert_eq!(accepted(echo.log()), served, "the server saw a connection from elsewhere: {}", echo.log());
        // At the grant's end the instance powers itself off, ajar or not.
        let ends = time(&grant, "ends_at");
        eventually("the script powers the instance off at the grant's end", Duration::from_secs(30), || async {
            off.exists().then_some(())
        })
        .await;
        let late = Utc::now() - ends;
        assert!(late < chrono::Duration::seconds(3), "powered off {late} after the end");
    }

    // Expiry terminates the instance.
    alice.wait_state(&gid, "expired", Duration::from_secs(30)).await;
    eventually("the expired grant's instance is terminated", Duration::from_secs(10), || async {
        (state_of(&ec2, &instance_id).await == "terminated").then_some(())
    })
    .await;

    // An instance tagged as ajar's for no grant is terminated by reconcile;
    // one without ajar's tags is not.
    let end = (Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    let ghost = format!("r{}", "b".repeat(12));
    let launch = |tags: Vec<(String, String)>| {
        let ec2 = ec2.clone();
        let subnet = vpc.subnet.clone();
        async move {
            let mut spec = TagSpecification::builder().resource_type(ResourceType::Instance);
            for (k, v) in tags {
                spec = spec.tags(Tag::builder().key(k).value(v).build());
            }
            let answer = ec2
                .run_instances()
                .image_id("ami-0abc1234")
                .min_count(1)
                .max_count(1)
                .subnet_id(subnet)
                .tag_specifications(spec.build())
                .send()
                .await
                .expect("launch");
            answer.instances()[0].instance_id().expect("id").to_owned()
        }
    };
    let orphan = launch(vec![
        ("ajar:target".into(), db.clone()),
        ("ajar:grant".into(), ghost),
        ("ajar:source".into(), "10.1.1.1/32".into()),
        ("ajar:ends-at".into(), end),
    ])
    .await;
    let bystander = launch(vec![("team".into(), "payments".into())]).await;
    eventually("reconcile terminates the orphan", Duration::from_secs(15), || async {
        (state_of(&ec2, &orphan).await == "terminated").then_some(())
    })
    .await;
    assert_eq!(state_of(&ec2, &bystander).await, "running", "an instance ajar did not make is left alone");
}

/// The idle watch of `idle_timeout`, run in namespaces: traffic keeps the
/// app server up, and once the flow goes quiet it powers itself off.
#[test]
fn an_idle_app_server_powers_itself_off_and_a_busy_one_does_not() {
    if !netns::can_run_with("aws-instance idle", &["iptables"]) {
        return;
    }
    let topo = netns::Topology::new("awsid");
    let _echo = netns::EchoServer::start(&topo, netns::Family::V4, 5432);
    let source = match topo.host(1, netns::Family::V4) {
        std::net::IpAddr::V4(ip) => ipnet::Ipv4Net::new(ip, 32).expect("a /32"),
        other => panic!("client A has no IPv4 address: {other}"),
    };
    let destination = match SocketAddr::new(topo.host(3, netns::Family::V4), 5432) {
        SocketAddr::V4(d) => d,
        other => panic!("{other}"),
    };
    let ends_unix = (Utc::now() + chrono::Duration::minutes(5)).timestamp();
    let mode = ajar_driver_aws::userdata::Mode::Grant { source, ends_unix };
    let script = ajar_driver_aws::userdata::render(&mode, 15432, destination, Some(3));
    let marker = tempfile::tempdir().expect("temp dir");
    let off = marker.path().join("powered-off");
    let out = topo.exec(&topo.gw, &["env", &format!("AJAR_POWEROFF=touch {}", off.display()), "sh", "-c", &script]);
    assert!(out.status.success(), "the boot script failed: {}", String::from_utf8_lossy(&out.stderr));

    // A line every second for 6 s: twice the idle timeout, and still up.
    let mut flow = netns::Flow::open(&topo.a, SocketAddr::new(topo.gateway(netns::Family::V4), 15432));
    for _ in 0..6 {
        assert!(flow.echo(Duration::from_secs(2)), "the flow through the app server broke");
        assert!(!off.exists(), "the app server powered off while traffic flowed");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Quiet from now on (the connection stays open): off within the idle
    // timeout plus the watch's one-second steps.
    let quiet = std::time::Instant::now();
    while !off.exists() {
        assert!(quiet.elapsed() < Duration::from_secs(10), "an idle app server stayed up for {:?}", quiet.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = quiet.elapsed();
    eprintln!("aws-instance: idle app server powered off {after:?} after the last traffic (idle_timeout 3 s)");
    assert!(after >= Duration::from_secs(2), "powered off too early: {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_pool_is_filled_claimed_at_open_and_refilled() {
    let Some(url) = moto_url("aws-instance warm pool") else { return };
    let ec2 = ec2(&url);
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let db = unique("db");
    let targets = [instance_target(&db, "10.70.9.9:5432", &vpc, &group, &url, ", warm_pool = 2")];
    let server = TestServer::start(config(&targets, &[&db])).await;
    let alice = server.login("alice").await;

    let pool = |ec2: Client, db: String| async move {
        instances(&ec2, &db)
            .await
            .into_iter()
            .filter(|i| instance_tags(i).contains_key("ajar:pool"))
            .collect::<Vec<_>>()
    };
    let warm = eventually("the pool fills to 2", Duration::from_secs(20), || async {
        let p = pool(ec2.clone(), db.clone()).await;
        (p.len() == 2).then_some(p)
    })
    .await;
    let warm_ids: Vec<String> = warm.iter().map(|i| i.instance_id().unwrap_or_default().to_owned()).collect();
    let script = user_data(&ec2, &warm_ids[0]).await;
    assert!(script.contains("meta-data/tags/instance/$1") && script.contains("DESTINATION_IP=10.70.9.9"), "{script}");
    // Let moto move them to running.
    for i in &warm_ids {
        eventually("warm instance runs", Duration::from_secs(10), || async {
            (state_of(&ec2, i).await == "running").then_some(())
        })
        .await;
    }

    let gid = id(&ask_from(&alice, &db, "10m", "10.70.50.7").await);
    let grant = settled(&alice, &gid).await;
    assert_eq!(grant["enforcement"]["status"], "open", "{grant:#}");
    let mine: Vec<_> =
        instances(&ec2, &db).await.into_iter().filter(|i| instance_tags(i).get("ajar:grant") == Some(&gid)).collect();
    assert_eq!(mine.len(), 1, "{mine:#?}");
    let claimed = mine[0].instance_id().unwrap_or_default().to_owned();
    assert!(warm_ids.contains(&claimed), "the grant took a warm instance ({claimed}), not a new one ({warm_ids:?})");
    let tags = instance_tags(&mine[0]);
    assert!(!tags.contains_key("ajar:pool"), "a claimed instance leaves the pool: {tags:?}");
    assert_eq!(tags.get("ajar:source").map(String::as_str), Some("10.70.50.7/32"), "{tags:?}");
    let opened = alice
        .wait_audit("opened", Duration::from_secs(5), |e| e["action"] == "opened" && e["request_id"] == gid.as_str())
        .await;
    eprintln!("aws-instance: a warm open took {} ms against moto", opened["data"]["open_ms"]);

    eventually("the pool is refilled to 2", Duration::from_secs(20), || async {
        let p = pool(ec2.clone(), db.clone()).await;
        (p.len() == 2 && p.iter().all(|i| i.instance_id() != Some(claimed.as_str()))).then_some(())
    })
    .await;

    alice.act(&gid, "release").await.ok(200, "release");
    assert_eq!(state_of(&ec2, &claimed).await, "terminated", "release terminates the grant's instance");
}

/// What the relay in front of the emulator does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Passes it through to the emulator.
    Pass,
    /// Closes it at once: AWS is unreachable.
    Down,
    /// Answers each request with 503 RequestLimitExceeded (AWS throttling)
    /// while `throttle` is above zero, counting down.
    Throttle,
    /// Passes requests through but reports every running instance as still
    /// pending: a launch that never comes up.
    Stall,
}

/// A TCP relay in front of the emulator that the test can switch: every
/// switch cuts the connections it is relaying, so the SDK's pooled
/// connections cannot bypass the new mode.
struct Relay {
    url: String,
    mode: watch::Sender<Mode>,
    throttle: Arc<AtomicU32>,
    /// Requests answered with 503 so far.
    throttled: Arc<AtomicU32>,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr =
            upstream.trim_start_matches("http://").trim_end_matches('/').parse().expect("the emulator's address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let url = format!("http://{}", listener.local_addr().expect("relay address"));
        let (mode, watch) = watch::channel(Mode::Pass);
        let (throttle, throttled) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let (left, count) = (throttle.clone(), throttled.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut watch = watch.clone();
                let current = *watch.borrow_and_update();
                match current {
                    Mode::Down => continue,
                    Mode::Throttle if left.load(Ordering::SeqCst) > 0 => {
                        tokio::spawn(answer_throttled(inbound, left.clone(), count.clone()));
                    }
                    Mode::Stall => {
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stall_launches(inbound, upstream) => {}
                                _ = watch.changed() => {}
                            }
                        });
                    }
                    _ => {
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                            tokio::select! {
                                _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watch.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Self { url, mode, throttle, throttled }
    }

    fn set(&self, on: bool) {
        self.mode.send_replace(if on { Mode::Pass } else { Mode::Down });
    }

    /// Throttles the next `n` requests, then passes again.
    fn throttle_next(&self, n: u32) {
        self.throttle.store(n, Ordering::SeqCst);
        self.mode.send_replace(Mode::Throttle);
    }

    fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    fn throttled(&self) -> u32 {
        self.throttled.load(Ordering::SeqCst)
    }
}

/// Reads HTTP requests on `stream` and answers each with EC2's throttling
/// error while `left` lasts; the connection is closed after each answer.
/// One HTTP/1.1 message (head and the body its content-length announces)
/// from `stream`, or `None` when the peer is gone.
async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(buf)
}

/// Reads HTTP requests on `stream` and answers each with EC2's throttling
/// error while `left` lasts; the connection is closed after each answer.
async fn answer_throttled(mut stream: TcpStream, left: Arc<AtomicU32>, count: Arc<AtomicU32>) {
    use tokio::io::AsyncWriteExt;
    if read_message(&mut stream).await.is_none() {
        return;
    }
    if left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
        return;
    }
    count.fetch_add(1, Ordering::SeqCst);
    let body = "<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>ajar-test</RequestID></Response>";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Relays requests one by one, rewriting `running` to `pending` (the same
/// length, so the content-length holds) in every answer.
async fn stall_launches(mut inbound: TcpStream, upstream: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    while let Some(request) = read_message(&mut inbound).await {
        let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
        if outbound.write_all(&request).await.is_err() {
            return;
        }
        let Some(answer) = read_message(&mut outbound).await else { return };
        let text = String::from_utf8_lossy(&answer).replace("<name>running</name>", "<name>pending</name>");
        if inbound.write_all(text.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_with_backoff_a_bounded_number_of_times() {
    let Some(url) = moto_url("aws throttling") else { return };
    let ec2 = ec2(&url);
    let relay = Relay::start(&url).await;
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let web = unique("web");
    let targets = [sg_target(&web, "10.0.1.5:22", &group, &relay.url, "")];
    // No reconcile pass during the test: every call is the grant's own.
    let server = TestServer::start(config_every(&targets, &[&web], "1h")).await;
    let alice = server.login("alice").await;

    // Throttled twice, then answered: the open succeeds within one call.
    relay.throttle_next(2);
    let started = std::time::Instant::now();
    let first = id(&alice.request(&web, "10m", "INC-4 throttled").await);
    let opened = settled(&alice, &first).await;
    assert_eq!(opened["enforcement"]["status"], "open", "{opened:#}");
    assert_eq!(relay.throttled(), 2, "both throttled attempts were retried");
    eprintln!("aws-sg: opened through 2 throttled attempts in {:?}", started.elapsed());

    // Throttled for good: the SDK gives up after 4 attempts, and the grant
    // fails in words.
    relay.throttle_next(1000);
    let second =
        id(&alice.calling_from("127.0.0.6".parse().expect("ip")).request(&web, "10m", "INC-4 throttled").await);
    let failed = settled(&alice, &second).await;
    assert_eq!(failed["enforcement"]["status"], "failed", "{failed:#}");
    let error = failed["enforcement"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("throttling") && error.contains("RequestLimitExceeded"), "{error}");
    assert_eq!(relay.throttled(), 2 + 4, "at most 4 attempts per call");
    relay.set(true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_emulator_outage_is_reported_retried_and_converges_leaving_nothing_behind() {
    let Some(url) = moto_url("aws outage") else { return };
    let ec2 = ec2(&url);
    let relay = Relay::start(&url).await;
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let app_group = vpc.security_group().await;
    let (web, db) = (unique("web"), unique("db"));
    let targets = [
        sg_target(&web, "10.0.1.5:22", &group, &relay.url, ""),
        instance_target(&db, "10.70.9.9:5432", &vpc, &app_group, &relay.url, ""),
    ];
    let server = TestServer::start(config(&targets, &[&web, &db])).await;
    let alice = server.login("alice").await;

    let before = id(&alice.request(&web, "10m", "INC-4 before").await);
    assert_eq!(settled(&alice, &before).await["enforcement"]["status"], "open");
    assert_eq!(ajar_rules(&ec2, &group).await.len(), 1);

    relay.set(false);
    // Opening during the outage fails in words, is audited and shown.
    let during = id(&alice.calling_from("127.0.0.9".parse().expect("ip")).request(&web, "10m", "INC-4 during").await);
    let failed = settled(&alice, &during).await;
    assert_eq!(failed["enforcement"]["status"], "failed", "{failed:#}");
    let error = failed["enforcement"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot reach AWS") && error.contains("retries"), "{error}");
    let app = id(&ask_from(&alice, &db, "10m", "10.70.50.8").await);
    assert_eq!(settled(&alice, &app).await["enforcement"]["status"], "failed");
    // Closing during the outage fails, is audited, and the rule stays.
    alice.act(&before, "release").await.ok(200, "release");
    alice
        .wait_audit("close_failed", Duration::from_secs(60), |e| {
            e["action"] == "close_failed" && e["request_id"] == before.as_str()
        })
        .await;
    assert_eq!(ajar_rules(&ec2, &group).await.len(), 1, "the rule cannot go while AWS is unreachable");
    let metrics = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let failing = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ajar_audit_events_total{action=\"close_failed\"} "))
        .and_then(|n| n.trim().parse::<u64>().ok());
    assert!(failing.is_some_and(|n| n >= 1), "a failing close shows in the metrics:\n{metrics}");

    relay.set(true);
    // Reconcile converges: the released grant's rule goes, the failed
    // grants open.
    eventually("everything converges once AWS answers", Duration::from_secs(60), || async {
        let during_open = alice.get_request(&during).await["enforcement"]["status"] == "open";
        let app_open = alice.get_request(&app).await["enforcement"]["status"] == "open";
        let closed = alice.get_request(&before).await["enforcement"]["status"] == "closed";
        (during_open && app_open && closed).then_some(())
    })
    .await;
    let rules_now = ajar_rules(&ec2, &group).await;
    assert_eq!(rules_now.len(), 1, "{rules_now:#?}");
    assert!(tags_of(&rules_now[0]).contains_key(&format!("ajar:grant:{during}")));
    assert_eq!(instances(&ec2, &db).await.len(), 1);

    // Ending the rest leaves no rule and no instance behind.
    alice.act(&during, "release").await.ok(200, "release");
    alice.act(&app, "release").await.ok(200, "release");
    assert!(ajar_rules(&ec2, &group).await.is_empty());
    assert!(instances(&ec2, &db).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cleanup_removes_ajars_rules_and_instances_and_nothing_else() {
    let Some(url) = moto_url("aws cleanup") else { return };
    let ec2 = ec2(&url);
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let app_group = vpc.security_group().await;
    let foreign = add_rule(&ec2, &group, "10.2.2.2/32", 22, &[]).await;
    let (web, db) = (unique("web"), unique("db"));
    let targets = [
        sg_target(&web, "10.0.1.5:22", &group, &url, ""),
        instance_target(&db, "10.70.9.9:5432", &vpc, &app_group, &url, ", warm_pool = 1"),
    ];
    let mut server = TestServer::start(config(&targets, &[&web, &db])).await;
    let alice = server.login("alice").await;
    let grant = id(&alice.request(&web, "10m", "INC-4 cleanup").await);
    let app = id(&ask_from(&alice, &db, "10m", "10.70.50.9").await);
    assert_eq!(settled(&alice, &grant).await["enforcement"]["status"], "open");
    assert_eq!(settled(&alice, &app).await["enforcement"]["status"], "open");
    eventually("a grant's instance and a warm one", Duration::from_secs(20), || async {
        (instances(&ec2, &db).await.len() == 2).then_some(())
    })
    .await;
    assert!(server.sigterm().success());

    let out = tokio::process::Command::new(ajar_bin())
        .args(["server", "--cleanup", "--config"])
        .arg(server.config_path())
        .current_dir(server.dir())
        .envs(AWS_TEST_ENV.iter().copied())
        .output()
        .await
        .expect("run ajar server --cleanup");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("revoked 1 security-group rules") && stdout.contains("terminated 2 app servers"),
        "{stdout}"
    );
    assert!(ajar_rules(&ec2, &group).await.is_empty(), "cleanup left a rule");
    assert!(instances(&ec2, &db).await.is_empty(), "cleanup left an instance");
    let left: Vec<String> =
        rules(&ec2, &group).await.iter().map(|r| r.security_group_rule_id().unwrap_or_default().to_owned()).collect();
    assert!(left.contains(&foreign), "cleanup removed a rule ajar did not make: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_never_runs_is_terminated_at_launch_timeout_and_retried() {
    let Some(url) = moto_url("aws launch timeout") else { return };
    let ec2 = ec2(&url);
    let relay = Relay::start(&url).await;
    let vpc = Vpc::new(&ec2).await;
    let group = vpc.security_group().await;
    let db = unique("db");
    let targets = [instance_target(&db, "10.70.9.9:5432", &vpc, &group, &relay.url, ", launch_timeout = \"10s\"")];
    let server = TestServer::start(config(&targets, &[&db])).await;
    let alice = server.login("alice").await;

    relay.stall();
    let asked = std::time::Instant::now();
    let gid = id(&ask_from(&alice, &db, "10m", "10.70.50.10").await);
    let failed = enforcement_in(&alice, &gid, &["failed"]).await;
    let waited = asked.elapsed();
    let error = failed["enforcement"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not reach running within 10 s (launch_timeout)") && error.contains("terminated"),
        "{error}"
    );
    assert!(waited >= Duration::from_secs(10), "gave up after {waited:?}, before launch_timeout");
    eprintln!("aws-instance: a launch that never ran failed after {waited:?} (launch_timeout 10 s)");
    // The instance that did not come up is gone (moto itself is not stalled).
    let stuck = ec2
        .describe_instances()
        .filters(Filter::builder().name("tag:ajar:grant").values(&gid).build())
        .send()
        .await
        .expect("list the grant's instances");
    let states: Vec<String> = stuck
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str().to_owned()).unwrap_or_default())
        .collect();
    // Reconcile may already be waiting on a second launch; the first one is
    // terminated, and never more than one is live.
    let terminated = states.iter().filter(|s| *s == "terminated").count();
    assert!(terminated >= 1 && states.len() - terminated <= 1, "left behind: {states:?}");

    // Once instances come up again, reconcile opens the grant.
    relay.set(true);
    let opened = enforcement_in(&alice, &gid, &["open"]).await;
    assert_eq!(opened["enforcement"]["status"], "open", "{opened:#}");
    assert_eq!(instances(&ec2, &db).await.len(), 1);
    alice.act(&gid, "release").await.ok(200, "release");
    assert!(instances(&ec2, &db).await.is_empty());
}
