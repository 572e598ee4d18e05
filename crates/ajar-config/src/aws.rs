//! The settings tables of the AWS drivers: `aws_sg = { ... }` and
//! `aws_instance = { ... }` on a target. Every id is checked for its AWS
//! shape here, so that a typo is a config error with a line number rather
//! than an API error at the first grant.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ajar_domain::{AwsApi, AwsInstanceSettings, AwsSgSettings, GrantDuration, IpProtocol};

use crate::reader::{Field, Located, Reader, TableView};

pub(crate) const SG_KEYS: &[&str] =
    &["security_group_id", "region", "endpoint_url", "protocol", "ports", "rule_quota", "network_interface_ids"];
pub(crate) const INSTANCE_KEYS: &[&str] = &[
    "ami",
    "instance_type",
    "subnet_id",
    "security_group_ids",
    "listen_port",
    "region",
    "endpoint_url",
    "instance_profile",
    "key_name",
    "tags",
    "warm_pool",
    "launch_timeout",
    "idle_timeout",
];

/// AWS's default quota of inbound rules per security group.
const DEFAULT_RULE_QUOTA: i64 = 60;
/// The most instances ajar keeps warm per target: more is a typo, not a pool.
const MAX_WARM_POOL: i64 = 10;
const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(180);
const LAUNCH_TIMEOUT_RANGE: (u64, u64) = (10, 900);
const IDLE_TIMEOUT_RANGE: (u64, u64) = (10, 86_400);

/// Reads `aws_sg = { ... }`; `address` is the target's `host:port`, whose
/// port is the default of `ports`.
pub(crate) fn security_group(
    r: &mut Reader<'_>,
    t: &TableView<'_>,
    address: Option<&Located<String>>,
) -> Option<AwsSgSettings> {
    let api = api(r, t);
    let security_group_id = r
        .required(t, "security_group_id", "security_group_id = \"sg-0abc1234\"")
        .and_then(|f| r.parse(&f, |s| aws_id(s, "sg", "security group id", "sg-0abc1234")));
    let protocol = match t.get("protocol") {
        Some(f) => r.parse(&f, |s| match s {
            "tcp" => Ok(IpProtocol::Tcp),
            "udp" => Ok(IpProtocol::Udp),
            other => Err(format!("{other:?} is not a protocol a grant can open; write \"tcp\" or \"udp\"")),
        }),
        None => Some(Located { value: IpProtocol::Tcp, loc: t.loc.clone() }),
    };
    let ports = match t.get("ports") {
        Some(f) => ports(r, &f),
        // The target's own port; the address was checked already.
        None => {
            address.and_then(|a| a.value.rsplit_once(':')).and_then(|(_, p)| p.parse::<u16>().ok()).map(|p| vec![p])
        }
    };
    let rule_quota = match t.get("rule_quota") {
        Some(f) => bounded(r, &f, 1, 1000, "the number of inbound rules your account allows per security group"),
        None => Some(DEFAULT_RULE_QUOTA),
    };
    let network_interface_ids = match t.get("network_interface_ids") {
        Some(f) => r
            .parsed_list(&f, "[\"eni-0abc1234\"]", |s| aws_id(s, "eni", "network interface id", "eni-0abc1234"))
            .map(|ids| ids.into_iter().map(|l| l.value).collect()),
        None => Some(Vec::new()),
    };
    Some(AwsSgSettings {
        api: api?,
        security_group_id: security_group_id?.value,
        protocol: protocol?.value,
        ports: ports?,
        rule_quota: u32::try_from(rule_quota?).ok()?,
        network_interface_ids: network_interface_ids?,
    })
}

