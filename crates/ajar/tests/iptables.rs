//! The iptables driver end to end: the real `ajar` binary in a gateway
//! namespace, real DNAT and ipsets in the kernel, real TCP from two client
//! namespaces to a server namespace, IPv4 (iptables) and IPv6 (ip6tables).
//! The main tests use Debian's default `iptables` (the nf_tables backend);
//! the `ipt_legacy_*` ones run the same checks with the legacy backend, by
//! putting links named `iptables`, `iptables-restore`, ... to the
//! `*-legacy` programs first on ajar's `PATH`. Needs root; skips outside CI
//! when it cannot run.

mod netns;

use std::net::SocketAddr;
use std::time::Duration;

use netns::{assert_flow_cut_at_expiry, can_run_with, time, Ajar, Client, EchoServer, Family, Topology};

const LISTEN_PORT: u16 = 2222;
const SERVER_PORT: u16 = 22;
const TOOLS: &[&str] = &["iptables", "ip6tables", "iptables-save", "ip6tables-save", "ipset"];

const LEGACY_TOOLS: &[&str] =
    &["iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save", "ipset"];

/// Which iptables backend a test runs: the programs ajar and the test
/// itself call by the plain names.
struct Backend {
    /// For the legacy backend, a directory of links named like the
    /// default programs; ajar gets it first on its `PATH`.
    links: Option<tempfile::TempDir>,
}

impl Backend {
    fn default_nft() -> Self {
        Backend { links: None }
    }

    fn legacy() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, target) in [
            ("iptables", "iptables-legacy"),
            ("ip6tables", "ip6tables-legacy"),
            ("iptables-restore", "iptables-legacy-restore"),
            ("ip6tables-restore", "ip6tables-legacy-restore"),
            ("iptables-save", "iptables-legacy-save"),
            ("ip6tables-save", "ip6tables-legacy-save"),
        ] {
            let path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(target))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{target} is not installed"));
            std::os::unix::fs::symlink(path, dir.path().join(name)).expect("link a legacy program");
        }
        Backend { links: Some(dir) }
    }

    /// The program this backend runs for `name`.
    fn program(&self, name: &str) -> String {
        match &self.links {
            Some(dir) if name != "ipset" => dir.path().join(name).to_string_lossy().into_owned(),
            _ => name.to_owned(),
        }
    }

    /// ajar's extra environment.
    fn env(&self) -> Vec<(String, String)> {
        match &self.links {
            Some(dir) => vec![(
                "PATH".to_owned(),
                format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default()),
            )],
            None => Vec::new(),
        }
    }
}

struct Setup {
    topo: Topology,
    echo: EchoServer,
    listen: SocketAddr,
    config: String,
    tools: Backend,
}

fn setup(tag: &str, family: Family) -> Setup {
    setup_with(tag, family, Backend::default_nft())
}

fn setup_with(tag: &str, family: Family, tools: Backend) -> Setup {
    let topo = Topology::new(tag);
    topo.set_forwarding(true);
    add_foreign_rules(&topo, &tools);
    let echo = EchoServer::start(&topo, family, SERVER_PORT);
    let listen = SocketAddr::new(topo.gateway(family), LISTEN_PORT);
    let destination = SocketAddr::new(topo.host(3, family), SERVER_PORT);
    let config = Ajar::config_for("iptables", &topo, listen, destination);
    Setup { topo, echo, listen, config, tools }
}

