//! Reading a node's `/metrics` in tests.

use std::time::Duration;

use tokio::time::Instant;

/// Reads `name`'s value (a whole sample name, labels included) from Prometheus text.
pub(crate) fn metric_value(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("metric {name} missing from:\n{text}"))
}

/// The Prometheus text at `url` (a node's `/metrics`).
pub(crate) async fn scrape_text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Scrapes `url` (a node's `/metrics`) and reads `name`.
pub(crate) async fn scrape(client: &reqwest::Client, url: &str, name: &str) -> u64 {
    metric_value(&scrape_text(client, url).await, name)
}

/// Scrapes until `check` holds for `name` (every 50 ms, for at most `within`); returns
/// the value, or fails with the last one.
pub(crate) async fn wait_metric(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    within: Duration,
    check: impl Fn(u64) -> bool,
) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let value = scrape(client, url, name).await;
        if check(value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {value} for {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
