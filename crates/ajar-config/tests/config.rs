//! Black-box tests of config parsing: the documented example parses into the
//! expected catalog, and every kind of mistake is reported at the right line
//! and key with a message that says what is allowed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ajar_config::{load, parse, summary, Config, ConfigErrors};
use ajar_domain::{DriverKind, GrantDuration, Subject, TargetSelector};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use proptest::prelude::*;

/// A real argon2id hash (default parameters) of "correct horse battery
/// staple", made once with the argon2 crate.
const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$YWphci10ZXN0LXNhbHQ$Dr2LHxGcovvpPjW4f/Hmg9KX/mWptTQcznoIWe3Pas0";

/// The file from the issue, with every optional key set.
const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
data_dir = "ajar-data"          # SQLite database and audit file live here
trusted_proxies = ["10.0.0.5", "10.1.0.0/24"]
tls = { cert = "cert.pem", key = "/etc/ssl/ajar.key" }
approval_timeout = "30m"
token_ttl = "8h"
reconcile_interval = "5s"
max_pending_per_requester = 5

[access]
admins = ["group:sre"]
auditors = ["group:security"]
groups = ["oncall"]

[[users]]
name = "alice"
password_hash = "HASH"
groups = ["dev"]

[[users]]
name = "bob"
password_hash = "HASH"
groups = ["sre", "security"]

[[users]]
name = "carol"
password_hash = "HASH"

[[targets]]
name = "db-prod"
address = "10.0.3.12:5432"
driver = "gateway"
labels = { env = "prod" }
gateway = { listen = "0.0.0.0:15432" }

[[targets]]
name = "ssh-bastion"
address = "bastion.internal:22"
driver = "gateway"
gateway = { listen = "0.0.0.0:2222", public_host = "gw.example.com" }

[[policies]]
name = "dev-prod-db"
subjects = ["group:dev"]
targets = ["env=prod"]
max_duration = "1h"
reason_required = true
approvals = 1
approvers = ["group:sre"]
sources = ["10.8.0.0/16"]

[[policies]]
name = "oncall-ssh"
subjects = ["group:oncall", "carol"]
targets = ["ssh-bastion"]
max_duration = "4h"
approvals = 0
"#;

/// Strips the newline that follows `r#"` so that line 1 is the first line
/// of the case, and puts the real hash in place of `HASH`.
fn text(toml: &str) -> String {
    toml.strip_prefix('\n').unwrap_or(toml).replace("HASH", HASH)
}

fn ok(toml: &str) -> Config {
    match parse(Path::new("/etc/ajar/ajar.toml"), &text(toml)) {
        Ok(config) => config,
        Err(errors) => panic!("expected the file to parse, got:\n{errors}"),
    }
}

/// Parses `toml` and asserts that exactly the `want`ed errors come out.
/// Each is (position, key, part of the message); the position is "line" or
/// "line:column".
fn check(toml: &str, want: &[(&str, &str, &str)]) {
    let errors = match parse(Path::new("ajar.toml"), &text(toml)) {
        Ok(_) => panic!("expected errors {want:?}, but the file parsed:\n{}", text(toml)),
        Err(errors) => errors,
    };
    let shown = errors.to_string();
    for (position, key, says) in want {
        let found = errors.iter().any(|e| {
            let at = if position.contains(':') { format!("{}:{}", e.line, e.column) } else { e.line.to_string() };
            at == *position && e.key == *key && e.message.contains(says)
        });
        assert!(found, "no error at {position} for {key:?} saying {says:?}; got:\n{shown}");
    }
    assert_eq!(errors.0.len(), want.len(), "unexpected number of errors:\n{shown}");
    for (line, error) in shown.lines().zip(errors.iter()) {
        assert!(line.starts_with("ajar.toml:"), "{line}");
        assert_eq!(line, error.to_string());
    }
}

#[test]
fn the_hash_in_these_tests_is_real() {
    let hash = PasswordHash::new(HASH).unwrap();
    assert!(argon2::Argon2::default().verify_password(b"correct horse battery staple", &hash).is_ok());
}

#[test]
fn the_example_parses_into_the_catalog() {
    let config = ok(EXAMPLE);
    let server = &config.server;
    assert_eq!(server.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(server.data_dir, PathBuf::from("/etc/ajar/ajar-data"));
    let proxies: Vec<String> = server.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(proxies, ["10.0.0.5/32", "10.1.0.0/24"]);
    let tls = server.tls.as_ref().unwrap();
    assert_eq!(tls.cert, PathBuf::from("/etc/ajar/cert.pem"));
    assert_eq!(tls.key, PathBuf::from("/etc/ssl/ajar.key"));
    assert_eq!(server.approval_timeout.as_secs(), 1800);
    assert_eq!(server.token_ttl.as_secs(), 8 * 3600);
    assert_eq!(server.reconcile_interval, Duration::from_secs(5));
    assert_eq!(server.max_pending_per_requester, 5);

    let catalog = &config.catalog;
    assert_eq!(catalog.access.admins, [Subject::parse("group:sre").unwrap()]);
    assert_eq!(catalog.access.auditors, [Subject::parse("group:security").unwrap()]);
    let users: Vec<&str> = catalog.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["alice", "bob", "carol"]);
    assert_eq!(catalog.user("bob").unwrap().groups.len(), 2);
    assert_eq!(catalog.user("alice").unwrap().password_hash, HASH);

    let db = catalog.target("db-prod").unwrap();
    assert_eq!(db.address, "10.0.3.12:5432");
    assert_eq!(db.kind(), DriverKind::Gateway);
    assert_eq!(db.labels.get("env").map(String::as_str), Some("prod"));
    let gateway = db.driver.gateway().unwrap();
    assert_eq!(gateway.listen, "0.0.0.0:15432".parse::<SocketAddr>().unwrap());
    assert_eq!(gateway.public_host, None);
    let ssh = catalog.target("ssh-bastion").unwrap();
    assert_eq!(ssh.driver.gateway().unwrap().public_host.as_deref(), Some("gw.example.com"));

    let policy = &catalog.policies[0];
    assert_eq!(policy.name.as_str(), "dev-prod-db");
    assert_eq!(policy.subjects, [Subject::parse("group:dev").unwrap()]);
    assert_eq!(policy.targets, [TargetSelector::Label { key: "env".into(), value: "prod".into() }]);
    assert_eq!(policy.max_duration, GrantDuration::parse("1h").unwrap());
    assert!(policy.reason_required);
    assert_eq!(policy.approvals, 1);
    assert_eq!(policy.approvers, [Subject::parse("group:sre").unwrap()]);
    assert_eq!(policy.sources.len(), 1);
    let oncall = &catalog.policies[1];
    assert!(oncall.reason_required, "reason_required defaults to true");
    assert_eq!(oncall.approvals, 0);
    assert!(oncall.approvers.is_empty() && oncall.sources.is_empty());
}

