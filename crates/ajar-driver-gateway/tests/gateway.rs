//! The gateway on real loopback sockets: admission by source address,
//! refusal, expiry at the gateway's own deadline, cutting on close and on
//! reconfiguration, and the events it reports.
//!
//! Clients pick their source address inside 127/8 (Linux routes all of it
//! to lo): 127.0.0.2 is the granted client, 127.0.0.3 and 127.0.0.4 are not.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ajar_domain::{DriverSettings, GatewaySettings, Name, RequestId, SourceNet, Target};
use ajar_driver_gateway::{ConnectionEvent, ConnectionEventKind, EndedBy, Gateway};
use ajar_enforce::clock::SystemClock;
use ajar_enforce::{Driver, GrantSpec, Opened};
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::time::{timeout, Instant};

const GRANTED: [u8; 4] = [127, 0, 0, 2];
const STRANGER: [u8; 4] = [127, 0, 0, 3];
const OTHER_STRANGER: [u8; 4] = [127, 0, 0, 4];

/// How late a cut may come. The requirement is "well under a second".
const CUT_WITHIN: Duration = Duration::from_secs(1);

/// An echo server that counts the connections it accepts.
struct Echo {
    addr: SocketAddr,
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let seen = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, peer)) = listener.accept().await {
                seen.lock().unwrap().push(peer);
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    // Echo until the client shuts down writing, then shut
                    // down ours: the gateway must propagate both.
                    if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                        let _ = w.shutdown().await;
                    }
                });
            }
        });
        Self { addr, accepted }
    }

    fn accepts(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

struct Harness {
    gateway: Gateway,
    events: UnboundedReceiver<ConnectionEvent>,
    echo: Echo,
    target: Target,
    /// Where the gateway listens for `target`.
    port: u16,
}

fn target(name: &str, address: SocketAddr, listen: &str) -> Target {
    Target {
        name: Name::parse(name).unwrap(),
        address: address.to_string(),
        labels: Default::default(),
        driver: DriverSettings::Gateway(GatewaySettings { listen: listen.parse().unwrap(), public_host: None }),
        agent_group: None,
    }
}

impl Harness {
    /// A gateway with one target, `db`, in front of an echo server.
    async fn start() -> Self {
        let echo = Echo::start().await;
        let (tx, events) = unbounded_channel();
        let gateway = Gateway::new(tx, Arc::new(SystemClock));
        let target = target("db", echo.addr, "127.0.0.1:0");
        gateway.configure(std::slice::from_ref(&target)).await.unwrap();
        let Opened { host, port } = gateway.connect_info(&target, None).unwrap();
        assert_eq!(host, "127.0.0.1");
        assert_ne!(port, 0, "connect_info reports the bound port, not 0");
        Self { gateway, events, echo, target, port }
    }

    /// Opens grant number `n` for `source`, ending `lasts` from now.
    async fn grant(&self, n: u8, source: [u8; 4], lasts: Duration) -> GrantSpec {
        let grant = GrantSpec {
            id: RequestId::from_random([n; 12]),
            target: self.target.clone(),
            requester: Name::parse("alice").unwrap(),
            source: SourceNet::host(IpAddr::from(source)),
            ends_at: Utc::now() + lasts,
        };
        let opened = self.gateway.open(&grant).await.unwrap();
        assert_eq!(opened, Opened { host: "127.0.0.1".into(), port: self.port });
        grant
    }

    async fn connect(&self, from: [u8; 4]) -> TcpStream {
        connect(from, self.port).await
    }

    async fn next_event(&mut self) -> ConnectionEvent {
        timeout(Duration::from_secs(5), self.events.recv()).await.unwrap().unwrap()
    }
}

async fn connect(from: [u8; 4], port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap()
}

/// Sends `data` and reads the echo back.
async fn round_trip(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, data);
}

/// Waits until the gateway closes `stream` and returns when it did. Fails
/// if any data arrives instead.
async fn closed(stream: &mut TcpStream) -> Instant {
    let mut byte = [0u8; 1];
    let read = timeout(Duration::from_secs(5), stream.read(&mut byte)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "expected the connection to be closed, got {read:?}");
    Instant::now()
}

