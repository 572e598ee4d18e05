//! One target's listener: the accept loop that admits or refuses each
//! connection, and the task that serves an admitted connection until it
//! ends or its grants do.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ajar_domain::RequestId;
use ajar_enforce::clock::Clock;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc::UnboundedSender, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::event::{ConnectionEvent, ConnectionEventKind, EndedBy};
use crate::grants::{covering, GrantTable};
use crate::relay::{relay, Counters};

/// How long an admitted connection may take to reach its target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one `Refused` event per target and source address in this window.
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// How many source addresses the refusal limiter remembers. Bounds its
/// memory when a scan comes from very many addresses (an IPv6 /64 holds
/// plenty); refusals beyond it are only logged, in aggregate.
const REFUSAL_SOURCES: usize = 4096;

/// Everything the accept loop of one target needs. It holds no reference to
/// the `Gateway`, so dropping the gateway ends it.
pub(crate) struct ListenerTask {
    pub(crate) target: String,
    pub(crate) listener: TcpListener,
    /// The target's `host:port`, replaced in place when the config changes
    /// it so that new connections go to the new address.
    pub(crate) upstream: watch::Receiver<String>,
    pub(crate) grants: watch::Receiver<GrantTable>,
    pub(crate) events: UnboundedSender<ConnectionEvent>,
    /// What time it is, to judge the grants' deadlines.
    pub(crate) clock: Arc<dyn Clock>,
    /// Cancelled when the target is removed or moves to another listen
    /// address; stops the loop and cuts every connection it accepted.
    pub(crate) stop: CancellationToken,
}

/// Accepts connections until `task.stop` is cancelled.
pub(crate) async fn accept_loop(task: ListenerTask) {
    let mut refusals = RefusalLimiter::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = task.stop.cancelled() => break,
            accepted = task.listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically EMFILE or ENOBUFS: pause briefly instead of spinning
                // on an error that the next accept would return again.
                warn!(target_name = %task.target, %error, "accepting a connection failed");
                if is_per_connection(&error) {
                    continue;
                }
                tokio::select! {
                    () = task.stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6
        // addresses; grants and events speak plain IPv4.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let admitted =
            covering(&task.grants.borrow(), &task.target, peer.ip(), task.clock.now()).map(|(id, _)| id.clone());
        let Some(grant) = admitted else {
            // Dropping the socket closes it before a single byte is read or
            // written, and the target is never contacted. The TCP handshake
            // itself has already been completed by the kernel; refusing
            // earlier than that takes a packet filter (the nftables driver).
            drop(socket);
            match refusals.report(peer.ip(), Instant::now()) {
                Report::Yes { suppressed } => {
                    info!(target_name = %task.target, %peer, suppressed, "refused a connection without a grant");
                    emit(&task.events, &task.target, peer, None, ConnectionEventKind::Refused { suppressed });
                }
                Report::Suppressed => {
                    debug!(target_name = %task.target, %peer, "refused a connection without a grant")
                }
                Report::Overflow { dropped } => warn!(
                    target_name = %task.target,
                    %peer,
                    dropped,
                    "refusing connections from too many sources to report each; refusals are only counted here"
                ),
            }
            continue;
        };
        info!(target_name = %task.target, %peer, %grant, "admitted a connection");
        let connection = Connection {
            target: task.target.clone(),
            peer,
            client: socket,
            upstream: task.upstream.borrow().clone(),
            grants: task.grants.clone(),
            events: task.events.clone(),
            clock: task.clock.clone(),
            stop: task.stop.clone(),
            grant,
        };
        tokio::spawn(serve(connection));
    }
    debug!(target_name = %task.target, "listener stopped");
}

/// Whether an accept error concerns only the connection being accepted, so
/// that the next accept can proceed at once.
fn is_per_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted
    )
}

/// An admitted connection, before it reaches its target.
struct Connection {
    target: String,
    peer: SocketAddr,
    client: TcpStream,
    upstream: String,
    grants: watch::Receiver<GrantTable>,
    events: UnboundedSender<ConnectionEvent>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
    /// The covering grant with the latest deadline, as last evaluated.
    grant: RequestId,
}