#[test]
fn a_server_section_alone_takes_the_defaults() {
    let config = ok("[server]\n");
    let server = &config.server;
    assert_eq!(server.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(server.data_dir, PathBuf::from("/etc/ajar/ajar-data"));
    assert!(server.trusted_proxies.is_empty());
    assert_eq!(server.tls, None);
    assert_eq!(server.approval_timeout.as_secs(), 3600);
    assert_eq!(server.token_ttl.as_secs(), 12 * 3600);
    assert_eq!(server.reconcile_interval, Duration::from_secs(10));
    assert_eq!(server.max_pending_per_requester, 20);
    assert_eq!(config.catalog, ajar_domain::Catalog::default());
}

#[test]
fn a_pending_limit_outside_1_to_1000_is_refused() {
    for (value, column) in [("0", "29"), ("1001", "29"), ("-3", "29")] {
        check(
            &format!("[server]\nmax_pending_per_requester = {value}\n"),
            &[(
                &format!("2:{column}"),
                "server.max_pending_per_requester",
                &format!("{value} is not a limit of pending requests ajar accepts; use 1 to 1000"),
            )],
        );
    }
    check("[server]\nmax_pending_per_requester = \"many\"\n", &[("2:29", "server.max_pending_per_requester", "")]);
}

#[test]
fn relative_paths_follow_the_config_file() {
    let toml = "[server]\ndata_dir = \"state\"\n";
    let beside = parse(Path::new("ajar.toml"), toml).unwrap();
    assert_eq!(beside.server.data_dir, PathBuf::from("state"));
    let nested = parse(Path::new("conf/ajar.toml"), toml).unwrap();
    assert_eq!(nested.server.data_dir, PathBuf::from("conf/state"));
    let absolute = parse(Path::new("conf/ajar.toml"), "[server]\ndata_dir = \"/var/lib/ajar\"\n").unwrap();
    assert_eq!(absolute.server.data_dir, PathBuf::from("/var/lib/ajar"));
}

#[test]
fn other_toml_spellings_of_the_same_file_parse() {
    // Arrays of inline tables, dotted keys and sub-tables are all TOML for
    // the same structure and must be accepted alike.
    let config = ok(r#"
users = [{ name = "alice", password_hash = "HASH", groups = ["dev"] }]

[server]
tls.cert = "c.pem"
tls.key = "k.pem"

[[targets]]
name = "db"
address = "[2001:db8::12]:5432"
driver = "gateway"
gateway.listen = "[::1]:0"

[targets.labels]
env = "prod"
"#);
    assert!(config.server.tls.is_some());
    assert_eq!(config.catalog.users.len(), 1);
    assert_eq!(config.catalog.targets[0].labels.len(), 1);
}

// The table of mistakes. Line and column are those of the offending value
// (or key, for unknown keys), counted from the first line of each case.

#[test]
fn unknown_keys_are_named_with_what_is_allowed() {
    check(
        r#"
[server]
listen = "127.0.0.1:8080"
lisen = "127.0.0.1:8081"
tls = { cert = "c.pem", key = "k.pem", chain = "x.pem" }

[access]
admin = ["alice"]

[[users]]
name = "alice"
password_hash = "HASH"
email = "a@example.com"

[[targets]]
name = "db"
adress = "10.0.3.12:5432"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:1", public = "gw" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0
break_glass = true

[extra]
"#,
        &[
            ("3:1", "server.lisen", "unknown key \"lisen\" (did you mean \"listen\"?); the keys allowed in server are listen, data_dir, database, trusted_proxies, tls, approval_timeout, token_ttl, reconcile_interval"),
            ("4:40", "server.tls.chain", "allowed in server.tls are cert, key"),
            ("7:1", "access.admin", "(did you mean \"admins\"?)"),
            ("12:1", "users[0].email", "allowed in users[0] are name, password_hash, groups"),
            ("16:1", "targets[0].adress", "(did you mean \"address\"?)"),
            ("19:35", "targets[0].gateway.public", "allowed in targets[0].gateway are listen, public_host"),
            ("27:1", "policies[0].break_glass", "allowed in policies[0] are name, subjects, targets"),
            ("29:2", "extra", "the keys allowed at the top level are server, access, users, targets, policies"),
        ],
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    check(
        r#"
[server]
listen = 8080
trusted_proxies = "10.0.0.5"

[[users]]
name = "alice"
password_hash = "HASH"
groups = "dev"

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
labels = "env=prod"
gateway = "0.0.0.0:1"

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = 60
reason_required = "yes"
approvals = "1"
"#,
        &[
            ("2:10", "server.listen", "expected a string, found the integer 8080"),
            (
                "3:19",
                "server.trusted_proxies",
                "expected an array such as [\"10.0.0.5\", \"10.1.0.0/24\"], found the string \"10.0.0.5\"",
            ),
            ("8:10", "users[0].groups", "expected an array"),
            ("14:10", "targets[0].labels", "expected a table, found the string \"env=prod\""),
            ("15:11", "targets[0].gateway", "expected a table"),
            ("21:16", "policies[0].max_duration", "expected a string, found the integer 60"),
            ("22:19", "policies[0].reason_required", "expected true or false, found the string \"yes\""),
            ("23:13", "policies[0].approvals", "expected a whole number, found the string \"1\""),
        ],
    );
}

#[test]
fn sections_of_the_wrong_shape_are_refused() {
    check(
        r#"
server = "127.0.0.1:8080"
access = ["group:sre"]

[users]
name = "alice"

[[targets]]
name = "db"

[[policies.x]]
"#,
        &[
            ("1:10", "server", "expected a table, found the string"),
            ("2:10", "access", "expected a table, found an array"),
            ("4:1", "users", "expected an array of tables (one [[users]] section per entry), found a table"),
            (
                "7:1",
                "targets[0].address",
                "this required key is missing from targets[0]; add it, such as address = \"10.0.3.12:5432\"",
            ),
            ("7:1", "targets[0].driver", "driver = \"gateway\""),
            ("10", "policies", "expected an array of tables (one [[policies]] section per entry), found a table"),
        ],
    );
}

#[test]
fn the_server_section_is_required() {
    check("[access]\nadmins = []\n", &[("1:1", "server", "add it, such as a [server] section (it may be empty")]);
}

#[test]
fn required_keys_are_named() {
    check(
        r#"
[server]

[[users]]
groups = ["dev"]

[[policies]]
name = "p"
"#,
        &[
            ("3:1", "users[0].name", "this required key is missing from users[0]; add it, such as name = \"alice\""),
            ("3:1", "users[0].password_hash", "password_hash = \"$argon2id$v=19$...\""),
            ("6:1", "policies[0].subjects", "subjects = [\"group:dev\"]"),
            ("6:1", "policies[0].targets", "targets = [\"db-prod\"]"),
            ("6:1", "policies[0].max_duration", "max_duration = \"1h\""),
            ("6:1", "policies[0].approvals", "approvals = 0 to approve requests automatically"),
        ],
    );
}

#[test]
fn bad_durations_are_explained() {
    check(
        r#"
[server]
approval_timeout = "1 hour"
token_ttl = "0s"
reconcile_interval = "2h"

[[users]]
name = "alice"
password_hash = "HASH"

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "31d"
approvals = 0

[[policies]]
name = "q"
subjects = ["alice"]
targets = ["db"]
max_duration = "90"
approvals = 0
"#,
        &[
            (
                "2:20",
                "server.approval_timeout",
                "\"1 hour\" is not a duration: write a number followed by s, m, h or d",
            ),
            ("3:13", "server.token_ttl", "a duration must be longer than zero seconds"),
            ("4:22", "server.reconcile_interval", "2h is too long between reconcile passes"),
            ("20:16", "policies[0].max_duration", "31d is longer than the longest duration ajar accepts (30d)"),
            ("27:16", "policies[1].max_duration", "\"90\" is not a duration"),
        ],
    );
}

#[test]
fn bad_and_over_wide_networks_are_refused() {
    check(
        r#"
[server]
trusted_proxies = ["10.0.0.5", "proxy.internal", "0.0.0.0/0", "2.0.0.0/7"]

[[users]]
name = "alice"
password_hash = "HASH"

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0
sources = ["10.8.0.1/16", "::/8", "10.8.0.0/33", "2001::/16"]
"#,
        &[
            ("2:32", "server.trusted_proxies[1]", "\"proxy.internal\" is not an IP address or CIDR network"),
            ("2:50", "server.trusted_proxies[2]", "0.0.0.0/0 would admit every address"),
            (
                "2:63",
                "server.trusted_proxies[3]",
                "2.0.0.0/7 is wider than ajar accepts: an IPv4 network must be /8 or narrower",
            ),
            ("20:12", "policies[0].sources[0]", "10.8.0.1/16 has host bits set: did you mean 10.8.0.0/16?"),
            (
                "20:27",
                "policies[0].sources[1]",
                "::/8 is wider than ajar accepts: an IPv6 network must be /16 or narrower",
            ),
            ("20:35", "policies[0].sources[2]", "\"10.8.0.0/33\" is not an IP address or CIDR network"),
        ],
    );
}

#[test]
fn ipv4_mapped_networks_are_read_as_ipv4() {
    let config = ok(r#"
[server]
trusted_proxies = ["::ffff:10.0.0.0/104", "::ffff:10.1.0.5"]

[[users]]
name = "alice"
password_hash = "HASH"

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0
sources = ["::ffff:10.8.0.0/112"]
"#
    .replace("HASH", HASH)
    .as_str());
    // A client's address is compared in its canonical (IPv4) form, so the
    // networks must be IPv4 too, or a mapped network would never match.
    let proxies: Vec<String> = config.server.trusted_proxies.iter().map(ToString::to_string).collect();
    assert_eq!(proxies, ["10.0.0.0/8", "10.1.0.5/32"]);
    assert!(config.server.trusted_proxies[0].contains(&"10.20.30.40".parse::<std::net::IpAddr>().unwrap()));
    let sources: Vec<String> = config.catalog.policies[0].sources.iter().map(ToString::to_string).collect();
    assert_eq!(sources, ["10.8.0.0/16"]);

    // The IPv4 limits apply to the IPv4 network a mapped one stands for.
    check(
        r#"
[server]
trusted_proxies = ["::ffff:0.0.0.0/100", "::ffff:0.0.0.0/96", "::ffff:10.0.0.1/104"]
"#,
        &[
            (
                "2:20",
                "server.trusted_proxies[0]",
                "::ffff:0.0.0.0/100 is wider than ajar accepts: an IPv4 network must be /8 or narrower",
            ),
            ("2:42", "server.trusted_proxies[1]", "::ffff:0.0.0.0/96 would admit every address"),
            ("2:63", "server.trusted_proxies[2]", "has host bits set: did you mean 10.0.0.0/8?"),
        ],
    );
}

#[test]
fn invalid_names_are_refused() {
    check(
        r#"
[server]

[access]
groups = ["on call"]

[[users]]
name = "Alice Smith"
password_hash = "HASH"
groups = ["dev", "-ops"]

[[targets]]
name = "db prod"
address = "10.0.3.12:5432"
driver = "gateway"
labels = { "team lead" = "x", env = "prod/eu" }
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "p"
subjects = ["Group:dev"]
targets = ["env=", "db_prod!"]
max_duration = "1h"
approvals = 0
"#,
        &[
            (
                "4:11",
                "access.groups[0]",
                "\"on call\" is not a valid name: use 1 to 64 letters, digits, '.', '_', '-' or '@'",
            ),
            ("7:8", "users[0].name", "\"Alice Smith\" is not a valid name"),
            ("9:18", "users[0].groups[1]", "\"-ops\" is not a valid name"),
            ("12:8", "targets[0].name", "\"db prod\" is not a valid name"),
            ("15:12", "targets[0].labels.team lead", "the label key is not valid: \"team lead\" is not a valid name"),
            ("15:37", "targets[0].labels.env", "\"prod/eu\" is not a valid name"),
            (
                "20:13",
                "policies[0].subjects[0]",
                "a subject is a user name such as \"alice\" or a group such as \"group:sre\"",
            ),
            ("21:12", "policies[0].targets[0]", "the label value in selector \"env=\" is not valid"),
            (
                "21:20",
                "policies[0].targets[1]",
                "a policy target is a target name such as \"db-prod\" or a label selector such as \"env=prod\"",
            ),
        ],
    );
}

#[test]
fn duplicate_names_point_at_the_second_and_name_the_first_line() {
    check(
        r#"
[server]

[[users]]
name = "alice"
password_hash = "HASH"

[[users]]
name = "alice"
password_hash = "HASH"

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[targets]]
name = "db"
address = "10.0.3.13:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15433" }

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0

[[policies]]
name = "p"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0
"#,
        &[
            (
                "8:8",
                "users[1].name",
                "the user name \"alice\" is already used on line 4; every user needs its own name",
            ),
            ("18:8", "targets[1].name", "the target name \"db\" is already used on line 12"),
            ("31:8", "policies[1].name", "the policy name \"p\" is already used on line 24"),
        ],
    );
}

#[test]
fn gateway_addresses_must_not_clash() {
    check(
        r#"
[server]
listen = "127.0.0.1:8080"

[[targets]]
name = "a"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[targets]]
name = "b"
address = "10.0.3.13:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[targets]]
name = "c"
address = "10.0.3.14:5432"
driver = "gateway"
gateway = { listen = "127.0.0.1:15432" }

[[targets]]
name = "d"
address = "10.0.3.15:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:8080" }

[[targets]]
name = "e"
address = "10.0.3.16:5432"
driver = "gateway"
gateway = { listen = "127.0.0.1:0" }

[[targets]]
name = "f"
address = "10.0.3.17:5432"
driver = "gateway"
gateway = { listen = "127.0.0.1:0" }
"#,
        &[
            (
                "14:22",
                "targets[1].gateway.listen",
                "0.0.0.0:15432 is already taken by target \"a\" on line 8; give each gateway target its own port",
            ),
            (
                "20:22",
                "targets[2].gateway.listen",
                "127.0.0.1:15432 overlaps 0.0.0.0:15432, which target \"a\" listens on (line 8)",
            ),
            (
                "26:22",
                "targets[3].gateway.listen",
                "0.0.0.0:8080 overlaps 127.0.0.1:8080, which the server (server.listen) listens on (line 2)",
            ),
        ],
    );
}