#[tokio::test]
async fn granted_source_is_relayed_both_ways_and_counted() {
    let mut h = Harness::start().await;
    let grant = h.grant(1, GRANTED, Duration::from_secs(60)).await;
    let stream = h.connect(GRANTED).await;
    let client_addr = stream.local_addr().unwrap();

    // A megabyte each way, written and read concurrently.
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (mut r, mut w) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        // Half-close: the target must see end of file and still be able to
        // answer.
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::new();
    timeout(Duration::from_secs(5), r.read_to_end(&mut back)).await.unwrap().unwrap();
    assert!(back == data, "echoed data differs");
    drop(writer.await.unwrap());

    let event = h.next_event().await;
    assert_eq!(event.target, "db");
    assert_eq!(event.peer, client_addr);
    assert_eq!(event.grant, Some(grant.id));
    let ConnectionEventKind::Closed { bytes_up, bytes_down, ended_by, .. } = event.kind else {
        panic!("expected Closed, got {event:?}");
    };
    assert_eq!((bytes_up, bytes_down), (1 << 20, 1 << 20));
    assert_eq!(ended_by, EndedBy::Client);
    assert_eq!(h.echo.accepts(), 1);
}

#[tokio::test]
async fn ungranted_source_is_refused_without_reaching_the_target() {
    let mut h = Harness::start().await;
    let grant = h.grant(1, GRANTED, Duration::from_secs(60)).await;

    let mut first = h.connect(STRANGER).await;
    closed(&mut first).await;
    let event = h.next_event().await;
    assert_eq!(event.peer.ip(), IpAddr::from(STRANGER));
    assert_eq!(event.grant, None);
    assert_eq!(event.kind, ConnectionEventKind::Refused { suppressed: 0 });

    // A second attempt within ten seconds is refused as well, but not
    // reported again; another source is reported on its own.
    let mut second = h.connect(STRANGER).await;
    closed(&mut second).await;
    let mut other = h.connect(OTHER_STRANGER).await;
    closed(&mut other).await;
    let event = h.next_event().await;
    assert_eq!(event.peer.ip(), IpAddr::from(OTHER_STRANGER));
    assert_eq!(event.kind, ConnectionEventKind::Refused { suppressed: 0 });

    // The gateway never contacted the target for any of them.
    assert_eq!(h.echo.accepts(), 0);

    // The granted source still gets through, and its event is the next one:
    // there was no second Refused for 127.0.0.3.
    let mut ok = h.connect(GRANTED).await;
    round_trip(&mut ok, b"hello").await;
    drop(ok);
    let event = h.next_event().await;
    assert_eq!(event.grant, Some(grant.id));
    assert!(matches!(event.kind, ConnectionEventKind::Closed { .. }), "{event:?}");
    assert_eq!(h.echo.accepts(), 1);
}

#[tokio::test]
async fn connections_are_cut_at_the_deadline_and_new_ones_refused() {
    let mut h = Harness::start().await;
    let grant = h.grant(1, GRANTED, Duration::from_millis(1500)).await;
    let mut stream = h.connect(GRANTED).await;
    round_trip(&mut stream, b"before the deadline").await;

    // Nobody calls close(): the gateway keeps its own deadline.
    closed(&mut stream).await;
    let late = Utc::now() - grant.ends_at;
    let late = late.to_std().unwrap_or_else(|_| panic!("cut {late} before the deadline"));
    eprintln!("cut {late:?} after the deadline");
    assert!(late < CUT_WITHIN, "cut {late:?} after the deadline");

    let event = h.next_event().await;
    assert_eq!(event.grant, Some(grant.id));
    let ConnectionEventKind::Closed { bytes_up, bytes_down, ended_by, duration_ms } = event.kind else {
        panic!("expected Closed, got {event:?}");
    };
    // Bytes are counted even though the relay was cut.
    assert_eq!((bytes_up, bytes_down), (19, 19));
    assert_eq!(ended_by, EndedBy::GrantEnded);
    assert!((1000..3000).contains(&duration_ms), "{duration_ms}");

    let mut after = h.connect(GRANTED).await;
    closed(&mut after).await;
    let event = h.next_event().await;
    assert_eq!(event.kind, ConnectionEventKind::Refused { suppressed: 0 });
    assert_eq!(h.echo.accepts(), 1);
    assert!(h.gateway.observe().await.unwrap().open.is_empty());
}

#[tokio::test]
async fn extending_a_grant_keeps_its_connections() {
    let mut h = Harness::start().await;
    let mut grant = h.grant(1, GRANTED, Duration::from_millis(800)).await;
    let mut stream = h.connect(GRANTED).await;
    round_trip(&mut stream, b"x").await;
    grant.ends_at = Utc::now() + Duration::from_secs(60);
    h.gateway.open(&grant).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    round_trip(&mut stream, b"still here").await;
    drop(stream);
    let event = h.next_event().await;
    assert!(matches!(event.kind, ConnectionEventKind::Closed { ended_by: EndedBy::Client, .. }), "{event:?}");
}

