//! Gemini explicit caching on the request path: `plan::gemini` decides, this carries it out.
//!
//! The create and the TTL patch are upstream calls cachet makes on its own, with the request's
//! own credential (so a cache belongs to the key that will read it), each recorded with its
//! own record. Concurrent requests that would create the same cache share one create
//! (`flight`). A request rewritten to read a cache keeps the body it would have sent without
//! one: if the cache has vanished upstream (404, 403 or 400), the proxy forgets it and sends
//! that body instead, and the client never sees the difference.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::config::Upstream;
use crate::dialect::gemini::cache;
use crate::envelope::Envelope;
use crate::flight::{self, Seat};
use crate::plan::gemini::{self as planner, Cut, Decision, Facts, Live, Prices};
use crate::prefix::{Boundary, PrefixKey};
use crate::prompt::Prompt;
use crate::state::AppState;
use crate::telemetry::{Call, Exchange};
use crate::tenant::Tenant;
use crate::upstream::{Outgoing, OutgoingBody};
use crate::usage::Usage;

/// How long a prefix whose create failed is not tried again.
const REFUSED_FOR: Duration = Duration::from_secs(600);

/// Who a request's own calls are made for: its upstream, tenant, credential and model.
pub(super) struct Caller<'a> {
    pub upstream: &'a Upstream,
    pub tenant: Tenant,
    /// The headers forwarded upstream (the credential among them).
    pub headers: &'a HeaderMap,
    /// The request's raw query, for a `key=` credential.
    pub query: Option<&'a str>,
    pub model: &'a str,
    /// The request's tool config (`cache_salt`), which goes into a cache with the prefix.
    pub salt: Option<[u8; 32]>,
}

impl Caller<'_> {
    /// The id of the cache holding `prefix` for this request.
    fn cache_id(&self, prefix: &PrefixKey) -> PrefixKey {
        cache_id(prefix, self.salt.as_ref())
    }
}

/// A cache holds the tool config along with the prefix, and the prefix keys do not cover it: a
/// cache made under one tool config is never read by a request sending another (reading it
/// would replace the request's own). `None` when the request sends none.
pub(super) fn cache_salt(request: &Value) -> Option<[u8; 32]> {
    let config = request
        .get("toolConfig")
        .or_else(|| request.get("tool_config"))?;
    let bytes = serde_json::to_vec(config).ok()?;
    Some(*blake3::hash(&bytes).as_bytes())
}

fn cache_id(prefix: &PrefixKey, salt: Option<&[u8; 32]>) -> PrefixKey {
    match salt {
        None => *prefix,
        Some(salt) => {
            let mut hasher = blake3::Hasher::new_keyed(salt);
            hasher.update(&prefix.0);
            PrefixKey(*hasher.finalize().as_bytes())
        }
    }
}

/// A request rewritten to read a cache, and what to send if the cache has vanished.
pub(super) struct Referenced {
    pub tenant: Tenant,
    /// The cache's id in the table (`cache_id`).
    pub key: PrefixKey,
    pub name: String,
    pub fallback: Bytes,
}

/// What `plan::gemini` makes of this request, given the registry's history of its prefixes
/// and the caches alive for its tenant. Nothing when the model has no caching prices.
pub(super) fn decide(
    app: &AppState,
    tenant: &Tenant,
    salt: Option<&[u8; 32]>,
    prompt: &Prompt<'_>,
    boundaries: &[Boundary],
) -> Decision {
    let now = app.clock().now();
    let Some((rates, min)) = prompt.model.and_then(|m| app.telemetry().rates_on(m, now)) else {
        return Decision::Nothing;
    };
    let (Some(input), Some(read), Some(storage)) = (rates.input, rates.cache_read, rates.storage)
    else {
        return Decision::Nothing;
    };
    let prices = Prices {
        input: input as f64,
        read: read as f64,
        storage: storage as f64,
    };
    let cuts: Vec<(Cut, Facts)> = planner::cuts(prompt, boundaries)
        .into_iter()
        .map(|cut| {
            let caches = app.content_caches();
            let id = cache_id(&cut.key, salt);
            let refused = caches.is_refused(tenant, &id, now);
            let facts = Facts {
                // A prefix whose create was refused is no candidate for a while.
                known: app.registry().get(tenant, &cut.key).filter(|_| !refused),
                live: caches.get(tenant, &id, now),
            };
            (cut, facts)
        })
        .collect();
    planner::decide(&cuts, prices, min.unwrap_or(0), now)
}

/// Carries out `decision` on the request in `env`: extends or creates the cache as decided and
/// rewrites the request to read it. `None` when the request goes as it is.
pub(super) async fn carry_out(
    app: &AppState,
    parent: &Exchange,
    caller: &Caller<'_>,
    env: &mut Envelope,
    decision: Decision,
) -> Option<Referenced> {
    let (cut, name) = match decision {
        Decision::Nothing => return None,
        Decision::Reference { cut, name, extend } => {
            if let Some(ttl) = extend
                && !self::extend(app, parent, caller, &cut, &name, ttl).await
            {
                return None;
            }
            (cut, name)
        }
        Decision::Create { cut, ttl } => {
            let name = match app
                .flights()
                .board(&caller.tenant, &caller.cache_id(&cut.key))
            {
                Seat::Leader(_lead) => create(app, parent, caller, env, &cut, ttl).await,
                Seat::Follower(rx) => {
                    flight::follow(rx, app.config().coalesce.max_wait).await;
                    let now = app.clock().now();
                    app.content_caches()
                        .get(&caller.tenant, &caller.cache_id(&cut.key), now)
                        .map(|live| live.name)
                }
            }?;
            (cut, name)
        }
    };
    let fallback = env.clone().into_bytes().ok()?;
    env.edit(|tree| cache::reference(tree, &name, cut.contents))
        .then_some(Referenced {
            tenant: caller.tenant,
            key: caller.cache_id(&cut.key),
            name,
            fallback,
        })
}