#[test]
fn target_addresses_drivers_and_gateways_are_checked() {
    check(
        r#"
[server]

[[targets]]
name = "a"
address = "10.0.3.12"
driver = "gateway"
gateway = { listen = "0.0.0.0:1" }

[[targets]]
name = "b"
address = "10.0.3.12:99999"
driver = "azure-nsg"

[[targets]]
name = "c"
address = "2001:db8::12"
driver = "gateway"

[[targets]]
name = "d"
address = "db.internal:5432"
driver = "gateway"
gateway = { listen = "localhost:15432", public_host = "gw example" }
"#,
        &[
            ("5:11", "targets[0].address", "\"10.0.3.12\" has no port; write host:port such as 10.0.3.12:5432"),
            ("11:11", "targets[1].address", "port \"99999\" in \"10.0.3.12:99999\" is not a number from 1 to 65535"),
            ("12:10", "targets[1].driver", "\"azure-nsg\" is not a driver ajar knows; the drivers are \"gateway\", \"nftables\", \"iptables\", \"aws-sg\", \"aws-instance\""),
            ("16:11", "targets[2].address", "looks like an IPv6 address without brackets"),
            ("17:10", "targets[2].gateway", "the gateway driver needs to know where to listen for this target; add gateway = { listen = \"0.0.0.0:15432\" }"),
            ("23:22", "targets[3].gateway.listen", "\"localhost:15432\" is not an address to listen on: write IP:port"),
            ("23:55", "targets[3].gateway.public_host", "\"gw example\" is not a valid host name"),
        ],
    );
}

