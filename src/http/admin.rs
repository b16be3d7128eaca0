//! Health, readiness and metrics.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};

use serde::Deserialize;

use crate::clock::parse_rfc3339;
use crate::dialect::Dialect;
use crate::error::ProxyError;
use crate::ledger::usage::GroupBy;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/usage", get(usage))
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
    let text = metrics_text(&app);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// What `/metrics` serves, in Prometheus text format.
pub fn metrics_text(app: &AppState) -> String {
    app.metrics().run_upkeep();
    let mut text = app.metrics().render();
    text.push_str(&app.telemetry().render_costs());
    text
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// `/api/usage?from&to&group_by=team|model|upstream|day|hour|prefix|miss_reason`: the ledger's
/// totals per group over `[from, to)` (RFC 3339 or Unix milliseconds; by default the last 24
/// hours, by day).
async fn usage(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<UsageQuery>,
) -> Response {
    if !authorized(&app, &headers) {
        return ProxyError::Unauthorized.into_response_in(Dialect::OpenAi);
    }
    let Some(ledger) = app.telemetry().ledger() else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ledger: set [ledger] url",
        );
    };
    let now = app.clock().now();
    let to = match query.to.as_deref().map(instant) {
        None => unix_ms(now),
        Some(Some(ms)) => ms,
        Some(None) => return api_error(StatusCode::BAD_REQUEST, "to: RFC 3339 or Unix ms"),
    };
    let from = match query.from.as_deref().map(instant) {
        None => to - DAY_MS,
        Some(Some(ms)) => ms,
        Some(None) => return api_error(StatusCode::BAD_REQUEST, "from: RFC 3339 or Unix ms"),
    };
    let group_by = match query.group_by.as_deref().map(GroupBy::parse) {
        None => GroupBy::Day,
        Some(Some(g)) => g,
        Some(None) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "group_by: one of team, model, upstream, day, hour, prefix, miss_reason",
            );
        }
    };
    match ledger.store().usage(from, to, group_by).await {
        Ok(usage) => Json(usage).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reading the ledger failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the ledger failed",
            )
        }
    }
}

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A time as Unix milliseconds: RFC 3339, or the number itself.
fn instant(text: &str) -> Option<i64> {
    text.parse::<i64>()
        .ok()
        .or_else(|| parse_rfc3339(text).map(unix_ms))
}

fn unix_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn api_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "code": status.as_u16()}});
    (status, Json(body)).into_response()
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
