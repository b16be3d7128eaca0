//! The upstream side: one pooled HTTP client, header hygiene, and the observed response body.
//!
//! Network I/O towards providers happens here only. The client never follows redirects (the
//! caller sees the provider's 3xx as sent), never decompresses (bytes pass through as they
//! came), keeps `TCP_NODELAY` on (small SSE frames must not wait for Nagle), and has connect,
//! first-byte and idle timeouts but no total timeout, so streams run as long as they flow. The
//! first-byte timeout bounds the wait for the response head (here); the idle timeout bounds
//! each silence inside the body (`body.rs`), so a slow non-streamed answer is not cut short
//! by the idle limit while the upstream is still thinking.

pub mod body;
pub mod headers;
pub mod pool;
pub mod sse;

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use reqwest::Url;

use crate::config::{Timeouts, Upstream};
use crate::error::ProxyError;

/// The upstream HTTP client. Each serving thread has its own pool of upstream connections
/// (see `workers`): a connection is then driven by the thread that uses it, with no
/// cross-thread wake-ups on the request path.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    timeouts: Timeouts,
    /// Identifies this client's pools; they are dropped once the client is gone.
    alive: Arc<()>,
}

thread_local! {
    static POOLS: RefCell<Vec<(Weak<()>, reqwest::Client)>> = const { RefCell::new(Vec::new()) };
}

/// What to send: the target is `{base_url}{path_and_query}`.
pub struct Outgoing {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: OutgoingBody,
}

impl Outgoing {
    /// A copy to resend; a streamed body cannot be copied and is left empty (callers resend
    /// only bodies in hand).
    pub fn clone_for_resend(&self) -> Self {
        Outgoing {
            method: self.method.clone(),
            path_and_query: self.path_and_query.clone(),
            headers: self.headers.clone(),
            body: match &self.body {
                OutgoingBody::Bytes(b) => OutgoingBody::Bytes(b.clone()),
                OutgoingBody::Empty | OutgoingBody::Stream(_) => OutgoingBody::Empty,
            },
        }
    }
}

pub enum OutgoingBody {
    /// No body at all (a GET must not turn into a chunked request with an empty body).
    Empty,
    Bytes(Bytes),
    Stream(reqwest::Body),
}

impl UpstreamClient {
    pub fn new(timeouts: &Timeouts) -> Result<Self, reqwest::Error> {
        // Build one now so that a client that cannot be built fails at startup.
        build(timeouts)?;
        Ok(Self {
            timeouts: timeouts.clone(),
            alive: Arc::new(()),
        })
    }

    /// This thread's pool.
    fn http(&self) -> Result<reqwest::Client, ProxyError> {
        POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let mine = Arc::downgrade(&self.alive);
            if let Some((_, client)) = pools.iter().find(|(id, _)| id.ptr_eq(&mine)) {
                return Ok(client.clone());
            }
            pools.retain(|(id, _)| id.strong_count() > 0);
            let client = build(&self.timeouts).map_err(|e| ProxyError::Internal(e.to_string()))?;
            pools.push((mine, client.clone()));
            Ok(client)
        })
    }

    /// Sends the request and waits for the response head (bounded by the first-byte timeout).
    pub async fn send(
        &self,
        upstream: &Upstream,
        out: Outgoing,
    ) -> Result<reqwest::Response, ProxyError> {
        self.send_to(upstream, &upstream.base_url, out).await
    }

    /// `send`, to one base URL of the upstream (a pool replica).
    pub async fn send_to(
        &self,
        upstream: &Upstream,
        base_url: &Url,
        out: Outgoing,
    ) -> Result<reqwest::Response, ProxyError> {
        let url =
            target_url(base_url, &out.path_and_query).map_err(|detail| ProxyError::Upstream {
                upstream: upstream.name.clone(),
                detail,
            })?;
        let request = self.http()?.request(out.method, url).headers(out.headers);
        let request = match out.body {
            OutgoingBody::Empty => request,
            OutgoingBody::Bytes(b) => request.body(b),
            OutgoingBody::Stream(s) => request.body(s),
        };
        let first_byte = self.timeouts.first_byte;
        match tokio::time::timeout(first_byte, request.send()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => Err(classify_error(&upstream.name, &err)),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: upstream.name.clone(),
                seconds: first_byte.as_secs_f64(),
            }),
        }
    }
}

fn build(timeouts: &Timeouts) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

fn classify_error(upstream: &str, err: &reqwest::Error) -> ProxyError {
    // The source chain holds the useful part ("Connection refused"); the URL would be noise.
    let mut detail = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        detail = e.to_string();
        source = e.source();
    }
    if err.is_connect() {
        ProxyError::UpstreamConnect {
            upstream: upstream.to_owned(),
            detail,
        }
    } else {
        // The client has no timeouts of its own besides connect (a connect error): the
        // first-byte and idle limits are enforced by `send` and `ObservedBody`.
        ProxyError::Upstream {
            upstream: upstream.to_owned(),
            detail,
        }
    }
}

/// `{base_url}{path_and_query}` without re-encoding: `%2F` and the query stay as sent.
pub fn target_url(base: &Url, path_and_query: &str) -> Result<Url, String> {
    // Edit a copy of the parsed base rather than parse a joined string: the scheme and host
    // (IDNA processing included) were checked once, at startup.
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let base_path = base.path().trim_end_matches('/');
    let mut url = base.clone();
    match path {
        "" => url.set_path(&format!("{base_path}/")),
        _ => url.set_path(&format!("{base_path}{path}")),
    }
    url.set_query(query);
    if url.cannot_be_a_base() {
        return Err(format!("bad upstream URL {url}"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_keep_escapes_and_queries() {
        let base = Url::parse("http://127.0.0.1:9/anthropic").unwrap();
        let url = target_url(&base, "/v1/files/a%2Fb?x=1&key=k%20v").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/anthropic/v1/files/a%2Fb?x=1&key=k%20v"
        );
        let root = Url::parse("https://api.openai.com").unwrap();
        assert_eq!(
            target_url(&root, "/v1/models").unwrap().as_str(),
            "https://api.openai.com/v1/models"
        );
        assert_eq!(
            target_url(&root, "").unwrap().as_str(),
            "https://api.openai.com/"
        );
    }
}