#[test]
fn password_hashes_must_be_argon2id_and_are_never_echoed() {
    check(
        r#"
[server]

[[users]]
name = "alice"
password_hash = "hunter2"

[[users]]
name = "bob"
password_hash = "$argon2i$v=19$m=16,t=2,p=1$c29tZXNhbHQ$Rx4QJfV35jbUKKl0dG2Cig"

[[users]]
name = "carol"
password_hash = "$argon2id$v=19$m=1,t=2,p=1$c29tZXNhbHQ$Rx4QJfV35jbUKKl0dG2Cig"
"#,
        &[
            ("5:17", "users[0].password_hash", "the value is not an argon2id hash in PHC format"),
            ("9:17", "users[1].password_hash", "the value is a argon2i hash, but ajar accepts only an argon2id hash"),
            ("13:17", "users[2].password_hash", "argon2 parameters are not valid"),
        ],
    );
    let errors = parse(Path::new("ajar.toml"), "[server]\n[[users]]\nname = \"a\"\npassword_hash = \"hunter2\"\n")
        .unwrap_err()
        .to_string();
    assert!(!errors.contains("hunter2"), "{errors}");
}

#[test]
fn policy_references_must_resolve() {
    check(
        r#"
[server]

[access]
admins = ["group:sre", "root"]
auditors = ["group:audit"]
groups = ["oncall"]

[[users]]
name = "alice"
password_hash = "HASH"
groups = ["dev", "sre"]

[[targets]]
name = "db-prod"
address = "10.0.3.12:5432"
driver = "gateway"
labels = { env = "prod" }
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "p"
subjects = ["group:dev", "group:oncall", "alise", "group:dba"]
targets = ["env=prod", "db-prd", "env=staging"]
max_duration = "1h"
approvals = 1
approvers = ["group:oncall"]
"#,
        &[
            ("4:24", "access.admins[1]", "no user is named \"root\"; declare it in a [[users]] section, or write \"group:root\" if you mean a group"),
            ("5:13", "access.auditors[0]", "no user is in group \"audit\" and access.groups does not list it"),
            ("22:42", "policies[0].subjects[2]", "no user is named \"alise\" (did you mean \"alice\"?)"),
            ("22:51", "policies[0].subjects[3]", "no user is in group \"dba\""),
            ("23:24", "policies[0].targets[1]", "no target is named \"db-prd\" (did you mean \"db-prod\"?)"),
            ("23:34", "policies[0].targets[2]", "no target has the label env=staging, so this selector matches nothing"),
        ],
    );
}