#[tokio::test]
async fn close_cuts_live_connections() {
    let mut h = Harness::start().await;
    let grant = h.grant(1, GRANTED, Duration::from_secs(60)).await;
    let mut stream = h.connect(GRANTED).await;
    round_trip(&mut stream, b"hello").await;

    let asked = Instant::now();
    h.gateway.close(&grant.id).await.unwrap();
    let cut = closed(&mut stream).await;
    assert!(cut - asked < CUT_WITHIN, "cut {:?} after close()", cut - asked);

    let event = h.next_event().await;
    assert_eq!(event.grant, Some(grant.id));
    assert!(
        matches!(
            event.kind,
            ConnectionEventKind::Closed { bytes_up: 5, bytes_down: 5, ended_by: EndedBy::GrantEnded, .. }
        ),
        "{event:?}"
    );
}

#[tokio::test]
async fn a_connection_lives_while_any_grant_covers_it() {
    let mut h = Harness::start().await;
    let first = h.grant(1, GRANTED, Duration::from_secs(60)).await;
    let second = h.grant(2, GRANTED, Duration::from_secs(30)).await;
    let mut stream = h.connect(GRANTED).await;
    round_trip(&mut stream, b"one").await;

    h.gateway.close(&first.id).await.unwrap();
    // Give the gateway time to act on the change, had it wanted to cut.
    tokio::time::sleep(Duration::from_millis(300)).await;
    round_trip(&mut stream, b"two").await;

    let asked = Instant::now();
    h.gateway.close(&second.id).await.unwrap();
    let cut = closed(&mut stream).await;
    assert!(cut - asked < CUT_WITHIN, "cut {:?} after close()", cut - asked);
    let event = h.next_event().await;
    // The event names the grant that covered the connection last.
    assert_eq!(event.grant, Some(second.id));
    assert!(matches!(event.kind, ConnectionEventKind::Closed { ended_by: EndedBy::GrantEnded, .. }), "{event:?}");
}

#[tokio::test]
async fn reconfiguring_keeps_moves_and_removes_listeners() {
    let mut h = Harness::start().await;
    h.grant(1, GRANTED, Duration::from_secs(60)).await;
    let mut stream = h.connect(GRANTED).await;
    round_trip(&mut stream, b"hello").await;

    // The same list again changes nothing: same port, connection alive.
    h.gateway.configure(std::slice::from_ref(&h.target)).await.unwrap();
    assert_eq!(h.gateway.connect_info(&h.target, None).map(|o| o.port), Some(h.port));
    round_trip(&mut stream, b"again").await;

    // A new target address applies to new connections.
    let moved = Echo::start().await;
    let mut retargeted = target("db", moved.addr, "127.0.0.1:0");
    retargeted.driver = h.target.driver.clone();
    h.gateway.configure(std::slice::from_ref(&retargeted)).await.unwrap();
    assert_eq!(h.gateway.connect_info(&retargeted, None).map(|o| o.port), Some(h.port));
    let mut fresh = h.connect(GRANTED).await;
    round_trip(&mut fresh, b"new address").await;
    assert_eq!((h.echo.accepts(), moved.accepts()), (1, 1));
    drop(fresh);
    let event = h.next_event().await;
    assert!(matches!(event.kind, ConnectionEventKind::Closed { ended_by: EndedBy::Client, .. }), "{event:?}");

    // Removing the target stops its listener and cuts its connections.
    let asked = Instant::now();
    h.gateway.configure(&[]).await.unwrap();
    let cut = closed(&mut stream).await;
    assert!(cut - asked < CUT_WITHIN, "cut {:?} after configure()", cut - asked);
    let event = h.next_event().await;
    assert!(matches!(event.kind, ConnectionEventKind::Closed { ended_by: EndedBy::GrantEnded, .. }), "{event:?}");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((GRANTED, 0))).unwrap();
    let refused = socket.connect(SocketAddr::from(([127, 0, 0, 1], h.port))).await;
    assert!(refused.is_err(), "the listener is still accepting");
    assert!(h.gateway.connect_info(&h.target, None).is_none());
}

#[tokio::test]
async fn bind_failures_name_the_address_the_target_and_the_fix() {
    let (tx, _events) = unbounded_channel();
    let gateway = Gateway::new(tx, Arc::new(SystemClock));
    let holder = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap();
    let busy = target("db-prod", taken, &taken.to_string());
    let fine = target("web", taken, "127.0.0.1:0");
    let error = gateway.configure(&[busy, fine.clone()]).await.unwrap_err();
    assert!(!error.transient);
    assert_eq!(
        error.message,
        format!("cannot listen on {taken} for target db-prod: address in use; choose another gateway.listen")
    );
    // The other target was configured regardless.
    assert!(gateway.connect_info(&fine, None).is_some_and(|o| o.port != 0));
    drop(holder);
}

