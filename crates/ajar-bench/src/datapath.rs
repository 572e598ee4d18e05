//! Section 4, the gateway data path: bulk throughput, small-message
//! round trips on one connection, and many concurrent live connections,
//! each measured the same way through ajar's gateway, directly over
//! loopback, and through `socat` as a forwarder (what the ephemeral-bastion
//! design uses), in the same run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::{Barrier, Semaphore};

use crate::net::{connect_from, free_port, wait_listening, CHUNK, ECHO, SINK};
use crate::stats::{median, ms, Latency};

/// Bytes in one small message.
const MESSAGE: usize = 64;

#[derive(Debug, Clone)]
pub struct Plan {
    /// Seconds of one bulk transfer, and how many to take the median of.
    pub bulk_secs: f64,
    pub bulk_runs: usize,
    /// Round trips on one connection.
    pub round_trips: usize,
    /// Concurrent connections, and round trips each makes.
    pub connections: usize,
    pub round_trips_each: usize,
}

/// One way from the bench to the target server.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub from: IpAddr,
    pub to: SocketAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathFigures {
    pub path: String,
    /// Median of the runs, Gbit/s.
    pub throughput_gbit_s: f64,
    pub throughput_runs: Vec<f64>,
    pub rtt: Option<Latency>,
    pub concurrent: Concurrent,
}

#[derive(Debug, Clone, Serialize)]
pub struct Concurrent {
    pub connections: usize,
    pub established: usize,
    pub errors: BTreeMap<String, usize>,
    /// Until every connection has echoed its first byte.
    pub setup_s: f64,
    pub rtt: Option<Latency>,
    pub round_trips_per_s: f64,
}

/// Measures `route` according to `plan`.
pub async fn measure(route: &Route, plan: &Plan) -> anyhow::Result<PathFigures> {
    let mut runs = Vec::new();
    for _ in 0..plan.bulk_runs {
        runs.push(bulk(route, plan.bulk_secs).await?);
    }
    let rtt = round_trips(route, plan.round_trips).await?;
    let concurrent = concurrent(route, plan.connections, plan.round_trips_each).await?;
    Ok(PathFigures {
        path: route.name.clone(),
        throughput_gbit_s: median(&runs),
        throughput_runs: runs,
        rtt: Latency::of(&rtt),
        concurrent,
    })
}

/// Gbit/s of one connection writing for `secs` into the sink, counted by
/// the sink (bytes that actually arrived).
async fn bulk(route: &Route, secs: f64) -> anyhow::Result<f64> {
    let mut stream = connect_from(route.from, route.to).await?;
    let chunk = vec![0x5au8; CHUNK];
    let started = Instant::now();
    stream.write_all(&[SINK]).await?;
    let until = Duration::from_secs_f64(secs);
    while started.elapsed() < until {
        stream.write_all(&chunk).await?;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).await?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(count) as f64 * 8.0 / elapsed / 1e9)
}

/// Milliseconds of `n` sequential 64-byte round trips on one connection.
async fn round_trips(route: &Route, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut stream = connect_from(route.from, route.to).await?;
    echo_handshake(&mut stream).await?;
    exchange(&mut stream, n).await
}

async fn echo_handshake(stream: &mut tokio::net::TcpStream) -> anyhow::Result<()> {
    stream.write_all(&[ECHO]).await?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await?;
    if byte != [ECHO] {
        bail!("the echo server answered {byte:?}");
    }
    Ok(())
}

/// `connections` live connections at once; once all are up, each makes
/// `each` round trips while all the others do too.
async fn concurrent(route: &Route, connections: usize, each: usize) -> anyhow::Result<Concurrent> {
    // At most 100 handshakes in flight, so that a listen backlog (socat's
    // default is 5) measures the forwarder rather than SYN retransmits.
    let connecting = Arc::new(Semaphore::new(100));
    let barrier = Arc::new(Barrier::new(connections + 1));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let (route, connecting, barrier) = (route.clone(), connecting.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let stream = async {
                let _permit = connecting.acquire().await?;
                let mut stream = connect_from(route.from, route.to).await?;
                echo_handshake(&mut stream).await?;
                Ok::<_, anyhow::Error>(stream)
            }
            .await;
            // Every task passes every barrier, failed or not: all
            // connections are up (or failed), then go, then done.
            barrier.wait().await;
            barrier.wait().await;
            let began = Instant::now();
            let result = match stream {
                Ok(mut stream) => exchange(&mut stream, each).await.map(|samples| (samples, began, Instant::now())),
                Err(e) => Err(e),
            };
            barrier.wait().await;
            result
        }));
    }
    barrier.wait().await;
    let setup = started.elapsed();
    barrier.wait().await;
    barrier.wait().await;
    let mut errors = BTreeMap::<String, usize>::new();
    let mut rtt = Vec::new();
    let mut established = 0;
    // The traffic phase, from the first connection starting to the last
    // one finishing, as the tasks themselves saw it.
    let mut span: Option<(Instant, Instant)> = None;
    for task in tasks {
        match task.await? {
            Ok((samples, began, ended)) => {
                established += 1;
                rtt.extend(samples);
                span = Some(span.map_or((began, ended), |(b, e)| (b.min(began), e.max(ended))));
            }
            Err(e) => *errors.entry(e.root_cause().to_string()).or_default() += 1,
        }
    }
    Ok(Concurrent {
        connections,
        established,
        errors,
        setup_s: setup.as_secs_f64(),
        round_trips_per_s: rtt.len() as f64 / span.map_or(0.0, |(b, e)| (e - b).as_secs_f64()).max(1e-9),
        rtt: Latency::of(&rtt),
    })
}

/// Milliseconds of `n` 64-byte round trips on an echoing connection.
async fn exchange(stream: &mut tokio::net::TcpStream, n: usize) -> anyhow::Result<Vec<f64>> {
    let message = [0x42u8; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut reply).await?;
        samples.push(ms(started.elapsed()));
    }
    Ok(samples)
}

/// A `socat` forwarding 127.0.0.1:PORT to `target`, forking a process per
/// connection as the ephemeral-bastion design does. Killed when dropped.
pub struct Socat {
    child: Child,
    pub route: Route,
}

impl Socat {
    /// `buffer` is socat's `-b` (None: its default of 8 KiB).
    pub async fn start(program: &str, target: SocketAddr, buffer: Option<usize>) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(program);
        if let Some(size) = buffer {
            command.arg(format!("-b{size}"));
        }
        let child = command
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,backlog=1024,nodelay"))
            .arg(format!("TCP:{target},nodelay"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow!("cannot run {program}: {e}"))?;
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_listening(to, Duration::from_secs(5)).await?;
        let name = match buffer {
            Some(size) => format!("socat -b{size}"),
            None => "socat (default buffer)".to_owned(),
        };
        Ok(Self { child, route: Route { name, from: Ipv4Addr::LOCALHOST.into(), to } })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether `program` runs.
pub async fn available(program: &str) -> bool {
    Command::new(program)
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}
