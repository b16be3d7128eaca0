//! Errors cachet raises itself, rendered in the caller's dialect.
//!
//! Errors the upstream returns (400, 401, 429, 529, 5xx) are not `ProxyError`s: they reach the
//! client byte for byte. Every `ProxyError` response carries `x-cachet-error: <label>` so that
//! clients and tests can tell cachet's errors from the vendor's.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::dialect::Dialect;

pub const ERROR_HEADER: &str = "x-cachet-error";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("no upstream is mounted at {0}")]
    UnknownMount(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error(
        "missing or unknown cachet key: present the key your team was given where the SDK puts its API key"
    )]
    UnknownKey,
    #[error("upstream {upstream} is unreachable: {detail}")]
    UpstreamConnect { upstream: String, detail: String },
    #[error("upstream {upstream} sent no response within {seconds}s")]
    UpstreamTimeout { upstream: String, seconds: f64 },
    #[error("upstream {upstream} failed: {detail}")]
    Upstream { upstream: String, detail: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadJson(_) | Self::BodyRead(_) => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownMount(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized | Self::UnknownKey => StatusCode::UNAUTHORIZED,
            Self::UpstreamConnect { .. } | Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable label for `x-cachet-error`, logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "bad_json",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::BodyRead(_) => "body_read",
            Self::UnknownMount(_) => "unknown_mount",
            Self::Unauthorized => "unauthorized",
            Self::UnknownKey => "unknown_key",
            Self::UpstreamConnect { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::Upstream { .. } => "upstream_failed",
            Self::Internal(_) => "internal",
        }
    }

    pub fn into_response_in(self, dialect: Dialect) -> Response {
        DialectError {
            dialect,
            error: self,
        }
        .into_response()
    }
}

/// A `ProxyError` with the dialect to render it in.
pub struct DialectError {
    pub dialect: Dialect,
    pub error: ProxyError,
}

impl IntoResponse for DialectError {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let label = self.error.label();
        let body = self
            .dialect
            .error_body(status, label, &self.error.to_string());
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(ERROR_HEADER, HeaderValue::from_static(label));
        if matches!(
            self.error,
            ProxyError::BodyTooLarge { .. } | ProxyError::BodyRead(_)
        ) {
            // The rest of the request body was never read: the connection cannot carry another
            // request, and a client that reused it would fail on its next call.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
