//! Health, readiness and metrics.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};

use crate::dialect::Dialect;
use crate::error::ProxyError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// 503 while draining, so that load balancers stop sending new work first.
async fn readyz(State(app): State<AppState>) -> Response {
    if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if !authorized(&app, &headers) {
        return ProxyError::Unauthorized.into_response_in(Dialect::OpenAi);
    }
    app.metrics().run_upkeep();
    let mut text = app.metrics().render();
    text.push_str(&app.telemetry().render_costs());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `[admin] token`, when set, is required as `Authorization: Bearer <token>`.
fn authorized(app: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = app.config().admin.token.as_deref() else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Constant-time comparison: the token guards cost data.
    presented.is_some_and(|p| {
        p.len() == token.len()
            && p.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}
