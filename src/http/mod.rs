//! Ingress: the axum routers.
//!
//! Layers, outermost first:
//! 1. `request_id` — gives every request an id and every response `x-cachet-request-id`;
//! 2. `CatchPanicLayer` — a bug answers 500 in OpenAI's error shape instead of dropping the
//!    connection (the process never goes down with it);
//! 3. routes — the admin endpoints (here unless `[admin] listen` is set), and a fallback that
//!    is the proxy itself (`proxy::handle`): every other path is looked up by mount.
//!
//! There is deliberately no total-request timeout layer: streams may run for minutes. The
//! upstream client enforces connect, first-byte and idle timeouts instead.

mod admin;
mod dashboard;
pub use admin::metrics_text;
pub(crate) mod cached_content;
mod proxy;

use std::any::Any;

use axum::Router;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;
use tower_http::catch_panic::CatchPanicLayer;

use crate::dialect::Dialect;
use crate::error::{DialectError, ProxyError};
use crate::state::AppState;

pub const REQUEST_ID_HEADER: &str = "x-cachet-request-id";
pub const REWRITES_HEADER: &str = "x-cachet-rewrites";
/// The key of the request's reusable prefix (hex), on modelled routes that have one.
pub const PREFIX_HEADER: &str = "x-cachet-prefix";
/// `x-cachet-rewrite: off` asks for the body as sent (bar the usage request).
pub const REWRITE_HEADER: &str = "x-cachet-rewrite";
pub const TEAM_HEADER: &str = "x-cachet-team";

/// The request's id (a UUIDv7: sortable by time), also sent back in `x-cachet-request-id`.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The proxy router: SDK traffic, plus the admin endpoints unless they have their own listener.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    if state.config().admin.listen.is_none() {
        router = router.merge(admin::routes());
    }
    router
        .fallback(proxy::handle)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The admin router for `[admin] listen`.
pub fn admin_app(state: AppState) -> Router {
    admin::routes()
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(req).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    DialectError {
        dialect: Dialect::OpenAi,
        error: ProxyError::Internal("unexpected failure".into()),
    }
    .into_response()
}
