//! Node configuration: a plain, validated struct. The command line (clap) lives in
//! `main.rs`; tests and simulations build a `Config` directly.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Everything a node needs to run. Build one with [`Config::default`] and override
/// fields, then call [`Config::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP listener binds to.
    pub bind: IpAddr,
    /// HTTP port (subscribe, publish, status; also the relay endpoint between nodes).
    pub http_port: u16,
    /// UDP port for gossip.
    pub gossip_port: u16,
    /// Seed hosts (`host:port`) used to join a cluster.
    pub gossip_hosts: Vec<String>,
    /// With seeds: ready once a live peer is seen, or after this long without one.
    pub gossip_ready_timeout: Duration,
    /// Address other nodes use to reach this one (gossip and HTTP/relay); `None`
    /// picks the local address that routes to the first seed, or loopback.
    pub gossip_advertise: Option<IpAddr>,
    /// This node's name in the cluster; unique per node. `None`: `<hostname>-<http port>`.
    pub node_id: Option<String>,
    /// Accepted events kept for peers that are away (count and bytes).
    pub relay_queue_events: usize,
    pub relay_queue_bytes: usize,
    /// Shared cluster secret; `None` leaves cluster traffic open.
    pub gossip_secret_key: Option<String>,
    /// Bound on calls this node makes to its peers.
    pub http_client_timeout: Duration,
    /// Answer CORS preflights and add `Access-Control-Allow-Origin` everywhere.
    pub cors_enabled: bool,
    /// Serve the page at `GET /`.
    pub ui_enabled: bool,
    /// Interval between keep-alive comments on idle streams; over real TCP also the
    /// idle time before keep-alive probes.
    pub keep_alive: Duration,
    /// Reconnection delay advertised to clients in the stream's `retry:` line.
    pub retry: Duration,
    /// Events kept per channel for `Last-Event-ID` resume.
    pub replay_events: usize,
    /// Age after which events leave the replay history.
    pub replay_age: Duration,
    /// Bytes of replay history across all channels (each event's frame, cursor and
    /// publisher id plus a fixed overhead); past it the oldest events go first.
    pub replay_max_bytes: usize,
    /// Channel states (with subscribers, or kept only for their history) per node.
    pub channels_max: usize,
    /// How many events a subscriber may fall behind before it is disconnected.
    pub subscriber_buffer: usize,
    /// Most channels one stream may follow (`GET /channel/news,sport,...`).
    pub subscriber_max_channels: usize,
    /// Largest accepted publish body, in bytes (and largest line of a bulk publish).
    pub max_body_bytes: usize,
    /// Largest accepted bulk publish body (`application/x-ndjson`, one event a line),
    /// in bytes.
    pub max_bulk_bytes: usize,
    /// Open HTTP connections above which requests are refused with 503.
    pub max_connections: usize,
    /// Open connections from one client IP address above which new ones are answered
    /// 429 and closed. Behind a proxy every connection comes from the proxy: raise it
    /// to `max_connections` there.
    pub max_connections_per_address: usize,
    /// A connection whose writes make no progress for this long is closed, so a
    /// client that stopped reading cannot pin memory forever. Over real TCP it is
    /// also the `TCP_USER_TIMEOUT`: unacknowledged data or keep-alive probes end the
    /// connection of a client that vanished (see `transport::tcp`).
    pub write_stall_timeout: Duration,
    /// A client must send its whole request head within this time (slow-loris).
    pub header_read_timeout: Duration,
    /// A client must send its whole request body within this time after the head;
    /// later it gets 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Shared secret for HS256 tokens; setting it (or a public key) enables
    /// authorization of the public API.
    pub auth_jwt_secret: Option<String>,
    /// PEM text of the public key for RS256 or ES256 tokens (the binary reads it from
    /// the file given to `--auth.jwtPublicKeyFile`).
    pub auth_jwt_public_key: Option<String>,
    /// Publishing requires a token with the channel in its `sse.publish` claim.
    pub auth_publish: bool,
    /// Subscribing requires a token with the channel in its `sse.subscribe` claim.
    pub auth_subscribe: bool,
    /// On SIGTERM, how long a clustered node waits for its live peers to pull every
    /// event it accepted before it leaves anyway (and logs what was left).
    pub shutdown_drain_timeout: Duration,
    /// Fault injection for the simulation suite only (empty without the `testing`
    /// feature; never set by the binary).
    #[doc(hidden)]
    pub faults: crate::faults::Faults,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            http_port: 8080,
            gossip_port: 42000,
            gossip_hosts: Vec::new(),
            gossip_ready_timeout: Duration::from_secs(30),
            gossip_secret_key: None,
            gossip_advertise: None,
            node_id: None,
            relay_queue_events: 10_000,
            relay_queue_bytes: 32 * 1024 * 1024,
            http_client_timeout: Duration::from_secs(10),
            cors_enabled: false,
            ui_enabled: true,
            keep_alive: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            replay_events: 1000,
            replay_age: Duration::from_secs(300),
            replay_max_bytes: 256 * 1024 * 1024,
            channels_max: 100_000,
            subscriber_buffer: 512,
            subscriber_max_channels: 32,
            max_body_bytes: 64 * 1024,
            max_bulk_bytes: 1024 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1000,
            write_stall_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            auth_jwt_secret: None,
            auth_jwt_public_key: None,
            auth_publish: false,
            auth_subscribe: false,
            shutdown_drain_timeout: Duration::from_secs(10),
            faults: Default::default(),
        }
    }
}

