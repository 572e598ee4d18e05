//! `driver = "aws-sg"`: a grant is an ingress rule for its source in the
//! target's security group.
//!
//! One rule per (source, port): AWS refuses a second identical rule, so two
//! grants for the same source share it, each with its own
//! `ajar:grant:<id>` tag holding its end. Closing a grant deletes its tag,
//! and the rule with the last one. Rules are found by their `ajar:target`
//! tag; a rule ajar did not tag is never changed.

use std::collections::{BTreeMap, BTreeSet};

use ajar_domain::{AwsApi, AwsSgSettings, DriverKind, DriverSettings, RequestId, SourceNet, Target};
use ajar_enforce::{Driver, DriverError, GrantSpec, Observation, Observed, Opened};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, IpPermission, IpRange, Ipv6Range, ResourceType, SecurityGroupRule, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use chrono::Utc;
use ipnet::IpNet;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::client::Clients;
use crate::failure::describe;
use crate::tags;

/// AWS's default established-TCP tracking timeout: 5 days.
const DEFAULT_TCP_ESTABLISHED_SECS: i32 = 432_000;
/// Above this, `configure` warns that connections outlive their rules.
const ESTABLISHED_WARN_SECS: i32 = 3600;

/// A security group ajar has written rules to, with the client for it.
#[derive(Clone)]
struct Group {
    id: String,
    client: Client,
}

#[derive(Default)]
struct State {
    /// Target name → its settings and group.
    targets: BTreeMap<String, (AwsSgSettings, Group)>,
    /// Every group configured since start, so that the rules of a target
    /// removed from the config are still found and closed.
    groups: BTreeMap<(AwsApi, String), Group>,
}

/// The security-group driver. Changes go through one mutex: opening and
/// closing read a rule's tags, then change them.
#[derive(Default)]
pub struct AwsSecurityGroup {
    clients: Clients,
    state: Mutex<State>,
}

impl AwsSecurityGroup {
    pub fn new() -> Self {
        Self::default()
    }

    /// Warns when a connection can outlive its rule by long: AWS keeps
    /// tracked connections through a revoke until they idle out.
    async fn check_interfaces(client: &Client, target: &str, settings: &AwsSgSettings) {
        if settings.network_interface_ids.is_empty() {
            return;
        }
        let answer = client
            .describe_network_interfaces()
            .set_network_interface_ids(Some(settings.network_interface_ids.clone()))
            .send()
            .await;
        let interfaces = match answer {
            Ok(a) => a.network_interfaces.unwrap_or_default(),
            Err(e) => {
                let e = describe("read the network interfaces' connection tracking", e);
                warn!(target_name = target, error = %e, "aws-sg: cannot check how long established connections last");
                return;
            }
        };
        for eni in interfaces {
            let secs = eni
                .connection_tracking_configuration()
                .and_then(|c| c.tcp_established_timeout())
                .unwrap_or(DEFAULT_TCP_ESTABLISHED_SECS);
            let id = eni.network_interface_id().unwrap_or("?");
            if secs > ESTABLISHED_WARN_SECS {
                warn!(
                    target_name = target, interface = id, tcp_established_timeout = secs,
                    "aws-sg: connections established during a grant survive its end for up to {secs} s, because AWS does not cut tracked connections when a rule is revoked; lower it with `aws ec2 modify-network-interface-attribute --network-interface-id {id} --connection-tracking-specification TcpEstablishedTimeout=60`"
                );
            } else {
                info!(
                    target_name = target,
                    interface = id,
                    tcp_established_timeout = secs,
                    "aws-sg: established connections idle out within {secs} s of a grant's end"
                );
            }
        }
    }
}

