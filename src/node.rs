//! A node: the broker and the HTTP API over a listener it is given, until shutdown.
//! Only this module knows every part.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::sync::watch;

use crate::broker::{Broker, BrokerSettings};
use crate::clock::Clock;
use crate::config::Config;
use crate::event::Origin;
use crate::http::{self, AppState, ClusterView, HttpSettings, MemberInfo};
use crate::metrics::Metrics;
use crate::transport::Guarded;

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
    broker: Broker,
    metrics: Arc<Metrics>,
    cluster: Arc<dyn ClusterView>,
}

impl Node {
    /// `origin` must be unique per process lifetime (node and generation); `clock`
    /// supplies wall time for cursors.
    pub fn new(
        config: Config,
        origin: Origin,
        clock: Clock,
        cluster: Arc<dyn ClusterView>,
    ) -> Self {
        let metrics = Arc::new(Metrics::default());
        let broker = Broker::new(
            origin,
            clock,
            BrokerSettings {
                replay_events: config.replay_events,
                replay_age: config.replay_age,
                subscriber_buffer: config.subscriber_buffer,
            },
            metrics.clone(),
        );
        Node {
            config,
            broker,
            metrics,
            cluster,
        }
    }

    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Serves HTTP on `listener` until `shutdown` completes; then stops accepting,
    /// ends every open stream so clients reconnect elsewhere, and returns.
    pub async fn run<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()>
    where
        L: Listener,
        L::Addr: std::fmt::Debug,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = AppState {
            broker: self.broker.clone(),
            metrics: self.metrics.clone(),
            cluster: self.cluster.clone(),
            settings: Arc::new(HttpSettings {
                keep_alive: self.config.keep_alive,
                retry: self.config.retry,
                max_body_bytes: self.config.max_body_bytes,
                max_connections: self.config.max_connections,
                cors_enabled: self.config.cors_enabled,
            }),
            shutdown: stop_rx.clone(),
        };
        let reaper = tokio::spawn(expire_history(
            self.broker.clone(),
            (self.config.replay_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)),
            stop_rx,
        ));
        let listener = Guarded::new(
            listener,
            self.metrics.clone(),
            self.config.write_stall_timeout,
        );
        let result = axum::serve(listener, http::app(state))
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("shutting down: closing open streams");
                let _ = stop_tx.send(true);
            })
            .await;
        reaper.abort();
        result
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
