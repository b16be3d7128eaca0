//! Which headers cross the proxy.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::ProviderKind;

/// Connection-scoped headers (RFC 9110 §7.6.1) that a proxy must not forward.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers cachet itself understands; never forwarded.
pub const CACHET_PREFIX: &str = "x-cachet-";

/// Request headers for the upstream: hop-by-hop (and those named in `Connection`), `host`
/// (the client reqwest sets it from the target) and `x-cachet-*` removed. `keep_length`
/// keeps `content-length` for bodies streamed through unread.
pub fn request_headers(incoming: HeaderMap, keep_length: bool) -> HeaderMap {
    let mut out = strip_hop_by_hop(incoming);
    out.remove(header::HOST);
    if !keep_length {
        out.remove(header::CONTENT_LENGTH);
    }
    let cachet: Vec<HeaderName> = out
        .keys()
        .filter(|k| k.as_str().starts_with(CACHET_PREFIX))
        .cloned()
        .collect();
    for name in cachet {
        out.remove(name);
    }
    out
}

/// Response headers for the client: hop-by-hop removed.
pub fn response_headers(upstream: HeaderMap) -> HeaderMap {
    strip_hop_by_hop(upstream)
}

fn strip_hop_by_hop(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers
}

/// Asks for an uncompressed response, so that the usage tap can read it.
pub fn ask_identity_encoding(headers: &mut HeaderMap) {
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

/// Headers in which clients present an API key, in any of the dialects.
const CREDENTIAL_HEADERS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("x-api-key"),
    HeaderName::from_static("x-goog-api-key"),
];

/// Replaces whatever credential the client sent with the upstream's own `key`, in the header
/// the provider reads it from (`api_key_env`): the client's key is never forwarded.
pub fn use_upstream_key(headers: &mut HeaderMap, provider: ProviderKind, key: &str) {
    for name in CREDENTIAL_HEADERS {
        headers.remove(name);
    }
    let (name, value) = match provider {
        ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), key.to_owned()),
        ProviderKind::Gemini => (HeaderName::from_static("x-goog-api-key"), key.to_owned()),
        ProviderKind::Openai | ProviderKind::Deepseek | ProviderKind::OpenaiCompatible => {
            (header::AUTHORIZATION, format!("Bearer {key}"))
        }
    };
    if let Ok(mut value) = HeaderValue::from_str(&value) {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// `query` without its `key=` parameter (a Gemini client's key), the rest as sent.
pub fn without_key_param(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| !pair.starts_with("key="))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_cachet_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-trace"),
            ("x-trace", "1"),
            ("keep-alive", "timeout=5"),
            ("host", "localhost:8080"),
            ("content-length", "12"),
            ("x-cachet-team", "search"),
            ("x-cachet-rewrite", "off"),
            ("authorization", "Bearer sk-test"),
            ("x-api-key", "k"),
            ("anthropic-version", "2023-06-01"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = request_headers(h.clone(), false);
        let mut names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["anthropic-version", "authorization", "x-api-key"]);
        assert!(request_headers(h, true).contains_key("content-length"));
    }

    #[test]
    fn the_clients_key_param_goes_and_the_rest_stays() {
        assert_eq!(super::without_key_param("alt=sse&key=ck-1"), "alt=sse");
        assert_eq!(super::without_key_param("key=ck-1"), "");
        assert_eq!(super::without_key_param("a=1&keys=2"), "a=1&keys=2");
    }
}
