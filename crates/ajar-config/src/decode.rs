//! Reading each section of the file into drafts: what could be parsed, with
//! where it was written. A draft keeps every name it saw even when other
//! keys of its entry are wrong, so that the cross-reference checks in
//! `check` do not report a second, misleading error for the same mistake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ajar_domain::{
    DriverKind, DriverSettings, GatewaySettings, GrantDuration, Name, NatSettings, Policy, Subject, Target,
    TargetSelector, User,
};
use toml_edit::Table;

use crate::reader::{Field, Located, Reader, TableView};
use crate::{aws, values, ServerSettings, TlsSettings};

/// Everything read from the file, before cross-references are checked.
pub(crate) struct Drafts {
    pub server: Option<ServerSettings>,
    /// Where the server listens, for the check that no gateway takes the
    /// same address.
    pub server_listen: Option<Located<SocketAddr>>,
    pub access: AccessDraft,
    pub users: Vec<UserDraft>,
    pub targets: Vec<TargetDraft>,
    pub policies: Vec<PolicyDraft>,
    /// `[oidc]`: `None` when invalid, `Some(None)` when absent.
    pub oidc: Option<Option<crate::OidcSettings>>,
    /// `[agents]` with where it listens: `None` when invalid, `Some(None)`
    /// when absent.
    pub agents: Option<Option<(crate::AgentSettings, Located<SocketAddr>)>>,
}

#[derive(Default)]
pub(crate) struct AccessDraft {
    pub admins: Vec<Located<Subject>>,
    pub auditors: Vec<Located<Subject>>,
    /// Groups that exist without a local member.
    pub groups: Vec<Located<Name>>,
}

pub(crate) struct UserDraft {
    pub name: Option<Located<Name>>,
    pub groups: Vec<Name>,
    /// The finished user, when every key of the entry was valid.
    pub user: Option<User>,
}

pub(crate) struct TargetDraft {
    pub name: Option<Located<Name>>,
    pub labels: BTreeMap<String, String>,
    pub listen: Option<Located<SocketAddr>>,
    /// `agent_group`, where it was written.
    pub agent_group: Option<Located<Name>>,
    pub target: Option<Target>,
}

pub(crate) struct PolicyDraft {
    pub name: Option<Located<Name>>,
    pub subjects: Vec<Located<Subject>>,
    pub selectors: Vec<Located<TargetSelector>>,
    pub approvals: Option<Located<u32>>,
    pub approvers: Vec<Located<Subject>>,
    pub policy: Option<Policy>,
}

const TOP_KEYS: &[&str] = &["server", "access", "users", "targets", "policies", "oidc", "agents"];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "database",
    "trusted_proxies",
    "tls",
    "approval_timeout",
    "token_ttl",
    "reconcile_interval",
    "max_pending_per_requester",
    "http_header_timeout",
    "http_idle_timeout",
    "max_api_connections",
    "public_url",
    "metrics_listen",
    "metrics_token_env",
    "metrics_token_file",
];
const TLS_KEYS: &[&str] = &["cert", "key"];
const ACCESS_KEYS: &[&str] = &["admins", "auditors", "groups"];
const USER_KEYS: &[&str] = &["name", "password_hash", "groups"];
const TARGET_KEYS: &[&str] = &[
    "name",
    "address",
    "driver",
    "labels",
    "agent_group",
    "gateway",
    "nftables",
    "iptables",
    "aws_sg",
    "aws_instance",
];
const GATEWAY_KEYS: &[&str] = &["listen", "public_host"];
const NAT_KEYS: &[&str] = &["listen", "enable_forwarding"];
const POLICY_KEYS: &[&str] =
    &["name", "subjects", "targets", "max_duration", "reason_required", "approvals", "approvers", "sources"];