#[test]
fn approvals_must_be_possible() {
    check(
        r#"
[server]

[access]
groups = ["oncall"]

[[users]]
name = "alice"
password_hash = "HASH"
groups = ["sre"]

[[users]]
name = "bob"
password_hash = "HASH"
groups = ["sre"]

[[targets]]
name = "db"
address = "10.0.3.12:5432"
driver = "gateway"
gateway = { listen = "0.0.0.0:15432" }

[[policies]]
name = "no-approvers"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 1

[[policies]]
name = "empty-approvers"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 2
approvers = []

[[policies]]
name = "unasked"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 0
approvers = ["group:sre"]

[[policies]]
name = "too-many"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 3
approvers = ["group:sre", "bob"]

[[policies]]
name = "out-of-range"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 11
approvers = ["group:sre"]

[[policies]]
name = "negative"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = -1

[[policies]]
name = "external-approvers-are-not-counted"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 3
approvers = ["group:oncall", "group:sre"]

[[policies]]
name = "exactly-enough"
subjects = ["alice"]
targets = ["db"]
max_duration = "1h"
approvals = 2
approvers = ["group:sre"]
"#,
        &[
            ("27:13", "policies[0].approvers", "approvals = 1 but no approvers are listed, so no request could ever be approved"),
            ("35:13", "policies[1].approvers", "approvals = 2 but no approvers are listed"),
            ("43:13", "policies[2].approvers", "approvals = 0 approves every request automatically, so they would never be asked"),
            ("50:13", "policies[3].approvals", "approvals = 3 can never be met: only 2 users (alice, bob) match the approvers group:sre, bob; lower approvals or add approvers"),
            ("58:13", "policies[4].approvals", "11 is not a number of approvals ajar accepts; use 0 (approve automatically) to 10"),
            ("66:13", "policies[5].approvals", "-1 is not a number of approvals ajar accepts"),
        ],
    );
}

#[test]
fn empty_subjects_or_targets_make_a_useless_policy() {
    check(
        r#"
[server]

[[policies]]
name = "p"
subjects = []
targets = []
max_duration = "1h"
approvals = 0
"#,
        &[
            ("5:12", "policies[0].subjects", "lists nobody, so nobody could use this policy"),
            ("6:11", "policies[0].targets", "lists no target, so this policy grants nothing"),
        ],
    );
}

#[test]
fn tls_needs_cert_and_key_together() {
    check(
        "[server]\ntls = { cert = \"cert.pem\" }\n",
        &[(
            "2:7",
            "server.tls.key",
            "TLS needs both a certificate and a private key; add key = \"key.pem\" to server.tls",
        )],
    );
    check(
        "[server]\n\n[server.tls]\nkey = \"\"\n",
        &[
            ("3:1", "server.tls.cert", "add cert = \"cert.pem\""),
            ("4:7", "server.tls.key", "the path is empty; write one such as \"key.pem\""),
        ],
    );
}

#[test]
fn server_addresses_are_checked() {
    check(
        "[server]\nlisten = \"localhost:8080\"\ndata_dir = \"\"\n",
        &[
            (
                "2:10",
                "server.listen",
                "\"localhost:8080\" is not an address to listen on: write IP:port such as 127.0.0.1:8080",
            ),
            ("3:12", "server.data_dir", "the path is empty; write one such as \"ajar-data\""),
        ],
    );
}

#[test]
fn syntax_errors_are_located() {
    check("[server]\nlisten = \"127.0.0.1:8080\n", &[("2:25", "", "invalid TOML: ")]);
    check("[server]\n[[users]]\nname = \"a\"\nname = \"b\"\n", &[("4:1", "", "invalid TOML: duplicate key `name`")]);
}

#[test]
fn every_error_is_reported_in_file_order() {
    let errors = parse(
        Path::new("ajar.toml"),
        &text(
            r#"
[server]
listen = "nope"

[[policies]]
name = "p"
subjects = ["ghost"]
targets = ["nowhere"]
max_duration = "forever"
approvals = 0
color = "blue"
"#,
        ),
    )
    .unwrap_err();
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 6, 7, 8, 10], "{errors}");
    assert_eq!(errors.to_string().lines().count(), 5);
}

#[test]
fn load_reads_the_file_and_names_it_when_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ajar.toml");
    let missing = load(&file).unwrap_err();
    assert_eq!(missing.0.len(), 1);
    let shown = missing.to_string();
    assert!(shown.starts_with(&format!("{}: cannot read the config file: ", file.display())), "{shown}");
    assert!(shown.contains("No such file"), "{shown}");

    std::fs::write(&file, text(EXAMPLE)).unwrap();
    let config = load(&file).unwrap();
    assert_eq!(config.server.data_dir, dir.path().join("ajar-data"));
}

#[test]
fn summary_counts_and_describes_policies() {
    let shown = summary(&ok(EXAMPLE));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines,
        [
            "ok: 3 users, 2 targets (gateway: 2), 2 policies; listening on 127.0.0.1:8080 with TLS",
            "  policy dev-prod-db: group:dev may request env=prod (db-prod) for up to 1h; reason required; needs 1 approval from group:sre; sources within 10.8.0.0/16",
            "  policy oncall-ssh: group:oncall, carol may request ssh-bastion for up to 4h; reason required; approved automatically; bound to the requester's own address",
        ]
    );
    assert_eq!(summary(&ok("[server]\n")), "ok: 0 users, 0 targets, 0 policies; listening on 127.0.0.1:8080");
}

