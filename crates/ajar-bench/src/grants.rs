//! Sections 2 and 3, scale and expiry precision, on one set of grants:
//! N requests submitted at once, whose durations are chosen so that all N
//! grants end within the same second; then N simultaneously active grants
//! checked from outside; then, at their end, how late the gateway refuses
//! new connections and cuts live ones, measured from outside the server.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::api::{http_client, Api};
use crate::net::{connect_from, is_cut, probe, Probe, Sources, ECHO};
use crate::open::{lock, release_all};
use crate::server::{Memory, Server};
use crate::stats::{ms, Latency};

/// How often an expiry probe tries again while the path is still open;
/// this bounds the resolution of the refusal lag.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A grant still open this long after its end counts as never closed.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Plan {
    pub grants: usize,
    /// Live connections held open into the expiry.
    pub live: usize,
    /// Seconds between the end of set-up and the grants' end, beyond the
    /// estimate.
    pub slack_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub submitted: usize,
    pub succeeded: usize,
    pub errors: BTreeMap<String, usize>,
    pub wall_s: f64,
    pub grants_per_s: f64,
    /// Per-request latency while all N were in flight.
    pub post: Option<Latency>,
    /// `ajar_requests{state="active"}` once all had answered.
    pub active_on_server: Option<f64>,
    /// Grants checked from outside (one connection from each source).
    pub probed: usize,
    pub admitted: usize,
    pub verify_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Expiry {
    pub grants: usize,
    /// Between the earliest and the latest `ends_at`.
    pub ends_at_spread_ms: f64,
    /// Grants probed with new connections around their end.
    pub probed: usize,
    /// Grants that had ended before probing could start (set-up overran).
    pub ended_before_probing: usize,
    /// From `ends_at` to the first refused connection, as seen by the client.
    pub refusal_lag: Option<Latency>,
    pub never_refused: usize,
    pub probe_every_ms: f64,
    pub live_connections: usize,
    /// From `ends_at` to the client seeing its live connection closed.
    pub cut_lag: Option<Latency>,
    pub never_cut: usize,
    /// From the last `ends_at` until the store shows no active grant (the
    /// control plane's bookkeeping, not enforcement).
    pub store_all_expired_after_s: Option<f64>,
    /// `ajar_expiry_lag_max_seconds`: the scheduler's own worst lag.
    pub scheduler_lag_max_s: Option<f64>,
}

pub struct Measured {
    pub scale: Scale,
    pub expiry: Expiry,
    /// The server at N active grants with the live connections open.
    pub loaded: Memory,
    pub live_connections: usize,
    pub refusal_ms: Vec<f64>,
    pub cut_ms: Vec<f64>,
}

#[derive(Debug, Clone)]
struct Granted {
    id: String,
    source: Ipv4Addr,
    ends_at: DateTime<Utc>,
}

