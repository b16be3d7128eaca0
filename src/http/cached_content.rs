//! Gemini explicit caching on the request path: `plan::gemini` decides, this carries it out.
//!
//! The create and the TTL patch are upstream calls cachet makes on its own, with the request's
//! own credential (so a cache belongs to the key that will read it), each recorded with its
//! own record. Concurrent requests that would create the same cache share one create
//! (`flight`). A request rewritten to read a cache keeps the body it would have sent without
//! one: if the cache has vanished upstream (404, 403 or 400), the proxy forgets it and sends
//! that body instead, and the client never sees the difference.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::config::Upstream;
use crate::dialect::gemini::cache;
use crate::envelope::Envelope;
use crate::flight::{self, Seat};
use crate::plan::gemini::{self as planner, Cut, Decision, Facts, Live, Prices};
use crate::prefix::{Boundary, PrefixKey};
use crate::pricing::storage_nusd;
use crate::prompt::Prompt;
use crate::registry::{Held, Owner};
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
    /// The request as the client sent it, for a resend without the cache.
    pub pristine: Envelope,
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
    let Some(price) = prompt.model.and_then(|m| app.telemetry().price_on(m, now)) else {
        return Decision::Nothing;
    };
    let (rates, min) = (&price.rates, price.min_cacheable_tokens);
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
/// rewrites the request to read it. `pristine` is the request before any rewrite, kept for a
/// resend. `None` when the request goes as it is.
pub(super) async fn carry_out(
    app: &AppState,
    parent: &Exchange,
    caller: &Caller<'_>,
    env: &mut Envelope,
    decision: Decision,
    pristine: Envelope,
) -> Option<Referenced> {
    let (cut, name) = match decision {
        Decision::Nothing => return None,
        Decision::Reference { cut, name, extend } => {
            if let Some(ttl) = extend {
                let own = Own::new(app, parent, caller, &cut);
                let extended = spawn_own(self::extend(own, name.clone(), ttl)).await;
                if extended == Extended::Gone {
                    return None;
                }
            }
            (cut, name)
        }
        Decision::Create { cut, ttl } => {
            let id = caller.cache_id(&cut.key);
            let name = match app.flights().board(&caller.tenant, &id) {
                Seat::Leader(_lead) => {
                    let body = cache::create_body(env.tree()?, caller.model, cut.contents, ttl)?;
                    let own = Own::new(app, parent, caller, &cut);
                    spawn_own(create(own, body)).await
                }
                Seat::Follower(rx) => {
                    flight::follow(rx, app.config().coalesce.max_wait).await;
                    let now = app.clock().now();
                    app.content_caches()
                        .get(&caller.tenant, &id, now)
                        .map(|live| live.name)
                }
            }?;
            (cut, name)
        }
    };
    env.edit(|tree| cache::reference(tree, &name, cut.contents))
        .then_some(Referenced {
            tenant: caller.tenant,
            key: caller.cache_id(&cut.key),
            name,
            pristine,
        })
}

/// Runs one of cachet's own calls in a task of its own and waits for it: a client that goes
/// away meanwhile (dropping the request) never leaves a created cache unrecorded or unknown.
async fn spawn_own<T: Send + Default + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    tokio::spawn(work).await.unwrap_or_default()
}

/// What one of cachet's own calls needs, owned (it runs in its own task).
struct Own {
    app: AppState,
    upstream: Upstream,
    tenant: Tenant,
    /// The cache's id in the table.
    id: PrefixKey,
    /// The request's credential headers, and only those.
    headers: HeaderMap,
    query: Option<String>,
    model: String,
    parent_id: String,
    team: Option<String>,
}

/// The request headers that carry a Gemini credential.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-goog-api-key", "x-goog-user-project"];

