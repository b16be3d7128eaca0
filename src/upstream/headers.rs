//! Which headers cross the proxy.

use http::{HeaderMap, HeaderName, HeaderValue, header};

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
}
