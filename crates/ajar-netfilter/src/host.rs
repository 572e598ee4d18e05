//! Start-up checks of the gateway host: the tools, the capability and the
//! forwarding sysctls the kernel DNAT drivers need. They report what is
//! missing and how to fix it; they change a sysctl only when the config
//! says so (`enable_forwarding = true`).

use std::path::Path;

use ajar_domain::Target;
use ajar_enforce::DriverError;
use tracing::warn;

/// Bit of CAP_NET_ADMIN in the capability masks of `/proc/self/status`.
const CAP_NET_ADMIN: u32 = 12;

/// Whether `program` is an executable file somewhere on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails unless every program in `programs` (name, Debian package) is
/// installed.
pub fn require_programs(driver: &str, programs: &[(&str, &str)]) -> Result<(), DriverError> {
    let missing: Vec<&(&str, &str)> = programs.iter().filter(|(p, _)| !on_path(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
    Err(DriverError::permanent(format!(
        "the {driver} driver runs {} but it is not on PATH; install it (on Debian: apt-get install {})",
        names.join(" and "),
        packages.join(" ")
    )))
}

fn capability_set(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    u64::from_str_radix(line[field.len()..].trim(), 16).ok()
}

/// Fails unless this process can change the kernel's firewall, and can pass
/// that power on to the `nft` it runs.
pub fn require_net_admin(driver: &str) -> Result<(), DriverError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| DriverError::permanent(format!("cannot read /proc/self/status to check capabilities: {e}")))?;
    check_net_admin(driver, &status)
}

pub fn check_net_admin(driver: &str, status: &str) -> Result<(), DriverError> {
    let has = |field: &str| capability_set(status, field).is_some_and(|set| set & (1 << CAP_NET_ADMIN) != 0);
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .is_some_and(|effective| effective == "0");
    if !has("CapEff:") {
        return Err(DriverError::permanent(format!(
            "the {driver} driver needs the CAP_NET_ADMIN capability to change the kernel's firewall, and this process lacks it; run ajar server as root, or under systemd with AmbientCapabilities=CAP_NET_ADMIN and CapabilityBoundingSet=CAP_NET_ADMIN"
        )));
    }
    if !root && !has("CapAmb:") {
        return Err(DriverError::permanent(format!(
            "the {driver} driver runs {driver} as a child process, which inherits CAP_NET_ADMIN only as an ambient capability, and it is not ambient here (a file capability set with setcap is not enough); run ajar server as root, or under systemd with AmbientCapabilities=CAP_NET_ADMIN"
        )));
    }
    Ok(())
}

/// Checks (or, when a target allows it, turns on) IP forwarding for every
/// family the targets use.
pub fn require_forwarding(driver: &str, targets: &[&Target]) -> Result<(), DriverError> {
    let mut problems = Vec::new();
    for (v4, key, file) in [
        (true, "net.ipv4.ip_forward", "/proc/sys/net/ipv4/ip_forward"),
        (false, "net.ipv6.conf.all.forwarding", "/proc/sys/net/ipv6/conf/all/forwarding"),
    ] {
        let users: Vec<&&Target> =
            targets.iter().filter(|t| t.driver.nat().is_some_and(|n| n.listen.is_ipv4() == v4)).collect();
        if users.is_empty() {
            continue;
        }
        let on = std::fs::read_to_string(file).map(|v| v.trim() == "1").unwrap_or(false);
        if on {
            continue;
        }
        if users.iter().any(|t| t.driver.nat().is_some_and(|n| n.enable_forwarding)) {
            match std::fs::write(Path::new(file), "1") {
                Ok(()) => {
                    warn!(
                        sysctl = key,
                        "IP forwarding was off; turned it on because a target sets enable_forwarding = true"
                    );
                    continue;
                }
                Err(e) => problems.push(format!("{key} is 0 and setting it to 1 failed ({e})")),
            }
        } else {
            let names: Vec<&str> = users.iter().map(|t| t.name.as_str()).collect();
            problems.push(format!(
                "{key} is 0, so the kernel would not forward the DNATed connections of {}; turn it on with `sysctl -w {key}=1` (and in /etc/sysctl.d to survive a reboot), or set enable_forwarding = true in the target's {driver} table to let ajar do it",
                names.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(DriverError::permanent(problems.join("; ")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(uid: &str, eff: &str, amb: &str) -> String {
        format!("Name:\tajar\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nCapInh:\t0000000000000000\nCapPrm:\t{eff}\nCapEff:\t{eff}\nCapBnd:\t000001ffffffffff\nCapAmb:\t{amb}\n")
    }

    #[test]
    fn net_admin_is_read_from_the_status_masks() {
        assert!(check_net_admin("nftables", &status("0", "000001ffffffffff", "0000000000000000")).is_ok());
        assert!(check_net_admin("nftables", &status("1000", "0000000000001000", "0000000000001000")).is_ok());
        let none = check_net_admin("nftables", &status("1000", "0000000000000000", "0000000000000000"));
        assert!(none.unwrap_err().message.contains("needs the CAP_NET_ADMIN capability"));
        let file_cap_only = check_net_admin("nftables", &status("1000", "0000000000001000", "0000000000000000"));
        assert!(file_cap_only.unwrap_err().message.contains("ambient"));
    }
}