/// The keys of the example whose value the property test below replaces.
const VALUE_LINES: &[&str] = &[
    "listen = \"127.0.0.1:8080\"",
    "max_duration = \"1h\"",
    "address = \"10.0.3.12:5432\"",
    "sources = [\"10.8.0.0/16\"]",
    "admins = [\"group:sre\"]",
];

proptest! {
    /// Whatever text is fed in, parsing returns (never panics), and every
    /// error points inside the file.
    #[test]
    fn arbitrary_text_never_panics(input in "\\PC{0,200}") {
        if let Err(errors) = parse(Path::new("ajar.toml"), &input) {
            check_located(&errors, &input);
        }
    }

    /// Replacing one value of the example with anything either still
    /// parses or yields errors that all sit on that value's line.
    #[test]
    fn a_bad_value_is_blamed_on_its_own_line(which in 0..VALUE_LINES.len(), value in "[ -~]{0,24}") {
        let example = text(EXAMPLE);
        let original = VALUE_LINES[which];
        let key = original.split(" = ").next().unwrap();
        let line = example.lines().position(|l| l == original).unwrap() + 1;
        let replaced = example.replacen(original, &format!("{key} = {value}"), 1);
        if let Err(errors) = parse(Path::new("ajar.toml"), &replaced) {
            check_located(&errors, &replaced);
            // A value that breaks the TOML syntax may be noticed on a later
            // line (an unclosed string or array); any other error is on the
            // line of the value.
            if errors.0.len() > 1 || !errors.0[0].message.starts_with("invalid TOML") {
                for error in &errors {
                    prop_assert_eq!(error.line, line, "{}", errors);
                }
            }
        }
    }
}

fn check_located(errors: &ConfigErrors, input: &str) {
    assert!(!errors.0.is_empty());
    let lines = input.split('\n').count();
    for error in errors {
        assert!(error.line >= 1 && error.line <= lines, "{error} (file has {lines} lines)");
        assert!(error.column >= 1, "{error}");
    }
}