/// Creates the cache of `cut`; its name once the upstream has it.
async fn create(
    app: &AppState,
    parent: &Exchange,
    caller: &Caller<'_>,
    env: &mut Envelope,
    cut: &Cut,
    ttl: Duration,
) -> Option<String> {
    let body = cache::create_body(env.tree()?, caller.model, cut.contents, ttl)?;
    let answer = own_call(
        app,
        parent,
        caller,
        Own {
            call: Call::CacheCreate,
            method: Method::POST,
            path: cache::CREATE_PATH,
            body: &body,
        },
        // A create bills the cache's tokens at the input price (providers.md §3.4).
        |created| Usage {
            input_uncached: created.tokens,
            ..Usage::default()
        },
    )
    .await;
    let Some(answer) = answer else {
        // Refused (below the model's minimum, say) or failed: the request goes without, and
        // the prefix is not tried again for a while.
        let until = app.clock().now() + REFUSED_FOR;
        app.content_caches()
            .refuse(&caller.tenant, &caller.cache_id(&cut.key), until);
        return None;
    };
    let live = Live {
        name: answer.name,
        expires: answer.expires,
    };
    app.content_caches()
        .insert(&caller.tenant, &caller.cache_id(&cut.key), live.clone());
    Some(live.name)
}

/// Gives the cache `name` a new TTL before the request reads it. Done in line, not in the
/// background: it happens about once per half TTL per cache, and its answer tells whether the
/// cache is still there (a 404 spares the request a failed attempt and a resend). `false` when
/// the cache is gone, and forgotten.
async fn extend(
    app: &AppState,
    parent: &Exchange,
    caller: &Caller<'_>,
    cut: &Cut,
    name: &str,
    ttl: Duration,
) -> bool {
    let (path, body) = cache::extend(name, ttl);
    let patched = own_call(
        app,
        parent,
        caller,
        Own {
            call: Call::CacheExtend,
            method: Method::PATCH,
            path: &path,
            body: &body,
        },
        |_| Usage::default(),
    )
    .await;
    let id = caller.cache_id(&cut.key);
    match patched {
        Some(patched) => {
            let live = Live {
                name: patched.name,
                expires: patched.expires,
            };
            app.content_caches().insert(&caller.tenant, &id, live);
            true
        }
        None => {
            app.content_caches().forget(&caller.tenant, &id, name);
            false
        }
    }
}

/// A call cachet makes on its own.
struct Own<'a> {
    call: Call,
    method: Method,
    path: &'a str,
    body: &'a Value,
}

/// One upstream call of cachet's own for `parent`'s request, recorded with the usage `billed`
/// finds in its answer. The answer when the upstream accepted the call.
async fn own_call(
    app: &AppState,
    parent: &Exchange,
    caller: &Caller<'_>,
    own: Own<'_>,
    billed: impl FnOnce(&cache::Created) -> Usage,
) -> Option<cache::Created> {
    let Own {
        call,
        method,
        path,
        body,
    } = own;
    let mut ex = Exchange::new(uuid::Uuid::now_v7().to_string(), Instant::now());
    ex.call = call;
    ex.caused_by = Some(parent.request_id.clone());
    ex.upstream = Some(caller.upstream.name.clone());
    ex.endpoint = Some("cached_contents");
    ex.model = Some(caller.model.to_owned());
    ex.team = parent.team.clone();
    let bytes = serde_json::to_vec(body).ok()?;
    let mut headers = caller.headers.clone();
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let outgoing = Outgoing {
        method,
        path_and_query: with_key(path, caller.query),
        headers,
        body: OutgoingBody::Bytes(Bytes::from(bytes)),
    };
    ex.sent = Some(Instant::now());
    let answer = match app.upstream_client().send(caller.upstream, outgoing).await {
        Ok(response) => {
            ex.status = response.status().as_u16();
            let ok = response.status().is_success();
            response
                .bytes()
                .await
                .ok()
                .filter(|_| ok)
                .and_then(|b| cache::created(&b))
        }
        Err(err) => {
            ex.status = err.status().as_u16();
            tracing::warn!(request_id = %ex.request_id, call = call.as_str(), error = %err,
                "cachet's own upstream call failed");
            None
        }
    };
    let usage = answer.as_ref().map(billed);
    app.telemetry().record_call(&ex, usage);
    answer
}

/// `path` with the request's `key=` parameter, when the client authenticated with one.
fn with_key(path: &str, query: Option<&str>) -> String {
    let key = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find(|pair| pair.starts_with("key="));
    match key {
        Some(key) if path.contains('?') => format!("{path}&{key}"),
        Some(key) => format!("{path}?{key}"),
        None => path.to_owned(),
    }
}

/// The statuses with which Gemini answers a request whose cache is gone or not the caller's.
pub(super) fn vanished(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_calls_carry_the_query_key_and_nothing_else() {
        assert_eq!(
            with_key("/v1beta/cachedContents", Some("alt=sse&key=abc")),
            "/v1beta/cachedContents?key=abc"
        );
        assert_eq!(
            with_key("/v1beta/cachedContents/x?updateMask=ttl", Some("key=abc")),
            "/v1beta/cachedContents/x?updateMask=ttl&key=abc"
        );
        assert_eq!(
            with_key("/v1beta/cachedContents", Some("alt=sse")),
            "/v1beta/cachedContents"
        );
        assert_eq!(with_key("/p", None), "/p");
    }
}