/// The most approvals a policy may ask for; more is a typo, not a process.
const MAX_APPROVALS: i64 = 10;
/// The most pending requests one person may have open at once, at most.
const MAX_PENDING_LIMIT: i64 = 1000;
/// The longest reconcile interval: drift left longer than this is a hole.
const MAX_RECONCILE: Duration = Duration::from_secs(3600);
/// The longest a client may take over a request's headers: longer only
/// helps clients that hold connections open on purpose.
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(300);
/// The longest an API connection may sit without traffic.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The API connection cap's bounds: fewer than 8 lets a handful of clients
/// lock everyone out; more than a million is more than any fd limit.
const API_CONNECTIONS: std::ops::RangeInclusive<i64> = 8..=1_000_000;

const SUBJECT_EXAMPLE: &str = "[\"alice\", \"group:sre\"]";

/// Reads the whole document. `base` is the directory relative paths are
/// resolved against.
pub(crate) fn decode(r: &mut Reader<'_>, root: &Table, base: &Path) -> Drafts {
    let root = r.root(root, TOP_KEYS);
    let (server, server_listen) = match r.required(
        &root,
        "server",
        "a [server] section (it may be empty: listen defaults to 127.0.0.1:8080 and data_dir to ajar-data)",
    ) {
        Some(field) => server(r, &field, base),
        None => (None, None),
    };
    let access = root.get("access").map(|f| access(r, &f)).unwrap_or_default();
    let users = match root.get("users") {
        Some(f) => r.tables(&f, USER_KEYS).iter().map(|t| user(r, t)).collect(),
        None => Vec::new(),
    };
    let targets = match root.get("targets") {
        Some(f) => r.tables(&f, TARGET_KEYS).iter().map(|t| target(r, t)).collect(),
        None => Vec::new(),
    };
    let policies = match root.get("policies") {
        Some(f) => r.tables(&f, POLICY_KEYS).iter().map(|t| policy(r, t)).collect(),
        None => Vec::new(),
    };
    let oidc = match root.get("oidc") {
        Some(f) => {
            let public_url = server.as_ref().and_then(|s| s.public_url.as_deref());
            crate::oidc::oidc(r, &f, base, public_url).map(Some)
        }
        None => Some(None),
    };
    let agents = match root.get("agents") {
        Some(f) => crate::agents::agents(r, &f).map(Some),
        None => Some(None),
    };
    if let Some(None) = &agents {
        for group in targets.iter().filter_map(|t: &TargetDraft| t.agent_group.as_ref()) {
            r.error(
                &group.loc,
                format!(
                    "this target is enforced by the agents of group {:?}, but no [agents] section says where agents connect; \
                     add [agents] listen = \"0.0.0.0:8443\", or remove agent_group to enforce it on this server",
                    group.value.as_str()
                ),
            );
        }
    }
    Drafts { server, server_listen, access, users, targets, policies, oidc, agents }
}