#[test]
fn kernel_nat_targets_parse_into_their_settings() {
    let config = ok(r#"
[server]

[[targets]]
name = "ssh-prod"
address = "10.77.2.2:22"
driver = "nftables"
nftables = { listen = "10.77.1.1:2222" }

[[targets]]
name = "ssh-v6"
address = "[fd77:2::2]:22"
driver = "iptables"
iptables = { listen = "[fd77:1::1]:2222", enable_forwarding = true }
"#);
    let nft = config.catalog.target("ssh-prod").unwrap();
    assert_eq!(nft.kind(), DriverKind::Nftables);
    assert_eq!(nft.driver.gateway(), None);
    let settings = nft.driver.nat().unwrap();
    assert_eq!(settings.listen, "10.77.1.1:2222".parse::<SocketAddr>().unwrap());
    assert_eq!(settings.destination, "10.77.2.2:22".parse::<SocketAddr>().unwrap());
    assert!(!settings.enable_forwarding);
    let ipt = config.catalog.target("ssh-v6").unwrap();
    assert_eq!(ipt.kind(), DriverKind::Iptables);
    assert_eq!(ipt.driver.gateway(), None);
    let settings = ipt.driver.nat().unwrap();
    assert_eq!(settings.listen, "[fd77:1::1]:2222".parse::<SocketAddr>().unwrap());
    assert_eq!(settings.destination, "[fd77:2::2]:22".parse::<SocketAddr>().unwrap());
    assert!(settings.enable_forwarding);
}

#[test]
fn kernel_nat_targets_need_ip_literals_of_one_family_and_their_own_table() {
    check(
        r#"
[server]

[[targets]]
name = "a"
address = "db.internal:5432"
driver = "nftables"
nftables = { listen = "0.0.0.0:2222", masquerade = true }

[[targets]]
name = "b"
address = "[fd77:2::2]:22"
driver = "iptables"
iptables = { listen = "10.77.1.1:2222", enable_forwarding = "yes" }

[[targets]]
name = "c"
address = "10.77.2.2:22"
driver = "nftables"
gateway = { listen = "10.77.1.1:2223" }

[[targets]]
name = "d"
address = "10.77.2.2:22"
driver = "gateway"
gateway = { listen = "10.77.1.1:2224" }
iptables = { listen = "10.77.1.1:2225" }

[[targets]]
name = "e"
address = "10.77.2.2:22"
driver = "iptables"
nftables = { listen = "10.77.1.1:2226" }
"#,
        &[
            ("5:11", "targets[0].address", "must be an IP address and port for a kernel DNAT driver"),
            ("7:23", "targets[0].nftables.listen", "\"0.0.0.0:2222\" cannot be DNATed"),
            ("7:39", "targets[0].nftables.masquerade", "allowed in targets[0].nftables are listen, enable_forwarding"),
            ("11:11", "targets[1].address", "are of different IP families"),
            ("13:61", "targets[1].iptables.enable_forwarding", "expected true or false"),
            ("18:10", "targets[2].nftables", "the nftables driver needs to know where to listen for this target; add nftables = { listen = \"10.77.1.1:2222\" }"),
            ("19:11", "targets[2].gateway", "a gateway table only applies to targets with driver = \"gateway\", and this target uses \"nftables\"; remove it"),
            ("26:12", "targets[3].iptables", "an iptables table only applies to targets with driver = \"iptables\""),
            ("31:10", "targets[4].iptables", "the iptables driver needs to know where to listen for this target; add iptables = { listen = \"10.77.1.1:2222\" }"),
            ("32:12", "targets[4].nftables", "a nftables table only applies to targets with driver = \"nftables\", and this target uses \"iptables\"; remove it"),
        ],
    );
}

#[test]
fn database_must_be_a_postgres_url() {
    let ok = "[server]\ndatabase = \"postgres://ajar@127.0.0.1:5432/ajar\"\n";
    let config = ajar_config::parse(std::path::Path::new("ajar.toml"), ok).expect("a PostgreSQL URL is accepted");
    assert_eq!(config.server.database.as_deref(), Some("postgres://ajar@127.0.0.1:5432/ajar"));
    let bad = "[server]\ndatabase = \"mysql://ajar@db/ajar\"\n";
    let errors = ajar_config::parse(std::path::Path::new("ajar.toml"), bad).expect_err("mysql is refused").to_string();
    assert!(
        errors.contains("ajar.toml:2:") && errors.contains("server.database") && errors.contains("postgres://"),
        "{errors}"
    );
}

#[test]
fn aws_targets_parse_into_their_settings() {
    let config = ok(r#"
[server]

[[targets]]
name = "web-ssh"
address = "10.0.1.5:22"
driver = "aws-sg"
aws_sg = { security_group_id = "sg-0abc1234", region = "us-east-1", endpoint_url = "http://127.0.0.1:5000" }

[[targets]]
name = "web-both"
address = "web.internal:443"
driver = "aws-sg"
aws_sg = { security_group_id = "sg-0123456789abcdef0", protocol = "udp", ports = [443, 8443], rule_quota = 200, network_interface_ids = ["eni-0abc1234"] }

[[targets]]
name = "db-via-app-server"
address = "10.0.3.12:5432"
driver = "aws-instance"
aws_instance = { region = "us-east-1", ami = "ami-0abc1234", instance_type = "t3.micro", subnet_id = "subnet-0abc1234", security_group_ids = ["sg-0def5678"], listen_port = 15432, warm_pool = 2, instance_profile = "ajar-app", key_name = "ops", tags = { team = "payments" }, launch_timeout = "90s", idle_timeout = "15m" }
"#);
    use ajar_domain::{DriverSettings, IpProtocol};
    let web = config.catalog.target("web-ssh").unwrap();
    assert_eq!(web.kind(), DriverKind::AwsSg);
    let DriverSettings::AwsSg(sg) = &web.driver else { panic!("{web:?}") };
    assert_eq!(sg.security_group_id, "sg-0abc1234");
    assert_eq!(sg.api.region.as_deref(), Some("us-east-1"));
    assert_eq!(sg.api.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!((sg.protocol, sg.ports.clone(), sg.rule_quota), (IpProtocol::Tcp, vec![22], 60), "defaults");
    let both = config.catalog.target("web-both").unwrap();
    let DriverSettings::AwsSg(sg) = &both.driver else { panic!("{both:?}") };
    assert_eq!((sg.protocol, sg.ports.clone(), sg.rule_quota), (IpProtocol::Udp, vec![443, 8443], 200));
    assert_eq!(sg.network_interface_ids, vec!["eni-0abc1234".to_owned()]);
    let db = config.catalog.target("db-via-app-server").unwrap();
    assert_eq!(db.kind(), DriverKind::AwsInstance);
    let DriverSettings::AwsInstance(i) = &db.driver else { panic!("{db:?}") };
    assert_eq!(
        (i.ami.as_str(), i.instance_type.as_str(), i.subnet_id.as_str()),
        ("ami-0abc1234", "t3.micro", "subnet-0abc1234")
    );
    assert_eq!(i.security_group_ids, vec!["sg-0def5678".to_owned()]);
    assert_eq!((i.listen_port, i.warm_pool, i.launch_timeout), (15432, 2, Duration::from_secs(90)));
    assert_eq!(i.idle_timeout, Some(Duration::from_secs(900)));
    assert_eq!(i.destination, "10.0.3.12:5432".parse::<SocketAddr>().unwrap());
    assert_eq!((i.instance_profile.as_deref(), i.key_name.as_deref()), (Some("ajar-app"), Some("ops")));
    assert_eq!(i.tags.get("team").map(String::as_str), Some("payments"));
    assert_eq!((db.driver.gateway(), db.driver.nat()), (None, None));
}

#[test]
fn aws_tables_are_checked_key_by_key() {
    check(
        r#"
[server]

[[targets]]
name = "a"
address = "10.0.1.5:22"
driver = "aws-sg"
aws_sg = { security_group_id = "sg-XYZ", protocol = "icmp", ports = [22, 22], rule_quota = 0, region = "Mars" }

[[targets]]
name = "b"
address = "db.internal:5432"
driver = "aws-instance"
aws_instance = { ami = "ami-0abc1234", instance_type = "big", subnet_id = "subnet-0abc1234", security_group_ids = [], listen_port = 0, warm_pool = 11, tags = { "ajar:grant" = "x" }, idle_timeout = "5s" }

[[targets]]
name = "c"
address = "10.0.1.5:22"
driver = "aws-sg"

[[targets]]
name = "d"
address = "10.0.1.5:22"
driver = "gateway"
gateway = { listen = "127.0.0.1:2222" }
aws_instance = { ami = "ami-0abc1234" }
"#,
        &[
            ("7", "targets[0].aws_sg.region", "is not an AWS region"),
            (
                "7",
                "targets[0].aws_sg.security_group_id",
                "is not a security group id; write one such as \"sg-0abc1234\"",
            ),
            ("7", "targets[0].aws_sg.protocol", "write \"tcp\" or \"udp\""),
            ("7", "targets[0].aws_sg.ports", "at least one, such as [22]"),
            ("7", "targets[0].aws_sg.rule_quota", "from 1 to 1000"),
            ("11", "targets[1].address", "must be an IP address and port for aws-instance"),
            ("13", "targets[1].aws_instance.instance_type", "is not an EC2 instance type"),
            ("13", "targets[1].aws_instance.security_group_ids", "at least one security group"),
            ("13", "targets[1].aws_instance.listen_port", "from 1 to 65535"),
            ("13", "targets[1].aws_instance.warm_pool", "from 0 to 10"),
            ("13", "targets[1].aws_instance.tags.ajar:grant", "keys starting with ajar: are ajar's own"),
            ("13", "targets[1].aws_instance.idle_timeout", "is not an idle timeout ajar accepts; use 10s to 24h"),
            ("18", "targets[2].aws_sg", "the aws-sg driver needs to know which security group to add rules to"),
            (
                "25",
                "targets[3].aws_instance",
                "an aws_instance table only applies to targets with driver = \"aws-instance\"",
            ),
        ],
    );
}

#[test]
fn http_limits_public_url_and_metrics_keys_have_defaults_and_bounds() {
    let defaults = ok("[server]\n").server;
    assert_eq!(defaults.http_header_timeout, Duration::from_secs(10));
    assert_eq!(defaults.http_idle_timeout, Duration::from_secs(60));
    assert_eq!(defaults.max_api_connections, 1024);
    assert_eq!((defaults.public_url, defaults.metrics_listen, defaults.metrics_token), (None, None, None));

    let set = ok(r#"
[server]
http_header_timeout = "5s"
http_idle_timeout = "2m"
max_api_connections = 64
public_url = "https://Ajar.Example.com:8443/"
metrics_listen = "127.0.0.1:9464"
metrics_token_file = "metrics.token"
"#)
    .server;
    assert_eq!(set.http_header_timeout, Duration::from_secs(5));
    assert_eq!(set.http_idle_timeout, Duration::from_secs(120));
    assert_eq!(set.max_api_connections, 64);
    assert_eq!(set.public_url.as_deref(), Some("https://ajar.example.com:8443"));
    assert_eq!(set.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(set.metrics_token, Some(ajar_config::SecretRef::File(PathBuf::from("/etc/ajar/metrics.token"))));
    let env = ok("[server]\nmetrics_token_env = \"AJAR_METRICS_TOKEN\"\npublic_url = \"http://[::1]:8080\"\n").server;
    assert_eq!(env.metrics_token, Some(ajar_config::SecretRef::Env("AJAR_METRICS_TOKEN".into())));
    assert_eq!(env.public_url.as_deref(), Some("http://[::1]:8080"));

    check(
        r#"
[server]
http_header_timeout = "10m"
http_idle_timeout = "0s"
max_api_connections = 2
public_url = "https://ajar.example.com/portal"
metrics_listen = "localhost:9464"
metrics_token_env = "AJAR_METRICS_TOKEN"
metrics_token_file = "metrics.token"
"#,
        &[
            ("2", "server.http_header_timeout", "10m is too long for http_header_timeout: use 1s to 5m"),
            ("3", "server.http_idle_timeout", "a duration must be longer than zero seconds"),
            ("4", "server.max_api_connections", "2 API connections is not a usable cap: use 8 to 1000000"),
            ("5", "server.public_url", "has a path, query or fragment"),
            ("6", "server.metrics_listen", "is not an address to listen on"),
            ("8", "server.metrics_token_file", "give the metrics token one way only"),
        ],
    );
    check(
        r#"
[server]
listen = "127.0.0.1:8080"
public_url = "ftp://ajar.example.com"
metrics_listen = "127.0.0.1:8080"
max_api_connections = "many"
"#,
        &[
            ("3", "server.public_url", "must start with https://"),
            ("4", "server.metrics_listen", "is the API's own address"),
            ("5", "server.max_api_connections", "a whole number"),
        ],
    );
    for bad in
        ["https://", "https://user@ajar.example.com", "https://ajar.example.com:0", "ajar.example.com", "https://[::1"]
    {
        let errors = parse(Path::new("ajar.toml"), &format!("[server]\npublic_url = {bad:?}\n")).unwrap_err();
        assert!(errors.to_string().contains("server.public_url"), "{bad}: {errors}");
    }
}

const AGENT_TARGET: &str = r#"
[server]

[agents]
listen = "0.0.0.0:8443"
names = ["ajar.example.com", "10.0.0.5"]
offline_grace = "5s"
groups = { vpc-b = { offline = "keep-until-end" } }

[[targets]]
name = "db-a"
address = "127.0.0.1:5432"
driver = "gateway"
agent_group = "vpc-a"
gateway = { listen = "0.0.0.0:15432" }

[[targets]]
name = "db-b"
address = "127.0.0.1:5432"
driver = "gateway"
agent_group = "vpc-b"
gateway = { listen = "0.0.0.0:15432" }
"#;

#[test]
fn targets_name_the_agent_group_that_enforces_them() {
    let config = ok(AGENT_TARGET);
    let agents = config.agents.expect("agents");
    assert_eq!(agents.listen, "0.0.0.0:8443".parse::<SocketAddr>().unwrap());
    assert_eq!(agents.names, ["ajar.example.com", "10.0.0.5"]);
    let a = ajar_domain::Name::parse("vpc-a").unwrap();
    let b = ajar_domain::Name::parse("vpc-b").unwrap();
    assert_eq!(agents.group(&a).offline, ajar_domain::OfflineMode::Cut);
    assert_eq!(agents.group(&a).offline_grace, Duration::from_secs(5));
    assert_eq!(agents.group(&b).offline, ajar_domain::OfflineMode::KeepUntilEnd);
    let targets = &config.catalog.targets;
    assert_eq!(targets[0].agent_group.as_ref(), Some(&a));
    assert_eq!(targets[0].placement(), ajar_domain::Placement::Agents);
    // The same address behind two groups is two machines: the listen
    // addresses do not clash (they are on the agents' hosts), and the
    // destinations differ.
    assert_ne!(targets[0].destination(), targets[1].destination());
}

#[test]
fn agent_groups_need_an_agent_listener_and_a_driver_agents_run() {
    check(
        "[server]\n[[targets]]\nname = \"db\"\naddress = \"10.0.0.1:5432\"\ndriver = \"gateway\"\nagent_group = \"vpc-a\"\ngateway = { listen = \"0.0.0.0:15432\" }\n",
        &[("6:15", "targets[0].agent_group", "no [agents] section says where agents connect")],
    );
    check(
        "[server]\n[agents]\nlisten = \"0.0.0.0:8443\"\n[[targets]]\nname = \"sg\"\naddress = \"10.0.0.1:22\"\ndriver = \"aws-sg\"\nagent_group = \"vpc-a\"\naws_sg = { security_group_id = \"sg-0abc1234\", region = \"us-east-1\" }\n",
        &[("8:15", "targets[0].agent_group", "agents run only the gateway, nftables, iptables drivers")],
    );
    check(
        "[server]\n[agents]\nlisten = \"0.0.0.0:8443\"\noffline_grace = \"1h\"\ngroups = { a = { offline = \"open\" } }\n",
        &[
            ("4:17", "agents.offline_grace", "use 1s to 10m"),
            ("5:28", "agents.groups.a.offline", "is not an offline mode"),
        ],
    );
    check(
        "[server]\nlisten = \"127.0.0.1:8443\"\n[agents]\nlisten = \"127.0.0.1:8443\"\n",
        &[("4:10", "agents.listen", "already taken by the server")],
    );
}
