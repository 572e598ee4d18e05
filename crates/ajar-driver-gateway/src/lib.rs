//! ajar's built-in userspace TCP gateway, the embedded default data plane:
//! one listener per target, admitting only connections from the source of
//! an active grant and cutting them the moment no grant covers them.
//!
//! # How it works
//!
//! [`Gateway::configure`] binds one listener per gateway target. The grant
//! table (grant id → target, source, deadline) lives in a
//! `tokio::sync::watch` channel. Each listener's accept loop checks every
//! new connection against the table and refuses it unless a grant for that
//! target covers the client's address and has not ended; a refused socket is
//! closed before any byte is read or written and the target is never
//! contacted.
//!
//! Each admitted connection runs its relay in a `tokio::select!` against the
//! table's watch and a timer set to the latest deadline of the grants that
//! cover it (linkerd's pattern). Every table change re-evaluates coverage,
//! so a connection is cut as soon as its last covering grant is closed or
//! replaced, and at its deadline by the gateway's own timer even when the
//! control plane is unreachable. What time it is comes from the [`Clock`]
//! given to [`Gateway::new`]; tokio's timers only do the waiting. Stopping a listener (the target left the
//! config or moved) cuts its connections too.
//!
//! Every connection's end is reported as a [`ConnectionEvent`] on the
//! channel passed to [`Gateway::new`].

