//! The node's configuration: one settings struct per part, which the node hands
//! whole to that part (the HTTP server, authorization, the broker, the cluster, the
//! log), and the checks of every bound, within a part and across parts. Each part
//! defines its settings and their defaults; the command line (clap) lives in
//! `main.rs`; tests and simulations build a `Config` directly.

use std::fmt;

pub use crate::broker::BrokerSettings;
pub use crate::cluster::ClusterSettings;
pub use crate::http::{AuthSettings, HttpSettings, JwtPublicKey};
pub use crate::log::{LogFormat, LogSettings};

/// Everything a node needs to run. Build one with [`Config::default`] and override
/// fields, then call [`Config::validate`].
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The public API: listener, connections, requests, streams (`--http.server.*`,
    /// `--ui.enabled`, `--subscriber.maxChannels`).
    pub http: HttpSettings,
    /// Tokens for publishing and subscribing (`--auth.*`).
    pub auth: AuthSettings,
    /// Channels, replay history, subscribers' buffers and the queue kept for peers
    /// (`--replay.*`, `--channels.max`, `--subscriber.buffer`, `--relay.*`).
    pub broker: BrokerSettings,
    /// Gossip, the relay's calls to peers, and the drain on stop (`--gossip.*`,
    /// `--http.client.timeout`, `--shutdown.drainTimeout`).
    pub cluster: ClusterSettings,
    /// `--log.*`
    pub log: LogSettings,
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
    /// Checks every bound the rest of the crate relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn err(option: &'static str, message: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError {
                option,
                message: message.into(),
            })
        }
        let Config {
            http,
            auth,
            broker,
            cluster,
            log: _,
        } = self;
        if http.keep_alive.is_zero() {
            return err("http.server.keepAlive", "must be greater than zero");
        }
        if cluster.client_timeout.is_zero() {
            return err("http.client.timeout", "must be greater than zero");
        }
        if cluster.relay_batch_interval > std::time::Duration::from_secs(1) {
            // Longer would hold events past a peer's patience (`http.client.timeout`)
            // and past any sensible latency.
            return err("relay.batchInterval", "must be at most 1s");
        }
        if broker.replay_events == 0 {
            return err("replay.events", "must be at least 1");
        }
        if broker.replay_age.is_zero() {
            return err("replay.age", "must be greater than zero");
        }
        if broker.replay_max_bytes < 1024 {
            return err("replay.maxBytes", "must be at least 1024");
        }
        if broker.replay_max_bytes < http.max_body_bytes {
            // The newest event is always kept, but a bound below one largest event
            // would make every such publish wipe the history of every channel.
            return err(
                "replay.maxBytes",
                format!(
                    "must be at least --http.server.maxBodyBytes ({}), got {}",
                    http.max_body_bytes, broker.replay_max_bytes
                ),
            );
        }
        if broker.max_channels == 0 {
            return err("channels.max", "must be at least 1");
        }
        if broker.subscriber_buffer == 0 {
            return err("subscriber.buffer", "must be at least 1");
        }
        if broker.subscriber_buffer > broker.replay_events {
            // A subscriber reads from the channel's replay history; it cannot lag
            // further behind than the history reaches.
            return err(
                "subscriber.buffer",
                format!(
                    "must not exceed --replay.events ({}), got {}",
                    broker.replay_events, broker.subscriber_buffer
                ),
            );
        }
        if http.max_channels_per_stream == 0 {
            return err("subscriber.maxChannels", "must be at least 1");
        }
        if http.max_body_bytes < 16 {
            return err("http.server.maxBodyBytes", "must be at least 16 bytes");
        }
        if http.max_bulk_bytes < 16 {
            return err("http.server.maxBulkBytes", "must be at least 16 bytes");
        }
        if http.max_bulk_bytes > broker.relay_queue_bytes / 2 {
            // A bulk publish's events go into the relay queue under one lock, before
            // any peer can pull one: with their relay framing they must fit in it.
            return err(
                "http.server.maxBulkBytes",
                format!(
                    "must be at most half of --relay.queueBytes ({}), got {}",
                    broker.relay_queue_bytes, http.max_bulk_bytes
                ),
            );
        }
        if http.max_connections == 0 {
            return err("http.server.maxConnections", "must be at least 1");
        }
        if http.max_connections_per_address == 0 {
            return err("http.server.maxConnectionsPerAddress", "must be at least 1");
        }
        if http.header_read_timeout.is_zero() {
            return err("http.server.headerTimeout", "must be greater than zero");
        }
        if http.body_timeout.is_zero() {
            return err("http.server.bodyTimeout", "must be greater than zero");
        }
        if http.max_header_bytes < 1024 {
            return err("http.server.maxHeaderBytes", "must be at least 1024");
        }
        if http.write_stall_timeout.is_zero() {
            return err("http.server.writeTimeout", "must be greater than zero");
        }
        for host in &cluster.seeds {
            if host
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return err("gossip.hosts", format!("{host:?} is not host:port"));
            }
        }
        if broker.relay_queue_events == 0 {
            return err("relay.queueEvents", "must be at least 1");
        }
        if broker.relay_queue_bytes < 1024 {
            return err("relay.queueBytes", "must be at least 1024");
        }
        if let Some(id) = &cluster.node_id {
            if crate::event::validate_name("node", id).is_err() {
                return err(
                    "gossip.nodeId",
                    "must be 1 to 128 characters from A-Z a-z 0-9 - _ . : ~ @",
                );
            }
        }
        if matches!(&cluster.secret_key, Some(k) if k.is_empty()) {
            return err("gossip.secretKey", "must not be empty when set");
        }
        if auth.required() && cluster.secret_key.is_none() && !cluster.seeds.is_empty() {
            return err(
                "gossip.secretKey",
                "is needed to join a cluster with --auth.publish or --auth.subscribe: \
                 without it anyone who reaches the relay reads every event the tokens protect",
            );
        }
        if matches!(&auth.jwt_secret, Some(k) if k.is_empty()) {
            return err("auth.jwtSecret", "must not be empty when set");
        }
        if let Some(pem) = &auth.jwt_public_key {
            if let Err(message) = JwtPublicKey::from_pem(pem) {
                return err("auth.jwtPublicKeyFile", message);
            }
        }
        if !auth.has_key() && auth.publish {
            return err(
                "auth.publish",
                "needs a key: set --auth.jwtSecret or --auth.jwtPublicKeyFile",
            );
        }
        if !auth.has_key() && auth.subscribe {
            return err(
                "auth.subscribe",
                "needs a key: set --auth.jwtSecret or --auth.jwtPublicKeyFile",
            );
        }
        Ok(())
    }
}