impl AwsSecurityGroup {
    /// Revokes every rule ajar tagged in the groups of the configured
    /// targets. Returns how many went; rules ajar did not tag stay.
    async fn revoke_all(&self) -> Result<usize, DriverError> {
        let state = self.state.lock().await;
        let mut removed = 0;
        for group in state.groups.values() {
            for rule in list_rules(group, Some(tags::TARGET)).await? {
                revoke(group, rule.security_group_rule_id().unwrap_or_default()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl Driver for AwsSecurityGroup {
    /// Builds a client per target and checks that its group exists. A group
    /// AWS says is missing, or that ajar may not read, refuses the config;
    /// an unreachable AWS only warns (the reconciler retries every grant).
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let mut state = self.state.lock().await;
        let mut configured = BTreeMap::new();
        for target in targets {
            let DriverSettings::AwsSg(settings) = &target.driver else {
                return Err(DriverError::wrong_driver(DriverKind::AwsSg, target));
            };
            let client = self.clients.get(&settings.api).await?;
            let answer = client.describe_security_groups().group_ids(&settings.security_group_id).send().await;
            if let Err(e) = answer {
                let e = describe(&format!("read security group {}", settings.security_group_id), e);
                if !e.transient {
                    return Err(DriverError::permanent(format!("target {}: {e}", target.name)));
                }
                warn!(target_name = %target.name, error = %e, "aws-sg: cannot check the security group now; grants are retried until AWS answers");
            }
            Self::check_interfaces(&client, target.name.as_str(), settings).await;
            let group = Group { id: settings.security_group_id.clone(), client };
            state.groups.insert((settings.api.clone(), group.id.clone()), group.clone());
            configured.insert(target.name.to_string(), (settings.clone(), group));
        }
        if !configured.is_empty() {
            info!(targets = configured.len(), "aws-sg: security groups checked");
        }
        state.targets = configured;
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let state = self.state.lock().await;
        let name = grant.target.name.as_str();
        let Some((settings, group)) = state.targets.get(name) else {
            return Err(DriverError::transient(format!(
                "target {name} is not configured for aws-sg yet; it will be at the next reconcile"
            )));
        };
        let cidr = grant.source.net();
        let grant_tag = Tag::builder()
            .key(format!("{}{}", tags::GRANT_PREFIX, grant.id))
            .value(tags::end_text(grant.ends_at))
            .build();
        // The group's rules are read once; the rules this call adds count
        // toward the quota as `added`.
        let mut rules = list_rules(group, None).await?;
        let mut added = 0;
        for &port in &settings.ports {
            // A second writer (another replica) may add the same rule between
            // our read and our write; AWS then says "duplicate", and the
            // second round reads again and tags the rule that writer added.
            for round in 0..2 {
                if round == 1 {
                    rules = list_rules(group, None).await?;
                    added = 0;
                }
                let same = rules.iter().find(|r| {
                    !r.is_egress.unwrap_or(false)
                        && r.ip_protocol() == Some(settings.protocol.as_str())
                        && r.from_port() == Some(i32::from(port))
                        && r.to_port() == Some(i32::from(port))
                        && rule_cidr(r) == Some(cidr)
                });
                if let Some(rule) = same {
                    let rule_id = rule.security_group_rule_id().unwrap_or_default().to_owned();
                    if !rule.tags().iter().any(|t| t.key() == Some(tags::TARGET)) {
                        return Err(DriverError::permanent(format!(
                            "security group {} already has a rule admitting {cidr} on {}/{port} that ajar did not add ({rule_id}): that is standing access; remove it, ajar neither adopts nor deletes rules it did not make",
                            group.id,
                            settings.protocol.as_str()
                        )));
                    }
                    group
                        .client
                        .create_tags()
                        .resources(&rule_id)
                        .tags(grant_tag.clone())
                        .send()
                        .await
                        .map_err(|e| describe(&format!("tag rule {rule_id} with grant {}", grant.id), e))?;
                    break;
                }
                let ingress = rules.iter().filter(|r| !r.is_egress.unwrap_or(false)).count() + added;
                if ingress >= settings.rule_quota as usize {
                    return Err(quota_error(&group.id, settings.rule_quota));
                }
                match authorize(group, settings, grant, port, &grant_tag).await {
                    Ok(()) => {
                        added += 1;
                        break;
                    }
                    Err(e) if e.code() == Some("InvalidPermission.Duplicate") && round == 0 => continue,
                    Err(e) if e.code() == Some("RulesPerSecurityGroupLimitExceeded") => {
                        return Err(quota_error(&group.id, settings.rule_quota));
                    }
                    Err(e) => return Err(describe(&format!("add the rule for grant {} to {}", grant.id, group.id), e)),
                }
            }
        }
        info!(grant = %grant.id, target_name = name, group = %group.id, source = %grant.source, ends_at = %grant.ends_at, "aws-sg: grant opened");
        connect(&grant.target, settings)
            .ok_or_else(|| DriverError::permanent(format!("target {name} has an address ajar cannot read")))
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let state = self.state.lock().await;
        let key = format!("{}{id}", tags::GRANT_PREFIX);
        for group in state.groups.values() {
            for rule in list_rules(group, Some(tags::TARGET)).await? {
                if !rule.tags().iter().any(|t| t.key() == Some(key.as_str())) {
                    continue;
                }
                let rule_id = rule.security_group_rule_id().unwrap_or_default();
                let others = rule
                    .tags()
                    .iter()
                    .filter(|t| t.key().is_some_and(|k| k.starts_with(tags::GRANT_PREFIX) && k != key))
                    .count();
                if others > 0 {
                    group
                        .client
                        .delete_tags()
                        .resources(rule_id)
                        .tags(Tag::builder().key(&key).build())
                        .send()
                        .await
                        .map_err(|e| describe(&format!("untag rule {rule_id} from grant {id}"), e))?;
                } else {
                    revoke(group, rule_id).await?;
                }
                info!(grant = %id, group = %group.id, rule = rule_id, shared = others > 0, "aws-sg: grant closed");
            }
        }
        Ok(())
    }

    /// Every grant ajar's rules still stand for. A grant counts as open only
    /// when every port of its target has its rule. Rules tagged by ajar
    /// that stand for no grant are revoked here. A rule does not end on its
    /// own, so nothing is reported as ended early.
    async fn observe(&self) -> Result<Observation, DriverError> {
        let state = self.state.lock().await;
        // (grant, target) → source, end and the ports seen.
        let mut seen: BTreeMap<(RequestId, String), (SourceNet, chrono::DateTime<Utc>, BTreeSet<i32>)> =
            BTreeMap::new();
        for group in state.groups.values() {
            for rule in list_rules(group, Some(tags::TARGET)).await? {
                let rule_id = rule.security_group_rule_id().unwrap_or_default();
                let target = rule.tags().iter().find(|t| t.key() == Some(tags::TARGET)).and_then(|t| t.value());
                let grants: Vec<(RequestId, chrono::DateTime<Utc>)> =
                    rule.tags().iter().filter_map(|t| tags::rule_grant(t.key()?, t.value()?)).collect();
                let source = rule_cidr(&rule).and_then(|c| SourceNet::parse(&c.to_string()).ok());
                let (Some(target), Some(source), false) = (target, source, grants.is_empty()) else {
                    warn!(group = %group.id, rule = rule_id, "aws-sg: revoking a rule tagged by ajar that stands for no grant");
                    revoke(group, rule_id).await?;
                    continue;
                };
                for (id, ends_at) in grants {
                    let entry = seen.entry((id, target.to_owned())).or_insert((source, ends_at, BTreeSet::new()));
                    entry.2.extend(rule.from_port());
                }
            }
        }
        let open = seen
            .into_iter()
            .filter(|((_, target), (_, _, ports))| match state.targets.get(target) {
                Some((settings, _)) => settings.ports.iter().all(|p| ports.contains(&i32::from(*p))),
                None => true,
            })
            .map(|((id, target), (source, ends_at, _))| Observed { id, target, source, ends_at })
            .collect();
        Ok(Observation { open, ended_early: Vec::new() })
    }

    /// Clients connect straight to the target, whichever grant: the rule
    /// only lets them in.
    fn connect_info(&self, target: &Target, _grant: Option<&RequestId>) -> Option<Opened> {
        match &target.driver {
            DriverSettings::AwsSg(settings) => connect(target, settings),
            _ => None,
        }
    }

    /// Revokes every rule ajar tagged in the groups of `targets`; rules
    /// ajar did not tag stay. Without targets there is no group to look in.
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        self.configure(targets).await.map_err(|e| e.context("cannot reach the aws-sg targets' security groups"))?;
        let removed = self.revoke_all().await.map_err(|e| e.context("cannot revoke ajar's security-group rules"))?;
        if removed == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "revoked {removed} security-group rules tagged by ajar in the aws-sg targets' groups; rules ajar did not tag are untouched"
        )])
    }
}