fn server(r: &mut Reader<'_>, field: &Field<'_>, base: &Path) -> (Option<ServerSettings>, Option<Located<SocketAddr>>) {
    let Some(t) = r.table(field, SERVER_KEYS) else {
        return (None, None);
    };
    let listen = match t.get("listen") {
        Some(f) => r.parse(&f, values::listen_addr),
        None => Some(Located { value: SocketAddr::from(([127, 0, 0, 1], 8080)), loc: t.loc.clone() }),
    };
    let data_dir = match t.get("data_dir") {
        Some(f) => path(r, &f, "ajar-data", base),
        None => Some(base.join("ajar-data")),
    };
    let database = match t.get("database") {
        Some(f) => r.string(&f).and_then(|url| {
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Some(Some(url.to_owned()))
            } else {
                r.error(
                    &f.loc,
                    "database must be a PostgreSQL URL such as \"postgres://ajar@127.0.0.1:5432/ajar\"; \
                     leave it out to use SQLite in data_dir"
                        .to_owned(),
                );
                None
            }
        }),
        None => Some(None),
    };
    let trusted_proxies = match t.get("trusted_proxies") {
        Some(f) => r
            .parsed_list(&f, "[\"10.0.0.5\", \"10.1.0.0/24\"]", values::network)
            .map(|nets| nets.into_iter().map(|n| n.value.net()).collect()),
        None => Some(Vec::new()),
    };
    let tls = match t.get("tls") {
        // `None` is an error; `Some(None)` means TLS is off.
        Some(f) => r.table(&f, TLS_KEYS).and_then(|tls| tls_settings(r, &tls, base)).map(Some),
        None => Some(None),
    };
    let approval_timeout = duration(r, &t, "approval_timeout", "1h");
    let token_ttl = duration(r, &t, "token_ttl", "12h");
    let reconcile_interval = duration(r, &t, "reconcile_interval", "10s").and_then(|d| {
        let interval = Duration::from_secs(d.as_secs());
        if interval <= MAX_RECONCILE {
            return Some(interval);
        }
        if let Some(f) = t.get("reconcile_interval") {
            r.error(
                &f.loc,
                format!("{d} is too long between reconcile passes: drift would go unrepaired that long; use 1s to 1h"),
            );
        }
        None
    });
    let max_pending_per_requester = match t.get("max_pending_per_requester") {
        Some(f) => r.integer(&f).and_then(|n| match u32::try_from(n) {
            Ok(ok) if (1..=MAX_PENDING_LIMIT).contains(&n) => Some(ok),
            _ => {
                r.error(
                    &f.loc,
                    format!("{n} is not a limit of pending requests ajar accepts; use 1 to {MAX_PENDING_LIMIT} (default 20)"),
                );
                None
            }
        }),
        None => Some(20),
    };
    let http_header_timeout = bounded_duration(r, &t, "http_header_timeout", "10s", MAX_HEADER_TIMEOUT, "5m");
    let http_idle_timeout = bounded_duration(r, &t, "http_idle_timeout", "60s", MAX_IDLE_TIMEOUT, "1h");
    let max_api_connections = match t.get("max_api_connections") {
        Some(f) => r.integer(&f).and_then(|n| {
            if API_CONNECTIONS.contains(&n) {
                u32::try_from(n).ok()
            } else {
                r.error(
                    &f.loc,
                    format!(
                        "{n} API connections is not a usable cap: use {} to {} (the default is 1024)",
                        API_CONNECTIONS.start(),
                        API_CONNECTIONS.end()
                    ),
                );
                None
            }
        }),
        None => Some(1024),
    };
    let public_url = match t.get("public_url") {
        Some(f) => r.parse(&f, values::public_url).map(|u| Some(u.value)),
        None => Some(None),
    };
    let metrics_listen = match t.get("metrics_listen") {
        Some(f) => r.parse(&f, values::listen_addr).and_then(|addr| {
            if listen.as_ref().is_some_and(|l| l.value == addr.value && addr.value.port() != 0) {
                r.error(
                    &f.loc,
                    format!(
                        "metrics_listen {} is the API's own address (server.listen); choose another port, such as 127.0.0.1:9464",
                        addr.value
                    ),
                );
                return None;
            }
            Some(Some(addr.value))
        }),
        None => Some(None),
    };
    let metrics_token = metrics_token(r, &t, base);
    let settings = (|| {
        Some(ServerSettings {
            listen: listen.as_ref()?.value,
            data_dir: data_dir?,
            database: database?,
            trusted_proxies: trusted_proxies?,
            tls: tls?,
            approval_timeout: approval_timeout?,
            token_ttl: token_ttl?,
            reconcile_interval: reconcile_interval?,
            max_pending_per_requester: max_pending_per_requester?,
            http_header_timeout: http_header_timeout?,
            http_idle_timeout: http_idle_timeout?,
            max_api_connections: max_api_connections?,
            public_url: public_url?,
            metrics_listen: metrics_listen?,
            metrics_token: metrics_token?,
        })
    })();
    (settings, listen)
}