impl Own {
    fn new(app: &AppState, parent: &Exchange, caller: &Caller<'_>, cut: &Cut) -> Own {
        let mut headers = HeaderMap::new();
        for name in CREDENTIAL_HEADERS {
            if let Some(value) = caller.headers.get(name) {
                headers.insert(name, value.clone());
            }
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // reqwest here does not decompress: the answer must come as sent.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        Own {
            app: app.clone(),
            upstream: caller.upstream.clone(),
            tenant: caller.tenant,
            id: caller.cache_id(&cut.key),
            headers,
            query: caller.query.map(str::to_owned),
            model: caller.model.to_owned(),
            parent_id: parent.request_id.clone(),
            team: parent.team.clone(),
        }
    }
}

/// Creates the cache; its name once the upstream has it.
async fn create(own: Own, body: Value) -> Option<String> {
    let answer = own_call(
        &own,
        Call::CacheCreate,
        Method::POST,
        cache::CREATE_PATH,
        &body,
    )
    .await;
    let caches = own.app.content_caches();
    match answer {
        Answer {
            created: Some(created),
            request_id,
            ..
        } => {
            let now = own.app.clock().now();
            let held = Held {
                live: Live {
                    name: created.name.clone(),
                    expires: created.expires,
                },
                tokens: created.tokens,
                // Storage is billed from the provider's own creation time.
                created: created.created.unwrap_or(now),
                owner: Arc::new(Owner {
                    upstream: own.upstream.name.clone(),
                    provider: own.upstream.provider.as_str(),
                    model: own.model.clone(),
                    team: own.team.clone(),
                    request_id,
                }),
            };
            if let Some(replaced) = caches.insert(&own.tenant, &own.id, held) {
                book_storage(&own.app, own.tenant, &replaced, now);
            }
            Some(created.name)
        }
        // Refused (below the model's minimum, say): not asked again for a while. A 429, a 5xx
        // or no answer at all says nothing of the prefix: the next request may try again.
        Answer {
            status: Some(status),
            ..
        } if (400..500).contains(&status) && status != 429 => {
            let until = own.app.clock().now() + REFUSED_FOR;
            caches.refuse(&own.tenant, &own.id, until);
            None
        }
        Answer { .. } => None,
    }
}

/// What a TTL extension found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Extended {
    Alive,
    /// The cache is gone (404, 403): forgotten.
    Gone,
    /// No telling (a 429, a 5xx, no answer): the cache is read as before.
    #[default]
    Unknown,
}

/// Gives the cache `name` a new TTL before the request reads it. Done before the request, not
/// after: it happens about once per half TTL per cache, and its answer tells whether the cache
/// is still there (a 404 spares the request a failed attempt and a resend).
async fn extend(own: Own, name: String, ttl: Duration) -> Extended {
    let (path, body) = cache::extend(&name, ttl);
    let answer = own_call(&own, Call::CacheExtend, Method::PATCH, &path, &body).await;
    let caches = own.app.content_caches();
    match answer {
        Answer {
            created: Some(patched),
            ..
        } => {
            caches.extend(&own.tenant, &own.id, &name, patched.expires);
            Extended::Alive
        }
        Answer {
            status: Some(404 | 403),
            ..
        } => {
            if let Some(gone) = caches.forget(&own.tenant, &own.id, &name) {
                book_storage(&own.app, own.tenant, &gone, own.app.clock().now());
            }
            Extended::Gone
        }
        Answer { .. } => Extended::Unknown,
    }
}

/// What one of cachet's own calls got back.
struct Answer {
    /// The call's own request id.
    request_id: String,
    /// `None`: no answer (connect error, timeout).
    status: Option<u16>,
    /// The cache, when the upstream accepted the call.
    created: Option<cache::Created>,
}