/// Connects to the target and relays until either side ends the
/// connection or no grant covers it any more, then reports how it ended.
async fn serve(mut c: Connection) {
    let started = Instant::now();
    let peer_ip = c.peer.ip();

    let connected = tokio::select! {
        () = until_uncovered(&mut c.grants, &c.target, peer_ip, &mut c.grant, c.clock.as_ref(), &c.stop) => None,
        connected = timeout(CONNECT_TIMEOUT, TcpStream::connect(c.upstream.as_str())) => Some(connected),
    };
    let mut upstream = match connected {
        None => {
            info!(target_name = %c.target, peer = %c.peer, grant = %c.grant, "grant ended while connecting to the target");
            let kind = closed(&Counters::default(), started, EndedBy::GrantEnded);
            emit(&c.events, &c.target, c.peer, Some(c.grant), kind);
            return;
        }
        Some(Ok(Ok(upstream))) => upstream,
        Some(Ok(Err(error))) => {
            let error = format!("cannot connect to {}: {error}", c.upstream);
            return upstream_failed(c, error);
        }
        Some(Err(_elapsed)) => {
            let error =
                format!("cannot connect to {}: no answer within {} seconds", c.upstream, CONNECT_TIMEOUT.as_secs());
            return upstream_failed(c, error);
        }
    };
    // Interactive protocols (ssh, psql) send small writes; Nagle's algorithm
    // on the relay's sockets would add latency to each of them. Failing to
    // set it only costs latency, so the error is ignored.
    let _ = c.client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let counters = Counters::default();
    let ended_by = tokio::select! {
        () = until_uncovered(&mut c.grants, &c.target, peer_ip, &mut c.grant, c.clock.as_ref(), &c.stop) => EndedBy::GrantEnded,
        ended_by = relay(&mut c.client, &mut upstream, &counters) => ended_by,
    };
    // Close both sockets before reporting, so that "closed" in the audit log
    // means the sockets really are closed.
    drop(upstream);
    drop(c.client);
    info!(target_name = %c.target, peer = %c.peer, grant = %c.grant, ?ended_by, "connection closed");
    emit(&c.events, &c.target, c.peer, Some(c.grant), closed(&counters, started, ended_by));
}

fn upstream_failed(c: Connection, error: String) {
    warn!(target_name = %c.target, peer = %c.peer, grant = %c.grant, %error, "target unreachable");
    drop(c.client);
    emit(&c.events, &c.target, c.peer, Some(c.grant), ConnectionEventKind::UpstreamFailed { error });
}

fn closed(counters: &Counters, started: Instant, ended_by: EndedBy) -> ConnectionEventKind {
    use std::sync::atomic::Ordering::Relaxed;
    ConnectionEventKind::Closed {
        bytes_up: counters.up.load(Relaxed),
        bytes_down: counters.down.load(Relaxed),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ended_by,
    }
}

/// Resolves when no grant covers (`target`, `peer`) any more: the last
/// covering deadline passed, the covering grants were removed, the listener
/// was stopped or the gateway dropped. Re-evaluates on every change to the
/// grant table and keeps `grant` pointing at the covering grant with the
/// latest deadline.
async fn until_uncovered(
    grants: &mut watch::Receiver<GrantTable>,
    target: &str,
    peer: IpAddr,
    grant: &mut RequestId,
    clock: &dyn Clock,
    stop: &CancellationToken,
) {
    loop {
        let ends_at = {
            let table = grants.borrow_and_update();
            let Some((id, ends_at)) = covering(&table, target, peer, clock.now()) else {
                return;
            };
            if id != grant {
                *grant = id.clone();
            }
            ends_at
        };
        // The deadline is wall-clock time; the timer runs on tokio's
        // monotonic clock, so convert at every evaluation. Waking a little
        // early is harmless: the loop evaluates again and waits for the rest.
        let remaining = (ends_at - clock.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep_until(Instant::now() + remaining) => {}
            changed = grants.changed() => {
                if changed.is_err() {
                    // The gateway was dropped; nothing can cover us any more.
                    return;
                }
            }
        }
    }
}

