//! The report: one serializable struct, printed as JSON and as Markdown
//! tables, with the targets marked met or missed.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::datapath::PathFigures;
use crate::grants::{Expiry, Scale};
use crate::open::Level;
use crate::server::Memory;
use crate::stats::{ratio, Latency};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub smoke: bool,
    pub started_at: DateTime<Utc>,
    pub machine: Machine,
    pub footprint: Option<Footprint>,
    pub open: Option<Vec<Level>>,
    pub datapath: Option<DataPath>,
    pub scale: Option<Scale>,
    pub expiry: Option<Expiry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub ajar_binary: String,
    pub ajar_commit: String,
}

impl Machine {
    pub fn describe(binary: &std::path::Path) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_owned(), |m| m.trim().to_owned());
        let meminfo = read("/proc/meminfo");
        let kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        // The commit of the checkout this bench was built from.
        let commit = std::process::Command::new("git")
            .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "--short", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map_or_else(|| "unknown".to_owned(), |o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            memory_gib: kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            ajar_binary: binary.display().to_string(),
            ajar_commit: commit,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Footprint {
    pub binary_mib: f64,
    /// Median over fresh starts (empty data dir: includes creating the
    /// database).
    pub start_to_ready_ms: f64,
    pub start_runs_ms: Vec<f64>,
    pub idle: Option<Memory>,
    pub loaded: Option<Memory>,
    pub loaded_grants: usize,
    pub loaded_connections: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DataPath {
    pub paths: Vec<PathFigures>,
    pub socat: Option<String>,
}

impl DataPath {
    fn find(&self, prefix: &str) -> Option<&PathFigures> {
        self.paths.iter().find(|p| p.path.starts_with(prefix))
    }

    /// Gateway throughput over direct loopback throughput.
    pub fn gateway_vs_direct(&self) -> Option<f64> {
        ratio(self.find("gateway")?.throughput_gbit_s, self.find("direct")?.throughput_gbit_s)
    }

    /// Gateway throughput over the best socat's.
    pub fn gateway_vs_socat(&self) -> Option<f64> {
        let best = self
            .paths
            .iter()
            .filter(|p| p.path.starts_with("socat"))
            .map(|p| p.throughput_gbit_s)
            .fold(None, |a: Option<f64>, b| Some(a.map_or(b, |a| a.max(b))))?;
        ratio(self.find("gateway")?.throughput_gbit_s, best)
    }
}

fn lat(l: &Option<Latency>) -> String {
    match l {
        Some(l) => format!("{:.2} | {:.2} | {:.2}", l.p50_ms, l.p99_ms, l.max_ms),
        None => "– | – | –".to_owned(),
    }
}

fn errors(e: &std::collections::BTreeMap<String, usize>) -> String {
    if e.is_empty() {
        return "none".to_owned();
    }
    e.iter().map(|(k, v)| format!("{v}× {k}")).collect::<Vec<_>>().join("; ")
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = &self.machine;
        let _ =
            writeln!(out, "# ajar benchmark{}\n", if self.smoke { " (smoke: small counts, not figures)" } else { "" });
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- run at: {}", self.started_at.format("%Y-%m-%d %H:%M UTC"));
        let _ = writeln!(
            out,
            "- machine: {} × {}, {:.1} GiB, Linux {}; ajar {} ({})\n",
            m.cores, m.cpu, m.memory_gib, m.kernel, m.ajar_commit, m.ajar_binary
        );

        let _ = writeln!(out, "## Targets\n\n| target | figure | verdict |\n| --- | --- | --- |");
        let open100 =
            self.open.as_ref().and_then(|l| l.iter().find(|l| l.concurrency == 100)).and_then(|l| l.open.clone());
        let _ = writeln!(
            out,
            "| open latency p99 ≤ 5 ms at concurrency 100 | {} | {} |",
            open100.as_ref().map_or("–".to_owned(), |l| format!("{:.2} ms", l.p99_ms)),
            verdict(open100.map(|l| l.p99_ms <= 5.0))
        );
        let refusal = self.expiry.as_ref().and_then(|e| e.refusal_lag.clone().map(|l| (e.grants, l)));
        let _ = writeln!(
            out,
            "| expiry lag p99 ≤ 100 ms at 10,000 grants | {} | {} |",
            refusal.as_ref().map_or("–".to_owned(), |(n, l)| format!("{:.1} ms at {n} grants", l.p99_ms)),
            verdict(refusal.map(|(_, l)| l.p99_ms <= 100.0))
        );
        let dp = self.datapath.as_ref();
        let vs_direct = dp.and_then(DataPath::gateway_vs_direct);
        let vs_socat = dp.and_then(DataPath::gateway_vs_socat);
        let _ = writeln!(
            out,
            "| throughput ≥ 0.9× direct loopback | {} | {} |",
            vs_direct.map_or("–".to_owned(), |r| format!("{r:.2}×")),
            verdict(vs_direct.map(|r| r >= 0.9))
        );
        let _ = writeln!(
            out,
            "| throughput above socat | {} | {} |",
            vs_socat.map_or("–".to_owned(), |r| format!("{r:.2}× the best socat")),
            verdict(vs_socat.map(|r| r > 1.0))
        );
        let loaded = self.footprint.as_ref().and_then(|f| f.loaded.map(|m| (f.loaded_grants, f.loaded_connections, m)));
        let _ = writeln!(
            out,
            "| RSS ≤ 64 MiB at 10,000 grants | {} | {} |\n",
            loaded.map_or("–".to_owned(), |(g, c, m)| format!(
                "{:.1} MiB at {g} grants, {c} live connections",
                m.rss_mib
            )),
            verdict(loaded.map(|(_, _, m)| m.rss_mib <= 64.0))
        );

        if let Some(levels) = &self.open {
            let _ = writeln!(out, "## 1. Open latency (POST /requests → first echo through the gateway), ms\n");
            let _ = writeln!(
                out,
                "| concurrency | requests | ok | open p50 | p99 | max | POST p50 | p99 | max | grants/s | errors |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
            for l in levels {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {:.0} | {} |",
                    l.concurrency,
                    l.requests,
                    l.ok,
                    lat(&l.open),
                    lat(&l.post),
                    l.grants_per_s,
                    errors(&l.errors)
                );
            }
            let _ = writeln!(out);
        }
        if let Some(s) = &self.scale {
            let _ = writeln!(out, "## 2. Scale: {} requests submitted at once\n", s.submitted);
            let _ = writeln!(out, "| figure | value |\n| --- | --- |");
            let _ = writeln!(out, "| succeeded | {} of {} |", s.succeeded, s.submitted);
            let _ = writeln!(out, "| errors by kind | {} |", errors(&s.errors));
            let _ = writeln!(out, "| wall time | {:.2} s ({:.0} grants/s) |", s.wall_s, s.grants_per_s);
            let _ = writeln!(out, "| per-request p50 / p99 / max, ms | {} |", lat(&s.post).replace(" | ", " / "));
            let _ = writeln!(
                out,
                "| active grants on the server (`/metrics`) | {} |",
                s.active_on_server.map_or("–".to_owned(), |n| format!("{n:.0}"))
            );
            let _ = writeln!(
                out,
                "| admitted from their own source (checked from outside) | {} of {} in {:.2} s |\n",
                s.admitted, s.probed, s.verify_s
            );
        }
        if let Some(e) = &self.expiry {
            let _ = writeln!(
                out,
                "## 3. Expiry precision: {} grants ending within {:.0} ms\n",
                e.grants, e.ends_at_spread_ms
            );
            let _ = writeln!(out, "| lag after `ends_at`, ms | n | p50 | p99 | max | never closed |\n| --- | --- | --- | --- | --- | --- |");
            let _ = writeln!(
                out,
                "| new connection refused (probe every {:.0} ms) | {} | {} | {} |",
                e.probe_every_ms,
                e.refusal_lag.as_ref().map_or(0, |l| l.n),
                lat(&e.refusal_lag),
                e.never_refused
            );
            let _ = writeln!(
                out,
                "| live connection cut | {} | {} | {} |\n",
                e.cut_lag.as_ref().map_or(0, |l| l.n),
                lat(&e.cut_lag),
                e.never_cut
            );
            let _ = writeln!(
                out,
                "Grants that ended before probing could start: {}. The store showed every grant expired {} after the last `ends_at`; the scheduler's own worst lag (`ajar_expiry_lag_max_seconds`) was {}.\n",
                e.ended_before_probing,
                e.store_all_expired_after_s.map_or("–".to_owned(), |s| format!("{s:.2} s")),
                e.scheduler_lag_max_s.map_or("–".to_owned(), |s| format!("{s:.2} s")),
            );
        }
        if let Some(d) = &self.datapath {
            let _ = writeln!(out, "## 4. Data path (same run, same target server)\n");
            let _ = writeln!(
                out,
                "| path | Gbit/s (median) | RTT p50 | p99 | max (ms) | concurrent conns | RTT p50 | p99 | max (ms) | round trips/s | errors |"
            );
            let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
            for p in &d.paths {
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {} | {}/{} | {} | {:.0} | {} |",
                    p.path,
                    p.throughput_gbit_s,
                    lat(&p.rtt),
                    p.concurrent.established,
                    p.concurrent.connections,
                    lat(&p.concurrent.rtt),
                    p.concurrent.round_trips_per_s,
                    errors(&p.concurrent.errors)
                );
            }
            if let Some(why) = &d.socat {
                let _ = writeln!(out, "\nsocat: {why}");
            }
            let _ = writeln!(out);
        }
        if let Some(f) = &self.footprint {
            let _ = writeln!(out, "## 5. Footprint\n\n| figure | value |\n| --- | --- |");
            let _ = writeln!(out, "| binary size | {:.1} MiB |", f.binary_mib);
            let _ = writeln!(
                out,
                "| start to ready (median of {}) | {:.0} ms |",
                f.start_runs_ms.len(),
                f.start_to_ready_ms
            );
            if let Some(m) = f.idle {
                let _ = writeln!(out, "| RSS idle | {:.1} MiB |", m.rss_mib);
            }
            if let Some(m) = f.loaded {
                let _ = writeln!(
                    out,
                    "| RSS at {} active grants and {} live connections | {:.1} MiB (peak over the run {:.1} MiB) |",
                    f.loaded_grants, f.loaded_connections, m.rss_mib, m.peak_rss_mib
                );
            }
            let _ = writeln!(out);
        }
        out
    }
}
