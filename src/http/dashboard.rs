//! `/dashboard`: the team's cost dashboard, one page whose assets are compiled into the binary
//! (no CDN: it works offline and behind a firewall). The page reads `/api/*` and redraws itself
//! every few seconds; its charts are SVG drawn by its own script, each carrying the points it
//! draws as a `data-series` JSON attribute.
//!
//! The page itself holds no data, so it is served to anyone who can reach the admin listener;
//! with `[admin] token` set, the data it reads needs the token, which the page asks for in a
//! small form and keeps in `sessionStorage` (gone when the tab closes).

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header;

use crate::state::AppState;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/dashboard",
            get(|| asset("text/html; charset=utf-8", PAGE)),
        )
        .route(
            "/dashboard/",
            get(|| asset("text/html; charset=utf-8", PAGE)),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard/app.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The page is small and changes with the binary: always fresh.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page shows strings clients chose (team names): nothing but its own script
            // may run, and it talks only to this origin.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
            ),
        ],
        body,
    )
        .into_response()
}