fn emit(
    events: &UnboundedSender<ConnectionEvent>,
    target: &str,
    peer: SocketAddr,
    grant: Option<RequestId>,
    kind: ConnectionEventKind,
) {
    let event = ConnectionEvent { target: target.to_owned(), peer, grant, kind };
    if events.send(event).is_err() {
        debug!("connection event dropped: nobody is listening for them");
    }
}

/// Whether to report a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    Yes {
        suppressed: u64,
    },
    Suppressed,
    /// Too many sources are being refused to track each; `dropped` counts
    /// such unreported refusals since the last warning.
    Overflow {
        dropped: u64,
    },
}

/// Rate-limits `Refused` events of one listener per source address.
#[derive(Default)]
struct RefusalLimiter {
    /// Per source: when a refusal was last reported and how many were
    /// suppressed since.
    sources: HashMap<IpAddr, (Instant, u64)>,
    overflow: u64,
    overflow_reported: Option<Instant>,
}

impl RefusalLimiter {
    fn report(&mut self, source: IpAddr, now: Instant) -> Report {
        if let Some((last, suppressed)) = self.sources.get_mut(&source) {
            if now.duration_since(*last) < REFUSAL_WINDOW {
                *suppressed += 1;
                return Report::Suppressed;
            }
            let suppressed = std::mem::take(suppressed);
            *last = now;
            return Report::Yes { suppressed };
        }
        if self.sources.len() >= REFUSAL_SOURCES {
            self.sources.retain(|_, (last, _)| now.duration_since(*last) < REFUSAL_WINDOW);
        }
        if self.sources.len() >= REFUSAL_SOURCES {
            self.overflow += 1;
            let due = self.overflow_reported.is_none_or(|at| now.duration_since(at) >= REFUSAL_WINDOW);
            if !due {
                return Report::Suppressed;
            }
            self.overflow_reported = Some(now);
            return Report::Overflow { dropped: std::mem::take(&mut self.overflow) };
        }
        self.sources.insert(source, (now, 0));
        Report::Yes { suppressed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_reported_once_per_source_and_window() {
        let mut limiter = RefusalLimiter::default();
        let start = Instant::now();
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let later = |ms| start + Duration::from_millis(ms);
        assert_eq!(limiter.report(a, start), Report::Yes { suppressed: 0 });
        assert_eq!(limiter.report(a, later(10)), Report::Suppressed);
        assert_eq!(limiter.report(b, later(20)), Report::Yes { suppressed: 0 });
        assert_eq!(limiter.report(a, later(9_999)), Report::Suppressed);
        assert_eq!(limiter.report(a, later(10_000)), Report::Yes { suppressed: 2 });
        assert_eq!(limiter.report(a, later(10_001)), Report::Suppressed);
    }

    #[test]
    fn refusals_from_too_many_sources_are_counted_not_tracked() {
        let mut limiter = RefusalLimiter::default();
        let start = Instant::now();
        for i in 0..REFUSAL_SOURCES {
            let ip = IpAddr::from(std::net::Ipv6Addr::from(u128::try_from(i).unwrap_or_default()));
            assert_eq!(limiter.report(ip, start), Report::Yes { suppressed: 0 });
        }
        let new = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(limiter.report(new, start), Report::Overflow { dropped: 1 });
        assert_eq!(limiter.report(new, start), Report::Suppressed);
        assert_eq!(limiter.sources.len(), REFUSAL_SOURCES);
        // Once the window has passed, old sources are forgotten and new ones
        // are reported again.
        assert_eq!(limiter.report(new, start + REFUSAL_WINDOW), Report::Yes { suppressed: 0 });
        assert_eq!(limiter.sources.len(), 1);
    }
}
