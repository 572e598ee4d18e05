//! Runs the benchmark's smoke mode against the `ajar` binary built next to
//! it (a debug build under the test suite) and checks that the report is
//! complete and its numbers are sane. Not a timing assertion: the figures
//! of a smoke run on a debug build mean nothing, only that the benchmark
//! still works end to end.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn ajar_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_ajar-bench"));
    let ajar = bench.with_file_name("ajar");
    assert!(ajar.exists(), "{} is missing: build the workspace first (cargo build --workspace)", ajar.display());
    ajar
}

fn number(report: &Value, pointer: &str) -> f64 {
    report.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("{pointer} is not a number in {report}"))
}

#[test]
fn smoke_run_writes_a_complete_sane_report() {
    let out = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let output = Command::new(env!("CARGO_BIN_EXE_ajar-bench"))
        .args(["all", "--smoke", "--ajar"])
        .arg(ajar_binary())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap_or_else(|e| panic!("running ajar-bench: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ajar-bench failed:\n{stderr}");

    let json = std::fs::read_to_string(out.path().join("report.json")).unwrap_or_else(|e| panic!("report.json: {e}"));
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("report.json is not JSON: {e}"));
    assert_eq!(report["smoke"], Value::Bool(true));

    // Open latency: every level, every request granted and admitted.
    let levels = report["open"].as_array().unwrap_or_else(|| panic!("no open section"));
    assert_eq!(levels.len(), 3);
    for level in levels {
        assert_eq!(level["ok"], level["requests"], "{level}");
        let (p50, p99, max) =
            (number(level, "/open/p50_ms"), number(level, "/open/p99_ms"), number(level, "/open/max_ms"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{level}");
        assert!(number(level, "/post/p50_ms") <= p50, "the POST is part of opening: {level}");
    }

    // Scale: all granted, all admitted from their own source, and the
    // server agrees they are active.
    let scale = &report["scale"];
    assert_eq!(scale["succeeded"], scale["submitted"], "{scale}");
    assert_eq!(scale["admitted"], scale["submitted"], "{scale}");
    assert_eq!(number(scale, "/active_on_server"), number(scale, "/submitted"), "{scale}");

    // Expiry: every probed path was closed and every live connection cut,
    // after (not before) the grant's end.
    let expiry = &report["expiry"];
    assert_eq!(number(expiry, "/never_refused"), 0.0, "{expiry}");
    assert_eq!(number(expiry, "/never_cut"), 0.0, "{expiry}");
    assert!(number(expiry, "/refusal_lag/n") > 0.0, "{expiry}");
    assert!(number(expiry, "/live_connections") > 0.0, "{expiry}");
    for lag in ["/refusal_lag/p50_ms", "/cut_lag/p50_ms"] {
        let value = number(expiry, lag);
        assert!((0.0..10_000.0).contains(&value), "{lag} = {value}: {expiry}");
    }

    // Data path: direct and gateway always; every connection established,
    // bytes moved.
    let paths = report["datapath"]["paths"].as_array().unwrap_or_else(|| panic!("no data path section"));
    let names: Vec<&str> = paths.iter().filter_map(|p| p["path"].as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("direct")) && names.iter().any(|n| n.starts_with("gateway")));
    for path in paths {
        assert!(number(path, "/throughput_gbit_s") > 0.0, "{path}");
        assert_eq!(path["concurrent"]["established"], path["concurrent"]["connections"], "{path}");
        assert!(number(path, "/rtt/p50_ms") > 0.0, "{path}");
    }

    // Footprint.
    let footprint = &report["footprint"];
    assert!(number(footprint, "/binary_mib") > 1.0, "{footprint}");
    assert!(number(footprint, "/start_to_ready_ms") > 0.0, "{footprint}");
    assert!(number(footprint, "/idle/rss_mib") > 1.0, "{footprint}");
    assert!(number(footprint, "/loaded/rss_mib") >= 1.0, "{footprint}");

    // The Markdown and the chart.
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap_or_else(|e| panic!("report.md: {e}"));
    for heading in
        ["## Targets", "## 1. Open latency", "## 2. Scale", "## 3. Expiry", "## 4. Data path", "## 5. Footprint"]
    {
        assert!(markdown.contains(heading), "report.md lacks {heading}:\n{markdown}");
    }
    let png = std::fs::read(out.path().join("latency.png")).unwrap_or_else(|e| panic!("latency.png: {e}"));
    assert!(png.starts_with(b"\x89PNG"), "latency.png is not a PNG");
}
