//! The nftables driver end to end: the real `ajar` binary in a gateway
//! namespace, real DNAT in the kernel, real TCP from two client namespaces
//! to a server namespace. Needs root; skips outside CI when it cannot run.

mod netns;

use std::net::SocketAddr;
use std::time::Duration;

use netns::{assert_flow_cut_at_expiry, can_run, time, Ajar, Client, EchoServer, Family, Topology};

const LISTEN_PORT: u16 = 2222;
const SERVER_PORT: u16 = 22;

/// A table of someone else's that ajar must never touch.
const FOREIGN: &str = "table inet keepme {
  set allowed { type ipv4_addr; elements = { 192.0.2.1 }; }
  chain input {
    type filter hook input priority 10; policy accept;
    ip saddr @allowed accept comment \"not ajar's\"
  }
}
";

struct Setup {
    topo: Topology,
    echo: EchoServer,
    listen: SocketAddr,
    config: String,
}

fn setup(tag: &str, family: Family) -> Setup {
    let topo = Topology::new(tag);
    topo.set_forwarding(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("foreign.nft");
    std::fs::write(&file, FOREIGN).expect("write the foreign table");
    netns::run(&["ip", "netns", "exec", &topo.gw, "nft", "-f", &file.to_string_lossy()]);
    let echo = EchoServer::start(&topo, family, SERVER_PORT);
    let listen = SocketAddr::new(topo.gateway(family), LISTEN_PORT);
    let destination = SocketAddr::new(topo.host(3, family), SERVER_PORT);
    let config = Ajar::config(&topo, listen, destination);
    Setup { topo, echo, listen, config }
}

/// Grants, admission, refusal, expiry with ajar alive, untouched foreign
/// rules and `--cleanup`, for one address family.
fn grant_admits_only_the_requester_and_expiry_cuts(tag: &str, family: Family) {
    let Setup { topo, echo, listen, config } = setup(tag, family);
    let foreign_before = topo.nft("list table inet keepme");
    let ajar = Ajar::start(&topo, &config);

    // Before any grant, nobody gets through the gateway.
    assert!(!topo.reaches(&topo.a, listen), "client A got through before any grant");
    assert!(!topo.reaches(&topo.b, listen), "client B got through before any grant");

    let alice = Client::login(&topo, &topo.a, &ajar);
    let request = alice.grant("4s");
    let ends_at = time(&request, "ends_at");
    if let Err(e) = topo.try_reach(&topo.a, listen) {
        panic!(
            "client A holds a grant but did not get through ({e}); ruleset:\n{}\najar:\n{}",
            topo.nft("list ruleset"),
            ajar.stderr()
        );
    }
    assert!(echo.saw(topo.host(1, family)), "the server did not see client A's own address:\n{}", echo.log());
    assert!(!topo.reaches(&topo.b, listen), "client B got through on client A's grant");
    assert!(!echo.saw(topo.host(2, family)), "the server saw client B");

    // The ruleset is in ajar's table, and the foreign table is as it was.
    let ruleset = topo.nft("list table inet ajar");
    eprintln!("ajar's ruleset with one grant:\n{ruleset}");
    assert!(ruleset.contains(&format!("comment \"{}@", request["id"].as_str().unwrap_or_default())), "{ruleset}");
    assert_eq!(topo.nft("list table inet keepme"), foreign_before, "ajar changed a table it does not own");

    // At expiry an established flow stops within the bound and new
    // connections fail.
    assert_flow_cut_at_expiry(&topo, listen, ends_at, None);

    // --cleanup removes ajar's table and nothing else.
    drop(ajar);
    let out = Ajar::run_to_end(&topo, &config, &["--cleanup"]);
    assert!(out.status.success(), "cleanup failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed nftables table inet ajar"));
    let tables = topo.nft("list tables");
    assert!(!tables.contains("inet ajar"), "{tables}");
    assert_eq!(topo.nft("list table inet keepme"), foreign_before, "cleanup changed a table ajar does not own");
}

#[test]
fn nft_grant_admits_only_the_requester_and_expiry_cuts_ipv4() {
    if can_run("nft_grant_admits_only_the_requester_and_expiry_cuts_ipv4") {
        grant_admits_only_the_requester_and_expiry_cuts("g4", Family::V4);
    }
}

#[test]
fn nft_grant_admits_only_the_requester_and_expiry_cuts_ipv6() {
    if can_run("nft_grant_admits_only_the_requester_and_expiry_cuts_ipv6") {
        grant_admits_only_the_requester_and_expiry_cuts("g6", Family::V6);
    }
}