/// The target's host and the first port a grant opens.
fn connect(target: &Target, settings: &AwsSgSettings) -> Option<Opened> {
    let (host, _) = target.address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Some(Opened { host, port: *settings.ports.first()? })
}

fn quota_error(group: &str, quota: u32) -> DriverError {
    DriverError::permanent(format!(
        "security group {group} already holds {quota} inbound rules, its quota (AWS \"Inbound or outbound rules per security group\"; rule_quota in this target's aws_sg table), so ajar cannot add a rule for this grant; it retries when a grant ends. Ask AWS to raise the quota and set rule_quota to match, or spread targets over more groups"
    ))
}

/// The rule's source network, whichever family.
fn rule_cidr(rule: &SecurityGroupRule) -> Option<IpNet> {
    rule.cidr_ipv4().or(rule.cidr_ipv6()).and_then(|c| c.parse::<IpNet>().ok()).map(|n| n.trunc())
}

/// Every rule of `group`, or only those carrying tag key `tag_key`.
async fn list_rules(group: &Group, tag_key: Option<&str>) -> Result<Vec<SecurityGroupRule>, DriverError> {
    let mut rules = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut call = group
            .client
            .describe_security_group_rules()
            .filters(Filter::builder().name("group-id").values(&group.id).build())
            .max_results(1000)
            .set_next_token(next.take());
        if let Some(key) = tag_key {
            call = call.filters(Filter::builder().name("tag-key").values(key).build());
        }
        let page = call.send().await.map_err(|e| describe(&format!("list the rules of {}", group.id), e))?;
        rules.extend(page.security_group_rules.unwrap_or_default());
        match page.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => return Ok(rules),
        }
    }
}

