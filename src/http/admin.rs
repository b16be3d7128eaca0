//! Health, readiness and metrics.

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};

use std::time::Duration;

use serde::Deserialize;

use crate::clock::parse_rfc3339;
use crate::dialect::Dialect;
use crate::error::ProxyError;
use crate::ledger::usage::GroupBy;
use crate::ledger::{ReadError, Reading};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/usage", get(usage))
        .route("/api/misses", get(misses))
        .route("/api/prefixes", get(prefixes))
        .route("/api/advice", get(advice))
        .route("/api/instances", get(instances))
        .merge(super::dashboard::routes())
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
    limit: Option<i64>,
}

/// The ledger and the range `[from, to)` an `/api/*` request asks about (RFC 3339 or Unix
/// milliseconds; by default the last 24 hours), or the response that refuses it.
fn ledger_range(
    app: &AppState,
    headers: &HeaderMap,
    query: &UsageQuery,
) -> Result<(crate::ledger::Ledger, i64, i64), Box<Response>> {
    if !authorized(app, headers) {
        return Err(Box::new(
            ProxyError::Unauthorized.into_response_in(Dialect::OpenAi),
        ));
    }
    let Some(ledger) = app.telemetry().ledger() else {
        return Err(Box::new(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no ledger: set [ledger] url",
        )));
    };
    let now = app.clock().now();
    let to = match query.to.as_deref().map(instant) {
        None => unix_ms(now),
        Some(Some(ms)) => ms,
        Some(None) => {
            return Err(Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "to: RFC 3339 or Unix ms",
            )));
        }
    };
    let from = match query.from.as_deref().map(instant) {
        None => to - DAY_MS,
        Some(Some(ms)) => ms,
        Some(None) => {
            return Err(Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "from: RFC 3339 or Unix ms",
            )));
        }
    };
    Ok((ledger.clone(), from, to))
}

/// How long an answer is kept, for the same question (reading and exact range). Totals are
/// cheap (the store sums whole hours from its hourly totals) and kept only a few seconds: every
/// open tab asks the same hour-aligned range every 5 s, and one reading serves them all, while
/// a script asking up to "now" asks a new question each time. The readings that follow every
/// write of the range to its reads scan every record of it (seconds of CPU for a month of a
/// busy team's traffic): one answer serves every tab for a few minutes, and says when it was
/// read (`as_of_ms`).
const LIVE: Duration = Duration::from_secs(4);
const FOLLOWED: Duration = Duration::from_secs(300);

/// A reading of the ledger, made on the ledger's reader (off the request path), as JSON.
async fn answer<T, F, Fut>(api: &Api, what: String, fresh_for: Duration, read: F) -> Response
where
    T: serde::Serialize,
    F: FnOnce(crate::ledger::Store) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
{
    let reading = Reading {
        what,
        from: api.from,
        to: api.to,
        fresh_for,
    };
    match api.ledger.reader().read(reading, read).await {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(ReadError::Busy) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the ledger is busy answering other readings: try again shortly",
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading the ledger failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the ledger failed",
            )
        }
    }
}

/// An authorized `/api/*` request: the ledger, the range `[from, to)` and the query.
struct Api {
    ledger: crate::ledger::Ledger,
    from: i64,
    to: i64,
    query: UsageQuery,
}

impl axum::extract::FromRequestParts<AppState> for Api {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &AppState,
    ) -> Result<Self, Response> {
        let query = Query::<UsageQuery>::try_from_uri(&parts.uri)
            .map_err(|e| api_error(StatusCode::BAD_REQUEST, &e.body_text()))?
            .0;
        let (ledger, from, to) = ledger_range(app, &parts.headers, &query).map_err(|r| *r)?;
        Ok(Api {
            ledger,
            from,
            to,
            query,
        })
    }
}

/// `/api/usage?from&to&group_by=team|model|upstream|day|hour|prefix|miss_reason`: the ledger's
/// totals per group over `[from, to)` (by default by day).
async fn usage(api: Api) -> Response {
    let group_by = match api.query.group_by.as_deref().map(GroupBy::parse) {
        None => GroupBy::Day,
        Some(Some(g)) => g,
        Some(None) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "group_by: one of team, model, upstream, day, hour, prefix, miss_reason",
            );
        }
    };
    let (from, to) = (api.from, api.to);
    let what = format!("usage:{}", group_by.as_str());
    answer(&api, what, LIVE, move |store| async move {
        store.usage(from, to, group_by).await
    })
    .await
}

/// `/api/misses?from&to`: miss reasons, the most frequent first, with what they cost, the
/// latest example (prefix key and segment) and the fix.
async fn misses(api: Api) -> Response {
    let (from, to) = (api.from, api.to);
    answer(&api, "misses".into(), LIVE, move |store| async move {
        store.misses(from, to).await
    })
    .await
}

/// `/api/prefixes?from&to&limit`: the costliest prefixes (20 by default, at most 1000).
async fn prefixes(State(app): State<AppState>, api: Api) -> Response {
    let limit = api.query.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return api_error(StatusCode::BAD_REQUEST, "limit: 1 to 1000");
    }
    let (from, to, now) = (api.from, api.to, unix_ms(app.clock().now()));
    answer(
        &api,
        format!("prefixes:{limit}"),
        FOLLOWED,
        move |store| async move { store.prefixes(from, to, limit, now).await },
    )
    .await
}

/// `/api/advice?from&to`: what would have saved more (see `ledger::insights`).
async fn advice(State(app): State<AppState>, api: Api) -> Response {
    let (from, to, now) = (api.from, api.to, unix_ms(app.clock().now()));
    answer(&api, "advice".into(), FOLLOWED, move |store| async move {
        let telemetry = app.telemetry();
        let rates = |model: &str| telemetry.rates_now(model);
        let minimums = telemetry.minimums_now();
        store.advice(from, to, now, &rates, &minimums).await
    })
    .await
}

/// `/api/instances?from&to`: the proxy instances that wrote to the ledger.
async fn instances(api: Api) -> Response {
    let (from, to) = (api.from, api.to);
    answer(&api, "instances".into(), LIVE, move |store| async move {
        store.instances(from, to).await
    })
    .await
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