pub async fn run(api: &Api, server: &Server, gateway: SocketAddr, plan: &Plan) -> anyhow::Result<Measured> {
    let sources = Arc::new(Sources::new(20));
    // Grants of other sections still active; the store is caught up when
    // it is back to these.
    let baseline = api.metric("ajar_requests{state=\"active\"}").await?;

    // Calibrate: how fast does this machine grant, to choose the end time?
    let calibration = plan.grants.clamp(10, 200);
    let started = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..calibration {
        ids.push(api.request(sources.next(), 60).await.map_err(|e| anyhow::anyhow!("calibration: {}", e.0))?.id);
    }
    let rate = calibration as f64 / started.elapsed().as_secs_f64().max(1e-6);
    release_all(api, ids).await;
    let lead = plan.slack_secs + 3.0 * plan.grants as f64 / rate + plan.grants as f64 / 1000.0;
    let end = Utc::now() + chrono::Duration::milliseconds((lead * 1000.0) as i64);
    // Whole seconds: every grant asks for the rest of the time until `end`,
    // rounded up, so all ends fall within [end, end + 1 s + queueing).
    let end = DateTime::<Utc>::from_timestamp(end.timestamp() + 1, 0).unwrap_or(end);

    // Submit all at once. A separate pool keeps few idle connections, so the
    // thousands opened for the burst are closed once it is over.
    let storm = api.with_http(http_client(64)?);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.grants);
    for _ in 0..plan.grants {
        let (storm, source) = (storm.clone(), sources.next());
        tasks.push(tokio::spawn(async move {
            let secs = (end - Utc::now()).num_milliseconds().max(1000) as f64 / 1000.0;
            let t = Instant::now();
            let result = storm.request(source, secs.ceil() as u64).await;
            (source, ms(t.elapsed()), result)
        }));
    }
    let mut granted = Vec::with_capacity(plan.grants);
    let mut errors = BTreeMap::<String, usize>::new();
    let mut post = Vec::with_capacity(plan.grants);
    for task in tasks {
        let (source, latency, result) = task.await?;
        match result {
            Ok(grant) => {
                post.push(latency);
                let ends_at = grant.ends_at.unwrap_or(end);
                granted.push(Granted { id: grant.id, source, ends_at });
            }
            Err(e) => *errors.entry(e.0).or_default() += 1,
        }
    }
    let wall = started.elapsed();
    drop(storm);
    let active_on_server = api.metric("ajar_requests{state=\"active\"}").await.ok();

    // Every grant, checked from outside: one connection from its source.
    let verify_started = Instant::now();
    let admitted = Arc::new(Mutex::new(0usize));
    let limit = Arc::new(Semaphore::new(200));
    let mut checks = Vec::new();
    for g in &granted {
        let (limit, admitted, source) = (limit.clone(), admitted.clone(), g.source);
        checks.push(tokio::spawn(async move {
            let Ok(_permit) = limit.acquire().await else { return };
            if let Ok(Probe::Admitted) = probe(source.into(), gateway).await {
                *lock(&admitted) += 1;
            }
        }));
    }
    for check in checks {
        check.await?;
    }
    let verify_s = verify_started.elapsed().as_secs_f64();
    let admitted = *lock(&admitted);

    // Live connections, one per grant for the first `live` grants.
    let mut live = Vec::new();
    for g in granted.iter().take(plan.live) {
        if let Ok(stream) = live_connection(g.source, gateway).await {
            live.push((g.clone(), stream));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let loaded = server.memory()?;
    let live_connections = live.len();

    let scale = Scale {
        submitted: plan.grants,
        succeeded: granted.len(),
        errors,
        wall_s: wall.as_secs_f64(),
        grants_per_s: granted.len() as f64 / wall.as_secs_f64().max(1e-9),
        post: Latency::of(&post),
        active_on_server,
        probed: granted.len(),
        admitted,
        verify_s,
    };

    // Expiry: watch every live connection and probe every other grant.
    let first_end = granted.iter().map(|g| g.ends_at).min().unwrap_or(end);
    let last_end = granted.iter().map(|g| g.ends_at).max().unwrap_or(end);
    let live_ids: std::collections::HashSet<String> = live.iter().map(|(g, _)| g.id.clone()).collect();
    let mut cut_tasks = Vec::new();
    for (g, stream) in live {
        cut_tasks.push(tokio::spawn(watch_cut(stream, g.ends_at)));
    }
    let mut probe_tasks = Vec::new();
    let mut ended_before_probing = 0;
    let now = Utc::now();
    for g in granted.iter().filter(|g| !live_ids.contains(&g.id)) {
        if g.ends_at <= now {
            ended_before_probing += 1;
            continue;
        }
        probe_tasks.push(tokio::spawn(watch_refusal(g.source, gateway, g.ends_at)));
    }
    let probed = probe_tasks.len();
    let mut refusal_ms = Vec::new();
    for task in probe_tasks {
        if let Some(lag) = task.await? {
            refusal_ms.push(lag);
        }
    }
    let mut cut_ms = Vec::new();
    for task in cut_tasks {
        if let Some(lag) = task.await? {
            cut_ms.push(lag);
        }
    }

    // The control plane's bookkeeping: when does the store show them all
    // expired?
    let mut store_all_expired_after_s = None;
    let waiting = Instant::now();
    while waiting.elapsed() < Duration::from_secs(120) {
        if api.metric("ajar_requests{state=\"active\"}").await.is_ok_and(|n| n <= baseline) {
            store_all_expired_after_s = Some(lag_ms(last_end) / 1000.0);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expiry = Expiry {
        grants: granted.len(),
        ends_at_spread_ms: (last_end - first_end).num_microseconds().unwrap_or(0) as f64 / 1000.0,
        probed,
        ended_before_probing,
        refusal_lag: Latency::of(&refusal_ms),
        never_refused: probed - refusal_ms.len(),
        probe_every_ms: ms(PROBE_EVERY),
        live_connections,
        cut_lag: Latency::of(&cut_ms),
        never_cut: live_connections - cut_ms.len(),
        store_all_expired_after_s,
        scheduler_lag_max_s: api.metric("ajar_expiry_lag_max_seconds").await.ok(),
    };
    Ok(Measured { scale, expiry, loaded, live_connections, refusal_ms, cut_ms })
}

/// Milliseconds from `at` until now (negative if `at` is ahead).
fn lag_ms(at: DateTime<Utc>) -> f64 {
    (Utc::now() - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// Sleeps until `at` on the wall clock (the server's clock: same machine).
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

async fn live_connection(source: Ipv4Addr, gateway: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = connect_from(source.into(), gateway).await?;
    stream.write_all(&[ECHO]).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    Ok(stream)
}

/// The lag from `ends_at` to seeing `stream` closed by the gateway.
async fn watch_cut(mut stream: TcpStream, ends_at: DateTime<Utc>) -> Option<f64> {
    let deadline = ends_at + chrono::Duration::from_std(GIVE_UP_AFTER).unwrap_or_default();
    let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(wait, stream.read(&mut byte)).await {
        Ok(Ok(0)) => Some(lag_ms(ends_at)),
        Ok(Err(e)) if is_cut(&e) => Some(lag_ms(ends_at)),
        _ => None,
    }
}

/// From `ends_at`, tries a new connection every [`PROBE_EVERY`] until one is
/// refused; the lag from `ends_at` to seeing that refusal.
async fn watch_refusal(source: Ipv4Addr, gateway: SocketAddr, ends_at: DateTime<Utc>) -> Option<f64> {
    sleep_until(ends_at).await;
    loop {
        match probe(source.into(), gateway).await {
            Ok(Probe::Refused) => return Some(lag_ms(ends_at)),
            Ok(Probe::Admitted) | Err(_) => {}
        }
        if lag_ms(ends_at) > ms(GIVE_UP_AFTER) {
            return None;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}