/// One upstream call of cachet's own, recorded with what it billed: a create bills the cache's
/// tokens at the input price (providers.md §3.4); a patch bills nothing.
async fn own_call(own: &Own, call: Call, method: Method, path: &str, body: &Value) -> Answer {
    let app = &own.app;
    let mut ex = Exchange::new(uuid::Uuid::now_v7().to_string(), Instant::now());
    ex.call = call;
    ex.caused_by = Some(own.parent_id.clone());
    ex.upstream = Some(own.upstream.name.clone());
    ex.provider = Some(own.upstream.provider.as_str());
    ex.tenant = Some(own.tenant);
    ex.endpoint = Some("cached_contents");
    ex.model = Some(own.model.clone());
    ex.team = own.team.clone();
    let outgoing = Outgoing {
        method,
        path_and_query: with_key(path, own.query.as_deref()),
        headers: own.headers.clone(),
        body: OutgoingBody::Bytes(Bytes::from(serde_json::to_vec(body).unwrap_or_default())),
    };
    ex.sent = Some(Instant::now());
    let idle = app.config().timeouts.idle;
    let (status, created) = match app.upstream_client().send(&own.upstream, outgoing).await {
        Ok(response) => {
            ex.status = response.status().as_u16();
            let ok = response.status().is_success();
            let read = tokio::time::timeout(idle, response.bytes()).await;
            let created = match read {
                Ok(Ok(bytes)) if ok => cache::created(&bytes),
                _ => None,
            };
            (Some(ex.status), created)
        }
        Err(err) => {
            ex.status = err.status().as_u16();
            tracing::warn!(request_id = %ex.request_id, call = call.as_str(), error = %err,
                "cachet's own upstream call failed");
            (None, None)
        }
    };
    // A create writes its tokens to the cache, billed at the input price (`cache_write_5m`
    // is the input price for Gemini); an extension bills no tokens.
    let usage = created.as_ref().map(|c| match call {
        Call::CacheCreate => Usage {
            cache_write_5m: c.tokens,
            ..Usage::default()
        },
        _ => Usage::default(),
    });
    app.telemetry().record_call(&ex, usage);
    Answer {
        request_id: ex.request_id,
        status,
        created,
    }
}

/// Books the storage of a cache that has ended at `end` (or at its expiry, if earlier): its
/// tokens from creation until then, at the model's storage price (providers.md §3.4).
pub(crate) fn book_storage(app: &AppState, tenant: Tenant, held: &Held, end: SystemTime) {
    let end = end.min(held.live.expires);
    let owner = &held.owner;
    let rate = app
        .telemetry()
        .price_on(&owner.model, held.created)
        .and_then(|p| p.rates_for(held.tokens).storage);
    let nusd = match held.tokens {
        0 => Some(0),
        tokens => rate.map(|pico| storage_nusd(tokens, held.created, end, pico)),
    };
    let mut ex = Exchange::new(uuid::Uuid::now_v7().to_string(), Instant::now());
    ex.call = Call::CacheStorage;
    ex.caused_by = Some(owner.request_id.clone());
    ex.upstream = Some(owner.upstream.clone());
    ex.provider = Some(owner.provider);
    ex.tenant = Some(tenant);
    ex.endpoint = Some("cached_contents");
    ex.model = Some(owner.model.clone());
    ex.team = owner.team.clone();
    ex.status = 200;
    app.telemetry().record_storage(&ex, nusd);
}

/// Books the storage of every cache that has ended by `now` (`None`: every cache, to its
/// expiry, at shutdown).
pub(crate) fn book_ended(app: &AppState, now: Option<SystemTime>) {
    let at = now.unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX >> 2));
    for (tenant, held) in app.content_caches().take_ended(now) {
        book_storage(app, tenant, &held, at);
    }
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

/// The statuses with which Gemini may answer a request whose cache is gone or not the
/// caller's: the answer's body then tells (`vanished`).
pub(super) fn may_have_vanished(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST
    )
}

/// Whether a Gemini error answer to a request that read a cache says the cache is gone or not
/// the caller's: any 404 or 403, and a 400 about the cached content. Any other 400 is the
/// client's own error, passed on as it came.
pub(super) fn vanished(status: StatusCode, body: &[u8]) -> bool {
    may_have_vanished(status) && (status != StatusCode::BAD_REQUEST || cache::about_the_cache(body))
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
