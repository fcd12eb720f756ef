//! The README's metrics table against what `/metrics` serves: every metric served is
//! documented with its type, every documented one is served, and so is every
//! documented kind of refused request.

use std::collections::BTreeMap;

use crate::common::metrics;
use crate::common::server::*;

/// The README's metrics table: metric name (labels cut off) → type.
fn readme_metrics() -> BTreeMap<String, String> {
    let section = readme_from("### Metrics");
    let mut metrics = BTreeMap::new();
    for row in section.lines().filter(|l| l.starts_with("| `sse_")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`');
        let name = name.split('{').next().expect("name");
        metrics.insert(name.to_owned(), cells[2].to_owned());
    }
    assert!(metrics.len() >= 10, "parsed {metrics:?}");
    metrics
}

/// The request-error kinds the README lists in the `sse_request_errors_total` row.
fn readme_error_kinds() -> Vec<String> {
    let row = readme_from("### Metrics")
        .lines()
        .find(|l| l.starts_with("| `sse_request_errors_total"))
        .expect("README documents sse_request_errors_total");
    let kinds = row.split("by `kind`:").nth(1).expect("kinds listed");
    kinds
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_readme_documents_every_metric_served_and_no_other() {
    let server = Server::start(config()).await;
    let text = metrics::scrape_text(&server.http, &server.url("/metrics")).await;
    let served: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    assert!(served.len() >= 10, "{text}");
    assert_eq!(
        readme_metrics(),
        served,
        "README's metrics table (left) against GET /metrics (right)"
    );
    let served_kinds: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("sse_request_errors_total{kind=\""))
        .map(|rest| rest.split('"').next().expect("label value").to_owned())
        .collect();
    assert!(!served_kinds.is_empty(), "{text}");
    assert_eq!(readme_error_kinds(), served_kinds);
}
