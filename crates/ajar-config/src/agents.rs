//! `[agents]`: where `ajar agent` processes connect, and how the agents of
//! each group behave when they lose the server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ajar_domain::{GrantDuration, Name, OfflineMode};

use crate::reader::{Field, Located, Reader, TableView};
use crate::values;

pub(crate) const AGENTS_KEYS: &[&str] = &["listen", "names", "offline_grace", "cert_lifetime", "groups"];
const GROUP_KEYS: &[&str] = &["offline", "offline_grace"];

/// The shortest and longest offline grace: shorter than a second cuts on
/// every hiccup; longer than ten minutes leaves a revoke unenforced that long.
const GRACE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Agent certificates live between an hour and thirty days (renewed at half).
const LIFETIME: (Duration, Duration) = (Duration::from_secs(3600), Duration::from_secs(30 * 86_400));

/// From `[agents]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// Where agents connect (mutual TLS); no default: agents are off without it.
    pub listen: SocketAddr,
    /// The names the agent listener's certificate is valid for (the host
    /// part of the URL agents are given); by default `localhost`, the
    /// loopback addresses and `listen`'s address when it is not a wildcard.
    pub names: Vec<String>,
    /// How long an agent cut off from the server keeps admitting; 15s by
    /// default, 1s to 10m.
    pub offline_grace: Duration,
    /// How long an agent certificate is valid (renewed at half); 24h by
    /// default, 1h to 30d.
    pub cert_lifetime: Duration,
    /// Per-group settings; a group not listed has the defaults.
    pub groups: BTreeMap<Name, GroupSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupSettings {
    pub offline: OfflineMode,
    pub offline_grace: Duration,
}

impl AgentSettings {
    /// The settings agents of `group` run with.
    pub fn group(&self, group: &Name) -> GroupSettings {
        self.groups
            .get(group)
            .copied()
            .unwrap_or(GroupSettings { offline: OfflineMode::Cut, offline_grace: self.offline_grace })
    }
}

pub(crate) fn agents(r: &mut Reader<'_>, field: &Field<'_>) -> Option<(AgentSettings, Located<SocketAddr>)> {
    let t = r.table(field, AGENTS_KEYS)?;
    let listen = match r.required(&t, "listen", "listen = \"0.0.0.0:8443\" (where agents connect)") {
        Some(f) => r.parse(&f, values::listen_addr),
        None => None,
    };
    let names = match t.get("names") {
        Some(f) => r
            .parsed_list(&f, "[\"ajar.example.com\", \"10.0.0.5\"]", certificate_name)
            .map(|names| names.into_iter().map(|n| n.value).collect::<Vec<String>>()),
        None => listen.as_ref().map(|l| default_names(l.value)),
    };
    let offline_grace = bounded(r, &t, "offline_grace", "15s", GRACE, "1s to 10m");
    let cert_lifetime = bounded(r, &t, "cert_lifetime", "24h", LIFETIME, "1h to 30d");
    let groups = match t.get("groups") {
        Some(f) => groups(r, &f, offline_grace),
        None => Some(BTreeMap::new()),
    };
    let listen = listen?;
    let settings = AgentSettings {
        listen: listen.value,
        names: names?,
        offline_grace: offline_grace?,
        cert_lifetime: cert_lifetime?,
        groups: groups?,
    };
    Some((settings, listen))
}

fn groups(
    r: &mut Reader<'_>,
    field: &Field<'_>,
    default_grace: Option<Duration>,
) -> Option<BTreeMap<Name, GroupSettings>> {
    let t = r.any_table(field)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (key, field) in t.entries() {
        let Ok(name) = Name::parse(&key.value) else {
            r.error(&key.loc, format!("{:?} is not a group name: use letters, digits, '-', '_' and '.'", key.value));
            ok = false;
            continue;
        };
        let Some(g) = r.table(&field, GROUP_KEYS) else {
            ok = false;
            continue;
        };
        let offline = match g.get("offline") {
            Some(f) => r.parse(&f, |s| {
                OfflineMode::parse(s).ok_or_else(|| {
                    format!("{s:?} is not an offline mode; use \"cut\" (the default: cut connections and admit nobody) or \"keep-until-end\"")
                })
            }).map(|m| m.value),
            None => Some(OfflineMode::Cut),
        };
        let grace = match g.get("offline_grace") {
            Some(_) => bounded(r, &g, "offline_grace", "15s", GRACE, "1s to 10m"),
            None => default_grace,
        };
        match (offline, grace) {
            (Some(offline), Some(offline_grace)) => {
                out.insert(name, GroupSettings { offline, offline_grace });
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// A duration under `key` within `bounds`, or `default` when absent.
fn bounded(
    r: &mut Reader<'_>,
    t: &TableView<'_>,
    key: &str,
    default: &str,
    (min, max): (Duration, Duration),
    range: &str,
) -> Option<Duration> {
    let parsed = match t.get(key) {
        Some(f) => r.parse(&f, GrantDuration::parse).map(|d| d.value)?,
        None => GrantDuration::parse(default).ok()?,
    };
    let value = Duration::from_secs(parsed.as_secs());
    if (min..=max).contains(&value) {
        return Some(value);
    }
    if let Some(f) = t.get(key) {
        r.error(&f.loc, format!("{parsed} is out of range for {key}: use {range} (the default is {default})"));
    }
    None
}

/// A host name or IP address the agent listener's certificate names.
fn certificate_name(text: &str) -> Result<String, String> {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
    };
    if text.len() <= 253 && text.split('.').all(label_ok) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!("{text:?} is neither an IP address nor a DNS name; write the host part of the URL agents use, such as \"ajar.example.com\""))
    }
}

fn default_names(listen: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    names
}
