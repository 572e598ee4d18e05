//! `ajar-bench`: measures the real `ajar` server (release build, embedded
//! default: SQLite and the built-in gateway) over HTTP and real TCP on
//! loopback, side by side with baselines in the same run, and prints a
//! Markdown report and JSON, and draws one PNG chart.
//!
//! ```text
//! cargo build --release -p ajar -p ajar-bench
//! /var/tmp/ajar-target/release/ajar-bench all --out bench-out
//! ```
//!
//! Sections: `open`, `scale` and `expiry` (one phase: the scale test's
//! grants are the ones that expire together), `datapath`, `footprint`, or
//! `all`. `--smoke` runs every section with small counts in seconds; the
//! test suite runs it so that the benchmark keeps working. Figures from a
//! smoke run (or a debug build) are not figures.

mod api;
mod chart;
mod datapath;
mod grants;
mod net;
mod open;
mod report;
mod server;
mod stats;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use clap::{Parser, ValueEnum};

use crate::api::{http_client, Api};
use crate::datapath::{Plan as DataPlan, Route, Socat};
use crate::net::{Sources, TargetServer};
use crate::report::{DataPath, Footprint, Machine, Report};
use crate::server::{Server, MAX_DURATION_SECS};

#[derive(Debug, Parser)]
#[command(name = "ajar-bench", about = "Benchmarks the real ajar server against baselines, on loopback")]
struct Cli {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    section: Section,
    /// Small counts, a few seconds: checks that the benchmark works, the
    /// figures mean little.
    #[arg(long)]
    smoke: bool,
    /// The `ajar` binary (default: the one next to this program).
    #[arg(long)]
    ajar: Option<PathBuf>,
    /// Where to write report.md, report.json and latency.png.
    #[arg(long, default_value = "ajar-bench-out")]
    out: PathBuf,
    /// The socat program for the forwarder baseline.
    #[arg(long, default_value = "socat")]
    socat: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    All,
    Open,
    Scale,
    Expiry,
    Datapath,
    Footprint,
}

impl Section {
    fn includes(self, other: Section) -> bool {
        self == Section::All || self == other || (other == Section::Scale && self == Section::Expiry)
    }
}

/// The counts of a run.
struct Counts {
    open_levels: Vec<(usize, usize)>,
    grants: grants::Plan,
    data: DataPlan,
    starts: usize,
}

