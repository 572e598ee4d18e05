//! `driver = "aws-instance"`: a grant is an app server of its own. The
//! instance is launched (or taken from a warm pool) tagged with the grant,
//! its boot script forwards `listen_port` to the target for the grant's
//! source only and powers it off at the grant's end, and ajar terminates
//! it on close. After a restart ajar finds its instances by their tags.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ajar_domain::{AwsApi, AwsInstanceSettings, DriverKind, DriverSettings, RequestId, SourceNet, Target, Timestamp};
use ajar_enforce::clock::Clock;
use ajar_enforce::{Driver, DriverError, EndedEarly, GrantSpec, Observation, Observed, Opened};
use aws_sdk_ec2::types::{
    Filter, HttpTokensState, IamInstanceProfileSpecification, Instance, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceMetadataTagsState, InstanceStateName, InstanceType, ResourceType,
    ShutdownBehavior, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use base64::Engine as _;
use ipnet::IpNet;
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::client::Clients;
use crate::failure::describe;
use crate::tags;
use crate::userdata::{self, Mode};

/// How often a launch is polled until the instance runs.
const POLL: Duration = Duration::from_millis(500);

/// A target's settings with the client for its region and endpoint.
#[derive(Clone)]
struct Configured {
    settings: AwsInstanceSettings,
    client: Client,
    /// Digest of the launch settings (`ajar:config`).
    digest: String,
}

#[derive(Default)]
struct State {
    targets: BTreeMap<String, Configured>,
    /// Every endpoint configured since start with the names of the targets
    /// it served, so that instances of a target removed from the config are
    /// still found and terminated. Only instances tagged with one of these
    /// names are ajar's: another deployment's targets are left alone.
    apis: BTreeMap<AwsApi, (Client, BTreeSet<String>)>,
}

struct Inner {
    clients: Clients,
    /// What time it is, to tell an early end from the end.
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Where each open grant's instance is reached, for `connect_info`.
    addresses: std::sync::Mutex<BTreeMap<RequestId, Opened>>,
}

/// The app-server driver.
#[derive(Clone)]
pub struct AwsInstance {
    inner: Arc<Inner>,
}

/// What ajar reads from one of its instances.
struct Seen {
    id: String,
    state: InstanceStateName,
    tags: BTreeMap<String, String>,
    address: Option<IpAddr>,
    launched: Option<i64>,
}

impl Seen {
    fn of(instance: &Instance) -> Self {
        let tags = instance
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
            .collect();
        let address =
            instance.public_ip_address().or(instance.private_ip_address()).and_then(|a| a.parse::<IpAddr>().ok());
        Self {
            id: instance.instance_id().unwrap_or_default().to_owned(),
            state: instance.state().and_then(|s| s.name()).cloned().unwrap_or(InstanceStateName::Pending),
            tags,
            address,
            launched: instance.launch_time().map(|t| t.secs()),
        }
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    fn is_live(&self) -> bool {
        matches!(self.state, InstanceStateName::Pending | InstanceStateName::Running)
    }
}

impl AwsInstance {
    /// A driver that has configured nothing yet and reads the time from
    /// `clock`. It calls AWS only for targets that use it.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Arc::new(Inner {
                clients: Clients::default(),
                clock,
                state: Mutex::new(State::default()),
                addresses: std::sync::Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn remember(&self, id: &RequestId, opened: Option<Opened>) {
        let mut addresses = self.inner.addresses.lock().unwrap_or_else(|e| e.into_inner());
        match opened {
            Some(o) => addresses.insert(id.clone(), o),
            None => addresses.remove(id),
        };
    }

    /// Tops the warm pool of every configured target up to its size and
    /// terminates pool instances that are surplus, of an older config, or
    /// of a target that is gone.
    async fn maintain_pools(
        state: &State,
        instances: &[Seen],
        api: &AwsApi,
        client: &Client,
    ) -> Result<(), DriverError> {
        let mut doomed = Vec::new();
        let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
        for seen in instances.iter().filter(|s| s.tag(tags::GRANT).is_none()) {
            let Some(pool) = seen.tag(tags::POOL).filter(|_| seen.is_live()) else {
                doomed.push(seen.id.clone());
                continue;
            };
            let wanted = state.targets.get(pool).filter(|c| c.settings.api == *api && c.settings.warm_pool > 0);
            match wanted {
                Some(c) if seen.tag(tags::CONFIG) == Some(c.digest.as_str()) => {
                    let count = counts.entry(pool).or_default();
                    if *count < c.settings.warm_pool {
                        *count += 1;
                    } else {
                        doomed.push(seen.id.clone());
                    }
                }
                _ => doomed.push(seen.id.clone()),
            }
        }
        if !doomed.is_empty() {
            info!(instances = ?doomed, "aws-instance: terminating warm-pool instances that are surplus or out of date");
            terminate(client, &doomed).await?;
        }
        for (name, c) in state.targets.iter().filter(|(_, c)| c.settings.api == *api) {
            let have = counts.get(name.as_str()).copied().unwrap_or(0);
            for _ in have..c.settings.warm_pool {
                let id = launch(c, name, None).await?;
                info!(target_name = %name, instance = %id, "aws-instance: launched a warm-pool instance");
            }
        }
        Ok(())
    }

    /// Refills the pools of `api` in the background after a claim.
    fn refill_later(&self, api: AwsApi, client: Client) {
        let this = self.clone();
        tokio::spawn(async move {
            let state = this.inner.state.lock().await;
            let names: Vec<String> =
                state.apis.get(&api).map(|(_, names)| names.iter().cloned().collect()).unwrap_or_default();
            let result = match list(&client, &names, &[]).await {
                Ok(instances) => Self::maintain_pools(&state, &instances, &api, &client).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                warn!(error = %e, "aws-instance: cannot refill the warm pool now; the next reconcile retries");
            }
        });
    }

    /// Terminates every instance of the configured targets, assigned or
    /// warm. Returns their ids.
    async fn terminate_all(&self) -> Result<Vec<String>, DriverError> {
        let state = self.inner.state.lock().await;
        let mut ended = Vec::new();
        for (client, names) in state.apis.values() {
            let names: Vec<String> = names.iter().cloned().collect();
            let ids: Vec<String> = list(client, &names, &[]).await?.into_iter().map(|s| s.id).collect();
            if !ids.is_empty() {
                terminate(client, &ids).await?;
                ended.extend(ids);
            }
        }
        Ok(ended)
    }

    /// Every grant that has a live instance. Along the way: extra instances
    /// of one grant, stopped ones, and ones whose tags make no sense are
    /// terminated, and the warm pools are topped up.
    async fn live_grants(&self) -> Result<Vec<Observed>, DriverError> {
        let state = self.inner.state.lock().await;
        let mut observed = Vec::new();
        let mut addresses = BTreeMap::new();
        for (api, (client, names)) in &state.apis {
            let names: Vec<String> = names.iter().cloned().collect();
            let instances = list(client, &names, &[]).await?;
            let mut doomed = Vec::new();
            let mut by_grant: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
            for seen in instances.iter().filter(|s| s.tag(tags::GRANT).is_some()) {
                if !seen.is_live() {
                    if seen.state != InstanceStateName::ShuttingDown && seen.state != InstanceStateName::Terminated {
                        doomed.push(seen.id.clone());
                    }
                    continue;
                }
                by_grant.entry(seen.tag(tags::GRANT).unwrap_or_default()).or_default().push(seen);
            }
            for (grant, mut seen) in by_grant {
                // One instance per grant: the oldest stays.
                seen.sort_by_key(|s| (s.launched, s.id.clone()));
                doomed.extend(seen.iter().skip(1).map(|s| s.id.clone()));
                let keep = seen[0];
                let parsed = (|| {
                    let id = RequestId::parse(grant)?;
                    let source = SourceNet::parse(keep.tag(tags::SOURCE)?).ok()?;
                    let ends_at = tags::parse_end(keep.tag(tags::ENDS_AT)?)?;
                    Some(Observed { id, target: keep.tag(tags::TARGET)?.to_owned(), source, ends_at })
                })();
                match parsed {
                    Some(o) => {
                        if let (Some(address), Some(c)) = (keep.address, state.targets.get(&o.target)) {
                            addresses.insert(
                                o.id.clone(),
                                Opened { host: address.to_string(), port: c.settings.listen_port },
                            );
                        }
                        observed.push(o);
                    }
                    None => {
                        warn!(instance = %keep.id, "aws-instance: terminating an instance tagged by ajar for no grant it can read");
                        doomed.push(keep.id.clone());
                    }
                }
            }
            if !doomed.is_empty() {
                terminate(client, &doomed).await?;
            }
            Self::maintain_pools(&state, &instances, api, client).await?;
        }
        *self.inner.addresses.lock().unwrap_or_else(|e| e.into_inner()) = addresses;
        Ok(observed)
    }

    /// Grants whose app server shut itself down (`poweroff` inside it) well
    /// before the grant's end: the idle watch of `idle_timeout`, or someone
    /// on the instance. AWS names such a shutdown
    /// `Client.InstanceInitiatedShutdown`; terminations through the API
    /// (ajar's own closes) are user-initiated and not reported.
    async fn ended_early(&self) -> Result<Vec<EndedEarly>, DriverError> {
        let state = self.inner.state.lock().await;
        let now = self.inner.clock.now();
        let mut ended = Vec::new();
        for (client, names) in state.apis.values() {
            let names: Vec<String> = names.iter().cloned().collect();
            let filters = [
                Filter::builder().name(format!("tag:{}", tags::TARGET)).set_values(Some(names)).build(),
                Filter::builder().name("tag-key").values(tags::GRANT).build(),
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(vec!["shutting-down".to_owned(), "terminated".to_owned()]))
                    .build(),
                Filter::builder().name("state-reason-code").values(SELF_SHUTDOWN).build(),
            ];
            let answer = client
                .describe_instances()
                .set_filters(Some(filters.to_vec()))
                .send()
                .await
                .map_err(|e| describe("list app servers that shut themselves down", e))?;
            for seen in answer.reservations().iter().flat_map(|r| r.instances()).map(Seen::of) {
                let idle =
                    seen.tag(tags::TARGET).and_then(|t| state.targets.get(t)).and_then(|c| c.settings.idle_timeout);
                if let Some(found) = self_ended(&seen, idle, now) {
                    ended.push(found);
                }
            }
        }
        Ok(ended)
    }
}

#[async_trait::async_trait]
impl Driver for AwsInstance {
    /// Builds the clients and checks each target's subnet. A subnet AWS
    /// says is missing, or that ajar may not read, refuses the config; an
    /// unreachable AWS only warns. Pools are filled by the reconcile that
    /// follows.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let mut state = self.inner.state.lock().await;
        let mut configured = BTreeMap::new();
        for target in targets {
            let DriverSettings::AwsInstance(settings) = &target.driver else {
                return Err(DriverError::wrong_driver(DriverKind::AwsInstance, target));
            };
            let client = self.inner.clients.get(&settings.api).await?;
            if let Err(e) = client.describe_subnets().subnet_ids(&settings.subnet_id).send().await {
                let e = describe(&format!("read subnet {}", settings.subnet_id), e);
                if !e.transient {
                    return Err(DriverError::permanent(format!("target {}: {e}", target.name)));
                }
                warn!(target_name = %target.name, error = %e, "aws-instance: cannot check the subnet now; grants are retried until AWS answers");
            }
            state
                .apis
                .entry(settings.api.clone())
                .or_insert_with(|| (client.clone(), BTreeSet::new()))
                .1
                .insert(target.name.to_string());
            let digest = digest(settings);
            configured.insert(target.name.to_string(), Configured { settings: settings.clone(), client, digest });
        }
        if !configured.is_empty() {
            info!(targets = configured.len(), "aws-instance: targets checked");
        }
        state.targets = configured;
        Ok(())
    }

    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let started = Instant::now();
        let name = grant.target.name.as_str();
        let source = match grant.source.net() {
            IpNet::V4(net) => net,
            IpNet::V6(_) => {
                return Err(DriverError::permanent(format!(
                    "source {} is IPv6, and aws-instance app servers forward IPv4 only; request access from an IPv4 address",
                    grant.source
                )))
            }
        };
        let (configured, instance_id, warm) = {
            let state = self.inner.state.lock().await;
            let Some(c) = state.targets.get(name).cloned() else {
                return Err(DriverError::transient(format!(
                    "target {name} is not configured for aws-instance yet; it will be at the next reconcile"
                )));
            };
            let instances = list(&c.client, &[name.to_owned()], &[]).await?;
            let mine = instances.iter().find(|s| s.is_live() && s.tag(tags::GRANT) == Some(grant.id.as_str()));
            if let Some(seen) = mine {
                let end = tags::end_text(grant.ends_at);
                if seen.tag(tags::ENDS_AT) != Some(end.as_str()) {
                    c.client
                        .create_tags()
                        .resources(&seen.id)
                        .tags(Tag::builder().key(tags::ENDS_AT).value(end).build())
                        .send()
                        .await
                        .map_err(|e| {
                            describe(&format!("retag instance {} with grant {}'s end", seen.id, grant.id), e)
                        })?;
                }
                (c, seen.id.clone(), false)
            } else if let Some(pooled) = instances.iter().find(|s| {
                s.state == InstanceStateName::Running
                    && s.tag(tags::GRANT).is_none()
                    && s.tag(tags::POOL) == Some(name)
                    && s.tag(tags::CONFIG) == Some(c.digest.as_str())
            }) {
                // Claim: the grant's tags first (the pool script waits for
                // them), then the instance leaves the pool.
                c.client
                    .create_tags()
                    .resources(&pooled.id)
                    .set_tags(Some(grant_tags(grant, &source)))
                    .send()
                    .await
                    .map_err(|e| describe(&format!("tag warm instance {} for grant {}", pooled.id, grant.id), e))?;
                c.client
                    .delete_tags()
                    .resources(&pooled.id)
                    .tags(Tag::builder().key(tags::POOL).build())
                    .send()
                    .await
                    .map_err(|e| describe(&format!("take instance {} out of the warm pool", pooled.id), e))?;
                // Another replica may have claimed the same instance at the
                // same moment; tags have no compare-and-set, so read them
                // back. A lost race ends the instance: its script may have
                // read either grant's source, and serving one grant under
                // the other's tags would outlive that grant.
                let now = describe_one(&c.client, &pooled.id).await?;
                let ours = now.as_ref().is_some_and(|s| {
                    s.tag(tags::GRANT) == Some(grant.id.as_str())
                        && s.tag(tags::SOURCE) == Some(source.to_string().as_str())
                });
                if !ours {
                    terminate(&c.client, std::slice::from_ref(&pooled.id)).await?;
                    return Err(DriverError::transient(format!(
                        "warm instance {} was claimed by another grant at the same moment; ajar terminated it and retries at the next reconcile",
                        pooled.id
                    )));
                }
                (c, pooled.id.clone(), true)
            } else {
                let id = launch(&c, name, Some((grant, &source))).await?;
                (c, id, false)
            }
        };
        if configured.settings.warm_pool > 0 {
            self.refill_later(configured.settings.api.clone(), configured.client.clone());
        }
        let address = match wait_running(&configured, &instance_id).await {
            Ok(a) => a,
            Err(e) => {
                // Ephemeral means ephemeral: an instance that did not come
                // up is not left behind.
                if let Err(t) = terminate(&configured.client, std::slice::from_ref(&instance_id)).await {
                    warn!(instance = %instance_id, error = %t, "aws-instance: cannot terminate an instance that failed to start; reconcile retries");
                }
                return Err(e);
            }
        };
        let opened = Opened { host: address.to_string(), port: configured.settings.listen_port };
        self.remember(&grant.id, Some(opened.clone()));
        info!(
            grant = %grant.id, target_name = name, instance = %instance_id, warm, address = %address,
            open_ms = started.elapsed().as_millis() as u64, "aws-instance: grant opened"
        );
        Ok(opened)
    }

    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        let state = self.inner.state.lock().await;
        for (client, names) in state.apis.values() {
            let names: Vec<String> = names.iter().cloned().collect();
            let doomed: Vec<String> = list(client, &names, &[(tags::GRANT, id.as_str())])
                .await?
                .into_iter()
                .filter(|s| s.state != InstanceStateName::Terminated)
                .map(|s| s.id)
                .collect();
            if !doomed.is_empty() {
                terminate(client, &doomed).await?;
                info!(grant = %id, instances = ?doomed, "aws-instance: grant closed, instance terminated");
            }
        }
        self.remember(id, None);
        Ok(())
    }

    /// What AWS says is open, and which app servers ended before their
    /// grants. Being unable to ask about the early ends does not stop the
    /// rest: the open paths are still worth reconciling, and the next round
    /// asks again.
    async fn observe(&self) -> Result<Observation, DriverError> {
        let ended_early = self.ended_early().await.unwrap_or_else(|e| {
            warn!(error = %e, "aws-instance: cannot ask AWS which app servers shut themselves down; the next reconcile asks again");
            Vec::new()
        });
        let open = self.live_grants().await?;
        Ok(Observation { open, ended_early })
    }

    /// The address differs per grant: the open grant's own instance, as
    /// last observed or opened; nothing for the target as a whole.
    fn connect_info(&self, _target: &Target, grant: Option<&RequestId>) -> Option<Opened> {
        let id = grant?;
        self.inner.addresses.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Terminates every app server of `targets`, granted and warm. Without
    /// targets there is nowhere to look.
    async fn cleanup(&self, targets: &[Target]) -> Result<Vec<String>, DriverError> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        self.configure(targets).await.map_err(|e| e.context("cannot reach the aws-instance targets"))?;
        let ended = self.terminate_all().await.map_err(|e| e.context("cannot terminate ajar's app servers"))?;
        if ended.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![format!(
            "terminated {} app servers (granted and warm) of the aws-instance targets: {}",
            ended.len(),
            ended.join(", ")
        )])
    }
}