/// Rules and a set of someone else's in the tables and built-in chains ajar
/// also uses, which ajar must never touch.
fn add_foreign_rules(topo: &Topology, tools: &Backend) {
    topo.in_gw(&["ipset", "create", "keepme", "hash:ip"]);
    topo.in_gw(&["ipset", "add", "keepme", "192.0.2.1"]);
    let (v4, v6) = (tools.program("iptables"), tools.program("ip6tables"));
    for (program, net) in [(v4.as_str(), "192.0.2.0/24"), (v6.as_str(), "2001:db8::/32")] {
        let comment = ["-m", "comment", "--comment", "not ajar's"];
        let mut input = vec![program, "-A", "INPUT", "-s", net];
        input.extend(comment);
        input.extend(["-j", "ACCEPT"]);
        topo.in_gw(&input);
        let mut forward = vec![program, "-A", "FORWARD", "-d", net];
        forward.extend(comment);
        forward.extend(["-j", "ACCEPT"]);
        topo.in_gw(&forward);
        let mut nat = vec![program, "-t", "nat", "-A", "POSTROUTING", "-s", net];
        nat.extend(comment);
        nat.extend(["-j", "MASQUERADE"]);
        topo.in_gw(&nat);
    }
    topo.in_gw(&[&v4, "-A", "FORWARD", "-m", "set", "--match-set", "keepme", "src", "-j", "ACCEPT"]);
}

/// Everything in the gateway's firewall that is not ajar's: every rule of
/// both families' filter and nat tables except ajar's chains and the jumps
/// into them, and the foreign set.
fn foreign(topo: &Topology, tools: &Backend) -> String {
    let mut out = String::new();
    for name in ["iptables", "ip6tables"] {
        let program = tools.program(name);
        for table in ["filter", "nat"] {
            let rules = topo.in_gw(&[&program, "-w", "-t", table, "-S"]);
            for line in rules.lines().filter(|l| !l.contains("AJAR-")) {
                out.push_str(&format!("{name} {table}: {line}\n"));
            }
        }
    }
    out + &topo.in_gw(&["ipset", "save", "keepme"])
}

/// ajar's part of the ruleset, as `iptables-save` prints it.
fn ajar_rules(topo: &Topology, tools: &Backend, family: Family) -> String {
    let save = topo.in_gw(&[&tools.program(if family == Family::V4 { "iptables-save" } else { "ip6tables-save" })]);
    save.lines().filter(|l| l.contains("AJAR-")).collect::<Vec<_>>().join("\n")
}

fn set_name(family: Family) -> &'static str {
    if family == Family::V4 {
        "ajar4-t"
    } else {
        "ajar6-t"
    }
}

/// Grants, admission, refusal, expiry with ajar alive, untouched foreign
/// rules and `--cleanup`, for one address family.
fn grant_admits_only_the_requester_and_expiry_cuts(tag: &str, family: Family, tools: Backend) {
    let Setup { topo, echo, listen, config, tools } = setup_with(tag, family, tools);
    let foreign_before = foreign(&topo, &tools);
    let ajar = Ajar::start_with_env(&topo, &config, &tools.env());

    // Before any grant, nobody gets through the gateway.
    assert!(!topo.reaches(&topo.a, listen), "client A got through before any grant");
    assert!(!topo.reaches(&topo.b, listen), "client B got through before any grant");

    let alice = Client::login(&topo, &topo.a, &ajar);
    let request = alice.grant("4s");
    let ends_at = time(&request, "ends_at");
    if let Err(e) = topo.try_reach(&topo.a, listen) {
        panic!(
            "client A holds a grant but did not get through ({e}); rules:\n{}\n{}\najar:\n{}",
            ajar_rules(&topo, &tools, family),
            topo.in_gw(&["ipset", "save"]),
            ajar.stderr()
        );
    }
    assert!(echo.saw(topo.host(1, family)), "the server did not see client A's own address:\n{}", echo.log());
    assert!(!topo.reaches(&topo.b, listen), "client B got through on client A's grant");
    assert!(!echo.saw(topo.host(2, family)), "the server saw client B");

    // The rules are in ajar's chains, the grant in ajar's set (its id in
    // the element's comment), and everything else is as it was.
    let rules = ajar_rules(&topo, &tools, family);
    let set = topo.in_gw(&["ipset", "save", set_name(family)]);
    eprintln!("ajar's rules with one grant:\n{rules}\n{set}");
    assert!(rules.contains("-j DNAT --to-destination"), "{rules}");
    assert!(rules.contains("-j REJECT --reject-with tcp-reset"), "{rules}");
    assert!(set.contains(&format!("comment \"{}@", request["id"].as_str().unwrap_or_default())), "{set}");
    assert_eq!(foreign(&topo, &tools), foreign_before, "ajar changed rules it does not own");

    // At expiry an established flow stops within the bound and new
    // connections fail.
    assert_flow_cut_at_expiry(&topo, listen, ends_at, None);

    // --cleanup removes ajar's chains, jumps and sets and nothing else.
    drop(ajar);
    let out = Ajar::run_to_end_with_env(&topo, &config, &["--cleanup"], &tools.env());
    assert!(out.status.success(), "cleanup failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed ajar's iptables chains"));
    for f in [Family::V4, Family::V6] {
        assert_eq!(ajar_rules(&topo, &tools, f), "", "cleanup left rules behind");
    }
    let sets = topo.in_gw(&["ipset", "list", "-n"]);
    assert_eq!(sets.trim(), "keepme", "cleanup left sets behind or removed someone else's");
    assert_eq!(foreign(&topo, &tools), foreign_before, "cleanup changed rules ajar does not own");
    let again = Ajar::run_to_end_with_env(&topo, &config, &["--cleanup"], &tools.env());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"), "{again:?}");
}