/// Durations as the Go original wrote them (`500ms`, `10s`, `1m30s`; a bare number is
/// seconds): one grammar for the server's flags, the client and the load generator.
pub use sse_cluster_client::parse_duration;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    /// The option `change` makes invalid, as `validate` names it.
    fn invalid(change: impl FnOnce(&mut Config)) -> &'static str {
        let mut config = Config::default();
        change(&mut config);
        config.validate().unwrap_err().option
    }

    #[test]
    fn invalid_values_name_their_option() {
        let option = invalid(|c| c.broker.subscriber_buffer = 5000);
        assert_eq!(option, "subscriber.buffer");
        let option = invalid(|c| c.cluster.seeds = vec!["nohost".into()]);
        assert_eq!(option, "gossip.hosts");
        let option = invalid(|c| c.broker.replay_max_bytes = 1000);
        assert_eq!(option, "replay.maxBytes");
        let option = invalid(|c| c.broker.replay_max_bytes = 32 * 1024);
        assert_eq!(option, "replay.maxBytes");
        let option = invalid(|c| c.broker.max_channels = 0);
        assert_eq!(option, "channels.max");
        let option = invalid(|c| c.http.body_timeout = Duration::ZERO);
        assert_eq!(option, "http.server.bodyTimeout");
        let option = invalid(|c| c.broker.relay_queue_bytes = 1024 * 1024);
        assert_eq!(option, "http.server.maxBulkBytes");
        let option = invalid(|c| c.cluster.relay_batch_interval = Duration::from_millis(1001));
        assert_eq!(option, "relay.batchInterval");
    }

    /// The defaults of the parts are the command line's (README's table).
    #[test]
    fn defaults_are_the_flags_defaults() {
        let c = Config::default();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.http.bind.to_string(), "0.0.0.0");
        assert_eq!(c.cluster.gossip_port, 42000);
        assert_eq!(c.broker.replay_events, 1000);
        assert_eq!(c.broker.subscriber_buffer, 512);
        assert_eq!(c.http.max_channels_per_stream, 32);
        assert_eq!(c.cluster.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.cluster.relay_batch_interval, Duration::from_millis(2));
        assert_eq!(c.log.level, "info");
    }
}
