//! The `sse-cluster` binary: command line → [`Config`], logging, real sockets, and a
//! node that runs until SIGINT or SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sse_cluster::clock::Clock;
use sse_cluster::config::{
    parse_duration, AuthSettings, BrokerSettings, ClusterSettings, Config, ConfigError,
    HttpSettings, LogSettings,
};
use sse_cluster::node::Node;
use sse_cluster::transport::tcp::{self, TokioNetwork};

use sse_cluster_bench as bench;

#[derive(Debug, Parser)]
#[command(
    name = "sse-cluster",
    version,
    about = "A clustered Server-Sent Events broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a broker node.
    Start(Box<StartArgs>),
    /// Measure a running SSE broker (this one, nchan, ...) under load.
    Bench(Box<bench::BenchArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Options of `sse-cluster start`. Names and environment variables follow the Go
/// sse-cluster, so existing deployments keep working.
#[derive(Debug, Args)]
struct StartArgs {
    /// UDP port for gossip between nodes.
    #[arg(long = "gossip.port", env = "GOSSIP_PORT", default_value_t = 42000)]
    gossip_port: u16,
    /// Nodes to join through (host:port of their gossip port), comma-separated.
    #[arg(long = "gossip.hosts", env = "GOSSIP_HOSTS", value_delimiter = ',')]
    gossip_hosts: Vec<String>,
    /// With --gossip.hosts, a node is ready once it has seen a live peer, or after
    /// this long without one (it then serves as a cluster of one until a peer comes).
    #[arg(long = "gossip.readyTimeout", env = "GOSSIP_READY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    gossip_ready_timeout: Duration,
    /// Shared secret that encrypts and authenticates cluster traffic.
    #[arg(
        long = "gossip.secretKey",
        env = "GOSSIP_SECRET_KEY",
        hide_env_values = true
    )]
    gossip_secret_key: Option<String>,
    /// Address other nodes use to reach this one, for gossip and relay (containers, NAT)
    /// [default: the local address that routes to the first seed, else 127.0.0.1].
    #[arg(long = "gossip.advertise", env = "GOSSIP_ADVERTISE")]
    gossip_advertise: Option<IpAddr>,
    /// This node's unique name in the cluster [default: <hostname>@<advertise address>:<http port>].
    #[arg(long = "gossip.nodeId", env = "GOSSIP_NODE_ID")]
    node_id: Option<String>,
    /// Accepted events kept for a peer that is away, before it gets a gap.
    #[arg(
        long = "relay.queueEvents",
        env = "RELAY_QUEUE_EVENTS",
        default_value_t = 10000
    )]
    relay_queue_events: usize,
    /// Bytes of accepted events kept for a peer that is away.
    #[arg(
        long = "relay.queueBytes",
        env = "RELAY_QUEUE_BYTES",
        default_value_t = 33554432
    )]
    relay_queue_bytes: usize,
    /// Shortest time between two writes of events to one peer: events accepted
    /// meanwhile go out together in the next write (0s: each at once; at most 1s).
    #[arg(long = "relay.batchInterval", env = "RELAY_BATCH_INTERVAL", default_value = "2ms", value_parser = parse_duration)]
    relay_batch_interval: Duration,
    /// Time limit for requests this node makes to other nodes (e.g. 10s, 500ms).
    #[arg(long = "http.client.timeout", env = "HTTP_CLIENT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    http_client_timeout: Duration,
    /// HTTP port [default: 8080; env HTTP_PORT is read as an older name].
    #[arg(
        long = "http.server.port",
        visible_alias = "http.port",
        env = "HTTP_SERVER_PORT"
    )]
    http_port: Option<u16>,
    /// Address the HTTP server binds to.
    #[arg(
        long = "http.server.address",
        env = "HTTP_SERVER_ADDRESS",
        default_value = "0.0.0.0"
    )]
    http_address: IpAddr,
    /// Allow cross-origin requests (answers preflight OPTIONS on every route).
    #[arg(long = "http.server.cors.enabled", env = "HTTP_SERVER_ENABLE_CORS", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    cors_enabled: bool,
    /// Serve a page at `GET /` to watch the cluster and try publishing and
    /// subscribing (it uses only the public API; safe to turn off in production).
    #[arg(long = "ui.enabled", env = "UI_ENABLED", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    ui_enabled: bool,
    /// Interval between keep-alive comments on idle streams; also the idle time before
    /// TCP keep-alive probes (then one every third of it, at least 1s).
    #[arg(long = "http.server.keepAlive", env = "HTTP_SERVER_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    keep_alive: Duration,
    /// Reconnection delay sent to clients in the stream's `retry:` line.
    #[arg(long = "http.server.retry", env = "HTTP_SERVER_RETRY", default_value = "3s", value_parser = parse_duration)]
    retry: Duration,
    /// Largest accepted publish body, in bytes.
    #[arg(
        long = "http.server.maxBodyBytes",
        env = "HTTP_SERVER_MAX_BODY_BYTES",
        default_value_t = 65536
    )]
    max_body_bytes: usize,
    /// Largest accepted bulk publish body (application/x-ndjson, one event a line), in
    /// bytes; each line is also held to --http.server.maxBodyBytes.
    #[arg(
        long = "http.server.maxBulkBytes",
        env = "HTTP_SERVER_MAX_BULK_BYTES",
        default_value_t = 1048576
    )]
    max_bulk_bytes: usize,
    /// Open connections above which new requests get 503.
    #[arg(
        long = "http.server.maxConnections",
        env = "HTTP_SERVER_MAX_CONNECTIONS",
        default_value_t = 10000
    )]
    max_connections: usize,
    /// Open connections from one client IP address above which new ones get 429
    /// (behind a proxy, raise it to --http.server.maxConnections).
    #[arg(
        long = "http.server.maxConnectionsPerAddress",
        env = "HTTP_SERVER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 1000
    )]
    max_connections_per_address: usize,
    /// Close a connection whose writes make no progress for this long, or whose sent
    /// data or keep-alive probes stay unacknowledged this long (TCP_USER_TIMEOUT, Linux).
    #[arg(long = "http.server.writeTimeout", env = "HTTP_SERVER_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// A client must send its whole request head within this time (slow-loris guard).
    #[arg(long = "http.server.headerTimeout", env = "HTTP_SERVER_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// A client must send its whole request body within this time after the head;
    /// later it gets 408 and the connection is closed.
    #[arg(long = "http.server.bodyTimeout", env = "HTTP_SERVER_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; larger gets 431.
    #[arg(
        long = "http.server.maxHeaderBytes",
        env = "HTTP_SERVER_MAX_HEADER_BYTES",
        default_value_t = 16384
    )]
    max_header_bytes: usize,
    /// Events kept per channel for Last-Event-ID resume.
    #[arg(long = "replay.events", env = "REPLAY_EVENTS", default_value_t = 1000)]
    replay_events: usize,
    /// How long events stay in the replay history.
    #[arg(long = "replay.age", env = "REPLAY_AGE", default_value = "5m", value_parser = parse_duration)]
    replay_age: Duration,
    /// Bytes of replay history on this node across all channels; past it the oldest
    /// events are evicted first, whatever their channel.
    #[arg(
        long = "replay.maxBytes",
        env = "REPLAY_MAX_BYTES",
        default_value_t = 268435456
    )]
    replay_max_bytes: usize,
    /// Channels this node keeps (with subscribers, or only their history); past it the
    /// quietest channel without subscribers is dropped, or a new channel gets 503.
    #[arg(long = "channels.max", env = "CHANNELS_MAX", default_value_t = 100000)]
    channels_max: usize,
    /// Events a subscriber may fall behind before it is disconnected (at most --replay.events).
    #[arg(
        long = "subscriber.buffer",
        env = "SUBSCRIBER_BUFFER",
        default_value_t = 512
    )]
    subscriber_buffer: usize,
    /// Most channels one stream may follow (GET /channel/news,sport,...).
    #[arg(
        long = "subscriber.maxChannels",
        env = "SUBSCRIBER_MAX_CHANNELS",
        default_value_t = 32
    )]
    subscriber_max_channels: usize,
    /// Shared secret for HS256 tokens; a key turns authorization on (see --auth.publish).
    #[arg(
        long = "auth.jwtSecret",
        env = "AUTH_JWT_SECRET",
        hide_env_values = true
    )]
    auth_jwt_secret: Option<String>,
    /// PEM file with the public key for RS256 or ES256 tokens, read at start; a key
    /// turns authorization on.
    #[arg(long = "auth.jwtPublicKeyFile", env = "AUTH_JWT_PUBLIC_KEY_FILE")]
    auth_jwt_public_key_file: Option<PathBuf>,
    /// Require a token to publish [default: true when a key is set, else false].
    #[arg(long = "auth.publish", env = "AUTH_PUBLISH", num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    auth_publish: Option<bool>,
    /// Require a token to subscribe (needs a key).
    #[arg(long = "auth.subscribe", env = "AUTH_SUBSCRIBE", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    auth_subscribe: bool,
    /// On SIGTERM or SIGINT, how long to wait for every live peer to pull the events
    /// this node accepted before leaving anyway (0s: do not wait).
    #[arg(long = "shutdown.drainTimeout", env = "SHUTDOWN_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    shutdown_drain_timeout: Duration,
    /// Log format.
    #[arg(long = "log.format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG, when set, takes precedence).
    #[arg(long = "log.level", env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