mod event;
mod grants;
mod listener;
mod relay;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ajar_domain::{DriverKind, GatewaySettings, RequestId, Target};
use ajar_enforce::clock::Clock;
use ajar_enforce::{Driver, DriverError, GrantSpec, Observation, Observed, Opened};
use tokio::net::TcpSocket;
use tokio::sync::{mpsc::UnboundedSender, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

pub use event::{ConnectionEvent, ConnectionEventKind, EndedBy};
use grants::{GrantEntry, GrantTable};
use listener::{accept_loop, ListenerTask};

/// How many connections may wait in the kernel for the accept loop: as
/// many as the kernel allows (it caps this at `net.core.somaxconn`). A full
/// queue drops SYNs, and the client retries only after a second: with
/// 1,024 the benchmark's bursts of refusals showed exactly that second.
const BACKLOG: u32 = 65_535;

/// The userspace TCP gateway. Dropping it stops every listener and cuts
/// every connection.
pub struct Gateway {
    events: UnboundedSender<ConnectionEvent>,
    clock: Arc<dyn Clock>,
    grants: watch::Sender<GrantTable>,
    /// Bound listeners by target name. A std mutex is enough: it is never
    /// held across an await (binding is synchronous).
    listeners: Mutex<BTreeMap<String, Listener>>,
    /// Parent of every listener's stop token.
    shutdown: CancellationToken,
}

/// A bound listener of one target.
struct Listener {
    settings: GatewaySettings,
    /// The address actually bound (differs from `settings.listen` for port 0).
    local: SocketAddr,
    upstream: watch::Sender<String>,
    stop: CancellationToken,
}

impl Gateway {
    /// A gateway with no listeners and no grants, reporting connection
    /// events on `events` and judging deadlines by `clock`. Must be used
    /// within a tokio runtime.
    pub fn new(events: UnboundedSender<ConnectionEvent>, clock: Arc<dyn Clock>) -> Self {
        Self {
            events,
            clock,
            grants: watch::Sender::new(GrantTable::new()),
            listeners: Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
        }
    }

    fn listeners(&self) -> MutexGuard<'_, BTreeMap<String, Listener>> {
        // Nothing panics while holding the lock, and the map stays consistent
        // at every step anyway, so a poisoned lock is still usable.
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds `settings.listen` for `target` and starts its accept loop.
    fn bind(&self, target: &Target, settings: &GatewaySettings) -> Result<Listener, String> {
        let addr = settings.listen;
        let bound = (|| {
            let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            // Lets a restarted ajar listen again while old connections
            // linger in TIME_WAIT.
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            let listener = socket.listen(BACKLOG)?;
            let local = listener.local_addr()?;
            Ok::<_, io::Error>((listener, local))
        })();
        let (listener, local) = bound.map_err(|error| bind_error(addr, target, &error))?;
        let stop = self.shutdown.child_token();
        let (upstream, upstream_rx) = watch::channel(target.address.clone());
        info!(target_name = %target.name, listen = %local, upstream = %target.address, "gateway listening");
        tokio::spawn(accept_loop(ListenerTask {
            target: target.name.to_string(),
            listener,
            upstream: upstream_rx,
            grants: self.grants.subscribe(),
            events: self.events.clone(),
            clock: self.clock.clone(),
            stop: stop.clone(),
        }));
        Ok(Listener { settings: settings.clone(), local, upstream, stop })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A sentence that names the address, the target and the fix.
fn bind_error(addr: SocketAddr, target: &Target, error: &io::Error) -> String {
    let why = match error.kind() {
        io::ErrorKind::AddrInUse => "address in use; choose another gateway.listen".to_owned(),
        io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges); choose a higher port for gateway.listen".to_owned()
        }
        io::ErrorKind::AddrNotAvailable => {
            "no interface of this host has that address; choose one of its addresses or 0.0.0.0 for gateway.listen"
                .to_owned()
        }
        _ => format!("{error}; check gateway.listen"),
    };
    format!("cannot listen on {addr} for target {}: {why}", target.name)
}

/// Where clients reach a listener: `public_host` if set, else the listen
/// IP, else (for a wildcard listen address) an empty host.
fn opened(settings: &GatewaySettings, port: u16) -> Opened {
    let ip = settings.listen.ip();
    let host = match &settings.public_host {
        Some(host) => host.clone(),
        None if ip.is_unspecified() => String::new(),
        None => ip.to_string(),
    };
    Opened { host, port }
}

#[async_trait::async_trait]
impl Driver for Gateway {
    /// Binds a listener for every target (all `driver = "gateway"`), and
    /// stops (cutting their connections) the listeners of targets that are
    /// gone or moved to another listen address. Listeners already bound on
    /// the same address are kept, so calling it again with the same list
    /// changes nothing; a changed target address applies to new
    /// connections. All bind failures are reported together, as a
    /// permanent error; the other targets are configured regardless.
    async fn configure(&self, targets: &[Target]) -> Result<(), DriverError> {
        let wanted = targets
            .iter()
            .map(|t| match t.driver.gateway() {
                Some(g) => Ok((t.name.as_str(), (t, g))),
                None => Err(DriverError::wrong_driver(DriverKind::Gateway, t)),
            })
            .collect::<Result<BTreeMap<&str, (&Target, &GatewaySettings)>, _>>()?;
        let mut listeners = self.listeners();
        // Stop first, so that a target moving between addresses that
        // overlap (127.0.0.1:5432 to 0.0.0.0:5432) can bind its new one.
        listeners.retain(|name, listener| {
            let keep = wanted.get(name.as_str()).is_some_and(|(_, s)| s.listen == listener.settings.listen);
            if !keep {
                info!(target_name = %name, listen = %listener.local, "gateway listener stopped");
                listener.stop.cancel();
            }
            keep
        });
        let mut errors = Vec::new();
        for (name, (target, settings)) in wanted {
            match listeners.get_mut(name) {
                Some(listener) => {
                    listener.settings = settings.clone();
                    listener.upstream.send_if_modified(|address| {
                        let changed = *address != target.address;
                        if changed {
                            info!(target_name = %name, upstream = %target.address, "target address changed");
                            address.clone_from(&target.address);
                        }
                        changed
                    });
                }
                None => match self.bind(target, settings) {
                    Ok(listener) => {
                        listeners.insert(name.to_owned(), listener);
                    }
                    Err(error) => errors.push(error),
                },
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DriverError::permanent(errors.join("; ")))
        }
    }

    /// Admits `grant.source` to `grant.target` until `grant.ends_at`,
    /// replacing an earlier version of the same grant. A grant that has
    /// already ended is not admitted (and replaces, that is removes, an
    /// earlier version).
    async fn open(&self, grant: &GrantSpec) -> Result<Opened, DriverError> {
        let name = grant.target.name.as_str();
        if grant.target.driver.gateway().is_none() {
            return Err(DriverError::wrong_driver(DriverKind::Gateway, &grant.target));
        }
        let opened = {
            let listeners = self.listeners();
            let listener = listeners.get(name).ok_or_else(|| {
                DriverError::permanent(format!(
                    "target {name} has no gateway listener: it was not among the targets this gateway was configured with, or its gateway.listen address could not be bound (the configuration error says why)"
                ))
            })?;
            opened(&listener.settings, listener.local.port())
        };
        let now = self.clock.now();
        let entry = GrantEntry { target: name.to_owned(), source: grant.source, ends_at: grant.ends_at };
        self.grants.send_if_modified(|table| {
            // Expired grants cover nothing; `observe` (every reconcile)
            // drops them, so opening one grant stays O(log n).
            if entry.ends_at <= now {
                debug!(grant = %grant.id, ends_at = %grant.ends_at, "grant already ended; not admitted");
                return table.remove(&grant.id).is_some();
            }
            if table.get(&grant.id) == Some(&entry) {
                return false;
            }
            info!(grant = %grant.id, target_name = name, source = %grant.source, ends_at = %grant.ends_at, "grant opened");
            table.insert(grant.id.clone(), entry);
            true
        });
        Ok(opened)
    }

    /// Removes grant `id`, which cuts the connections no other grant covers.
    async fn close(&self, id: &RequestId) -> Result<(), DriverError> {
        self.grants.send_if_modified(|table| {
            let removed = table.remove(id).is_some();
            if removed {
                info!(grant = %id, "grant closed");
            }
            removed
        });
        Ok(())
    }

    /// The grants that have not ended yet. A gateway path ends only with
    /// its grant, so nothing is reported as ended early.
    async fn observe(&self) -> Result<Observation, DriverError> {
        let now = self.clock.now();
        let mut observed = Vec::new();
        self.grants.send_if_modified(|table| {
            table.retain(|g| g.ends_at > now);
            observed.extend(table.iter().map(|(id, g)| Observed {
                id: id.clone(),
                target: g.target.clone(),
                source: g.source,
                ends_at: g.ends_at,
            }));
            false
        });
        Ok(Observation { open: observed, ended_early: Vec::new() })
    }

    /// Where clients connect for `target`: the address its listener
    /// actually bound (so port 0 yields the ephemeral port), or, before
    /// `configure` has bound it, the configured address if its port is
    /// fixed. `host` is `public_host` if set, else the listen IP (an IPv6
    /// one without brackets); for a wildcard listen address (0.0.0.0 or ::)
    /// without `public_host` it is empty, and the caller fills in the host
    /// name it knows itself by. It is the same for every grant.
    fn connect_info(&self, target: &Target, _grant: Option<&RequestId>) -> Option<Opened> {
        let settings = target.driver.gateway()?;
        let bound = self
            .listeners()
            .get(target.name.as_str())
            .filter(|l| l.settings.listen == settings.listen)
            .map(|l| l.local.port());
        match bound {
            Some(port) => Some(opened(settings, port)),
            None if settings.listen.port() != 0 => Some(opened(settings, settings.listen.port())),
            None => None,
        }
    }

    /// The gateway installs nothing outside this process: its listeners
    /// and connections end with it.
    async fn cleanup(&self, _targets: &[Target]) -> Result<Vec<String>, DriverError> {
        Ok(Vec::new())
    }
}
