//! Parsers for the string values of the config file that the domain has no
//! type for: addresses, host names, networks and password hashes. Each
//! returns a message that names the bad value and shows a good one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ajar_domain::{SourceNet, TargetSelector};
use argon2::password_hash::PasswordHash;

use ajar_domain::Name;

/// A socket address the server or a gateway listens on.
pub(crate) fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("{text:?} is not an address to listen on: write IP:port such as 127.0.0.1:8080, 0.0.0.0:15432 or [::1]:8080")
    })
}

/// A target's `host:port`, where host is an IP address (IPv6 in brackets) or
/// a DNS name and port is 1 to 65535.
pub(crate) fn host_port(text: &str) -> Result<(), String> {
    let example = "write host:port such as 10.0.3.12:5432, db.internal:5432 or [2001:db8::12]:5432";
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err(format!("{text:?} opens a '[' that is never closed; {example}"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} in {text:?} is not an IPv6 address; {example}"));
        }
        match after.strip_prefix(':') {
            Some(port) => (None, port),
            None => return Err(format!("{text:?} has no port; {example}")),
        }
    } else if text.matches(':').count() > 1 {
        return Err(format!(
            "{text:?} looks like an IPv6 address without brackets; put the address in brackets and add the port, such as [2001:db8::12]:5432"
        ));
    } else {
        match text.split_once(':') {
            Some((host, port)) => (Some(host), port),
            None => {
                let hint = if text.is_empty() { "10.0.3.12" } else { text };
                return Err(format!("{text:?} has no port; write host:port such as {hint}:5432"));
            }
        }
    };
    if let Some(host) = host {
        check_host(host).map_err(|why| format!("{why} in {text:?}; {example}"))?;
    }
    match port.parse::<u16>() {
        Ok(0) => Err(format!("port 0 in {text:?} is not a port a target can listen on; use a port from 1 to 65535")),
        Ok(_) => Ok(()),
        Err(_) => Err(format!("port {port:?} in {text:?} is not a number from 1 to 65535")),
    }
}

/// A host name clients are told to connect to: an IP address or DNS name.
pub(crate) fn public_host(text: &str) -> Result<String, String> {
    let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    check_host(text)
        .map(|()| text.to_owned())
        .map_err(|why| format!("{why}; write a host name such as gw.example.com or an IP address, without a port"))
}

/// The URL browsers reach the server at: `http` or `https`, a host (DNS
/// name, IPv4 address or bracketed IPv6 address) and an optional port, with
/// nothing after it but an optional `/`. Returned without the slash.
pub(crate) fn public_url(text: &str) -> Result<String, String> {
    let example =
        "write the scheme and host only, such as \"https://ajar.example.com\" or \"https://ajar.example.com:8443\"";
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("{text:?} is not a URL; {example}"));
    };
    if scheme != "https" && scheme != "http" {
        return Err(format!("{text:?} must start with https:// (or http://); {example}"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "{text:?} has a path, query or fragment, which ajar does not support: the portal is served at the root; {example}"
        ));
    }
    if authority.contains('@') {
        return Err(format!("{text:?} holds a user name or password; {example}"));
    }
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((ip, after)) = inner.split_once(']') else {
            return Err(format!("{text:?} opens a '[' that is never closed; {example}"));
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{ip:?} in {text:?} is not an IPv6 address; {example}"));
        }
        if !after.is_empty() && !after.starts_with(':') {
            return Err(format!("{text:?} has {after:?} after the IPv6 address; {example}"));
        }
        (None, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        }
    };
    if let Some(host) = host {
        check_host(host).map_err(|why| format!("{why} in {text:?}; {example}"))?;
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
            return Err(format!("port {port:?} in {text:?} is not a number from 1 to 65535; {example}"));
        }
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// An IPv4 address or a DNS name (RFC 1123 labels).
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".to_owned());
    }
    // A host made only of digits and dots is meant as an IPv4 address; no
    // top-level domain is all digits, so it must parse as one.
    if host.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return match host.parse::<Ipv4Addr>() {
            Ok(_) => Ok(()),
            Err(_) => Err(format!("{host:?} is not a valid IPv4 address")),
        };
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is not a valid host name (letters, digits and '-' in dot-separated labels of up to 63 characters)"
        ))
    }
}