/// Reads `aws_instance = { ... }`. The instance DNATs to the target's
/// `address`, so that must be an IP address: the instance's kernel does not
/// resolve names either.
pub(crate) fn instance(
    r: &mut Reader<'_>,
    t: &TableView<'_>,
    address: Option<&Located<String>>,
) -> Option<AwsInstanceSettings> {
    let api = api(r, t);
    let ami = r
        .required(t, "ami", "ami = \"ami-0abc1234\"")
        .and_then(|f| r.parse(&f, |s| aws_id(s, "ami", "AMI id", "ami-0abc1234")));
    let instance_type = r.required(t, "instance_type", "instance_type = \"t3.micro\"").and_then(|f| {
        r.parse(&f, |s| {
            let valid = s.split_once('.').is_some_and(|(family, size)| {
                !family.is_empty()
                    && !size.is_empty()
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            });
            if valid {
                Ok(s.to_owned())
            } else {
                Err(format!("{s:?} is not an EC2 instance type; write one such as \"t3.micro\""))
            }
        })
    });
    let subnet_id = r
        .required(t, "subnet_id", "subnet_id = \"subnet-0abc1234\"")
        .and_then(|f| r.parse(&f, |s| aws_id(s, "subnet", "subnet id", "subnet-0abc1234")));
    let security_group_ids =
        r.required(t, "security_group_ids", "security_group_ids = [\"sg-0abc1234\"]").and_then(|f| {
            let ids =
                r.parsed_list(&f, "[\"sg-0abc1234\"]", |s| aws_id(s, "sg", "security group id", "sg-0abc1234"))?;
            if ids.is_empty() {
                r.error(&f.loc, "an instance needs at least one security group that lets clients reach listen_port; name it such as [\"sg-0abc1234\"]");
                return None;
            }
            Some(ids.into_iter().map(|l| l.value).collect::<Vec<_>>())
        });
    let listen_port = r
        .required(t, "listen_port", "listen_port = 15432 (the port clients connect to on the instance)")
        .and_then(|f| bounded(r, &f, 1, 65535, "a port"))
        .and_then(|p| u16::try_from(p).ok());
    let destination = crate::decode::ip_destination(
        r,
        address,
        "aws-instance (the app server's kernel forwards to it without resolving names), such as 10.0.3.12:5432",
    );
    if let Some(dest) = destination.filter(|d| d.is_ipv6()) {
        if let Some(a) = address {
            r.error(
                &a.loc,
                format!("{dest} is IPv6; aws-instance forwards IPv4 only for now, so write the target's IPv4 address"),
            );
        }
    }
    let optional_text = |r: &mut Reader<'_>, key: &str, example: &str| match t.get(key) {
        Some(f) => r.parse(&f, |s| name_like(s, key, example)).map(|l| Some(l.value)),
        None => Some(None),
    };
    let instance_profile = optional_text(r, "instance_profile", "ajar-app-server");
    let key_name = optional_text(r, "key_name", "ops-2026");
    let tags = match t.get("tags") {
        Some(f) => tags(r, &f),
        None => Some(BTreeMap::new()),
    };
    let warm_pool = match t.get("warm_pool") {
        Some(f) => bounded(r, &f, 0, MAX_WARM_POOL, "how many instances to keep launched and unassigned"),
        None => Some(0),
    };
    let launch_timeout = match t.get("launch_timeout") {
        Some(f) => r.parse(&f, GrantDuration::parse).and_then(|d| {
            let secs = d.value.as_secs();
            if (LAUNCH_TIMEOUT_RANGE.0..=LAUNCH_TIMEOUT_RANGE.1).contains(&secs) {
                Some(Duration::from_secs(secs))
            } else {
                r.error(&f.loc, format!("{} is not a launch timeout ajar accepts; use 10s to 15m", d.value));
                None
            }
        }),
        None => Some(DEFAULT_LAUNCH_TIMEOUT),
    };
    let idle_timeout = match t.get("idle_timeout") {
        Some(f) => r.parse(&f, GrantDuration::parse).and_then(|d| {
            let secs = d.value.as_secs();
            if (IDLE_TIMEOUT_RANGE.0..=IDLE_TIMEOUT_RANGE.1).contains(&secs) {
                Some(Some(Duration::from_secs(secs)))
            } else {
                r.error(&f.loc, format!("{} is not an idle timeout ajar accepts; use 10s to 24h, or leave it out to keep the app server for the whole grant", d.value));
                None
            }
        }),
        None => Some(None),
    };
    Some(AwsInstanceSettings {
        api: api?,
        ami: ami?.value,
        instance_type: instance_type?.value,
        subnet_id: subnet_id?.value,
        security_group_ids: security_group_ids?,
        listen_port: listen_port?,
        destination: destination.filter(SocketAddr::is_ipv4)?,
        instance_profile: instance_profile?,
        key_name: key_name?,
        tags: tags?,
        warm_pool: u32::try_from(warm_pool?).ok()?,
        launch_timeout: launch_timeout?,
        idle_timeout: idle_timeout?,
    })
}

