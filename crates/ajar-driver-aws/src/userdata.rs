//! The app server's boot script (EC2 user data). It turns the instance into
//! a one-way door: TCP to `listen_port` from the grant's source is DNATed
//! to the target, every other forwarded packet is dropped, and at the
//! grant's end the instance powers itself off (ajar launches it with
//! shutdown behaviour "terminate"), so it ends on time even when ajar is
//! gone. Pure: rendering does no I/O.

use std::fmt::Write as _;
use std::net::SocketAddrV4;

use ipnet::Ipv4Net;

/// Whose grant the script serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Launched for one grant: the source and end are written in.
    Grant { source: Ipv4Net, ends_unix: i64 },
    /// A warm-pool instance: it waits until ajar tags it with a grant's
    /// source and end, and reads them from the instance metadata service.
    Pool,
}

/// The script for an instance forwarding `listen_port` to `destination`;
/// with `idle_secs`, it also powers the instance off once it has forwarded
/// nothing for that many seconds.
pub fn render(mode: &Mode, listen_port: u16, destination: SocketAddrV4, idle_secs: Option<u64>) -> String {
    let mut s = String::from("#!/bin/sh\n");
    s.push_str("# ajar app server: forwards one port to one target for one grant's source, until the grant ends.\n");
    s.push_str("set -eu\n");
    let _ = writeln!(s, "LISTEN_PORT={listen_port}");
    let _ = writeln!(s, "DESTINATION_IP={}", destination.ip());
    let _ = writeln!(s, "DESTINATION_PORT={}", destination.port());
    // How the instance ends itself; overridable only so that the script can
    // be exercised outside a throwaway instance.
    s.push_str("POWEROFF=\"${AJAR_POWEROFF:-poweroff}\"\n");
    match mode {
        Mode::Grant { source, ends_unix } => {
            let _ = writeln!(s, "SOURCE={source}");
            let _ = writeln!(s, "ENDS={ends_unix}");
        }
        Mode::Pool => s.push_str(POOL_WAIT),
    }
    s.push_str(RULES);
    if let Some(idle) = idle_secs {
        let _ = writeln!(s, "IDLE={idle}");
        s.push_str(IDLE_WATCH);
    }
    s
}

/// Waits for ajar's tags through IMDSv2 (instance metadata tags are
/// enabled at launch).
const POOL_WAIT: &str = r#"imds() {
  token=$(curl -fsS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token) || return 1
  curl -fsS -H "X-aws-ec2-metadata-token: $token" "http://169.254.169.254/latest/meta-data/tags/instance/$1"
}
until SOURCE=$(imds ajar:source) && ENDS_TEXT=$(imds ajar:ends-at); do sleep 1; done
ENDS=$(date -d "$ENDS_TEXT" +%s)
"#;

/// Shared by both modes: forwarding on, the DNAT for the source only,
/// everything else forwarded dropped, and the power-off at the end.
const RULES: &str = r#"case "$SOURCE" in */*) ;; *) SOURCE="$SOURCE/32" ;; esac
if [ "$(date +%s)" -ge "$ENDS" ]; then $POWEROFF; exit 0; fi
sysctl -qw net.ipv4.ip_forward=1
iptables -w -P FORWARD DROP
iptables -w -F FORWARD
iptables -w -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -w -A FORWARD -s "$SOURCE" -d "$DESTINATION_IP" -p tcp --dport "$DESTINATION_PORT" -m conntrack --ctstate NEW -j ACCEPT
iptables -w -t nat -A PREROUTING -s "$SOURCE" -p tcp --dport "$LISTEN_PORT" -j DNAT --to-destination "$DESTINATION_IP:$DESTINATION_PORT"
iptables -w -t nat -A POSTROUTING -d "$DESTINATION_IP" -p tcp --dport "$DESTINATION_PORT" -j MASQUERADE
iptables -w -A INPUT -p tcp --dport "$LISTEN_PORT" -j DROP
( while [ "$(date +%s)" -lt "$ENDS" ]; do sleep 1; done; $POWEROFF ) </dev/null >/dev/null 2>&1 &
"#;

/// Sums the forwarded bytes every second (the FORWARD chain's counters);
/// after IDLE seconds without a change, powers off. A grant nobody uses
/// ends that way too.
const IDLE_WATCH: &str = r#"( last=""; quiet=0
  while :; do
    now=$(iptables -w -L FORWARD -v -x -n | awk 'NR > 2 { bytes += $2 } END { print bytes + 0 }')
    if [ "$now" = "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$now; fi
    if [ "$quiet" -ge "$IDLE" ]; then $POWEROFF; exit 0; fi
    sleep 1
  done ) </dev/null >/dev/null 2>&1 &
"#;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_script_names_its_source_target_and_end() {
        let script = render(
            &Mode::Grant { source: "203.0.113.7/32".parse().unwrap(), ends_unix: 1_764_558_000 },
            15432,
            "10.0.3.12:5432".parse().unwrap(),
            None,
        );
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        for line in [
            "LISTEN_PORT=15432\n",
            "DESTINATION_IP=10.0.3.12\n",
            "DESTINATION_PORT=5432\n",
            "SOURCE=203.0.113.7/32\n",
            "ENDS=1764558000\n",
            "-j DNAT --to-destination \"$DESTINATION_IP:$DESTINATION_PORT\"",
            "iptables -w -P FORWARD DROP",
        ] {
            assert!(script.contains(line), "missing {line:?} in\n{script}");
        }
        assert!(!script.contains("169.254.169.254"), "a grant script needs no metadata: {script}");
        assert!(!script.contains("IDLE="), "no idle watch unless asked: {script}");
    }

    #[test]
    fn a_pool_script_waits_for_its_grant_in_the_tags() {
        let script = render(&Mode::Pool, 15432, "10.0.3.12:5432".parse().unwrap(), Some(600));
        assert!(script.contains("\nIDLE=600\n") && script.contains("iptables -w -L FORWARD -v -x -n"), "{script}");
        assert!(script.contains("meta-data/tags/instance/$1"), "{script}");
        assert!(script.contains("imds ajar:source") && script.contains("imds ajar:ends-at"), "{script}");
        assert!(!script.contains("\nSOURCE=2"), "{script}");
    }
}
