//! A node: the broker and the HTTP API over a listener it is given, until shutdown.
//! Only this module knows every part.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::sync::watch;

use std::net::SocketAddr;

use crate::broker::Broker;
use crate::clock::Clock;
use crate::cluster::{relay, Cluster, Drainer, Outbox};
use crate::config::Config;
use crate::event::Origin;
use crate::http::{self, AppShared, AppState, ClusterView, MemberInfo};
use crate::metrics::Metrics;
use crate::transport::{Guarded, Network, PeerIp, TrySend};

/// The cluster view of a node that runs alone.
#[derive(Debug)]
pub struct Standalone {
    pub id: String,
    pub http_addr: String,
}

impl ClusterView for Standalone {
    fn members(&self) -> Vec<MemberInfo> {
        vec![MemberInfo {
            id: self.id.clone(),
            http_addr: self.http_addr.clone(),
            alive: true,
        }]
    }

    fn ready(&self) -> bool {
        true
    }

    fn has_peers(&self) -> bool {
        false
    }
}

/// A configured node, ready to run over a listener.
pub struct Node {
    config: Config,
    clock: Clock,
    broker: Broker,
    /// The broker's accepted events, encoded for peers (read by the relay server).
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
}

impl Node {
    /// `origin` must be unique per process lifetime (node and generation); `clock`
    /// supplies wall time for cursors.
    pub fn new(config: Config, origin: Origin, clock: Clock) -> Self {
        let metrics = Arc::new(Metrics::default());
        let outbox = Arc::new(Outbox::new(
            config.broker.relay_queue_events,
            config.broker.relay_queue_bytes,
        ));
        let broker = Broker::with_outlet(
            origin,
            clock,
            config.broker.clone(),
            metrics.clone(),
            outbox.clone(),
        );
        Node {
            config,
            clock,
            broker,
            outbox,
            metrics,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves HTTP on `listener` until `shutdown` completes, as a node alone (no
    /// gossip, no relay; `/status` shows `view`); then stops accepting, ends every
    /// open stream so clients reconnect elsewhere, and returns.
    pub async fn run<L>(
        self,
        listener: L,
        view: Arc<dyn ClusterView>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()>
    where
        L: Listener,
        L::Io: TrySend,
        L::Addr: std::fmt::Debug + PeerIp,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (drain_tx, _) = watch::channel(false);
        let stop = Stop {
            stop_tx,
            stop_rx,
            drain_tx,
            drainer: None,
        };
        self.serve(listener, view, None, stop, shutdown).await
    }

    /// Like [`Node::run`], and joins the cluster over `network`: gossip on the
    /// configured port, relay from every live peer. On `shutdown` it drains first:
    /// not ready, publishes refused, until every live peer pulled what it accepted
    /// (at most `config.cluster.drain_timeout`), then it leaves gossip.
    /// `config.cluster.advertise` and `config.cluster.node_id` should be resolved by
    /// the caller (loopback and a name made from the origin otherwise); `http_port`
    /// is the port peers reach this node on.
    pub async fn run_clustered<L, N>(
        self,
        listener: L,
        network: N,
        http_port: u16,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()>
    where
        L: Listener,
        L::Io: TrySend,
        L::Addr: std::fmt::Debug + PeerIp,
        N: Network,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (drain_tx, drain_rx) = watch::channel(false);
        if self.config.cluster.secret_key.is_none() {
            if self.config.auth.required() {
                tracing::warn!("no --gossip.secretKey with authorization on: this node runs alone and its relay answers nobody");
            } else {
                tracing::warn!("no --gossip.secretKey: gossip is open to anyone who can reach its port, and the relay to the addresses gossip knows as members");
            }
        }
        let cluster = Cluster::start(
            network,
            self.broker.clone(),
            self.metrics.clone(),
            self.clock,
            &self.config.cluster,
            SocketAddr::new(self.config.http.bind, http_port),
            stop_rx.clone(),
        )
        .await?;
        let open_to = if self.config.auth.required() {
            relay::OpenTo::Nobody
        } else {
            relay::OpenTo::Members(cluster.member_ips())
        };
        let relay = relay::router(relay::RelayServer {
            broker: self.broker.clone(),
            outbox: self.outbox.clone(),
            secret: cluster.secret(),
            open_to,
            ping: Duration::from_secs(1),
            batch_interval: self.config.cluster.relay_batch_interval,
            shutdown: stop_rx.clone(),
            refusals: Default::default(),
            draining: drain_rx,
            pulled: cluster.pulled(),
        });
        let view = cluster.view();
        let stop = Stop {
            stop_tx,
            stop_rx,
            drain_tx,
            drainer: Some(cluster.drainer()),
        };
        let result = self
            .serve(listener, view, Some(relay), stop, shutdown)
            .await;
        cluster.stop().await;
        Ok(result?)
    }

    async fn serve<L>(
        self,
        listener: L,
        cluster: Arc<dyn ClusterView>,
        extra: Option<axum::Router>,
        stop: Stop,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()>
    where
        L: Listener,
        L::Io: TrySend,
        L::Addr: std::fmt::Debug + PeerIp,
    {
        let Stop {
            stop_tx,
            stop_rx,
            drain_tx,
            drainer,
        } = stop;
        let settings = Arc::new(self.config.http.clone());
        let state = AppState::new(AppShared {
            broker: self.broker.clone(),
            metrics: self.metrics.clone(),
            cluster,
            settings: settings.clone(),
            auth: Arc::new(http::Auth::new(&self.config.auth, self.clock)),
            bulk_turns: Arc::new(tokio::sync::Semaphore::new(http::BULK_PUBLISHES_AT_ONCE)),
            shutdown: stop_rx.clone(),
            draining: drain_tx.subscribe(),
        });
        let serve_stop = stop_rx.clone();
        let reaper = tokio::spawn(expire_history(
            self.broker.clone(),
            (self.config.broker.replay_age / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(5)),
            stop_rx,
        ));
        let mut app = http::app(state.clone());
        if let Some(extra) = extra {
            app = extra.merge(app);
        }
        let listener = Guarded::new(listener, self.metrics.clone(), settings.write_stall_timeout);
        let keep_alive = tokio::spawn(keep_alive(self.broker.clone(), settings.keep_alive));
        let broker = self.broker.clone();
        let stop_on_signal = tokio::spawn(async move {
            shutdown.await;
            // Not ready and no new publishes from here; streams and the relay go on.
            let _ = drain_tx.send(true);
            if let Some(drainer) = drainer {
                tracing::info!("draining: waiting for peers to pull every accepted event");
                drainer.run().await;
            }
            tracing::info!("shutting down: closing open streams");
            let _ = stop_tx.send(true);
            broker.close_streams();
        });
        http::serve(
            listener,
            app,
            state,
            settings,
            self.metrics.clone(),
            serve_stop,
            Duration::from_secs(10),
        )
        .await;
        stop_on_signal.abort();
        reaper.abort();
        keep_alive.abort();
        Ok(())
    }
}

/// How a node stops: the flags its parts watch, and the drain (clustered nodes).
struct Stop {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    drain_tx: watch::Sender<bool>,
    drainer: Option<Drainer>,
}

/// Keeps every quiet stream alive: each subscriber sent nothing for `interval` gets
/// a comment. One timer for the node, firing four times an interval, so a comment
/// goes out between one and one and a quarter intervals of silence.
async fn keep_alive(broker: Broker, interval: Duration) {
    let mut tick = tokio::time::interval((interval / 4).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        broker.keep_alive(interval);
    }
}

async fn expire_history(broker: Broker, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let removed = broker.expire();
                if removed > 0 {
                    tracing::debug!(removed, "expired idle channels");
                }
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