impl Counts {
    fn new(smoke: bool) -> Self {
        if smoke {
            Self {
                open_levels: vec![(1, 5), (10, 20), (20, 40)],
                grants: grants::Plan { grants: 100, live: 10, slack_secs: 2.0 },
                data: DataPlan { bulk_secs: 0.1, bulk_runs: 1, round_trips: 50, connections: 20, round_trips_each: 5 },
                starts: 1,
            }
        } else {
            Self {
                open_levels: vec![(1, 300), (100, 3000), (1000, 5000)],
                grants: grants::Plan { grants: 10_000, live: 1000, slack_secs: 10.0 },
                data: DataPlan {
                    bulk_secs: 3.0,
                    bulk_runs: 3,
                    round_trips: 5000,
                    connections: 1000,
                    round_trips_each: 20,
                },
                starts: 5,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_fd_limit()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

/// Thousands of sockets on both ends: raise this process's soft limit to
/// the hard one (the server it starts inherits it).
fn raise_fd_limit() -> anyhow::Result<()> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    if hard < 24_000 {
        eprintln!("ajar-bench: the open-files limit is {hard}; the full run wants ~24,000 (ulimit -n)");
    }
    Ok(())
}

fn default_ajar() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("ajar");
    if !sibling.exists() {
        bail!(
            "no ajar binary next to {} (build it with `cargo build --release -p ajar`, or pass --ajar)",
            me.display()
        );
    }
    Ok(sibling)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let binary = match &cli.ajar {
        Some(path) => path.clone(),
        None => default_ajar()?,
    };
    let counts = Counts::new(cli.smoke);
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let mut report = Report {
        command,
        smoke: cli.smoke,
        started_at: Utc::now(),
        machine: Machine::describe(&binary),
        footprint: None,
        open: None,
        datapath: None,
        scale: None,
        expiry: None,
    };
    let target = TargetServer::start().await?;
    let mut open_series = Vec::new();
    let mut expiry_series = Vec::new();

    let mut footprint = None;
    if cli.section.includes(Section::Footprint) {
        let mut runs = Vec::new();
        for _ in 0..counts.starts {
            let server = Server::start(&binary, target.addr).await?;
            runs.push(stats::ms(server.start_to_ready));
            server.stop().await?;
        }
        footprint = Some(Footprint {
            binary_mib: std::fs::metadata(&binary)?.len() as f64 / 1024.0 / 1024.0,
            start_to_ready_ms: stats::median(&runs),
            start_runs_ms: runs,
            idle: None,
            loaded: None,
            loaded_grants: 0,
            loaded_connections: 0,
        });
    }

    let server = Server::start(&binary, target.addr).await?;
    eprintln!("ajar-bench: server {} (pid {}, log {})", server.url, server.pid, server.log.display());
    let api = Api::login(http_client(1024)?, &server.url).await.context("logging in")?;
    let gateway = api.gateway().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(f) = footprint.as_mut() {
        f.idle = Some(server.memory()?);
    }

    if cli.section.includes(Section::Open) {
        let sources = Arc::new(Sources::new(10));
        let mut levels = Vec::new();
        for (concurrency, requests) in &counts.open_levels {
            eprintln!("ajar-bench: open latency at concurrency {concurrency} ({requests} requests)");
            let measured = open::level(&api, gateway, &sources, *concurrency, *requests).await?;
            open_series.push((format!("concurrency {concurrency}"), measured.open_ms));
            levels.push(measured.level);
        }
        report.open = Some(levels);
    }

    if cli.section.includes(Section::Datapath) {
        eprintln!("ajar-bench: data path");
        let granted = Ipv4Addr::new(127, 30, 0, 1);
        let grant =
            api.request(granted, MAX_DURATION_SECS).await.map_err(|e| anyhow::anyhow!("data-path grant: {}", e.0))?;
        let mut routes = vec![
            Route { name: "direct loopback".to_owned(), from: Ipv4Addr::LOCALHOST.into(), to: target.addr },
            Route { name: "gateway (ajar)".to_owned(), from: granted.into(), to: gateway },
        ];
        let mut socats = Vec::new();
        let mut socat_note = None;
        if datapath::available(&cli.socat).await {
            for buffer in [None, Some(262_144)] {
                let socat = Socat::start(&cli.socat, target.addr, buffer).await?;
                routes.push(socat.route.clone());
                socats.push(socat);
            }
        } else {
            socat_note =
                Some(format!("`{}` is not installed (apt-get install socat); no forwarder baseline", cli.socat));
        }
        let mut paths = Vec::new();
        for route in &routes {
            eprintln!("ajar-bench: data path via {}", route.name);
            paths.push(datapath::measure(route, &counts.data).await?);
        }
        for socat in socats {
            socat.stop().await;
        }
        api.release(&grant.id).await.map_err(|e| anyhow::anyhow!("releasing the data-path grant: {}", e.0))?;
        report.datapath = Some(DataPath { paths, socat: socat_note });
    }

    if cli.section.includes(Section::Scale) {
        eprintln!("ajar-bench: scale and expiry with {} grants", counts.grants.grants);
        let measured = grants::run(&api, &server, gateway, &counts.grants).await?;
        if let Some(f) = footprint.as_mut() {
            f.loaded = Some(measured.loaded);
            f.loaded_grants = measured.scale.admitted;
            f.loaded_connections = measured.live_connections;
        }
        expiry_series.push(("new connection refused".to_owned(), measured.refusal_ms));
        expiry_series.push(("live connection cut".to_owned(), measured.cut_ms));
        report.scale = Some(measured.scale);
        report.expiry = Some(measured.expiry);
    }
    if let Some(f) = footprint.as_mut() {
        if let (Some(loaded), Ok(now)) = (f.loaded.as_mut(), server.memory()) {
            loaded.peak_rss_mib = now.peak_rss_mib;
        }
    }
    report.footprint = footprint;
    server.stop().await?;

    write(&cli.out, &report, &open_series, &expiry_series)
}

fn write(out: &Path, report: &Report, open: &[chart::Series], expiry: &[chart::Series]) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let markdown = report.markdown();
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("report.md"), &markdown)?;
    std::fs::write(out.join("report.json"), &json)?;
    chart::draw(&out.join("latency.png"), open, expiry)?;
    println!("{markdown}");
    println!("```json\n{json}\n```");
    eprintln!("ajar-bench: wrote {}/report.md, report.json and latency.png", out.display());
    Ok(())
}