#[tokio::test]
async fn observe_open_and_close_are_idempotent() {
    let h = Harness::start().await;
    let grant = h.grant(1, GRANTED, Duration::from_secs(60)).await;
    h.grant(1, GRANTED, Duration::from_secs(60)).await;
    let other = h.grant(2, STRANGER, Duration::from_secs(30)).await;
    let mut ids: Vec<RequestId> = h.gateway.observe().await.unwrap().open.into_iter().map(|o| o.id).collect();
    ids.sort();
    let mut want = vec![grant.id.clone(), other.id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // Re-opening replaces the deadline and source.
    let mut changed = grant.clone();
    changed.source = SourceNet::parse("127.0.0.0/24").unwrap();
    changed.ends_at += chrono::Duration::seconds(60);
    h.gateway.open(&changed).await.unwrap();
    let observed = h.gateway.observe().await.unwrap().open;
    let seen = observed.iter().find(|o| o.id == grant.id).unwrap();
    assert_eq!((seen.target.as_str(), seen.source, seen.ends_at), ("db", changed.source, changed.ends_at));

    // Closing twice, or closing what never existed, is fine.
    h.gateway.close(&grant.id).await.unwrap();
    h.gateway.close(&grant.id).await.unwrap();
    h.gateway.close(&RequestId::from_random([9; 12])).await.unwrap();
    let ids: Vec<RequestId> = h.gateway.observe().await.unwrap().open.into_iter().map(|o| o.id).collect();
    assert_eq!(ids, vec![other.id.clone()]);

    // A grant that has already ended is not admitted.
    let mut ended = other.clone();
    ended.ends_at = Utc::now() - chrono::Duration::seconds(1);
    h.gateway.open(&ended).await.unwrap();
    assert!(h.gateway.observe().await.unwrap().open.is_empty());

    // A target without a listener cannot be opened.
    let mut unknown = other.clone();
    unknown.target = target("nowhere", h.echo.addr, "127.0.0.1:0");
    let error = h.gateway.open(&unknown).await.unwrap_err();
    assert!(!error.transient);
    assert!(error.message.contains("nowhere"), "{}", error.message);
}

#[tokio::test]
async fn connect_info_hosts() {
    let (tx, _events) = unbounded_channel();
    let gateway = Gateway::new(tx, Arc::new(SystemClock));
    let echo: SocketAddr = "127.0.0.1:9".parse().unwrap();
    // Not bound yet, but the port is fixed: the configured address.
    let mut wildcard = target("db", echo, "0.0.0.0:15432");
    assert_eq!(gateway.connect_info(&wildcard, None), Some(Opened { host: String::new(), port: 15432 }));
    let DriverSettings::Gateway(settings) = &mut wildcard.driver else { panic!("{wildcard:?}") };
    settings.public_host = Some("gw.example.com".into());
    assert_eq!(gateway.connect_info(&wildcard, None), Some(Opened { host: "gw.example.com".into(), port: 15432 }));
    assert_eq!(
        gateway.connect_info(&target("db", echo, "[::1]:15432"), None),
        Some(Opened { host: "::1".into(), port: 15432 })
    );
    // An ephemeral port is only known once bound.
    assert_eq!(gateway.connect_info(&target("db", echo, "127.0.0.1:0"), None), None);
}

#[tokio::test]
async fn unreachable_target_is_reported_and_the_client_closed() {
    let (tx, mut events) = unbounded_channel();
    let gateway = Gateway::new(tx, Arc::new(SystemClock));
    // A port that was just free: nothing listens there.
    let down = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let db = target("db", down, "127.0.0.1:0");
    gateway.configure(std::slice::from_ref(&db)).await.unwrap();
    let port = gateway.connect_info(&db, None).unwrap().port;
    let grant = GrantSpec {
        id: RequestId::from_random([1; 12]),
        target: db,
        requester: Name::parse("alice").unwrap(),
        source: SourceNet::host(IpAddr::from(GRANTED)),
        ends_at: Utc::now() + Duration::from_secs(60),
    };
    gateway.open(&grant).await.unwrap();

    let mut stream = connect(GRANTED, port).await;
    closed(&mut stream).await;
    let event = timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(event.grant, Some(grant.id));
    let ConnectionEventKind::UpstreamFailed { error } = event.kind else {
        panic!("expected UpstreamFailed, got {event:?}");
    };
    assert!(error.starts_with(&format!("cannot connect to {down}: ")), "{error}");
}