/// A duration under `key` of at most `max` (written `max_text` in the
/// message), or `default` when the key is absent.
fn bounded_duration(
    r: &mut Reader<'_>,
    t: &TableView<'_>,
    key: &str,
    default: &str,
    max: Duration,
    max_text: &str,
) -> Option<Duration> {
    let d = duration(r, t, key, default)?;
    let value = Duration::from_secs(d.as_secs());
    if value <= max {
        return Some(value);
    }
    if let Some(f) = t.get(key) {
        r.error(&f.loc, format!("{d} is too long for {key}: use 1s to {max_text} (the default is {default})"));
    }
    None
}

/// At most one of `metrics_token_env` and `metrics_token_file`. The outer
/// `Option` is validity, the inner one presence.
fn metrics_token(r: &mut Reader<'_>, t: &TableView<'_>, base: &Path) -> Option<Option<crate::SecretRef>> {
    let given: Vec<(&str, Field<'_>)> =
        ["metrics_token_env", "metrics_token_file"].into_iter().filter_map(|k| t.get(k).map(|f| (k, f))).collect();
    match given.as_slice() {
        [] => Some(None),
        [(key, field)] => {
            let text = r.string(field)?;
            if text.trim().is_empty() {
                let example = if *key == "metrics_token_env" { "\"AJAR_METRICS_TOKEN\"" } else { "\"metrics.token\"" };
                r.error(&field.loc, format!("{key} is empty; write one such as {example}"));
                return None;
            }
            Some(Some(if *key == "metrics_token_env" {
                crate::SecretRef::Env(text.to_owned())
            } else {
                crate::SecretRef::File(base.join(text))
            }))
        }
        [_, (_, second), ..] => {
            r.error(
                &second.loc,
                "give the metrics token one way only: metrics_token_env or metrics_token_file".to_owned(),
            );
            None
        }
    }
}

/// TLS settings, or `None` after reporting why they are not valid.
fn tls_settings(r: &mut Reader<'_>, t: &TableView<'_>, base: &Path) -> Option<TlsSettings> {
    let mut file = |key: &str, example: &str| match t.get(key) {
        Some(f) => path(r, &f, example, base),
        None => {
            r.error(
                &t.loc.child(key, None),
                format!("TLS needs both a certificate and a private key; add {key} = \"{example}\" to server.tls"),
            );
            None
        }
    };
    let cert = file("cert", "cert.pem");
    let key = file("key", "key.pem");
    Some(TlsSettings { cert: cert?, key: key? })
}

/// A non-empty path, resolved against `base` when relative.
fn path(r: &mut Reader<'_>, field: &Field<'_>, example: &str, base: &Path) -> Option<PathBuf> {
    let text = r.string(field)?;
    if text.is_empty() {
        r.error(&field.loc, format!("the path is empty; write one such as {example:?}"));
        return None;
    }
    Some(base.join(text))
}

/// A duration under `key`, or `default` when the key is absent.
fn duration(r: &mut Reader<'_>, t: &TableView<'_>, key: &str, default: &str) -> Option<GrantDuration> {
    match t.get(key) {
        Some(f) => r.parse(&f, GrantDuration::parse).map(|d| d.value),
        // The defaults are literals that parse; should one ever not, the
        // admin is told to set the key rather than being handed a panic.
        None => match GrantDuration::parse(default) {
            Ok(d) => Some(d),
            Err(e) => {
                r.error(
                    &t.loc.child(key, None),
                    format!("ajar's built-in default for this key is invalid ({e}); set {key} explicitly"),
                );
                None
            }
        },
    }
}

fn subject(text: &str) -> Result<Subject, String> {
    Subject::parse(text)
        .map_err(|e| format!("{e}; a subject is a user name such as \"alice\" or a group such as \"group:sre\""))
}

fn subjects(r: &mut Reader<'_>, field: &Field<'_>) -> Vec<Located<Subject>> {
    r.parsed_list(field, SUBJECT_EXAMPLE, subject).unwrap_or_default()
}

fn access(r: &mut Reader<'_>, field: &Field<'_>) -> AccessDraft {
    let Some(t) = r.table(field, ACCESS_KEYS) else {
        return AccessDraft::default();
    };
    AccessDraft {
        admins: t.get("admins").map(|f| subjects(r, &f)).unwrap_or_default(),
        auditors: t.get("auditors").map(|f| subjects(r, &f)).unwrap_or_default(),
        groups: t.get("groups").and_then(|f| r.parsed_list(&f, "[\"oncall\"]", Name::parse)).unwrap_or_default(),
    }
}

fn name(r: &mut Reader<'_>, t: &TableView<'_>, example: &str) -> Option<Located<Name>> {
    let field = r.required(t, "name", example)?;
    r.parse(&field, Name::parse)
}

fn user(r: &mut Reader<'_>, t: &TableView<'_>) -> UserDraft {
    let name = name(r, t, "name = \"alice\"");
    let password_hash = r
        .required(t, "password_hash", "password_hash = \"$argon2id$v=19$...\"")
        .and_then(|f| r.parse(&f, values::password_hash));
    let groups = match t.get("groups") {
        Some(f) => r.parsed_list(&f, "[\"dev\", \"sre\"]", Name::parse),
        None => Some(Vec::new()),
    };
    let group_names: Vec<Name> = groups.iter().flatten().map(|g| g.value.clone()).collect();
    let user = match (&name, password_hash, groups) {
        (Some(name), Some(hash), Some(_)) => {
            Some(User { name: name.value.clone(), password_hash: hash.value, groups: group_names.clone() })
        }
        _ => None,
    };
    UserDraft { name, groups: group_names, user }
}

fn target(r: &mut Reader<'_>, t: &TableView<'_>) -> TargetDraft {
    let name = name(r, t, "name = \"db-prod\"");
    let address = r
        .required(t, "address", "address = \"10.0.3.12:5432\"")
        .and_then(|f| r.parse(&f, |s| values::host_port(s).map(|()| s.to_owned())));
    let driver = r.required(t, "driver", "driver = \"gateway\"").and_then(|f| {
        r.parse(&f, |s| {
            DriverKind::parse(s).ok_or_else(|| {
                let known: Vec<String> = DriverKind::ALL.iter().map(|k| format!("{:?}", k.as_str())).collect();
                format!("{s:?} is not a driver ajar knows; the drivers are {}", known.join(", "))
            })
        })
    });
    let labels = match t.get("labels") {
        Some(f) => labels(r, &f),
        None => Some(BTreeMap::new()),
    };
    let agent_group = t.get("agent_group").and_then(|f| r.parse(&f, Name::parse));
    if let (Some(group), Some(kind)) = (&agent_group, driver.as_ref().map(|d| d.value)) {
        if !kind.runs_on_agents() {
            let allowed: Vec<&str> =
                DriverKind::ALL.iter().filter(|k| k.runs_on_agents()).map(|k| k.as_str()).collect();
            r.error(
                &group.loc,
                format!(
                    "agents run only the {} drivers, and this target uses {:?} (which the server runs itself, against the cloud API); remove agent_group",
                    allowed.join(", "),
                    kind.as_str()
                ),
            );
        }
    }
    let gateway_field = t.get("gateway");
    let gateway = match &gateway_field {
        // `None` is an error; `Some(None)` means there is no gateway table.
        Some(f) => r.table(f, GATEWAY_KEYS).map(|g| Some(gateway(r, &g))),
        None => Some(None),
    };
    // The table of the kernel DNAT driver this target uses, if any; a table
    // for a driver the target does not use is reported below.
    let nat_key = driver.as_ref().map(|d| d.value).filter(|d| d.is_nat()).map(|d| d.as_str());
    let nat = match nat_key.and_then(|key| t.get(key)) {
        Some(f) => r.table(&f, NAT_KEYS).map(|n| Some(nat(r, &n, address.as_ref()))),
        None => Some(None),
    };
    // `None` is an error (a missing table is reported below); `Some(None)`
    // means the target uses no AWS driver.
    let aws: Option<Option<DriverSettings>> = match driver.as_ref().map(|d| d.value) {
        Some(DriverKind::AwsSg) => t.get("aws_sg").map(|f| {
            r.table(&f, aws::SG_KEYS)
                .and_then(|a| aws::security_group(r, &a, address.as_ref()))
                .map(DriverSettings::AwsSg)
        }),
        Some(DriverKind::AwsInstance) => t.get("aws_instance").map(|f| {
            r.table(&f, aws::INSTANCE_KEYS)
                .and_then(|a| aws::instance(r, &a, address.as_ref()))
                .map(DriverSettings::AwsInstance)
        }),
        _ => Some(None),
    };
    if let Some(driver) = &driver {
        for kind in DriverKind::ALL {
            let key = kind.table_key();
            let field = t.get(key);
            let wanted = driver.value == *kind;
            match (field, wanted) {
                (None, true) => {
                    let (example, why) = match kind {
                        DriverKind::Gateway => ("gateway = { listen = \"0.0.0.0:15432\" }", "where to listen for this target"),
                        DriverKind::Nftables => ("nftables = { listen = \"10.77.1.1:2222\" } (this host's own address and port)", "where to listen for this target"),
                        DriverKind::Iptables => ("iptables = { listen = \"10.77.1.1:2222\" } (this host's own address and port)", "where to listen for this target"),
                        DriverKind::AwsSg => ("aws_sg = { security_group_id = \"sg-0abc1234\", region = \"us-east-1\" }", "which security group to add rules to"),
                        DriverKind::AwsInstance => ("aws_instance = { ami = \"ami-0abc1234\", instance_type = \"t3.micro\", subnet_id = \"subnet-0abc1234\", security_group_ids = [\"sg-0abc1234\"], listen_port = 15432 }", "what to launch for each grant"),
                    };
                    r.error(
                        &t.loc.child(key, Some(driver.loc.offset)),
                        format!("the {kind} driver needs to know {why}; add {example}"),
                    );
                }
                (Some(f), false) => r.error(
                    &f.loc,
                    format!(
                        "{} {key} table only applies to targets with driver = \"{kind}\", and this target uses {:?}; remove it",
                        if matches!(kind, DriverKind::Iptables | DriverKind::AwsSg | DriverKind::AwsInstance) { "an" } else { "a" },
                        driver.value.as_str()
                    ),
                ),
                _ => {}
            }
        }
    }
    let listen = match (&gateway, &nat) {
        (Some(Some((listen, _))), _) => listen.clone(),
        (_, Some(Some(n))) => n.listen.clone(),
        _ => None,
    };
    // The settings of the target's own driver; a missing or invalid table
    // has been reported above, and leaves no target.
    let target = (|| {
        let driver = match driver?.value {
            DriverKind::Gateway => {
                let (listen, public_host) = gateway??;
                DriverSettings::Gateway(GatewaySettings { listen: listen?.value, public_host: public_host? })
            }
            DriverKind::Nftables => DriverSettings::Nftables(nat??.settings()?),
            DriverKind::Iptables => DriverSettings::Iptables(nat??.settings()?),
            DriverKind::AwsSg | DriverKind::AwsInstance => aws??,
        };
        let agent_group = match &agent_group {
            Some(g) => Some(g.value.clone()),
            None if t.get("agent_group").is_some() => return None,
            None => None,
        };
        Some(Target {
            name: name.as_ref()?.value.clone(),
            address: address?.value,
            labels: labels.clone()?,
            driver,
            agent_group,
        })
    })();
    // An agent's listener is on the agent's host: it cannot clash with this
    // server's own.
    let listen = if agent_group.is_some() { None } else { listen };
    TargetDraft { name, labels: labels.unwrap_or_default(), listen, agent_group, target }
}

/// A kernel DNAT driver's table, each part `None` when invalid.
struct NatDraft {
    listen: Option<Located<SocketAddr>>,
    destination: Option<SocketAddr>,
    enable_forwarding: Option<bool>,
}

impl NatDraft {
    /// The settings, when every part is valid.
    fn settings(self) -> Option<NatSettings> {
        Some(NatSettings {
            listen: self.listen?.value,
            destination: self.destination?,
            enable_forwarding: self.enable_forwarding?,
        })
    }
}

/// Reads `nftables = { ... }` or `iptables = { ... }`. The kernel rewrites
/// addresses without resolving names, so `listen` must be one of this
/// host's own addresses and the target's `address` an IP of the same family.
fn nat(r: &mut Reader<'_>, t: &TableView<'_>, address: Option<&Located<String>>) -> NatDraft {
    let listen = r.required(t, "listen", "listen = \"10.77.1.1:2222\"").and_then(|f| {
        r.parse(&f, |s| {
            let addr = values::listen_addr(s)?;
            if addr.ip().is_unspecified() || addr.ip().is_loopback() || addr.port() == 0 {
                return Err(format!(
                    "{s:?} cannot be DNATed: write this host's own address on the clients' network and a fixed port, such as 10.77.1.1:2222 or [fd77:1::1]:2222"
                ));
            }
            Ok(addr)
        })
    });
    let destination = ip_destination(
        r,
        address,
        "a kernel DNAT driver (the kernel does not resolve names), such as 10.77.2.2:22 or [fd77:2::2]:22",
    );
    if let (Some(l), Some(d), Some(a)) = (&listen, &destination, address) {
        if l.value.is_ipv4() != d.is_ipv4() {
            r.error(
                &a.loc,
                format!(
                    "{} and the listen address {} are of different IP families; DNAT cannot translate between IPv4 and IPv6, so use two addresses of the same family",
                    a.value, l.value
                ),
            );
        }
    }
    let enable_forwarding = match t.get("enable_forwarding") {
        Some(f) => r.bool(&f),
        None => Some(false),
    };
    NatDraft { listen, destination, enable_forwarding }
}

/// The target's `address` as an IP address and port, for a driver whose
/// kernel forwards to it without resolving names; `needed_by` says which
/// driver and shows an example.
pub(crate) fn ip_destination(
    r: &mut Reader<'_>,
    address: Option<&Located<String>>,
    needed_by: &str,
) -> Option<SocketAddr> {
    let a = address?;
    match a.value.parse::<SocketAddr>() {
        Ok(dest) => Some(dest),
        Err(_) => {
            r.error(&a.loc, format!("{:?} must be an IP address and port for {needed_by}", a.value));
            None
        }
    }
}

/// A gateway table's listen address and public host, each `None` when
/// invalid (the outer `Option` of `public_host` is validity, the inner one
/// presence).
type GatewayDraft = (Option<Located<SocketAddr>>, Option<Option<String>>);

fn gateway(r: &mut Reader<'_>, t: &TableView<'_>) -> GatewayDraft {
    let listen = r.required(t, "listen", "listen = \"0.0.0.0:15432\"").and_then(|f| r.parse(&f, values::listen_addr));
    let public_host = match t.get("public_host") {
        Some(f) => r.parse(&f, values::public_host).map(|h| Some(h.value)),
        None => Some(None),
    };
    (listen, public_host)
}

fn labels(r: &mut Reader<'_>, field: &Field<'_>) -> Option<BTreeMap<String, String>> {
    let t = r.any_table(field)?;
    let mut labels = BTreeMap::new();
    let mut valid = true;
    for (key, value) in t.entries() {
        if let Err(e) = Name::parse(&key.value) {
            r.error(&key.loc, format!("the label key is not valid: {e}"));
            valid = false;
        }
        match r.parse(&value, Name::parse) {
            Some(v) => {
                labels.insert(key.value, v.value.to_string());
            }
            None => valid = false,
        }
    }
    valid.then_some(labels)
}

fn policy(r: &mut Reader<'_>, t: &TableView<'_>) -> PolicyDraft {
    let name = name(r, t, "name = \"dev-prod-db\"");
    let subjects = r.required(t, "subjects", "subjects = [\"group:dev\"]").and_then(|f| {
        let parsed = r.parsed_list(&f, SUBJECT_EXAMPLE, subject)?;
        non_empty(
            r,
            &f,
            "lists nobody, so nobody could use this policy; name users or groups such as [\"alice\", \"group:dev\"]",
        )
        .then_some(parsed)
    });
    let selectors = r.required(t, "targets", "targets = [\"db-prod\"]").and_then(|f| {
        let parsed = r.parsed_list(&f, "[\"db-prod\", \"env=prod\"]", values::selector)?;
        non_empty(r, &f, "lists no target, so this policy grants nothing; name targets or label selectors such as [\"db-prod\", \"env=prod\"]")
            .then_some(parsed)
    });
    let max_duration =
        r.required(t, "max_duration", "max_duration = \"1h\"").and_then(|f| r.parse(&f, GrantDuration::parse));
    let reason_required = match t.get("reason_required") {
        Some(f) => r.bool(&f),
        None => Some(true),
    };
    let approvals = r
        .required(t, "approvals", "approvals = 1 (or approvals = 0 to approve requests automatically)")
        .and_then(|f| {
            let n = r.integer(&f)?;
            match u32::try_from(n) {
                Ok(ok) if n <= MAX_APPROVALS => Some(Located { value: ok, loc: f.loc.clone() }),
                _ => {
                    r.error(
                        &f.loc,
                        format!("{n} is not a number of approvals ajar accepts; use 0 (approve automatically) to {MAX_APPROVALS}"),
                    );
                    None
                }
            }
        });
    let approvers_field = t.get("approvers");
    let approvers = match &approvers_field {
        Some(f) => r.parsed_list(f, SUBJECT_EXAMPLE, subject),
        None => Some(Vec::new()),
    };
    // Only when approvers could be read: a mistyped list was reported
    // already and is not also "missing".
    if let (Some(approvals), Some(_)) = (&approvals, &approvers) {
        let listed = approvers_field.as_ref().and_then(|f| f.array_len()).unwrap_or(0);
        if approvals.value > 0 && listed == 0 {
            let loc = approvers_field.as_ref().map_or(&approvals.loc, |f| &f.loc);
            r.error(
                &t.loc.child("approvers", Some(loc.offset)),
                format!(
                    "approvals = {} but no approvers are listed, so no request could ever be approved; add approvers such as [\"group:sre\"], or set approvals = 0 to approve automatically",
                    approvals.value
                ),
            );
        }
        if let (0, Some(f)) = (approvals.value, &approvers_field) {
            if listed > 0 {
                r.error(
                    &f.loc,
                    "approvers are listed but approvals = 0 approves every request automatically, so they would never be asked; set approvals to how many of them must approve, or remove approvers",
                );
            }
        }
    }
    let sources = match t.get("sources") {
        Some(f) => r.parsed_list(&f, "[\"10.8.0.0/16\"]", values::network),
        None => Some(Vec::new()),
    };
    let policy = (|| {
        Some(Policy {
            name: name.as_ref()?.value.clone(),
            subjects: values_of(subjects.as_ref()?),
            targets: values_of(selectors.as_ref()?),
            max_duration: max_duration?.value,
            reason_required: reason_required?,
            approvals: approvals.as_ref()?.value,
            approvers: values_of(approvers.as_ref()?),
            sources: values_of(sources.as_ref()?),
        })
    })();
    PolicyDraft {
        name,
        subjects: subjects.unwrap_or_default(),
        selectors: selectors.unwrap_or_default(),
        approvals,
        approvers: approvers.unwrap_or_default(),
        policy,
    }
}

/// Whether the array in `field` has elements; reports `message` when it is
/// an empty array. Non-arrays were reported by the caller already.
fn non_empty(r: &mut Reader<'_>, field: &Field<'_>, message: &str) -> bool {
    if field.array_len() == Some(0) {
        r.error(&field.loc, message);
        return false;
    }
    true
}

fn values_of<T: Clone>(items: &[Located<T>]) -> Vec<T> {
    items.iter().map(|i| i.value.clone()).collect()
}
