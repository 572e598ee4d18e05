//! Section 1, open latency: from `POST /requests` (auto-approved, gateway
//! driver) to the first echo through the gateway from the granted source,
//! at several concurrencies. Each request binds a fresh source address, so
//! every sample opens a new path rather than reusing one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::{Api, CallError};
use crate::net::{probe, Probe, Sources};
use crate::stats::{ms, Latency};

/// How long an open path may take to admit its first connection before
/// the sample counts as an error.
const OPEN_WITHIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub concurrency: usize,
    pub requests: usize,
    pub ok: usize,
    pub errors: BTreeMap<String, usize>,
    /// `POST /requests` alone, until the response (the grant is open then).
    pub post: Option<Latency>,
    /// `POST /requests` until the first echo through the gateway.
    pub open: Option<Latency>,
    /// How many samples needed more than one connection attempt.
    pub retried: usize,
    pub wall_s: f64,
    pub grants_per_s: f64,
}

/// One level's figures plus its raw open samples (for the chart).
pub struct Measured {
    pub level: Level,
    pub open_ms: Vec<f64>,
}

struct Sample {
    post_ms: f64,
    open_ms: f64,
    retried: bool,
}

/// Runs `requests` samples with `concurrency` workers, then releases the
/// grants (untimed) so that later sections start from an empty table.
pub async fn level(
    api: &Api,
    gateway: SocketAddr,
    sources: &Arc<Sources>,
    concurrency: usize,
    requests: usize,
) -> anyhow::Result<Measured> {
    let next = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(requests)));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.min(requests) {
        let (api, sources, next, samples, errors, ids) =
            (api.clone(), sources.clone(), next.clone(), samples.clone(), errors.clone(), ids.clone());
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                match sample(&api, gateway, &sources).await {
                    Ok((id, s)) => {
                        lock(&ids).push(id);
                        lock(&samples).push(s);
                    }
                    Err(e) => *lock(&errors).entry(e.0).or_default() += 1,
                }
            }
        }));
    }
    for worker in workers {
        worker.await?;
    }
    let wall = started.elapsed();
    let samples = std::mem::take(&mut *lock(&samples));
    let errors = std::mem::take(&mut *lock(&errors));
    let ids = std::mem::take(&mut *lock(&ids));
    release_all(api, ids).await;
    let open_ms: Vec<f64> = samples.iter().map(|s| s.open_ms).collect();
    let post_ms: Vec<f64> = samples.iter().map(|s| s.post_ms).collect();
    let level = Level {
        concurrency,
        requests,
        ok: samples.len(),
        errors,
        post: Latency::of(&post_ms),
        open: Latency::of(&open_ms),
        retried: samples.iter().filter(|s| s.retried).count(),
        wall_s: wall.as_secs_f64(),
        grants_per_s: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
    };
    Ok(Measured { level, open_ms })
}

async fn sample(api: &Api, gateway: SocketAddr, sources: &Sources) -> Result<(String, Sample), CallError> {
    let source = sources.next();
    let started = Instant::now();
    let grant = api.request(source, 600).await?;
    let post = started.elapsed();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match probe(source.into(), gateway).await {
            Ok(Probe::Admitted) => break,
            Ok(Probe::Refused) if started.elapsed() < OPEN_WITHIN => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(Probe::Refused) => return Err(CallError("open but refused for 10 s".to_owned())),
            Err(e) => return Err(CallError(format!("probe: {}", e.kind()))),
        }
    }
    let open = started.elapsed();
    Ok((grant.id, Sample { post_ms: ms(post), open_ms: ms(open), retried: attempts > 1 }))
}

/// Releases `ids`, 50 at a time; failures only leave grants to expire.
pub async fn release_all(api: &Api, ids: Vec<String>) {
    let queue = Arc::new(Mutex::new(ids));
    let mut workers = Vec::new();
    for _ in 0..50 {
        let (api, queue) = (api.clone(), queue.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let Some(id) = lock(&queue).pop() else { break };
                let _ = api.release(&id).await;
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
}

/// A poisoned lock still holds usable samples: workers only push.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
