//! A publisher over a list of nodes that retries without publishing twice: every
//! publish carries an `id` (the caller's, or one made here), the broker's
//! idempotency key, and a retry sends the same id, so an event whose first attempt
//! was accepted before the answer was lost is answered `duplicate` instead of
//! delivered again.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{self, check_segment, Error, Node};

/// An event to publish: `{"id"?, "event"?, "data", "retry"?}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Publish {
    /// The idempotency key; made by the publisher when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The SSE event name; `None` for a plain message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Any JSON value; subscribers get its compact JSON text.
    pub data: Value,
    /// A reconnection time in milliseconds for subscribers (at most 600000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

impl Publish {
    /// An event carrying `data`.
    pub fn new(data: impl Into<Value>) -> Publish {
        Publish {
            id: None,
            event: None,
            data: data.into(),
            retry: None,
        }
    }

    /// Sets the idempotency key.
    pub fn id(mut self, id: impl Into<String>) -> Publish {
        self.id = Some(id.into());
        self
    }

    /// Sets the event name.
    pub fn event(mut self, event: impl Into<String>) -> Publish {
        self.event = Some(event.into());
        self
    }

    /// Sets the subscribers' reconnection time.
    pub fn retry(mut self, retry_ms: u64) -> Publish {
        self.retry = Some(retry_ms);
        self
    }
}

/// The broker's answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Published {
    /// The idempotency key the publish was sent with.
    #[serde(skip)]
    pub key: String,
    /// The channel's cursor after the event on the node that took it (not for
    /// publishes to every channel).
    #[serde(default)]
    pub id: Option<String>,
    /// Subscribers on that node the event was queued for.
    pub delivered: u64,
    /// The key was already in the channel's replay window: nothing was delivered
    /// again, and `id` is the first publish's cursor.
    pub duplicate: bool,
    /// Channels reached, for publishes to every channel.
    #[serde(default)]
    pub channels: Option<u64>,
}

/// Builds a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    nodes: Vec<String>,
    bearer: Option<String>,
    attempts: Option<usize>,
    backoff: Duration,
    timeout: Duration,
}

impl PublisherBuilder {
    /// Sends `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// Attempts per publish, over the nodes in turn (default three per node).
    pub fn attempts(mut self, attempts: usize) -> Self {
        self.attempts = Some(attempts.max(1));
        self
    }

    /// The wait after each round over all nodes, growing by this much per round
    /// (default 100 ms).
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one attempt may take, answer included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Publisher, Error> {
        let nodes = Node::parse_all(&self.nodes)?;
        // A prefix no other publisher is likely to share: std's hasher keys come
        // from the operating system's random source.
        let prefix = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), std::time::SystemTime::now()));
        Ok(Publisher {
            attempts: self.attempts.unwrap_or(nodes.len() * 3),
            nodes,
            current: AtomicUsize::new(0),
            bearer: self.bearer.map(|token| format!("Bearer {token}")),
            backoff: self.backoff,
            timeout: self.timeout,
            key_prefix: format!("{prefix:016x}"),
            counter: AtomicU64::new(0),
        })
    }
}

/// Publishes to a list of nodes, moving to the next one when a node cannot be
/// reached or answers 502, 503 (draining, overloaded) or 504. Cheap to share:
/// methods take `&self`.
#[derive(Debug)]
pub struct Publisher {
    nodes: Vec<Node>,
    /// The node publishes go to until it fails.
    current: AtomicUsize,
    bearer: Option<String>,
    attempts: usize,
    backoff: Duration,
    timeout: Duration,
    key_prefix: String,
    counter: AtomicU64,
}

