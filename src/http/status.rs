//! Status, health and metrics routes.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::AppState;

/// The Go project's `/status` shape: gossip members and channels with client ids.
/// `member_count` counts the live members (what dashboards read as the cluster's
/// size); members gossip still remembers as dead stay listed with `alive: false`.
pub(super) async fn status(State(state): State<AppState>) -> impl IntoResponse {
    let members = state.cluster.members();
    let live = members.iter().filter(|m| m.alive).count();
    Json(json!({
        "gossip": { "member_count": live, "members": members },
        "channels": state.broker.channels(),
    }))
}

pub(super) async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub(super) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.cluster.ready() && !*state.shutdown.borrow() && !*state.draining.borrow() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready" })),
        )
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let stats = state.broker.stats();
    let body = state.metrics.render(&[
        (
            "sse_channels",
            "Channels with at least one local subscriber.",
            stats.channels as u64,
        ),
        (
            "sse_dormant_channels",
            "Channels kept only for their replay history.",
            stats.dormant_channels as u64,
        ),
        (
            "sse_history_events",
            "Events held in replay history across channels.",
            stats.history_events as u64,
        ),
        (
            "sse_history_bytes",
            "Bytes of replay history across channels, as --replay.maxBytes counts them.",
            stats.history_bytes as u64,
        ),
        (
            "sse_channel_state_bytes",
            "Bytes counted for channel states, also inside --replay.maxBytes.",
            stats.channel_state_bytes as u64,
        ),
    ]);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
