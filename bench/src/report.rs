//! The figures of one run: a table for people, one JSON line for scripts.

use std::fmt::Write as _;

use serde::Serialize;

/// Every figure a run reports. Fields that could not be measured (no `--server-pid`,
/// no publishing phase) are `null` in JSON.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) label: String,
    pub(crate) sub_url: String,
    pub(crate) pub_url: String,
    pub(crate) subscribers: usize,
    pub(crate) connected: usize,
    pub(crate) connect_failures: usize,
    pub(crate) channels: usize,
    pub(crate) publishers: usize,
    /// Events per publish request (more than 1: bulk publishes).
    pub(crate) batch: usize,
    pub(crate) payload_bytes: usize,
    pub(crate) target_rate_per_s: u64,
    pub(crate) duration_s: f64,
    pub(crate) connect_rate_per_s: f64,
    pub(crate) idle_pss_before_kib: Option<u64>,
    pub(crate) idle_pss_after_kib: Option<u64>,
    pub(crate) idle_bytes_per_subscriber: Option<f64>,
    pub(crate) published: u64,
    pub(crate) publish_errors: u64,
    pub(crate) publish_rate_per_s: f64,
    pub(crate) expected_deliveries: u64,
    pub(crate) delivered: u64,
    pub(crate) delivered_ratio: Option<f64>,
    pub(crate) deliveries_per_s: f64,
    /// Subscriber streams that ended before the run did.
    pub(crate) stream_errors: u64,
    /// Events with data that is not a benchmark payload (`overflow`, `reset`, ...).
    pub(crate) foreign_events: u64,
    pub(crate) server_cpu_s: Option<f64>,
    pub(crate) server_cpu_us_per_delivery: Option<f64>,
    pub(crate) deliveries_per_core_s: Option<f64>,
    /// Events accepted per second of server CPU: the publish path's own cost, next
    /// to the fan-out's.
    pub(crate) events_per_core_s: Option<f64>,
    /// CPU the load generator itself used while publishing: near one core-second
    /// per second on one core means the client, not the server, set the pace.
    pub(crate) client_cpu_s: Option<f64>,
    pub(crate) latency_p50_us: Option<f64>,
    pub(crate) latency_p99_us: Option<f64>,
    pub(crate) latency_p999_us: Option<f64>,
    pub(crate) latency_max_us: Option<f64>,
}

/// Publish-to-receive latency quantiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Latency {
    /// Nearest-rank quantiles of latencies in nanoseconds; `None` when empty.
    pub(crate) fn from_nanos(mut samples: Vec<u64>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            let index = (q * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1] as f64 / 1000.0
        };
        Some(Latency {
            p50: rank(0.50),
            p99: rank(0.99),
            p999: rank(0.999),
            max: rank(1.0),
        })
    }
}

impl Report {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub(crate) fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} subscribers on {} channels, {} publishers{}, {}-byte payloads, {:.1}s at {} deliveries/s",
            self.label,
            self.subscribers,
            self.channels,
            self.publishers,
            if self.batch > 1 {
                format!(" ({} events a request)", self.batch)
            } else {
                String::new()
            },
            self.payload_bytes,
            self.duration_s,
            if self.target_rate_per_s == 0 {
                "max".to_owned()
            } else {
                group(self.target_rate_per_s as f64)
            },
        );
        let mut row = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<26} {value}");
        };
        row(
            "connect rate",
            format!(
                "{} conn/s ({} connected, {} failed)",
                group(self.connect_rate_per_s),
                self.connected,
                self.connect_failures
            ),
        );
        row(
            "idle memory / subscriber",
            match (
                self.idle_bytes_per_subscriber,
                self.idle_pss_before_kib,
                self.idle_pss_after_kib,
            ) {
                (Some(per), Some(before), Some(after)) => format!(
                    "{:.2} KiB (server PSS {:.1} MiB -> {:.1} MiB)",
                    per / 1024.0,
                    before as f64 / 1024.0,
                    after as f64 / 1024.0
                ),
                _ => "n/a (no --server-pid)".to_owned(),
            },
        );
        if self.duration_s > 0.0 {
            row(
                "published",
                format!(
                    "{} ({} errors), {}/s",
                    self.published,
                    self.publish_errors,
                    group(self.publish_rate_per_s)
                ),
            );
            row(
                "delivered",
                format!(
                    "{} of {} (ratio {})",
                    self.delivered,
                    self.expected_deliveries,
                    self.delivered_ratio
                        .map_or("n/a".to_owned(), |r| format!("{r:.6}"))
                ),
            );
            row("deliveries / s", group(self.deliveries_per_s));
            row(
                "stream errors / foreign",
                format!("{} / {}", self.stream_errors, self.foreign_events),
            );
            row(
                "server CPU",
                match (
                    self.server_cpu_s,
                    self.server_cpu_us_per_delivery,
                    self.deliveries_per_core_s,
                ) {
                    (Some(cpu), Some(per), Some(rate)) => format!(
                        "{cpu:.2} s, {per:.3} us/delivery, {} deliveries/core-s, {} events/core-s",
                        group(rate),
                        group(self.events_per_core_s.unwrap_or(0.0))
                    ),
                    (Some(cpu), _, _) => format!("{cpu:.2} s"),
                    _ => "n/a (no --server-pid)".to_owned(),
                },
            );
            if let Some(cpu) = self.client_cpu_s {
                row(
                    "load generator CPU",
                    format!("{cpu:.2} s over {:.1} s", self.duration_s),
                );
            }
            row(
                "latency p50/p99/p99.9/max",
                match (
                    self.latency_p50_us,
                    self.latency_p99_us,
                    self.latency_p999_us,
                    self.latency_max_us,
                ) {
                    (Some(a), Some(b), Some(c), Some(d)) => format!(
                        "{} / {} / {} / {}",
                        micros(a),
                        micros(b),
                        micros(c),
                        micros(d)
                    ),
                    _ => "n/a".to_owned(),
                },
            );
        }
        out
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

/// A whole number with thousands separators.
fn group(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).rev().map(|us| us * 1000).collect();
        let latency = Latency::from_nanos(samples).unwrap();
        assert_eq!(latency.p50, 500.0);
        assert_eq!(latency.p99, 990.0);
        assert_eq!(latency.p999, 999.0);
        assert_eq!(latency.max, 1000.0);
        let one = Latency::from_nanos(vec![2500]).unwrap();
        assert_eq!((one.p50, one.max), (2.5, 2.5));
        assert_eq!(Latency::from_nanos(Vec::new()), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0.0), "0");
        assert_eq!(group(999.4), "999");
        assert_eq!(group(1000.0), "1,000");
        assert_eq!(group(1_234_567.0), "1,234,567");
    }
}
