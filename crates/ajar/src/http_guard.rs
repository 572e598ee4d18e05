//! Limits on the API listener's connections, so that clients who open
//! connections and then say nothing (or too little, too slowly) cannot hold
//! the server's file descriptors and starve the gateway of them:
//!
//! - a cap on open API connections; past it a new connection is closed at
//!   once, counted, and logged at most every ten seconds;
//! - an idle timeout: a connection that moves no byte either way for that
//!   long is closed (hyper's header read timeout, set in `serve`, bounds
//!   the time to send a request's headers, however slowly they trickle);
//! - a file-descriptor budget: the soft `RLIMIT_NOFILE` is raised to the
//!   hard limit, and the API gets at most half of it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use ajar_api::ConnectionStats;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

/// How often the "connections refused" warning may repeat.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(10);

/// Raises the soft descriptor limit to the hard one and returns how many
/// API connections fit: `wanted`, or half the limit when `wanted` is more,
/// so that the gateway's relays (two descriptors each), the database and
/// the drivers keep the other half.
pub fn api_connection_budget(wanted: u32) -> u32 {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-file limit (RLIMIT_NOFILE); keeping server.max_api_connections as configured");
            return wanted;
        }
    };
    let share = limit / 2;
    if u64::from(wanted) <= share {
        info!(open_file_limit = limit, max_api_connections = wanted, "file descriptors");
        return wanted;
    }
    let lowered = u32::try_from(share).unwrap_or(u32::MAX).max(1);
    warn!(
        open_file_limit = limit,
        configured = wanted,
        max_api_connections = lowered,
        "the open-file limit (RLIMIT_NOFILE, {limit}) is too low for server.max_api_connections = {wanted} \
         with descriptors left for the gateway, so the API takes at most {lowered} connections; raise the hard \
         limit to at least {} (LimitNOFILE= in the systemd unit, or ulimit -Hn) or lower server.max_api_connections",
        u64::from(wanted) * 2
    );
    lowered
}

/// Admits API connections up to the cap and wraps each in [`Guarded`].
#[derive(Clone)]
pub struct ApiAcceptor {
    permits: Arc<Semaphore>,
    idle: Duration,
    stats: Arc<ConnectionStats>,
    /// The start of this process, and the milliseconds since it at which
    /// the last "refused" warning was logged.
    started: Instant,
    last_warned_ms: Arc<AtomicU64>,
    refused_since_warned: Arc<AtomicU64>,
}

impl ApiAcceptor {
    pub fn new(max: u32, idle: Duration, stats: Arc<ConnectionStats>) -> Self {
        stats.limit.store(u64::from(max), Ordering::Relaxed);
        Self {
            permits: Arc::new(Semaphore::new(max as usize)),
            idle,
            stats,
            started: Instant::now(),
            last_warned_ms: Arc::new(AtomicU64::new(0)),
            refused_since_warned: Arc::new(AtomicU64::new(0)),
        }
    }

    fn refuse(&self, peer: Option<std::net::SocketAddr>) {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.refused_since_warned.fetch_add(1, Ordering::Relaxed);
        // Never 0, which stands for "never warned".
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
        let last = self.last_warned_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSED_LOG_EVERY.as_millis() as u64;
        // One thread wins the right to warn; the others only count.
        if due && self.last_warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            warn!(
                refused = self.refused_since_warned.swap(0, Ordering::Relaxed),
                max_api_connections = self.stats.limit.load(Ordering::Relaxed),
                last_peer = ?peer,
                "the API is at its connection cap (server.max_api_connections): new connections are closed at once \
                 (logged at most every 10 s); the gateway is not affected"
            );
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for ApiAcceptor {
    type Stream = Guarded<TcpStream>;
    type Service = Busy<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Busy<S>)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.refuse(stream.peer_addr().ok());
                // Dropping the stream closes it.
                drop(stream);
                return std::future::ready(Err(io::Error::other("the API connection cap is reached")));
            }
        };
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stream = Guarded::new(stream, self.idle, permit, self.stats.clone(), in_flight.clone());
        std::future::ready(Ok((stream, Busy { inner: service, in_flight })))
    }
}

/// The connection's service, counting the requests it is answering: a
/// connection waiting for its handler (an instance launch can take
/// minutes) moves no bytes but is not idle.
#[derive(Clone)]
pub struct Busy<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
}

/// One request being answered; counted until its response is ready (a
/// streamed body then keeps the connection busy by writing).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S, R> tower_service::Service<R> for Busy<S>
where
    S: tower_service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = InFlight::enter(&self.in_flight);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(in_flight);
            response
        })
    }
}

/// A connection that counts as open while it lives and fails its reads and
/// writes once it has been idle for `idle`.
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    last_activity: Instant,
    deadline: Pin<Box<tokio::time::Sleep>>,
    stats: Arc<ConnectionStats>,
    /// Requests being answered on this connection.
    in_flight: Arc<AtomicUsize>,
    timed_out: bool,
    _permit: OwnedSemaphorePermit,
}

impl<S> Guarded<S> {
    fn new(
        inner: S,
        idle: Duration,
        permit: OwnedSemaphorePermit,
        stats: Arc<ConnectionStats>,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            inner,
            idle,
            last_activity: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(idle)),
            stats,
            in_flight,
            timed_out: false,
            _permit: permit,
        }
    }

    /// Notes a write's progress; a peer that stops reading our answer is
    /// idle too.
    fn after_write(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if self.idle_expired(cx) => Poll::Ready(Err(self.idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Called when the inner stream is not ready: whether the connection
    /// has now been idle too long. Activity only stamps a time; the timer
    /// is moved when it fires, so busy connections cost no timer updates.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timed_out {
            return true;
        }
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                self.last_activity = Instant::now();
            }
            let due = self.last_activity + self.idle;
            if due <= Instant::now() {
                self.timed_out = true;
                self.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            self.deadline.as_mut().reset(tokio::time::Instant::from_std(due));
        }
    }

    fn idle_error(&self) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, "the connection was idle longer than server.http_idle_timeout")
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.idle_error()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(this.idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.idle_error()));
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        this.after_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(this.idle_error()));
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
