//! CI smoke test of `sse-cluster bench`: the real binary serves on free ports, the
//! real binary benchmarks it briefly, and the JSON report says every event reached
//! every subscriber and carries every figure.
//!
//! The server's memory and CPU come from `/proc`: that test is Linux-only.

use std::process::Command;

use crate::common::net::free_ports;
use crate::common::node::NodeProcess;

const BIN: &str = env!("CARGO_BIN_EXE_sse-cluster");

/// Every field of the JSON report.
#[cfg(target_os = "linux")]
const FIELDS: &[&str] = &[
    "label",
    "sub_url",
    "pub_url",
    "subscribers",
    "connected",
    "connect_failures",
    "channels",
    "publishers",
    "batch",
    "payload_bytes",
    "target_rate_per_s",
    "duration_s",
    "connect_rate_per_s",
    "idle_pss_before_kib",
    "idle_pss_after_kib",
    "idle_bytes_per_subscriber",
    "published",
    "publish_errors",
    "publish_rate_per_s",
    "expected_deliveries",
    "delivered",
    "delivered_ratio",
    "deliveries_per_s",
    "stream_errors",
    "foreign_events",
    "server_cpu_s",
    "server_cpu_us_per_delivery",
    "deliveries_per_core_s",
    "events_per_core_s",
    "client_cpu_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_max_us",
];

#[cfg(target_os = "linux")]
#[test]
fn bench_against_a_real_node_delivers_everything_and_reports_every_figure() {
    let node = start_node();
    let url = format!("http://127.0.0.1:{}/channel/{{channel}}", node.http);
    let output = Command::new(BIN)
        .args(["bench", "--json", "--sub-url", &url, "--pub-url", &url])
        .args(["-n", "50", "-c", "2", "-p", "2", "-r", "5000", "-d", "2s"])
        .args(["--settle", "200ms", "--drain-timeout", "10s"])
        .args(["--server-pid", &node.pid().to_string()])
        .output()
        .expect("run sse-cluster bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints one line, got:\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(lines[0]).expect("valid JSON");
    let object = report.as_object().expect("a JSON object");
    for field in FIELDS {
        let value = object
            .get(*field)
            .unwrap_or_else(|| panic!("missing {field} in {report}"));
        assert!(!value.is_null(), "{field} is null in {report}");
    }
    assert_eq!(object.len(), FIELDS.len(), "unexpected fields in {report}");

    assert_eq!(report["connected"], 50);
    assert_eq!(report["connect_failures"], 0);
    assert_eq!(report["delivered_ratio"], 1.0, "{report}");
    let published = report["published"].as_u64().unwrap();
    assert!(published > 0, "{report}");
    // Subscribers are spread evenly: each publish reaches the 25 of its channel.
    assert_eq!(
        report["expected_deliveries"].as_u64().unwrap(),
        published * 25
    );
    assert_eq!(report["delivered"], report["expected_deliveries"]);
    assert_eq!(report["stream_errors"], 0);
    assert_eq!(report["foreign_events"], 0);
    let p50 = report["latency_p50_us"].as_f64().unwrap();
    let max = report["latency_max_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= max, "{report}");
    assert!(report["idle_pss_after_kib"].as_u64().unwrap() > 0);
}

/// `--batch`: bulk publishes, each event of each request counted and delivered.
#[test]
fn bench_with_batches_publishes_in_bulk_and_delivers_every_event() {
    let node = start_node();
    let url = format!("http://127.0.0.1:{}/channel/{{channel}}", node.http);
    let output = Command::new(BIN)
        .args(["bench", "--json", "--sub-url", &url, "--pub-url", &url])
        .args([
            "-n", "4", "-c", "2", "-p", "1", "-r", "4000", "-d", "1s", "-b", "20",
        ])
        .args(["--settle", "100ms", "--drain-timeout", "10s"])
        .output()
        .expect("run sse-cluster bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("valid JSON");
    assert_eq!(report["batch"], 20);
    assert_eq!(report["publish_errors"], 0, "{report}");
    let published = report["published"].as_u64().unwrap();
    assert!(published >= 20 && published.is_multiple_of(20), "{report}");
    // Two subscribers a channel: every event of every request reaches both.
    assert_eq!(
        report["expected_deliveries"].as_u64().unwrap(),
        published * 2
    );
    assert_eq!(report["delivered"], report["expected_deliveries"]);
}

#[test]
fn bench_reports_lost_deliveries_with_a_failing_exit_code() {
    // Nothing listens on this port: every subscriber fails to connect.
    let (port, _) = free_ports();
    let url = format!("http://127.0.0.1:{port}/channel/{{channel}}");
    let output = Command::new(BIN)
        .args(["bench", "--json", "--sub-url", &url, "--pub-url", &url])
        .args(["-n", "3", "-c", "1", "-d", "0s", "--settle", "0s"])
        .output()
        .expect("run sse-cluster bench");
    assert!(!output.status.success());
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("a report even when the run fails");
    assert_eq!(report["connected"], 0);
    assert_eq!(report["connect_failures"], 3);
}

/// A broker node run from the real binary, listening; killed on drop.
fn start_node() -> NodeProcess {
    let node = NodeProcess::builder()
        .args(&["--log.level", "warn"])
        .spawn();
    node.wait_listening();
    node
}