/// A configuration value outside its allowed range, naming the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub option: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for --{}: {}", self.option, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Most events one bulk publish may carry: a subscriber must be able to take a
    /// whole request without falling further behind than `--subscriber.buffer`, and
    /// the relay queue must hold it whole.
    pub fn max_bulk_events(&self) -> usize {
        self.subscriber_buffer.min(self.relay_queue_events)
    }

    /// Whether tokens are checked on either side.
    pub fn auth_required(&self) -> bool {
        self.auth_publish || self.auth_subscribe
    }

    /// Checks every bound the rest of the crate relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(option: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError {
                option,
                message: message.into(),
            })
        }
        if self.keep_alive.is_zero() {
            return err("http.server.keepAlive", "must be greater than zero");
        }
        if self.http_client_timeout.is_zero() {
            return err("http.client.timeout", "must be greater than zero");
        }
        if self.replay_events == 0 {
            return err("replay.events", "must be at least 1");
        }
        if self.replay_age.is_zero() {
            return err("replay.age", "must be greater than zero");
        }
        if self.replay_max_bytes < 1024 {
            return err("replay.maxBytes", "must be at least 1024");
        }
        if self.replay_max_bytes < self.max_body_bytes {
            // The newest event is always kept, but a bound below one largest event
            // would make every such publish wipe the history of every channel.
            return err(
                "replay.maxBytes",
                format!(
                    "must be at least --http.server.maxBodyBytes ({}), got {}",
                    self.max_body_bytes, self.replay_max_bytes
                ),
            );
        }
        if self.channels_max == 0 {
            return err("channels.max", "must be at least 1");
        }
        if self.subscriber_buffer == 0 {
            return err("subscriber.buffer", "must be at least 1");
        }
        if self.subscriber_buffer > self.replay_events {
            // A subscriber reads from the channel's replay history; it cannot lag
            // further behind than the history reaches.
            return err(
                "subscriber.buffer",
                format!(
                    "must not exceed --replay.events ({}), got {}",
                    self.replay_events, self.subscriber_buffer
                ),
            );
        }
        if self.subscriber_max_channels == 0 {
            return err("subscriber.maxChannels", "must be at least 1");
        }
        if self.max_body_bytes < 16 {
            return err("http.server.maxBodyBytes", "must be at least 16 bytes");
        }
        if self.max_bulk_bytes < 16 {
            return err("http.server.maxBulkBytes", "must be at least 16 bytes");
        }
        if self.max_bulk_bytes > self.relay_queue_bytes / 2 {
            // A bulk publish's events go into the relay queue under one lock, before
            // any peer can pull one: with their relay framing they must fit in it.
            return err(
                "http.server.maxBulkBytes",
                format!(
                    "must be at most half of --relay.queueBytes ({}), got {}",
                    self.relay_queue_bytes, self.max_bulk_bytes
                ),
            );
        }
        if self.max_connections == 0 {
            return err("http.server.maxConnections", "must be at least 1");
        }
        if self.max_connections_per_address == 0 {
            return err("http.server.maxConnectionsPerAddress", "must be at least 1");
        }
        if self.header_read_timeout.is_zero() {
            return err("http.server.headerTimeout", "must be greater than zero");
        }
        if self.body_read_timeout.is_zero() {
            return err("http.server.bodyTimeout", "must be greater than zero");
        }
        if self.max_header_bytes < 1024 {
            return err("http.server.maxHeaderBytes", "must be at least 1024");
        }
        if self.write_stall_timeout.is_zero() {
            return err("http.server.writeTimeout", "must be greater than zero");
        }
        for host in &self.gossip_hosts {
            if host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return err("gossip.hosts", format!("{host:?} is not host:port"));
            }
        }
        if self.relay_queue_events == 0 {
            return err("relay.queueEvents", "must be at least 1");
        }
        if self.relay_queue_bytes < 1024 {
            return err("relay.queueBytes", "must be at least 1024");
        }
        if let Some(id) = &self.node_id {
            if crate::event::validate_name("node", id).is_err() {
                return err(
                    "gossip.nodeId",
                    "must be 1 to 128 characters from A-Z a-z 0-9 - _ . : ~ @",
                );
            }
        }
        if matches!(&self.gossip_secret_key, Some(k) if k.is_empty()) {
            return err("gossip.secretKey", "must not be empty when set");
        }
        if self.auth_required() && self.gossip_secret_key.is_none() && !self.gossip_hosts.is_empty()
        {
            return err(
                "gossip.secretKey",
                "is needed to join a cluster with --auth.publish or --auth.subscribe: \
                 without it anyone who reaches the relay reads every event the tokens protect",
            );
        }
        if matches!(&self.auth_jwt_secret, Some(k) if k.is_empty()) {
            return err("auth.jwtSecret", "must not be empty when set");
        }
        if let Some(pem) = &self.auth_jwt_public_key {
            if let Err(message) = JwtPublicKey::from_pem(pem) {
                return err("auth.jwtPublicKeyFile", message);
            }
        }
        let keyless = self.auth_jwt_secret.is_none() && self.auth_jwt_public_key.is_none();
        if keyless && self.auth_publish {
            return err(
                "auth.publish",
                "needs a key: set --auth.jwtSecret or --auth.jwtPublicKeyFile",
            );
        }
        if keyless && self.auth_subscribe {
            return err(
                "auth.subscribe",
                "needs a key: set --auth.jwtSecret or --auth.jwtPublicKeyFile",
            );
        }
        Ok(())
    }
}