impl StartArgs {
    fn config(&self) -> Result<Config, ConfigError> {
        let http_port = self.http_port.unwrap_or_else(|| {
            std::env::var("HTTP_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080)
        });
        let jwt_public_key = match &self.auth_jwt_public_key_file {
            None => None,
            Some(path) => Some(std::fs::read_to_string(path).map_err(|error| ConfigError {
                option: "auth.jwtPublicKeyFile",
                message: format!("cannot read {}: {error}", path.display()),
            })?),
        };
        let has_key = self.auth_jwt_secret.is_some() || jwt_public_key.is_some();
        Ok(Config {
            http: HttpSettings {
                bind: self.http_address,
                port: http_port,
                retry: self.retry,
                keep_alive: self.keep_alive,
                max_body_bytes: self.max_body_bytes,
                max_bulk_bytes: self.max_bulk_bytes,
                body_timeout: self.body_timeout,
                header_read_timeout: self.header_timeout,
                max_header_bytes: self.max_header_bytes,
                max_connections: self.max_connections,
                max_connections_per_address: self.max_connections_per_address,
                write_stall_timeout: self.write_timeout,
                cors_enabled: self.cors_enabled,
                ui_enabled: self.ui_enabled,
                max_channels_per_stream: self.subscriber_max_channels,
            },
            auth: AuthSettings {
                jwt_secret: self.auth_jwt_secret.clone(),
                jwt_public_key,
                publish: self.auth_publish.unwrap_or(has_key),
                subscribe: self.auth_subscribe,
            },
            broker: BrokerSettings {
                replay_events: self.replay_events,
                replay_age: self.replay_age,
                subscriber_buffer: self.subscriber_buffer,
                relay_queue_events: self.relay_queue_events,
                relay_queue_bytes: self.relay_queue_bytes,
                replay_max_bytes: self.replay_max_bytes,
                max_channels: self.channels_max,
                ..BrokerSettings::default()
            },
            cluster: ClusterSettings {
                gossip_port: self.gossip_port,
                seeds: self
                    .gossip_hosts
                    .iter()
                    .filter(|h| !h.is_empty())
                    .cloned()
                    .collect(),
                ready_timeout: self.gossip_ready_timeout,
                advertise: self.gossip_advertise,
                node_id: self.node_id.clone(),
                secret_key: self.gossip_secret_key.clone(),
                client_timeout: self.http_client_timeout,
                drain_timeout: self.shutdown_drain_timeout,
                relay_batch_interval: self.relay_batch_interval,
            },
            log: LogSettings {
                format: match self.log_format {
                    LogFormat::Text => sse_cluster::log::LogFormat::Text,
                    LogFormat::Json => sse_cluster::log::LogFormat::Json,
                },
                level: self.log_level.clone(),
            },
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            use clap::error::ErrorKind;
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                error.exit();
            }
            // One line that names the option; the usage text is one `--help` away.
            let text = error.to_string();
            eprintln!(
                "{}",
                text.lines().next().unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Start(args) => start(*args),
        Command::Bench(args) => bench::run(*args),
    }
}

fn start(args: StartArgs) -> ExitCode {
    let config = match args.config().and_then(|c| c.validate().map(|()| c)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    sse_cluster::log::init(&config.log);
    warn_about_auth(&config.auth);
    let runtime = match node_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut config: Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let addr = SocketAddr::new(config.http.bind, config.http.port);
    let options = tcp::HttpSocketOptions {
        unacknowledged_timeout: config.http.write_stall_timeout,
        keep_alive: config.http.keep_alive,
    };
    let listener = tcp::bind_http(addr, options)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
    let http_port = axum::serve::Listener::local_addr(&listener)
        .map(|a| a.port())
        .unwrap_or(config.http.port);
    let origin = random_origin();
    let cluster = &mut config.cluster;
    if cluster.advertise.is_none() {
        cluster.advertise = Some(advertise_address(config.http.bind, &cluster.seeds).await);
    }
    if cluster.node_id.is_none() {
        // Hostname, address and port: unique even for nodes that share a hostname
        // and a port number (containers, network namespaces).
        let ip = cluster
            .advertise
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        cluster.node_id = Some(format!("{}@{ip}:{http_port}", hostname()));
    }
    tracing::info!(%addr, origin = format_args!("{origin:x}"), "listening");
    let node = Node::new(config, origin, Clock::system());
    node.run_clustered(listener, TokioNetwork, http_port, shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Authorization settings that work but are probably not what was meant.
fn warn_about_auth(auth: &AuthSettings) {
    if matches!(&auth.jwt_secret, Some(secret) if secret.len() < 32) {
        tracing::warn!(
            "--auth.jwtSecret is shorter than 32 bytes: HS256 tokens are easier to forge"
        );
    }
    if auth.has_key() && !auth.required() {
        tracing::warn!("a token key is set but neither --auth.publish nor --auth.subscribe is on: the API is open");
    }
}

/// The address peers should use for this node: the bind address if it is specific,
/// else the local address that routes to the first seed, else loopback.
async fn advertise_address(bind: IpAddr, seeds: &[String]) -> IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    for seed in seeds {
        let Ok(mut addrs) = tokio::net::lookup_host(seed.as_str()).await else {
            continue;
        };
        let Some(target) = addrs.next() else { continue };
        let probe = std::net::UdpSocket::bind((bind, 0)).and_then(|s| {
            s.connect(target)?;
            s.local_addr()
        });
        if let Ok(local) = probe {
            return local.ip();
        }
    }
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
}

/// A fresh origin per process: a restarted node never reuses sequence numbers.
fn random_origin() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned())
}

/// The node's runtime. With one CPU to run on (a `taskset`, a cpuset, a CPU quota
/// of one core) it is tokio's current-thread scheduler: a worker pool of one brings
/// nothing there but its bounded run queue, which one event fanned out to more than
/// 256 subscribers overflows into the shared queue, where those subscribers then
/// wait behind everyone woken after them (a long latency tail). The current-thread
/// queue is unbounded and first-in, first-out.
fn node_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus == 1 {
        build_runtime(tokio::runtime::Builder::new_current_thread())
    } else {
        build_runtime(tokio::runtime::Builder::new_multi_thread())
    }
}

fn build_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        eprintln!("error: cannot start the runtime: {error}");
        ExitCode::FAILURE
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