/// Adds the rule for `grant` on `port`, tagged with the target and grant.
async fn authorize(
    group: &Group,
    settings: &AwsSgSettings,
    grant: &GrantSpec,
    port: u16,
    grant_tag: &Tag,
) -> Result<
    (),
    aws_sdk_ec2::error::SdkError<
        aws_sdk_ec2::operation::authorize_security_group_ingress::AuthorizeSecurityGroupIngressError,
    >,
> {
    let description = description(grant);
    let net = grant.source.net();
    let permission = IpPermission::builder()
        .ip_protocol(settings.protocol.as_str())
        .from_port(i32::from(port))
        .to_port(i32::from(port));
    let permission = match net {
        IpNet::V4(_) => {
            permission.ip_ranges(IpRange::builder().cidr_ip(net.to_string()).description(description).build())
        }
        IpNet::V6(_) => {
            permission.ipv6_ranges(Ipv6Range::builder().cidr_ipv6(net.to_string()).description(description).build())
        }
    };
    let tagging = TagSpecification::builder()
        .resource_type(ResourceType::SecurityGroupRule)
        .tags(Tag::builder().key(tags::TARGET).value(grant.target.name.as_str()).build())
        .tags(grant_tag.clone())
        .build();
    group
        .client
        .authorize_security_group_ingress()
        .group_id(&group.id)
        .ip_permissions(permission.build())
        .tag_specifications(tagging)
        .send()
        .await
        .map(drop)
}

/// Revokes a rule by its id; a rule already gone is fine.
async fn revoke(group: &Group, rule_id: &str) -> Result<(), DriverError> {
    match group.client.revoke_security_group_ingress().group_id(&group.id).security_group_rule_ids(rule_id).send().await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code().is_some_and(|c| c.ends_with("NotFound")) => Ok(()),
        Err(e) => Err(describe(&format!("revoke rule {rule_id} in {}", group.id), e)),
    }
}

/// "ajar grant r… for alice until 2026-12-01T03:00:00.000Z", in the
/// characters AWS allows in a rule description (others become `_`).
fn description(grant: &GrantSpec) -> String {
    let text = format!("ajar grant {} for {} until {}", grant.id, grant.requester, tags::end_text(grant.ends_at));
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(c) { c } else { '_' })
        .take(255)
        .collect()
}
