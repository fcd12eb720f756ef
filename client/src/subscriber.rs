//! A subscriber that behaves like a browser's `EventSource` over a list of nodes: it
//! reads a channel's stream from one node and, when the stream ends or breaks,
//! reconnects to the next node of the list with its last event id, so the broker
//! replays exactly what it missed.

use std::collections::VecDeque;
use std::time::Duration;

use futures_core::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::http::{self, check_segment, Error, Node};
use crate::parse::Parser;
use crate::signal::Signal;

/// Reconnection time until the broker sends `retry:` (a browser's usual default).
const DEFAULT_RETRY: Duration = Duration::from_secs(3);

/// Builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    nodes: Vec<String>,
    channel: String,
    client: Option<String>,
    last_event_id: Option<String>,
    bearer: Option<String>,
    retry: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
    read_timeout: Duration,
    max_buffered: usize,
}

impl SubscriberBuilder {
    /// Subscribes with a chosen client id (`/channel/{channel}/client/{client}`).
    pub fn client(mut self, client: impl Into<String>) -> Self {
        self.client = Some(client.into());
        self
    }

    /// Resumes after this event id, as a reconnect would.
    pub fn last_event_id(mut self, id: impl Into<String>) -> Self {
        self.last_event_id = Some(id.into());
        self
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn bearer(mut self, token: impl Into<String>) -> Self {
        self.bearer = Some(token.into());
        self
    }

    /// The reconnection time until the broker sends its own `retry:` (default 3 s).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = retry;
        self
    }

    /// The longest wait between failed attempts (default 30 s; never below the
    /// reconnection time).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How long connecting and the answer's head may take (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// A stream silent for this long is dead (default 45 s: three of the broker's
    /// default keep-alive intervals).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The most bytes an unfinished event may hold before the stream is dropped
    /// as broken (default 16 MiB).
    pub fn max_event_bytes(mut self, max: usize) -> Self {
        self.max_buffered = max;
        self
    }

    /// The subscriber; it connects on the first [`Subscriber::next`] or
    /// [`Subscriber::connect`].
    pub fn build(self) -> Result<Subscriber, Error> {
        let nodes = Node::parse_all(&self.nodes)?;
        check_segment(&self.channel)?;
        let mut path = format!("/channel/{}", self.channel);
        if let Some(client) = &self.client {
            check_segment(client)?;
            path = format!("{path}/client/{client}");
        }
        let parser = match &self.last_event_id {
            Some(id) => Parser::with_last_event_id(id),
            None => Parser::new(),
        };
        Ok(Subscriber {
            nodes,
            next_node: 0,
            connected: None,
            path,
            bearer: self.bearer.map(|token| format!("Bearer {token}")),
            parser,
            body: None,
            pending: VecDeque::new(),
            delay: None,
            failures: 0,
            retry: self.retry,
            max_backoff: self.max_backoff,
            request_timeout: self.request_timeout,
            read_timeout: self.read_timeout,
            max_buffered: self.max_buffered,
        })
    }
}

/// A channel's events from a list of nodes, as typed [`Signal`]s.
///
/// Connection losses and the answers of a node that is down, overloaded or
/// draining (502, 503, 504) are retried without end: the stream moves to the next
/// node, after the broker's `retry:` time, and doubles the wait while attempts fail
/// (up to the maximum backoff). Other answers (401, 403, 404, 409...) are returned
/// as errors from [`Subscriber::next`]; calling it again tries the next node.
#[derive(Debug)]
pub struct Subscriber {
    nodes: Vec<Node>,
    next_node: usize,
    /// The node whose stream is open.
    connected: Option<usize>,
    path: String,
    bearer: Option<String>,
    parser: Parser,
    body: Option<Incoming>,
    /// Events read but not yet returned.
    pending: VecDeque<Signal>,
    /// Wait before the next attempt.
    delay: Option<Duration>,
    /// Failed attempts since a stream was last open.
    failures: u32,
    retry: Duration,
    max_backoff: Duration,
    request_timeout: Duration,
    read_timeout: Duration,
    max_buffered: usize,
}

