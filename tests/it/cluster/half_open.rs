//! Half-open connections: a client whose host or network vanishes without a word
//! (cable pulled, NAT mapping dropped) sends no FIN and no RST. The node must find
//! out by itself, through unacknowledged keep-alives, within about
//! `--http.server.writeTimeout`, instead of the kernel's ~15 minutes.
//!
//! The node runs in one namespace, the client in another; cutting the client's link
//! silently drops every packet both ways.

use std::time::Duration;

use tokio::time::Instant;

use super::netns::*;
use crate::common::metrics;
use crate::common::node::*;

/// What both tests give the node: keep-alive comments every second, and 3 s for sent
/// data (or keep-alive probes) to be acknowledged.
const NODE_ARGS: &[&str] = &[
    "--http.server.keepAlive=1s",
    "--http.server.writeTimeout=3s",
];

/// Reads the node's `/metrics` over one pooled connection, so the scrape itself
/// adds exactly one to `sse_open_connections`.
struct Scraper {
    client: reqwest::Client,
    url: String,
}

impl Scraper {
    fn new(url: String) -> Scraper {
        Scraper {
            client: client(),
            url,
        }
    }

    async fn value(&self, name: &str) -> u64 {
        metrics::scrape(&self.client, &self.url, name).await
    }

    async fn wait(&self, name: &str, within: Duration, check: impl Fn(u64) -> bool) -> u64 {
        metrics::wait_metric(&self.client, &self.url, name, within, check).await
    }
}

/// Runs one node and one silent client holding `request` open, cuts the client's
/// link once `established` holds, and checks the node drops the connection.
async fn node_notices_a_vanished_client(request: &str, established: (&str, u64)) {
    let Some(hosts) = hosts_or_skip(2) else {
        return;
    };
    let _node = hosts.node(1, NODE_ARGS);
    wait_for_members_at(&hosts.url(1, ""), 1).await;
    let scrape = Scraper::new(hosts.url(1, "/metrics"));
    // Only the scrape's own connection: the one that waited for the node may still
    // be closing, and counting it would make the baseline one too high.
    let baseline = scrape
        .wait("sse_open_connections", Duration::from_secs(10), |v| v == 1)
        .await;
    let _client = hosts.hold_open_inside(2, 1, request);
    let (name, value) = established;
    scrape
        .wait(name, Duration::from_secs(10), |v| v == value)
        .await;
    scrape
        .wait("sse_open_connections", Duration::from_secs(10), |v| {
            v == baseline + 1
        })
        .await;
    // While the client's host is there, its kernel acknowledges everything and the
    // connection stays, well past the timeouts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(scrape.value(name).await, value, "closed while reachable");
    assert_eq!(scrape.value("sse_half_open_disconnects_total").await, 0);

    hosts.cut(2);
    let cut = Instant::now();
    // 3 s of silence, rounded up to the next keep-alive or retransmission.
    scrape
        .wait("sse_open_connections", Duration::from_secs(10), |v| {
            v == baseline
        })
        .await;
    let took = cut.elapsed();
    assert_eq!(scrape.value("sse_half_open_disconnects_total").await, 1);
    eprintln!("the node dropped the vanished client {took:?} after the cut");
}

/// An event stream: the keep-alive comments go unacknowledged (`TCP_USER_TIMEOUT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_whose_network_vanishes_is_dropped_within_the_write_timeout() {
    node_notices_a_vanished_client(
        "GET /channel/vanishing HTTP/1.1\r\nHost: node\r\n\r\n",
        ("sse_subscribers", 1),
    )
    .await;
}

/// A connection with nothing to send (the node waits for the rest of a publish
/// body): only TCP keep-alive probes can find out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_in_the_middle_of_a_request_is_dropped_through_tcp_keepalive() {
    node_notices_a_vanished_client(
        "POST /channel/vanishing HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\":",
        ("sse_subscribers", 0),
    )
    .await;
}