/// A network that source addresses may come from. On top of what
/// [`SourceNet`] refuses, networks wider than an IPv4 /8 or an IPv6 /16 are
/// refused: they are a mistake or a back door to "anyone".
pub(crate) fn network(text: &str) -> Result<SourceNet, String> {
    let net = SourceNet::parse(text).map_err(|e| e.to_string())?;
    let (family, least) = match net.net() {
        ipnet::IpNet::V4(_) => ("IPv4", 8),
        ipnet::IpNet::V6(_) => ("IPv6", 16),
    };
    if net.prefix_len() < least {
        return Err(format!(
            "{} is wider than ajar accepts: an {family} network must be /{least} or narrower; list the networks you actually use",
            text.trim()
        ));
    }
    Ok(net)
}

/// A label selector (`env=prod`) or a target name.
pub(crate) fn selector(text: &str) -> Result<TargetSelector, String> {
    match text.split_once('=') {
        Some((key, value)) => {
            let key =
                Name::parse(key.trim()).map_err(|e| format!("the label key in selector {text:?} is not valid: {e}"))?;
            let value = Name::parse(value.trim())
                .map_err(|e| format!("the label value in selector {text:?} is not valid: {e}"))?;
            Ok(TargetSelector::Label { key: key.to_string(), value: value.to_string() })
        }
        None => Name::parse(text).map(TargetSelector::Name).map_err(|e| {
            format!(
                "{e}; a policy target is a target name such as \"db-prod\" or a label selector such as \"env=prod\""
            )
        }),
    }
}

/// A PHC string of an argon2id hash, such as
/// `$argon2id$v=19$m=19456,t=2,p=1$SALT$HASH`. The messages never repeat
/// the value: a hash is not the password, but it should not reach logs.
pub(crate) fn password_hash(text: &str) -> Result<String, String> {
    let example = "an argon2id hash in PHC format, such as $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>, as printed by `argon2 <salt> -id -e`";
    let hash = PasswordHash::new(text).map_err(|e| format!("the value is not {example} ({e})"))?;
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("the value is a {} hash, but ajar accepts only {example}", hash.algorithm));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("the value has no salt or no hash output; expected {example}"));
    }
    if let Some(version) = hash.version {
        argon2::Version::try_from(version)
            .map_err(|_| format!("the value names argon2 version {version}, which does not exist (use v=19)"))?;
    }
    argon2::Params::try_from(&hash)
        .map_err(|e| format!("the value's argon2 parameters are not valid ({e}); expected {example}"))?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_ips_names_and_bracketed_ipv6() {
        for ok in ["10.0.3.12:5432", "db.internal:5432", "db:1", "[2001:db8::12]:65535", "a-b.c.:22"] {
            assert_eq!(host_port(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn host_port_explains_what_is_wrong() {
        let cases = [
            ("10.0.3.12", "has no port"),
            ("10.0.3.12:0", "port 0"),
            ("10.0.3.12:70000", "not a number from 1 to 65535"),
            ("10.0.3.12:", "not a number from 1 to 65535"),
            ("2001:db8::12", "without brackets"),
            ("[2001:db8::12]", "has no port"),
            ("[2001:db8::12:22", "never closed"),
            ("[nope]:22", "not an IPv6 address"),
            ("10.0.3.256:22", "not a valid IPv4 address"),
            ("db_prod:22", "not a valid host name"),
            ("-db:22", "not a valid host name"),
            (":22", "the host is empty"),
        ];
        for (text, want) in cases {
            let got = host_port(text).expect_err(text);
            assert!(got.contains(want), "{text}: {got}");
        }
    }

    #[test]
    fn networks_refuse_the_over_wide() {
        assert!(network("10.0.0.0/8").is_ok());
        assert!(network("2001::/16").is_ok());
        assert!(network("10.0.0.0/7").is_err_and(|e| e.contains("/8 or narrower")));
        assert!(network("2000::/3").is_err_and(|e| e.contains("/16 or narrower")));
        assert!(network("0.0.0.0/0").is_err_and(|e| e.contains("every address")));
    }

    #[test]
    fn password_hash_wants_argon2id() {
        let argon2i = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$Rx4QJfV35jbUKKl0dG2Cig";
        assert!(password_hash(argon2i).is_err_and(|e| e.contains("argon2i hash")));
        assert!(password_hash("hunter2").is_err_and(|e| !e.contains("hunter2")));
        assert!(password_hash("$argon2id$v=19$m=16,t=2,p=1$c29tZXNhbHQ").is_err());
    }
}