/// A public key for verifying tokens, and the signature algorithms it admits.
#[derive(Clone)]
pub struct JwtPublicKey {
    pub key: jsonwebtoken::DecodingKey,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
}

impl fmt::Debug for JwtPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtPublicKey")
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtPublicKey {
    /// Reads a PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY`): an
    /// RSA key admits RS256, RS384 and RS512; a P-256 key ES256; a P-384 key ES384.
    pub fn from_pem(pem: &str) -> Result<JwtPublicKey, String> {
        use jsonwebtoken::{Algorithm, DecodingKey};
        if pem.contains("PRIVATE KEY") {
            return Err("the file holds a private key; give the public key".into());
        }
        if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            // The key is the uncompressed curve point: 0x04, then x and y.
            let algorithm = match key.as_bytes().len() {
                65 => Algorithm::ES256,
                97 => Algorithm::ES384,
                _ => return Err("EC keys must be on P-256 (ES256) or P-384 (ES384)".into()),
            };
            return Ok(JwtPublicKey {
                key,
                algorithms: vec![algorithm],
            });
        }
        match DecodingKey::from_rsa_pem(pem.as_bytes()) {
            Ok(key) => Ok(JwtPublicKey {
                key,
                algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
            }),
            Err(_) => Err("not a PEM RSA or EC public key".into()),
        }
    }
}

/// Durations as the Go original wrote them (`500ms`, `10s`, `1m30s`; a bare number is
/// seconds): one grammar for the server's flags, the client and the load generator.
pub use sse_cluster_client::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn invalid_values_name_their_option() {
        let config = Config {
            subscriber_buffer: 5000,
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().option, "subscriber.buffer");
        let config = Config {
            gossip_hosts: vec!["nohost".into()],
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().option, "gossip.hosts");
        let config = Config {
            replay_max_bytes: 1000,
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().option, "replay.maxBytes");
        let config = Config {
            replay_max_bytes: 32 * 1024,
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().option, "replay.maxBytes");
        let config = Config {
            channels_max: 0,
            ..Config::default()
        };
        assert_eq!(config.validate().unwrap_err().option, "channels.max");
        let config = Config {
            body_read_timeout: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().option,
            "http.server.bodyTimeout"
        );
        let config = Config {
            relay_queue_bytes: 1024 * 1024,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().option,
            "http.server.maxBulkBytes"
        );
    }
}
