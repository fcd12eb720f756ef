//! The public HTTP API (see the README for the routes). `app` builds the router
//! from shared state, so tests can drive it with or without a socket.

mod answer;
mod auth;
mod bulk;
mod error;
mod headers;
mod publish;
mod publisher;
mod server;
mod status;
mod subscribe;
mod subscriber;
mod ui;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::watch;

use crate::broker::Broker;
use crate::metrics::Metrics;
use crate::refusal::ErrorKind;
pub use auth::{Auth, AuthSettings, JwtPublicKey};
pub use bulk::parse_ndjson;
pub use error::ApiError;
pub use server::serve;

pub use crate::membership::{ClusterView, MemberInfo};

/// The public API's listener, connections and routes: the HTTP part of the node's
/// [`crate::Config`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address the HTTP listener binds to (`--http.server.address`).
    pub bind: IpAddr,
    /// HTTP port: subscribe, publish, status, and the relay endpoint between nodes
    /// (`--http.server.port`).
    pub port: u16,
    /// Reconnection delay advertised to clients in the stream's `retry:` line.
    pub retry: Duration,
    /// Interval between keep-alive comments on idle streams; over real TCP also the
    /// idle time before keep-alive probes.
    pub keep_alive: Duration,
    /// Largest accepted publish body, in bytes (and largest line of a bulk publish).
    pub max_body_bytes: usize,
    /// Largest bulk publish body (`application/x-ndjson`, one event a line), in bytes.
    pub max_bulk_bytes: usize,
    /// Time a client has to send a whole request body, from when the route starts
    /// reading it (right after the head); later it gets 408 and the connection is
    /// closed.
    pub body_timeout: Duration,
    /// A client must send its whole request head within this time (slow-loris).
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
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
    /// Answer CORS preflights and add `Access-Control-Allow-Origin` everywhere.
    pub cors_enabled: bool,
    /// Serve the page at `GET /`.
    pub ui_enabled: bool,
    /// Most channels one stream may follow (`GET /channel/a,b,...`).
    pub max_channels_per_stream: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
            retry: Duration::from_secs(3),
            keep_alive: Duration::from_secs(15),
            max_body_bytes: 64 * 1024,
            max_bulk_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_connections: 10_000,
            max_connections_per_address: 1000,
            write_stall_timeout: Duration::from_secs(30),
            cors_enabled: false,
            ui_enabled: true,
            max_channels_per_stream: 32,
        }
    }
}

/// Bulk publishes a node reads and applies at once; more wait for a turn (within
/// `--http.server.bodyTimeout`, then 503). Bounds the memory their bodies hold to
/// this many times `--http.server.maxBulkBytes` (and their parsed events).
pub const BULK_PUBLISHES_AT_ONCE: usize = 64;

/// Shared state of every route. Extractors and middleware clone it for every
/// request, so it is one reference count to bump, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct AppShared {
    pub broker: Broker,
    pub metrics: Arc<Metrics>,
    pub cluster: Arc<dyn ClusterView>,
    pub settings: Arc<HttpSettings>,
    /// Who may publish and subscribe (everyone, unless configured).
    pub auth: Arc<Auth>,
    /// Flips to `true` when the node shuts down; open streams end on it.
    pub shutdown: watch::Receiver<bool>,
    /// Turns of the bulk publishes in progress (see [`BULK_PUBLISHES_AT_ONCE`]).
    pub bulk_turns: Arc<tokio::sync::Semaphore>,
    /// Flips to `true` when the node starts draining before it stops (SIGTERM):
    /// not ready, publishes refused with 503; streams stay open until `shutdown`.
    pub draining: watch::Receiver<bool>,
}

/// The router of the public API.
pub fn app(state: AppState) -> Router {
    let cors = state.settings.cors_enabled;
    let channel_routes = Router::new()
        .route("/channel", post(publish::publish_all))
        .route("/channel/", get(subscribe::subscribe_none))
        .route(
            "/channel/{channel}",
            get(subscribe::subscribe).post(publish::publish),
        )
        .route(
            "/channel/{channel}/client/{client}",
            get(subscribe::subscribe_client).post(publish::publish_client),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            connection_limit,
        ));
    let mut router = Router::new().merge(channel_routes);
    if state.settings.ui_enabled {
        router = router.route("/", get(ui::page));
    }
    let router = router
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // For extractors that buffer a body (`Bytes`, `Json`); publish reads its
        // body itself, with this limit and `body_timeout` (`publish::PublishBody`).
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_errors))
        .with_state(state);
    if cors {
        router.layer(middleware::from_fn(cors_layer))
    } else {
        router
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "no such route; see GET /status and /channel/{channel}",
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        ErrorKind::MethodNotAllowed,
        format!("method {method} is not allowed on this route"),
    )
}

async fn connection_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    match over_connection_limit(&state) {
        Some(refusal) => refusal.into_response(),
        None => next.run(request).await,
    }
}

/// The refusal of a channel route while the node is over `--http.server.maxConnections`.
fn over_connection_limit(state: &AppState) -> Option<ApiError> {
    let open = state
        .metrics
        .open_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    (open as usize > state.settings.max_connections).then(|| {
        ApiError::new(
            ErrorKind::Overloaded,
            format!(
                "this node is at its limit of {} connections; retry later or elsewhere",
                state.settings.max_connections
            ),
        )
    })
}

async fn count_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    count_error(&state, &response);
    response
}

/// Counts `response` in the error metrics if it is an error answer.
fn count_error(state: &AppState, response: &Response) {
    if let Some(kind) = response.extensions().get::<ErrorKind>() {
        state.metrics.request_error(*kind);
    }
}

/// CORS for browsers on other origins: every response allows any origin, and a
/// preflight `OPTIONS` on any path is answered before routing.
async fn cors_layer(request: Request, next: Next) -> Response {
    let preflight = request.method() == Method::OPTIONS;
    let mut response = if preflight {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = axum::http::StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Authorization, Last-Event-ID"),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        response
    } else {
        next.run(request).await
    };
    allow_any_origin(response.headers_mut());
    response
}

fn allow_any_origin(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}