/// AWS's state reason for a shutdown from inside the instance.
const SELF_SHUTDOWN: &str = "Client.InstanceInitiatedShutdown";
/// A shutdown this close to the grant's end is the script's own power-off
/// at the end (the instance's clock may run a little ahead), not an early
/// end.
const END_MARGIN_SECS: i64 = 10;

/// The early end `seen` (an instance that shut itself down) stands for, if
/// its grant had not reached its end by `now`.
fn self_ended(seen: &Seen, idle: Option<Duration>, now: Timestamp) -> Option<EndedEarly> {
    let id = RequestId::parse(seen.tag(tags::GRANT)?)?;
    let ends_at = tags::parse_end(seen.tag(tags::ENDS_AT)?)?;
    if ends_at - now <= chrono::Duration::seconds(END_MARGIN_SECS) {
        return None;
    }
    let why = match idle {
        Some(idle) => format!(
            "app server {} forwarded nothing for {} s (idle_timeout) and shut itself down",
            seen.id,
            idle.as_secs()
        ),
        None => format!("app server {} shut itself down before the grant's end", seen.id),
    };
    Some(EndedEarly { id, why })
}

/// The tags that hand an instance to `grant`.
fn grant_tags(grant: &GrantSpec, source: &ipnet::Ipv4Net) -> Vec<Tag> {
    [
        (tags::GRANT, grant.id.to_string()),
        (tags::SOURCE, source.to_string()),
        (tags::ENDS_AT, tags::end_text(grant.ends_at)),
        ("Name", format!("ajar {} {}", grant.target.name, grant.id)),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect()
}

/// Launches an instance for `grant`, or an unassigned warm-pool instance
/// when there is none, and returns its id without waiting for it.
async fn launch(
    c: &Configured,
    target: &str,
    grant: Option<(&GrantSpec, &ipnet::Ipv4Net)>,
) -> Result<String, DriverError> {
    let s = &c.settings;
    let SocketAddr::V4(destination) = s.destination else {
        return Err(DriverError::permanent(format!("target {target} is IPv6; aws-instance forwards IPv4 only")));
    };
    let mode = match grant {
        Some((g, source)) => Mode::Grant { source: *source, ends_unix: g.ends_at.timestamp() },
        None => Mode::Pool,
    };
    let script = userdata::render(&mode, s.listen_port, destination, s.idle_timeout.map(|d| d.as_secs()));
    let mut tag_list: Vec<Tag> = s.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    tag_list.push(Tag::builder().key(tags::TARGET).value(target).build());
    tag_list.push(Tag::builder().key(tags::CONFIG).value(&c.digest).build());
    match grant {
        Some((g, source)) => tag_list.extend(grant_tags(g, source)),
        None => {
            tag_list.push(Tag::builder().key(tags::POOL).value(target).build());
            tag_list.push(Tag::builder().key("Name").value(format!("ajar {target} warm pool")).build());
        }
    }
    let mut call = c
        .client
        .run_instances()
        .image_id(&s.ami)
        .instance_type(InstanceType::from(s.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .subnet_id(&s.subnet_id)
        .set_security_group_ids(Some(s.security_group_ids.clone()))
        .user_data(base64::engine::general_purpose::STANDARD.encode(script))
        // One token per launch: the SDK's own retries of this call reuse it,
        // so a retry after a timeout cannot start a second instance.
        .client_token(format!("ajar-{:016x}", rand::random::<u64>()))
        .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
        .metadata_options(
            InstanceMetadataOptionsRequest::builder()
                .http_endpoint(InstanceMetadataEndpointState::Enabled)
                .http_tokens(HttpTokensState::Required)
                .instance_metadata_tags(InstanceMetadataTagsState::Enabled)
                .build(),
        )
        .tag_specifications(
            TagSpecification::builder().resource_type(ResourceType::Instance).set_tags(Some(tag_list)).build(),
        );
    if let Some(profile) = &s.instance_profile {
        let spec = if profile.starts_with("arn:") {
            IamInstanceProfileSpecification::builder().arn(profile)
        } else {
            IamInstanceProfileSpecification::builder().name(profile)
        };
        call = call.iam_instance_profile(spec.build());
    }
    if let Some(key) = &s.key_name {
        call = call.key_name(key);
    }
    let what = match grant {
        Some((g, _)) => format!("launch an app server for grant {}", g.id),
        None => format!("launch a warm-pool app server for target {target}"),
    };
    let answer = call.send().await.map_err(|e| describe(&what, e))?;
    answer.instances().first().and_then(|i| i.instance_id()).map(str::to_owned).ok_or_else(|| {
        DriverError::transient(format!("AWS did not say which instance it launched when ajar tried to {what}"))
    })
}

/// Waits until `instance` runs (bounded by the launch timeout) and returns
/// the address clients reach it at.
async fn wait_running(c: &Configured, instance: &str) -> Result<IpAddr, DriverError> {
    let deadline = Instant::now() + c.settings.launch_timeout;
    loop {
        match describe_one(&c.client, instance).await? {
            Some(s) if s.state == InstanceStateName::Running => {
                return s.address.ok_or_else(|| {
                    DriverError::permanent(format!("instance {instance} runs but has no IP address; check subnet {}", c.settings.subnet_id))
                })
            }
            Some(s) if s.state != InstanceStateName::Pending => {
                return Err(DriverError::transient(format!(
                    "instance {instance} went to {} instead of running; ajar terminated it and retries at the next reconcile",
                    s.state.as_str()
                )))
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(DriverError::transient(format!(
                "instance {instance} did not reach running within {} s (launch_timeout); ajar terminated it and retries at the next reconcile",
                c.settings.launch_timeout.as_secs()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What AWS says about one instance, if it knows it.
async fn describe_one(client: &Client, instance: &str) -> Result<Option<Seen>, DriverError> {
    let answer = client
        .describe_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|e| describe(&format!("read the state of instance {instance}"), e))?;
    Ok(answer.reservations().iter().flat_map(|r| r.instances()).next().map(Seen::of))
}

/// ajar's instances (tagged `ajar:target` with one of `names`) that are not
/// terminated, with extra `tag = value` filters.
async fn list(client: &Client, names: &[String], tag_filters: &[(&str, &str)]) -> Result<Vec<Seen>, DriverError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut call = client
            .describe_instances()
            .filters(Filter::builder().name(format!("tag:{}", tags::TARGET)).set_values(Some(names.to_vec())).build())
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(["pending", "running", "stopping", "stopped"].map(String::from).to_vec()))
                    .build(),
            )
            .set_next_token(next.take());
        for (key, value) in tag_filters {
            call = call.filters(Filter::builder().name(format!("tag:{key}")).values(*value).build());
        }
        let page = call.send().await.map_err(|e| describe("list ajar's instances", e))?;
        seen.extend(page.reservations().iter().flat_map(|r| r.instances()).map(Seen::of));
        match page.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => return Ok(seen),
        }
    }
}

async fn terminate(client: &Client, ids: &[String]) -> Result<(), DriverError> {
    client
        .terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map(drop)
        .map_err(|e| describe(&format!("terminate {}", ids.join(", ")), e))
}

/// The `ajar:config` digest of everything an instance is launched with.
fn digest(s: &AwsInstanceSettings) -> String {
    let port = s.listen_port.to_string();
    let destination = s.destination.to_string();
    let mut groups = s.security_group_ids.clone();
    groups.sort();
    let groups = groups.join(",");
    let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tags = tags.join(",");
    tags::digest(&[
        &s.ami,
        &s.instance_type,
        &s.subnet_id,
        &groups,
        &port,
        &destination,
        s.instance_profile.as_deref().unwrap_or_default(),
        s.key_name.as_deref().unwrap_or_default(),
        &tags,
        // The boot script itself: a new ajar with a new script does not hand
        // out instances booted with the old one.
        &userdata::render(
            &Mode::Pool,
            s.listen_port,
            std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 1),
            s.idle_timeout.map(|d| d.as_secs()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(tags: &[(&str, &str)]) -> Seen {
        Seen {
            id: "i-0abc1234".to_owned(),
            state: InstanceStateName::Terminated,
            tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            address: None,
            launched: None,
        }
    }

    #[test]
    fn a_self_shutdown_ends_its_grant_only_well_before_the_end() {
        let now = chrono::DateTime::from_timestamp(1_764_558_000, 0).unwrap_or_default();
        let id = RequestId::from_random([3; 12]);
        let later = tags::end_text(now + chrono::Duration::minutes(30));
        let idle = seen(&[(tags::GRANT, id.as_str()), (tags::ENDS_AT, &later)]);
        let ended = self_ended(&idle, Some(Duration::from_secs(600)), now);
        assert_eq!(ended.as_ref().map(|e| &e.id), Some(&id));
        let why = ended.map(|e| e.why).unwrap_or_default();
        assert!(why.contains("i-0abc1234") && why.contains("600 s") && why.contains("idle_timeout"), "{why}");
        assert!(self_ended(&idle, None, now).is_some_and(|e| e.why.contains("before the grant's end")));
        // At the end, the power-off is the script's own: the grant expires.
        let soon = tags::end_text(now + chrono::Duration::seconds(5));
        assert_eq!(self_ended(&seen(&[(tags::GRANT, id.as_str()), (tags::ENDS_AT, &soon)]), None, now), None);
        // Tags ajar cannot read stand for no grant.
        assert_eq!(self_ended(&seen(&[(tags::GRANT, "nonsense"), (tags::ENDS_AT, &later)]), None, now), None);
        assert_eq!(self_ended(&seen(&[(tags::ENDS_AT, &later)]), None, now), None);
    }
}