/// With ajar killed while a grant is active, the kernel's own timeout still
/// ends access on time: established flows are cut, new ones refused.
#[test]
fn nft_kernel_closes_on_time_after_kill_9() {
    if !can_run("nft_kernel_closes_on_time_after_kill_9") {
        return;
    }
    let Setup { topo, echo: _echo, listen, config } = setup("k9", Family::V4);
    let mut ajar = Ajar::start(&topo, &config);
    let alice = Client::login(&topo, &topo.a, &ajar);
    let ends_at = time(&alice.grant("5s"), "ends_at");
    assert_flow_cut_at_expiry(&topo, listen, ends_at, Some(&mut ajar));
    let set = topo.nft("list table inet ajar");
    assert!(!set.contains("comment \"r"), "the kernel kept an expired element:\n{set}");
}

/// After a restart, reconcile removes elements no active grant explains
/// (one added by hand, one with a made-up grant id) and restores the
/// element of an active grant that was deleted behind ajar's back.
#[test]
fn nft_reconcile_after_restart_repairs_both_ways() {
    if !can_run("nft_reconcile_after_restart_repairs_both_ways") {
        return;
    }
    let Setup { topo, echo: _echo, listen, config } = setup("rc", Family::V4);
    let mut ajar = Ajar::start(&topo, &config);
    let alice = Client::login(&topo, &topo.a, &ajar);
    let request = alice.grant("1h");
    assert!(topo.reaches(&topo.a, listen));
    ajar.kill9();

    let a = topo.host(1, Family::V4);
    let b = topo.host(2, Family::V4);
    topo.nft(&format!("delete element inet ajar v4_t {{ {a} }}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let drift = dir.path().join("drift.nft");
    std::fs::write(
        &drift,
        format!("add element inet ajar v4_t {{ {b} timeout 1h comment \"rbbbbbbbbbbbb@4000000000.000\" }}\n"),
    )
    .expect("write drift");
    netns::run(&["ip", "netns", "exec", &topo.gw, "nft", "-f", &drift.to_string_lossy()]);
    assert!(!topo.reaches(&topo.a, listen), "deleting A's element did not close A");
    assert!(topo.reaches(&topo.b, listen), "the hand-made element did not open B");

    ajar.restart();
    // Reconcile runs before the API answers, and every second after.
    let set = topo.nft("list set inet ajar v4_t");
    assert!(set.contains(&format!("{a} ")), "A's grant was not restored:\n{set}\n{}", ajar.stderr());
    assert!(set.contains(request["id"].as_str().unwrap_or("?")), "{set}");
    assert!(!set.contains(&b.to_string()), "the element no grant explains was not removed:\n{set}");
    assert!(topo.reaches(&topo.a, listen), "A's active grant does not work after restart");
    assert!(!topo.reaches(&topo.b, listen), "B still gets through after reconcile");

    // An element added by hand while ajar runs goes at the next pass.
    std::fs::write(&drift, format!("add element inet ajar v4_t {{ {b} timeout 1h }}\n")).expect("write drift");
    netns::run(&["ip", "netns", "exec", &topo.gw, "nft", "-f", &drift.to_string_lossy()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while topo.nft("list set inet ajar v4_t").contains(&b.to_string()) {
        assert!(std::time::Instant::now() < deadline, "reconcile did not remove a hand-made element");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ajar reports IP forwarding being off instead of starting a gateway that
/// cannot forward, and turns it on only when the config says so.
#[test]
fn nft_start_checks_forwarding() {
    if !can_run("nft_start_checks_forwarding") {
        return;
    }
    let Setup { topo, echo: _echo, config, .. } = setup("fw", Family::V4);
    topo.set_forwarding(false);
    let out = Ajar::run_to_end(&topo, &config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ajar started with forwarding off");
    assert!(
        stderr.contains("net.ipv4.ip_forward is 0") && stderr.contains("sysctl -w net.ipv4.ip_forward=1"),
        "{stderr}"
    );
    let enabled = config.replace("nftables = { listen = ", "nftables = { enable_forwarding = true, listen = ");
    let ajar = Ajar::start(&topo, &enabled);
    let forwarding = topo.exec(&topo.gw, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert_eq!(String::from_utf8_lossy(&forwarding.stdout).trim(), "1", "{}", ajar.stderr());
}