#[test]
fn ipt_grant_admits_only_the_requester_and_expiry_cuts_ipv4() {
    if can_run_with("ipt_grant_admits_only_the_requester_and_expiry_cuts_ipv4", TOOLS) {
        grant_admits_only_the_requester_and_expiry_cuts("i4", Family::V4, Backend::default_nft());
    }
}

#[test]
fn ipt_grant_admits_only_the_requester_and_expiry_cuts_ipv6() {
    if can_run_with("ipt_grant_admits_only_the_requester_and_expiry_cuts_ipv6", TOOLS) {
        grant_admits_only_the_requester_and_expiry_cuts("i6", Family::V6, Backend::default_nft());
    }
}

/// With ajar killed while a grant is active, the ipset element's own
/// timeout still ends access on time: established flows are cut, new ones
/// refused.
fn kernel_closes_on_time_after_kill_9(tag: &str, family: Family, tools: Backend) {
    let Setup { topo, echo: _echo, listen, config, tools } = setup_with(tag, family, tools);
    let mut ajar = Ajar::start_with_env(&topo, &config, &tools.env());
    let alice = Client::login(&topo, &topo.a, &ajar);
    let ends_at = time(&alice.grant("5s"), "ends_at");
    assert_flow_cut_at_expiry(&topo, listen, ends_at, Some(&mut ajar));
    let set = topo.in_gw(&["ipset", "save", set_name(family)]);
    assert!(!set.contains("add "), "the kernel kept an expired element:\n{set}");
}

#[test]
fn ipt_kernel_closes_on_time_after_kill_9_ipv4() {
    if can_run_with("ipt_kernel_closes_on_time_after_kill_9_ipv4", TOOLS) {
        kernel_closes_on_time_after_kill_9("k4", Family::V4, Backend::default_nft());
    }
}

#[test]
fn ipt_kernel_closes_on_time_after_kill_9_ipv6() {
    if can_run_with("ipt_kernel_closes_on_time_after_kill_9_ipv6", TOOLS) {
        kernel_closes_on_time_after_kill_9("k6", Family::V6, Backend::default_nft());
    }
}

#[test]
fn ipt_legacy_grant_admits_only_the_requester_and_expiry_cuts_ipv4() {
    if can_run_with("ipt_legacy_grant_admits_only_the_requester_and_expiry_cuts_ipv4", LEGACY_TOOLS) {
        grant_admits_only_the_requester_and_expiry_cuts("l4", Family::V4, Backend::legacy());
    }
}

#[test]
fn ipt_legacy_grant_admits_only_the_requester_and_expiry_cuts_ipv6() {
    if can_run_with("ipt_legacy_grant_admits_only_the_requester_and_expiry_cuts_ipv6", LEGACY_TOOLS) {
        grant_admits_only_the_requester_and_expiry_cuts("l6", Family::V6, Backend::legacy());
    }
}