impl Publisher {
    /// A publisher to `nodes` (`http://host:port`).
    pub fn builder<I>(nodes: I) -> PublisherBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        PublisherBuilder {
            nodes: nodes.into_iter().map(Into::into).collect(),
            bearer: None,
            attempts: None,
            backoff: Duration::from_millis(100),
            timeout: Duration::from_secs(10),
        }
    }

    /// Publishes to one channel. A retry on another node is recognised as a
    /// duplicate once the first node's relay has reached it (in a cluster, the
    /// channel's history is on every node that has the channel).
    pub async fn publish(&self, channel: &str, event: &Publish) -> Result<Published, Error> {
        check_segment(channel)?;
        self.send(&format!("/channel/{channel}"), event, true).await
    }

    /// Publishes to one client of a channel, wherever it is connected.
    pub async fn publish_to_client(
        &self,
        channel: &str,
        client: &str,
        event: &Publish,
    ) -> Result<Published, Error> {
        check_segment(channel)?;
        check_segment(client)?;
        self.send(&format!("/channel/{channel}/client/{client}"), event, true)
            .await
    }

    /// Publishes to every channel. The broker keeps this id only on the node that
    /// accepted it, so once a request may have reached a node, retries stay on it;
    /// only a refused connection moves on.
    pub async fn publish_all(&self, event: &Publish) -> Result<Published, Error> {
        self.send("/channel", event, false).await
    }

    /// A new idempotency key: this publisher's random prefix and a counter.
    pub fn new_key(&self) -> String {
        let n = self.counter.fetch_add(1, Relaxed);
        format!("{}-{n}", self.key_prefix)
    }

    async fn send(
        &self,
        path: &str,
        event: &Publish,
        any_node_dedups: bool,
    ) -> Result<Published, Error> {
        let mut event = event.clone();
        let key = event.id.get_or_insert_with(|| self.new_key()).clone();
        let body =
            Bytes::from(serde_json::to_vec(&event).map_err(|e| Error::Request(e.to_string()))?);
        let mut headers = Vec::new();
        if let Some(bearer) = &self.bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        let mut last_error = Error::NoNodes;
        for attempt in 0..self.attempts {
            let round = attempt / self.nodes.len();
            if attempt > 0 && attempt % self.nodes.len() == 0 {
                tokio::time::sleep(self.backoff.saturating_mul(round as u32)).await;
            }
            let index = self.current.load(Relaxed) % self.nodes.len();
            match self
                .attempt(&self.nodes[index], path, &headers, body.clone())
                .await
            {
                Ok(mut published) => {
                    published.key = key;
                    return Ok(published);
                }
                Err(error) if error.is_transient() => {
                    if any_node_dedups || matches!(error, Error::Connect(_)) {
                        let _ = self.current.compare_exchange(
                            index,
                            (index + 1) % self.nodes.len(),
                            Relaxed,
                            Relaxed,
                        );
                    }
                    last_error = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error)
    }

    async fn attempt(
        &self,
        node: &Node,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Published, Error> {
        let response = http::send(node, "POST", path, headers, Some(body), self.timeout).await?;
        let status = response.status().as_u16();
        let answer = http::read_body(response, self.timeout, 1 << 20).await?;
        if status != 200 {
            return Err(Error::Status {
                status,
                body: String::from_utf8_lossy(&answer).into_owned(),
            });
        }
        serde_json::from_slice(&answer).map_err(|e| Error::Answer(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_is_the_broker_body() {
        let body = |p: &Publish| serde_json::to_string(p).unwrap();
        assert_eq!(body(&Publish::new("hi")), r#"{"data":"hi"}"#);
        assert_eq!(
            body(
                &Publish::new(serde_json::json!({"a": 1}))
                    .id("k")
                    .event("ping")
                    .retry(500)
            ),
            r#"{"id":"k","event":"ping","data":{"a":1},"retry":500}"#
        );
    }

    #[test]
    fn keys_are_unique_per_publisher_and_between_publishers() {
        let a = Publisher::builder(["http://127.0.0.1:1"]).build().unwrap();
        let b = Publisher::builder(["http://127.0.0.1:1"]).build().unwrap();
        let (a1, a2, b1) = (a.new_key(), a.new_key(), b.new_key());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.len() <= 256 && a1.bytes().all(|c| c.is_ascii_graphic()));
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        for bad in ["", "a/b", "a?b", "a b", "a%2f"] {
            assert!(check_segment(bad).is_err(), "{bad}");
        }
        check_segment("orders.*,news").unwrap();
    }
}