impl Subscriber {
    /// A subscriber of `channel` on `nodes` (`http://host:port`), tried in order.
    pub fn builder<I>(nodes: I, channel: impl Into<String>) -> SubscriberBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        SubscriberBuilder {
            nodes: nodes.into_iter().map(Into::into).collect(),
            channel: channel.into(),
            client: None,
            last_event_id: None,
            bearer: None,
            retry: DEFAULT_RETRY,
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(45),
            max_buffered: 16 << 20,
        }
    }

    /// The id a reconnect sends as `Last-Event-ID`: the broker's cursor after the
    /// last event read (empty before any).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// The node whose stream is open, as `http://host:port`.
    pub fn node(&self) -> Option<String> {
        self.connected.map(|i| self.nodes[i].to_string())
    }

    /// Opens a stream if none is open, and returns once a node has answered 200
    /// (the broker then has the subscription: events published after this arrive).
    pub async fn connect(&mut self) -> Result<(), Error> {
        while self.body.is_none() {
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            match self.open().await {
                Ok(body) => {
                    self.body = Some(body);
                    self.connected = Some(self.next_node);
                    self.failures = 0;
                }
                Err(error) => {
                    self.failures = self.failures.saturating_add(1);
                    self.delay = Some(self.backoff());
                    self.next_node = (self.next_node + 1) % self.nodes.len();
                    if !error.is_transient() {
                        return Err(error);
                    }
                }
            }
        }
        Ok(())
    }

    /// The next event, reconnecting as needed.
    pub async fn next(&mut self) -> Result<Signal, Error> {
        loop {
            if let Some(signal) = self.pending.pop_front() {
                return Ok(signal);
            }
            self.connect().await?;
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let frame = match tokio::time::timeout(self.read_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                // Silent too long, ended, or broken: all mean reconnect.
                Err(_) | Ok(None) | Ok(Some(Err(_))) => {
                    self.lost();
                    continue;
                }
            };
            if let Ok(data) = frame.into_data() {
                let pending = &mut self.pending;
                self.parser.feed(&data, |event| {
                    pending.push_back(Signal::from_event(event.to_event()))
                });
                if self.parser.buffered() > self.max_buffered {
                    self.lost();
                }
            }
        }
    }

    /// The events as a [`Stream`] that never ends; errors are items.
    pub fn into_stream(self) -> impl Stream<Item = Result<Signal, Error>> + Send {
        futures_util::stream::unfold(self, |mut subscriber| async move {
            let item = subscriber.next().await;
            Some((item, subscriber))
        })
    }

    async fn open(&self) -> Result<Incoming, Error> {
        let mut headers = vec![("accept", "text/event-stream")];
        let last = self.parser.last_event_id();
        if !last.is_empty() {
            headers.push(("last-event-id", last));
        }
        if let Some(bearer) = &self.bearer {
            headers.push(("authorization", bearer));
        }
        let node = &self.nodes[self.next_node];
        let response = http::send(
            node,
            "GET",
            &self.path,
            &headers,
            None,
            self.request_timeout,
        )
        .await?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response.into_body());
        }
        let body = http::read_body(response, self.request_timeout, 64 << 10)
            .await
            .unwrap_or_default();
        Err(Error::Status {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The stream is gone: the next attempt goes to the next node after the
    /// reconnection time.
    fn lost(&mut self) {
        self.body = None;
        self.parser.end_of_stream();
        if let Some(node) = self.connected.take() {
            self.next_node = (node + 1) % self.nodes.len();
        }
        self.delay = Some(self.reconnection_time());
    }

    fn reconnection_time(&self) -> Duration {
        self.parser
            .retry()
            .map_or(self.retry, Duration::from_millis)
    }

    /// The reconnection time doubled for each failed attempt, at most the maximum
    /// backoff (or the reconnection time, if that is longer).
    fn backoff(&self) -> Duration {
        let retry = self.reconnection_time();
        let factor = 1u32 << self.failures.saturating_sub(1).min(16);
        retry
            .saturating_mul(factor)
            .min(self.max_backoff.max(retry))
    }
}