#[test]
fn ipt_legacy_kernel_closes_on_time_after_kill_9_ipv4() {
    if can_run_with("ipt_legacy_kernel_closes_on_time_after_kill_9_ipv4", LEGACY_TOOLS) {
        kernel_closes_on_time_after_kill_9("lk", Family::V4, Backend::legacy());
    }
}

/// After a restart, ajar's chains are rewritten (a deleted jump comes back
/// once, a rule slipped into ajar's chain goes), and reconcile removes
/// elements no active grant explains (one with a made-up grant id) and
/// restores the element of an active grant that was deleted behind ajar's
/// back; rules outside ajar's chains stay as they were.
#[test]
fn ipt_reconcile_after_restart_repairs_both_ways() {
    if !can_run_with("ipt_reconcile_after_restart_repairs_both_ways", TOOLS) {
        return;
    }
    let Setup { topo, echo: _echo, listen, config, tools } = setup("ir", Family::V4);
    let foreign_before = foreign(&topo, &tools);
    let mut ajar = Ajar::start(&topo, &config);
    let alice = Client::login(&topo, &topo.a, &ajar);
    let request = alice.grant("1h");
    assert!(topo.reaches(&topo.a, listen));
    let rules_before = ajar_rules(&topo, &tools, Family::V4);
    ajar.kill9();

    let a = topo.host(1, Family::V4).to_string();
    let b = topo.host(2, Family::V4).to_string();
    topo.in_gw(&["ipset", "del", "ajar4-t", &a]);
    topo.in_gw(&["ipset", "add", "ajar4-t", &b, "timeout", "3600", "comment", "rbbbbbbbbbbbb@4000000000.000"]);
    assert!(!topo.reaches(&topo.a, listen), "deleting A's element did not close A");
    assert!(topo.reaches(&topo.b, listen), "the hand-made element did not open B");
    topo.in_gw(&[
        "iptables",
        "-t",
        "filter",
        "-D",
        "FORWARD",
        "-m",
        "comment",
        "--comment",
        "ajar",
        "-j",
        "AJAR-FORWARD",
    ]);
    topo.in_gw(&["iptables", "-A", "AJAR-FORWARD", "-s", &b, "-j", "ACCEPT"]);

    ajar.restart();
    // Reconcile runs before the API answers, and every second after.
    let set = topo.in_gw(&["ipset", "save", "ajar4-t"]);
    assert!(set.contains(&format!("add ajar4-t {a} ")), "A's grant was not restored:\n{set}\n{}", ajar.stderr());
    assert!(set.contains(request["id"].as_str().unwrap_or("?")), "{set}");
    assert!(!set.contains(&b), "the element no grant explains was not removed:\n{set}");
    assert_eq!(ajar_rules(&topo, &tools, Family::V4), rules_before, "ajar's chains were not restored as they were");
    assert!(topo.reaches(&topo.a, listen), "A's active grant does not work after restart");
    assert!(!topo.reaches(&topo.b, listen), "B still gets through after reconcile");
    assert_eq!(foreign(&topo, &tools), foreign_before, "a restart changed rules ajar does not own");

    // An element added by hand while ajar runs goes at the next pass.
    topo.in_gw(&["ipset", "add", "ajar4-t", &b, "timeout", "3600"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while topo.in_gw(&["ipset", "save", "ajar4-t"]).contains(&b) {
        assert!(std::time::Instant::now() < deadline, "reconcile did not remove a hand-made element");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ajar reports what the host lacks instead of starting a gateway that
/// cannot work: IP forwarding (turned on only when the config says so) and
/// CAP_NET_ADMIN.
#[test]
fn ipt_start_checks_forwarding_and_capability() {
    if !can_run_with("ipt_start_checks_forwarding_and_capability", &["iptables", "ipset", "setpriv"]) {
        return;
    }
    let Setup { topo, echo: _echo, config, tools, .. } = setup("ic", Family::V4);

    // Without CAP_NET_ADMIN (dropped from the bounding set, so the exec'd
    // ajar cannot have it even as root).
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ajar.toml");
    std::fs::write(&path, &config).expect("write the config");
    let path = path.to_string_lossy().into_owned();
    let out = topo.exec(
        &topo.gw,
        &["setpriv", "--bounding-set=-net_admin", env!("CARGO_BIN_EXE_ajar"), "server", "--config", &path],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ajar started without CAP_NET_ADMIN");
    assert!(
        stderr.contains("needs the CAP_NET_ADMIN capability") && stderr.contains("AmbientCapabilities=CAP_NET_ADMIN"),
        "{stderr}"
    );
    assert_eq!(ajar_rules(&topo, &tools, Family::V4), "", "ajar changed the firewall although it refused to start");

    topo.set_forwarding(false);
    let out = Ajar::run_to_end(&topo, &config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ajar started with forwarding off");
    assert!(
        stderr.contains("net.ipv4.ip_forward is 0") && stderr.contains("sysctl -w net.ipv4.ip_forward=1"),
        "{stderr}"
    );
    let forwarding = topo.exec(&topo.gw, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "0", "ajar changed a sysctl it was not allowed to");
    let enabled = config.replace("iptables = { listen = ", "iptables = { enable_forwarding = true, listen = ");
    let ajar = Ajar::start(&topo, &enabled);
    let forwarding = topo.exec(&topo.gw, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1", "{}", ajar.stderr());
}

/// A reload that adds the first iptables target runs the same host checks
/// as a start: with forwarding off it is refused, the running config stays
/// and the firewall is not touched; once forwarding is on, the same reload
/// switches the target from the built-in gateway to the kernel DNAT, and a
/// reload moving it back takes its set and rules away.
#[test]
fn ipt_reload_adding_the_first_target_checks_the_host() {
    if !can_run_with("ipt_reload_adding_the_first_target_checks_the_host", TOOLS) {
        return;
    }
    let Setup { topo, echo, listen, config, tools } = setup("ih", Family::V4);
    let via_gateway = config.replace(
        &format!("driver = \"iptables\"\niptables = {{ listen = \"{listen}\" }}"),
        &format!("driver = \"gateway\"\ngateway = {{ listen = \"{listen}\" }}"),
    );
    assert_ne!(via_gateway, config, "the test config changed shape");
    topo.set_forwarding(false);
    let ajar = Ajar::start(&topo, &via_gateway);

    ajar.reload(&config);
    ajar.wait_log("config reload failed");
    let log = ajar.stderr();
    assert!(log.contains("net.ipv4.ip_forward is 0"), "{log}");
    assert_eq!(ajar_rules(&topo, &tools, Family::V4), "", "a refused reload changed the firewall");
    assert!(!topo.in_gw(&["ipset", "list", "-n"]).contains("ajar"), "a refused reload created a set");

    topo.set_forwarding(true);
    ajar.reload(&config);
    ajar.wait_log("config reloaded");
    assert!(ajar_rules(&topo, &tools, Family::V4).contains("-j DNAT"), "{}", ajar.stderr());
    let alice = Client::login(&topo, &topo.a, &ajar);
    alice.grant("1m");
    assert!(topo.reaches(&topo.a, listen), "A's grant does not work after the reload:\n{}", ajar.stderr());
    // Through the kernel DNAT the server sees A itself, not a relay.
    assert!(echo.saw(topo.host(1, Family::V4)), "{}", echo.log());
    assert!(!topo.reaches(&topo.b, listen), "client B got through on client A's grant");

    // Moving the target back to the gateway leaves no set and no rule of
    // ajar's in the kernel (the empty chains and their jumps stay until
    // --cleanup).
    ajar.reload(&via_gateway);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while topo.in_gw(&["ipset", "list", "-n"]).contains("ajar") {
        assert!(std::time::Instant::now() < deadline, "the set outlived its target:\n{}", ajar.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    let rules = ajar_rules(&topo, &tools, Family::V4);
    assert!(!rules.contains("-A AJAR-"), "rules outlived their target:\n{rules}");
}