/// `region` and `endpoint_url`, shared by both tables.
fn api(r: &mut Reader<'_>, t: &TableView<'_>) -> Option<AwsApi> {
    let region = match t.get("region") {
        Some(f) => r
            .parse(&f, |s| {
                let valid = !s.is_empty()
                    && s.len() <= 32
                    && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && s.contains('-');
                if valid {
                    Ok(s.to_owned())
                } else {
                    Err(format!("{s:?} is not an AWS region; write one such as \"us-east-1\", or leave region out to use AWS_REGION or your profile's region"))
                }
            })
            .map(|l| Some(l.value)),
        None => Some(None),
    };
    let endpoint_url = match t.get("endpoint_url") {
        Some(f) => r
            .parse(&f, |s| {
                let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
                match rest {
                    Some(host) if !host.is_empty() && !s.chars().any(char::is_whitespace) => Ok(s.to_owned()),
                    _ => Err(format!("{s:?} is not an endpoint URL; write one such as \"https://ec2.us-east-1.amazonaws.com\", or leave endpoint_url out to use AWS's own")),
                }
            })
            .map(|l| Some(l.value)),
        None => Some(None),
    };
    Some(AwsApi { region: region?, endpoint_url: endpoint_url? })
}

/// An AWS resource id such as `sg-0abc1234`: the prefix, a dash and 8 or 17
/// lowercase hex digits.
fn aws_id(text: &str, prefix: &str, what: &str, example: &str) -> Result<String, String> {
    let valid = text.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')).is_some_and(|hex| {
        (hex.len() == 8 || hex.len() == 17) && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    });
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a {what}; write one such as {example:?} ({prefix}- and 8 or 17 hex digits)"))
    }
}

/// A name AWS accepts for an instance profile or key pair.
fn name_like(text: &str, key: &str, example: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 255
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@-_:/".contains(c));
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not a valid {key}; write a name such as {example:?}"))
    }
}

/// An integer from `min` to `max`.
fn bounded(r: &mut Reader<'_>, f: &Field<'_>, min: i64, max: i64, what: &str) -> Option<i64> {
    let n = r.integer(f)?;
    if (min..=max).contains(&n) {
        Some(n)
    } else {
        r.error(&f.loc, format!("{n} is out of range: write {what}, from {min} to {max}"));
        None
    }
}

/// `ports = [22, 2222]`: at least one, each 1 to 65535, no repeats.
fn ports(r: &mut Reader<'_>, f: &Field<'_>) -> Option<Vec<u16>> {
    let mut valid = true;
    let ports = r.list(f, "[22]", |r, element| {
        let port = bounded(r, element, 1, 65535, "a port").and_then(|p| u16::try_from(p).ok());
        if port.is_none() {
            valid = false;
        }
        port
    })?;
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    if ports.is_empty() || unique.len() != ports.len() {
        r.error(&f.loc, "ports must list each port a grant opens once, at least one, such as [22] or [80, 443]");
        return None;
    }
    valid.then_some(ports)
}

/// Extra instance tags. Keys starting with `ajar:` are ajar's own (a tag
/// could otherwise make an instance look like a grant's), and `aws:` is
/// reserved by AWS.
fn tags(r: &mut Reader<'_>, f: &Field<'_>) -> Option<BTreeMap<String, String>> {
    let t = r.any_table(f)?;
    let mut tags = BTreeMap::new();
    let mut valid = true;
    for (key, value) in t.entries() {
        let lower = key.value.to_ascii_lowercase();
        if lower.starts_with("ajar:") || lower.starts_with("aws:") || key.value.is_empty() || key.value.len() > 128 {
            r.error(
                &key.loc,
                format!("tag key {:?} is not allowed: keys starting with ajar: are ajar's own and aws: is AWS's, and a key has 1 to 128 characters; pick another such as \"team\"", key.value),
            );
            valid = false;
        }
        match r.string(&value) {
            Some(v) if v.len() <= 256 => {
                tags.insert(key.value, v.to_owned());
            }
            Some(_) => {
                r.error(&value.loc, "a tag value has at most 256 characters; shorten it");
                valid = false;
            }
            None => valid = false,
        }
    }
    if tags.len() > 40 {
        r.error(
            &f.loc,
            format!("{} tags are too many: ajar adds its own and AWS allows 50 per instance; keep to 40", tags.len()),
        );
        valid = false;
    }
    valid.then_some(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_ids_have_a_prefix_and_8_or_17_hex_digits() {
        assert!(aws_id("sg-0abc1234", "sg", "security group id", "sg-0abc1234").is_ok());
        assert!(aws_id("sg-0123456789abcdef0", "sg", "security group id", "sg-0abc1234").is_ok());
        for bad in ["sg-", "sg-0ABC1234", "sg_0abc1234", "subnet-0abc1234", "sg-0abc123", "sg-0abc1234 "] {
            let e = aws_id(bad, "sg", "security group id", "sg-0abc1234").expect_err(bad);
            assert!(e.contains("sg-0abc1234"), "{e}");
        }
    }
}
