//! The proxy handler: every path under a mount.
//!
//! ```text
//! resolve mount → classify route → (modelled JSON route: read body within the limit, parse,
//! request stream usage) → send upstream → stream the response back through the usage tap
//! ```
//!
//! Unmodelled paths stream their body through unread and unlimited (file uploads), with the
//! client's bytes, query and escapes as sent.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, header};
use http_body_util::BodyExt;

use super::cached_content::{self, Referenced};
use super::{PREFIX_HEADER, REWRITE_HEADER, REWRITES_HEADER, RequestId, TEAM_HEADER};
use crate::config::{ProviderKind, RewriteConfig, Strategy, Upstream};
use crate::dialect::anthropic::markers;
use crate::dialect::{self, Dialect, Endpoint, RequestInfo, openai};
use crate::envelope::Envelope;
use crate::error::ProxyError;
use crate::explain::{self, Facts, Fingerprint};
use crate::flight::{self, Lead, Seat};
use crate::plan::gemini::Decision;
use crate::plan::{self, Branch, CachePlan};
use crate::pool::Chain;
use crate::registry::Scale;
use crate::state::AppState;
use crate::telemetry::PLAN_BRANCH_TOTAL;
use crate::telemetry::{Call, Exchange};
use crate::tenant::{Credential, Tenant};
use crate::upstream::body::{Framing, ObservedBody, Outcome, Tap};
use crate::upstream::headers::{
    ask_identity_encoding, request_headers, response_headers, use_upstream_key, without_key_param,
};
use crate::upstream::pool::Placed;
use crate::upstream::{Outgoing, OutgoingBody};
use crate::usage::Usage;
use crate::{prefix, prompt, rewrite};

pub async fn handle(
    State(app): State<AppState>,
    Extension(id): Extension<RequestId>,
    req: Request,
) -> Response {
    let mut pending = Unanswered {
        app: &app,
        ex: Exchange::new(id.0, Instant::now()),
        armed: true,
    };
    pending.ex.team = team(req.headers());
    let path = req.uri().path().to_owned();
    let Some((upstream, rest)) = app.resolve(&path) else {
        let err = ProxyError::UnknownMount(path.clone());
        return pending.reject(Dialect::guess(&path), err);
    };
    let endpoint = dialect::classify(upstream.provider, req.method(), rest);
    pending.ex.upstream = Some(upstream.name.clone());
    pending.ex.endpoint = endpoint.as_ref().map(Endpoint::name);
    match send(
        &app,
        &mut pending.ex,
        upstream,
        endpoint.as_ref(),
        rest,
        req,
    )
    .await
    {
        // From here the response body records the exchange when it ends.
        Ok(sent) => respond(&app, pending.into_exchange(), upstream, endpoint, sent),
        Err(err) => pending.reject(Dialect::of(upstream.provider), err),
    }
}

/// A request not yet answered. If the client goes away first (axum drops the handler), it is
/// still recorded, once, with nginx's 499 "client closed request".
struct Unanswered<'a> {
    app: &'a AppState,
    ex: Exchange,
    armed: bool,
}

impl Unanswered<'_> {
    /// The request has its answer: the exchange moves on to the response body.
    fn into_exchange(mut self) -> Exchange {
        self.armed = false;
        // A placeholder that allocates nothing takes the exchange's place in `self`.
        let placeholder = Exchange::new(String::new(), self.ex.received);
        std::mem::replace(&mut self.ex, placeholder)
    }

    /// Answers with cachet's own error, in `dialect`, and records the request.
    fn reject(mut self, dialect: Dialect, err: ProxyError) -> Response {
        self.armed = false;
        self.ex.status = err.status().as_u16();
        if err.status().is_server_error() {
            tracing::warn!(request_id = %self.ex.request_id, error = %err, "proxy error");
        }
        self.app.telemetry().record_rejected(&self.ex, err.label());
        err.into_response_in(dialect)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.ex.status = CLIENT_CLOSED;
            self.app
                .telemetry()
                .record_rejected(&self.ex, "client_closed");
        }
    }
}

const CLIENT_CLOSED: u16 = 499;

/// `x-cachet-team`, when it is a short printable name (it lands in logs and, later, the ledger).
fn team(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(TEAM_HEADER)?.to_str().ok()?.trim();
    let printable = value.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    (!value.is_empty() && value.len() <= 64 && printable).then(|| value.to_owned())
}

/// The upstream's answer to a request, and whether cachet asked for the stream's usage chunk
/// (which must then be dropped on the way back).
struct Sent {
    response: reqwest::Response,
    strip_usage_chunk: bool,
    /// The pool replica that answered, held until the response ends.
    placed: Option<Placed>,
}

/// Builds the upstream request (reading and editing the body on modelled JSON routes) and
/// sends it; returns once the upstream's response head is in.
async fn send(
    app: &AppState,
    ex: &mut Exchange,
    upstream: &Upstream,
    endpoint: Option<&Endpoint>,
    rest: &str,
    req: Request,
) -> Result<Sent, ProxyError> {
    let (parts, body) = req.into_parts();
    let credential = Credential::from_request(&parts.headers, parts.uri.query());
    // With `api_key_env` the client presents a cachet key, which names its team; the upstream
    // gets the upstream's key, and the client's goes no further (nor does a `?key=`).
    let query = match &upstream.api_key {
        Some(_) => {
            let team = credential.key.and_then(|k| app.config().key_team(k));
            let Some(team) = team else {
                return Err(ProxyError::UnknownKey);
            };
            ex.team = Some(team.to_owned());
            parts.uri.query().map(without_key_param)
        }
        None => parts.uri.query().map(str::to_owned),
    };
    let path_and_query = match query.as_deref() {
        Some("") | None => rest.to_owned(),
        Some(q) => format!("{rest}?{q}"),
    };
    // A compressed request body cannot be read as JSON: it goes through as it came.
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    let declared_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let json_route = endpoint.filter(|e| e.has_json_body(&parts.method) && !encoded);
    let rewrite_off = parts
        .headers
        .get(REWRITE_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"off"));
    let tenant = Tenant::of(app.tenant_secret(), &upstream.name, &credential);
    ex.tenant = Some(tenant);
    ex.provider = Some(upstream.provider.as_str());
    let mut headers = request_headers(parts.headers, json_route.is_none());
    if let Some(key) = &upstream.api_key {
        use_upstream_key(&mut headers, upstream.provider, key);
    }
    let prepared = match json_route {
        Some(route) => {
            let rewrite = (!rewrite_off).then_some(&app.config().rewrite);
            let target = Target {
                route,
                upstream,
                tenant,
                headers: &headers,
                query: query.as_deref(),
            };
            json_body(app, ex, target, body, declared_length, rewrite).await?
        }
        None => {
            let info = endpoint.map(|e| dialect::request_info(e, None));
            let body = if http_body::Body::size_hint(&body).exact() == Some(0) {
                OutgoingBody::Empty
            } else {
                OutgoingBody::Stream(reqwest::Body::wrap_stream(body.into_data_stream()))
            };
            Prepared {
                body,
                info: info.unwrap_or_default(),
                strip_usage_chunk: false,
                referenced: None,
                lead: None,
                chain: None,
            }
        }
    };
    let Prepared {
        body,
        info,
        strip_usage_chunk,
        referenced,
        lead,
        chain,
    } = prepared;
    if endpoint.is_some() {
        ask_identity_encoding(&mut headers);
    }
    let RequestInfo { model, stream } = info;
    ex.model = model;
    ex.stream = stream;
    let sent = Instant::now();
    ex.pre_send = sent.duration_since(ex.received);
    ex.sent = Some(sent);
    let again = referenced.as_ref().map(|_| {
        (
            parts.method.clone(),
            path_and_query.clone(),
            headers.clone(),
        )
    });
    let outgoing = Outgoing {
        method: parts.method,
        path_and_query,
        headers,
        body,
    };
    let (mut response, placed) = match app.pool(&upstream.name) {
        Some(pool) => {
            let affinity = upstream.allows(Strategy::ReplicaAffinity);
            let pick = pool.pick(chain.as_ref(), affinity);
            // Only planned requests count; an unmodelled path is balanced, not planned.
            if chain.is_some() {
                metrics::counter!(PLAN_BRANCH_TOTAL, "branch" => pick.branch.as_str()).increment(1);
            }
            let client = app.upstream_client();
            let to = (pick, chain);
            let (response, placed) =
                crate::upstream::pool::send(client, upstream, pool, to, outgoing).await?;
            (response, Some(placed))
        }
        None => (app.upstream_client().send(upstream, outgoing).await?, None),
    };
    ex.status = response.status().as_u16();
    // The response has begun: the provider holds the prefix, the requests waiting may read it.
    drop(lead);
    if let (Some(referenced), Some((method, path_and_query, headers)), Some(route)) =
        (referenced, again, json_route)
        && cached_content::may_have_vanished(response.status())
    {
        // An error to a request that read a cache: read it to tell a vanished cache from the
        // client's own mistake.
        let status = response.status();
        let head = std::mem::take(response.headers_mut());
        let idle = app.config().timeouts.idle;
        let body = match tokio::time::timeout(idle, response.bytes()).await {
            Ok(Ok(body)) => body,
            _ => Bytes::new(),
        };
        if cached_content::vanished(status, &body) {
            // The cache is gone (deleted, expired early, or not this key's): this attempt has
            // its own record, and the request goes again as the client sent it, rewritten
            // without the cache.
            let gone =
                app.content_caches()
                    .forget(&referenced.tenant, &referenced.key, &referenced.name);
            if let Some(gone) = gone {
                cached_content::book_storage(app, referenced.tenant, &gone, app.clock().now());
            }
            app.telemetry().record_call(ex, None);
            ex.caused_by = Some(ex.request_id.clone());
            ex.call = Call::Resend;
            let mut fallback = referenced.pristine;
            ex.rewrites.clear();
            let applied = apply_rewrites(
                &mut fallback,
                route,
                &app.config().rewrite,
                rewrite::Turns::Keep,
            );
            ex.rewrites.extend(applied.iter().map(|r| r.as_str()));
            let bytes = fallback
                .into_bytes()
                .map_err(|e| ProxyError::Internal(e.to_string()))?;
            let outgoing = Outgoing {
                method,
                path_and_query,
                headers,
                body: OutgoingBody::Bytes(bytes),
            };
            response = app.upstream_client().send(upstream, outgoing).await?;
            ex.status = response.status().as_u16();
        } else {
            // The client's own error: passed on as it came.
            let mut rebuilt = http::Response::new(body);
            *rebuilt.status_mut() = status;
            *rebuilt.headers_mut() = head;
            response = reqwest::Response::from(rebuilt);
        }
    }
    Ok(Sent {
        response,
        strip_usage_chunk,
        placed,
    })
}

/// Where a modelled request goes: its route, the upstream's provider and the caller's tenant,
/// with the headers and query it is sent with (cachet's own calls for it reuse the credential).
struct Target<'a> {
    route: &'a Endpoint,
    upstream: &'a Upstream,
    tenant: Tenant,
    headers: &'a http::HeaderMap,
    query: Option<&'a str>,
}

/// A modelled request's body, ready to send.
struct Prepared {
    body: OutgoingBody,
    info: RequestInfo,
    /// Cachet asked for the stream's usage chunk (to drop on the way back).
    strip_usage_chunk: bool,
    /// The request reads a Gemini cache that may have vanished.
    referenced: Option<Referenced>,
    /// The request is the first to write a new prefix: others wait until its response begins.
    lead: Option<Lead>,
    /// The prompt's prefix keys, for a pool's replica choice.
    chain: Option<Chain>,
}

/// A modelled route's JSON body: read within the limit, checked, and edited where a rewrite
/// applies (`rewrite`: `None` when the client opted out). Returns the bytes to send, what the
/// body says, and whether usage was requested; the rewrites made are noted on `ex`.
async fn json_body(
    app: &AppState,
    ex: &mut Exchange,
    target: Target<'_>,
    body: Body,
    declared_length: Option<u64>,
    rewrite: Option<&RewriteConfig>,
) -> Result<Prepared, ProxyError> {
    let route = target.route;
    let limit = app.config().limits.max_body_bytes;
    let body = read_limited(body, declared_length, limit).await?;
    let mut env = Envelope::parse(body, dialect::HEAD_FIELDS)
        .map_err(|e| ProxyError::BadJson(e.to_string()))?;
    let info = dialect::request_info(route, Some(&env));
    // The usage request is spliced into the original bytes first: it has its own switch and
    // survives `x-cachet-rewrite: off`.
    let strip = *route == Endpoint::Chat
        && info.stream
        && app.config().usage.inject_include_usage
        && openai::request_stream_usage(&mut env);
    // Before any edit, a copy costs a reference count: kept for Gemini, whose turn split is
    // undone when no cache comes of it.
    let pristine = matches!(route, Endpoint::GeminiGenerate { .. }).then(|| env.clone());
    let mut split_turn = false;
    if let Some(config) = rewrite.filter(|c| c.question_last || c.stable_tools) {
        let applied = apply_rewrites(&mut env, route, config, rewrite::Turns::Split);
        split_turn = applied.contains(&rewrite::Rewrite::GeminiSplitTurn);
        ex.rewrites.extend(applied.iter().map(|r| r.as_str()));
    }
    let config = &app.config().rewrite;
    let mut breakpoints = Vec::new();
    let mut cache_key: Option<String> = None;
    let mut chain = None;
    // The client's own key always wins.
    let client_cache_key = env.field("prompt_cache_key").is_some_and(|v| !v.is_null());
    let anthropic = target.upstream.provider == ProviderKind::Anthropic
        && *route == Endpoint::AnthropicMessages;
    let gemini_model = match route {
        Endpoint::GeminiGenerate { model, .. }
            if target.upstream.provider == ProviderKind::Gemini =>
        {
            Some(model.as_str())
        }
        _ => None,
    };
    let mut gemini = None;
    let mut write = None;
    let salt = match gemini_model {
        Some(_) => env.tree().and_then(cached_content::cache_salt),
        None => None,
    };
    let tree_markers = match anthropic {
        true => env.tree().map(markers::client_markers).unwrap_or_default(),
        false => markers::ClientMarkers::default(),
    };
    ex.client_markers = u8::try_from(tree_markers.slots_used()).unwrap_or(u8::MAX);
    if let Some(prompt) = env.tree().and_then(|tree| prompt::prompt(route, tree)) {
        let boundaries = prefix::keys(&prompt, &target.tenant);
        if app.pool(&target.upstream.name).is_some() {
            chain = Some(Chain::of(&boundaries));
        }
        let plan = CachePlan::new(
            target.tenant,
            target.upstream.provider,
            &prompt,
            &boundaries,
            config.question_max_tokens,
        );
        let print = Fingerprint::of(&prompt, &boundaries, app.clock().now(), config);
        ex.fingerprint = Some(Arc::new(print));
        let openai = matches!(route, Endpoint::Chat | Endpoint::Responses)
            && target.upstream.accepts_prompt_cache_key;
        let branch = match () {
            _ if !anthropic && !openai && gemini_model.is_none() => Branch::Unplanned,
            _ if rewrite.is_none() => Branch::RewriteOff,
            _ if gemini_model.is_some() && prompt.context.is_some() => Branch::ClientCachedContent,
            _ if gemini_model.is_some() && !target.upstream.allows(Strategy::CachedContent) => {
                Branch::StrategyOff
            }
            _ if gemini_model.is_some() => {
                let decision = cached_content::decide(
                    app,
                    &target.tenant,
                    salt.as_ref(),
                    &prompt,
                    &boundaries,
                );
                let branch = match &decision {
                    Decision::Reference { .. } => Branch::CachedContent,
                    Decision::Create { .. } => Branch::CachedContentCreate,
                    Decision::Nothing => Branch::NoCandidate,
                };
                gemini = Some(decision);
                branch
            }
            _ if anthropic && !target.upstream.allows(Strategy::CacheControl) => {
                Branch::StrategyOff
            }
            _ if anthropic => {
                let full = tree_markers.slots_used() >= plan::anthropic::MAX_BREAKPOINTS;
                breakpoints = anthropic_breakpoints(app, &prompt, &boundaries, &plan, tree_markers);
                match () {
                    _ if !breakpoints.is_empty() => Branch::CacheControl,
                    _ if full => Branch::ClientMarkers,
                    _ => Branch::NoCandidate,
                }
            }
            _ if !target.upstream.allows(Strategy::PromptCacheKey) => Branch::StrategyOff,
            _ if client_cache_key => Branch::ClientCacheKey,
            _ => match plan::openai::stable_prefix(&boundaries) {
                Some(stable) => {
                    let shards = app.cache_key_shards();
                    let shard = shards.next(&plan.tenant, &stable, app.clock().now());
                    cache_key = Some(plan::openai::cache_key(&plan.tenant, &stable, shard));
                    Branch::PromptCacheKey
                }
                None => Branch::NoCandidate,
            },
        };
        metrics::counter!(PLAN_BRANCH_TOTAL, "branch" => branch.as_str()).increment(1);
        ex.branch = Some(branch.as_str());
        if target.upstream.allows(Strategy::SingleFlight) {
            write = new_write(app, &plan, &prompt, &boundaries, &breakpoints, branch);
        }
        ex.plan = Some(plan);
    }
    let lead = match write {
        Some(key) => coalesce(app, ex, &target.tenant, &key).await,
        None => None,
    };
    if !breakpoints.is_empty() && env.edit(|tree| markers::apply(tree, &breakpoints)) {
        ex.breakpoints = u8::try_from(breakpoints.len()).unwrap_or(u8::MAX);
        ex.rewrites.push("cache_control");
    }
    if let Some(key) = cache_key
        && env.edit(|tree| openai::set_prompt_cache_key(tree, key))
    {
        ex.rewrites.push("prompt_cache_key");
    }
    let mut referenced = None;
    if let (Some(decision), Some(model), Some(pristine)) = (gemini, gemini_model, &pristine) {
        let caller = cached_content::Caller {
            upstream: target.upstream,
            tenant: target.tenant,
            headers: target.headers,
            query: target.query,
            model,
            salt,
        };
        referenced =
            cached_content::carry_out(app, ex, &caller, &mut env, decision, pristine.clone()).await;
        if referenced.is_some() {
            ex.rewrites.push("cached_content");
        }
    }
    if let (true, None, Some(pristine), Some(config)) = (split_turn, &referenced, pristine, rewrite)
    {
        // No cache holds the document: the question goes after it in the same text instead of a
        // turn of its own (DESIGN.md: a turn is split only for a cached content). Nothing else
        // edits a Gemini request before this point.
        env = pristine;
        ex.rewrites.clear();
        let applied = apply_rewrites(&mut env, route, config, rewrite::Turns::Keep);
        ex.rewrites.extend(applied.iter().map(|r| r.as_str()));
    }
    // Last, as in the contract's vocabulary.
    if strip {
        ex.rewrites.push("include_usage");
    }
    let bytes = env
        .into_bytes()
        .map_err(|e| ProxyError::Internal(e.to_string()))?;
    if app.config().log.excerpts {
        ex.excerpt_source = Some(bytes.clone());
    }
    Ok(Prepared {
        body: OutgoingBody::Bytes(bytes),
        info,
        strip_usage_chunk: strip,
        referenced,
        lead,
        chain,
    })
}

/// The client's response: the upstream's status and headers (hop-by-hop removed, plus
/// cachet's), and its body relayed through the usage tap, which records the exchange at the end.
fn respond(
    app: &AppState,
    mut ex: Exchange,
    upstream: &Upstream,
    endpoint: Option<Endpoint>,
    sent: Sent,
) -> Response {
    let head_at = Instant::now();
    let Sent {
        mut response,
        strip_usage_chunk,
        placed,
    } = sent;
    let status = response.status();
    // Taken, not copied: the body's length comes from the body itself from here on.
    let mut client_headers = response_headers(std::mem::take(response.headers_mut()));
    if strip_usage_chunk {
        client_headers.remove(header::CONTENT_LENGTH);
    }
    if endpoint.is_some()
        && !ex.rewrites.is_empty()
        && let Ok(v) = HeaderValue::from_str(&ex.rewrites.join(","))
    {
        client_headers.insert(REWRITES_HEADER, v);
    }
    if let Some(key) = ex.plan.as_ref().and_then(CachePlan::reusable_key)
        && let Ok(v) = HeaderValue::from_str(&key.to_string())
    {
        client_headers.insert(PREFIX_HEADER, v);
    }
    let content_type = client_headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let framing = Framing::of(endpoint.as_ref(), status.is_success(), content_type);
    let route = endpoint.clone();
    let tap = Tap::new(upstream.provider, endpoint, framing, strip_usage_chunk);
    ex.post_head = head_at.elapsed();
    let idle = app.config().timeouts.idle;
    let app = app.clone();
    let success = status.is_success();
    let body = ObservedBody::new(response, tap, idle, move |observed| {
        // The registry and the explainer learn from the input side of an answer's usage: all
        // of it in a complete answer, and in a stream the client cancelled when the dialect
        // reported it before the cut (Anthropic's message_start, Gemini's running totals),
        // since the provider processed, and cached, the whole prompt all the same.
        let learnable = success
            && !observed.tap_lost
            && matches!(observed.outcome, Outcome::Complete | Outcome::Cancelled);
        let usage = observed.usage.filter(|_| learnable);
        if let Some(usage) = &usage {
            learn(&app, &mut ex, route.as_ref(), usage);
        }
        // The replica's in-flight count is released here, or when the client goes away.
        if let Some(placed) = placed {
            placed.finish(usage.as_ref());
        }
        app.telemetry().record_observed(&ex, &observed);
    });
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = status;
    *out.headers_mut() = client_headers;
    out
}

/// Where cachet adds `cache_control` to an Anthropic request (`plan::anthropic`): the registry
/// says what is believed cached and when each prefix was last seen.
fn anthropic_breakpoints(
    app: &AppState,
    prompt: &prompt::Prompt<'_>,
    boundaries: &[prefix::Boundary],
    plan: &CachePlan,
    client: markers::ClientMarkers,
) -> Vec<(prompt::Place, plan::Ttl)> {
    let now = app.clock().now();
    let registry = app.registry();
    let known = |key: &prefix::PrefixKey| match registry.get(&plan.tenant, key) {
        Some(k) => plan::anthropic::Known {
            cached: k.believed_cached(now),
            gap: now.duration_since(k.last_seen).ok(),
            age: now.duration_since(k.first_seen).ok(),
            reuses: k.reuses,
        },
        None => plan::anthropic::Known::default(),
    };
    let candidates = plan::anthropic::candidates(prompt, boundaries, plan.reusable_key(), known);
    let min = prompt
        .model
        .and_then(|m| app.telemetry().min_cacheable_tokens(m))
        .unwrap_or(1024);
    let last = prompt.segments.len().saturating_sub(1);
    let last_place = prompt.segments.last().map(|s| s.place);
    plan::anthropic::place(&candidates, &client, min, last, last_place)
}

/// Applies the request rewrites; what was done.
fn apply_rewrites(
    env: &mut Envelope,
    route: &Endpoint,
    config: &RewriteConfig,
    turns: rewrite::Turns,
) -> Vec<rewrite::Rewrite> {
    let mut applied = Vec::new();
    env.edit(|tree| {
        applied = rewrite::rewrite_turns(route, tree, config, turns);
        !applied.is_empty()
    });
    applied
}

/// The new prefix this request would write, if any: the longest breakpoint cachet placed, or
/// for the automatic caches (`prompt_cache_key`) the reusable prefix, unless the registry
/// believes it cached already (then the request reads it) or it is below the model's minimum.
fn new_write(
    app: &AppState,
    plan: &CachePlan,
    prompt: &prompt::Prompt<'_>,
    boundaries: &[prefix::Boundary],
    breakpoints: &[(prompt::Place, plan::Ttl)],
    branch: Branch,
) -> Option<prefix::PrefixKey> {
    let mark = match branch {
        Branch::CacheControl => {
            let last = prompt
                .segments
                .iter()
                .rposition(|s| breakpoints.iter().any(|(p, _)| *p == s.place))?;
            boundaries
                .iter()
                .rfind(|b| b.segment_end && b.segment == last)
                .map(|b| (b.key, b.tokens))
        }
        Branch::PromptCacheKey | Branch::ClientCacheKey => {
            let min = prompt
                .model
                .and_then(|m| app.telemetry().min_cacheable_tokens(m))
                .unwrap_or(1024);
            plan.reusable
                .filter(|m| m.tokens >= min)
                .map(|m| (m.key, m.tokens))
        }
        _ => None,
    };
    let (key, _) = mark?;
    let now = app.clock().now();
    let cached = app
        .registry()
        .get(&plan.tenant, &key)
        .is_some_and(|k| k.believed_cached(now));
    (!cached).then_some(key)
}

/// Single-flight: the first request to write `key` leads (the returned `Lead`, held until its
/// response begins); a later one waits for it, at most `coalesce.max_wait`.
async fn coalesce(
    app: &AppState,
    ex: &mut Exchange,
    tenant: &Tenant,
    key: &prefix::PrefixKey,
) -> Option<Lead> {
    match app.flights().board(tenant, key) {
        Seat::Leader(lead) => Some(lead),
        Seat::Follower(rx) => {
            let started = Instant::now();
            flight::follow(rx, app.config().coalesce.max_wait).await;
            ex.coalesced = Some(started.elapsed());
            None
        }
    }
}

/// After a complete answer: the registry learns what the provider reported, and the explainer
/// says why the request read less than its tenant's history allowed.
fn learn(app: &AppState, ex: &mut Exchange, endpoint: Option<&Endpoint>, usage: &Usage) {
    let (Some(plan), Some(fingerprint)) = (&ex.plan, ex.fingerprint.take()) else {
        return;
    };
    ex.cache_outcome = Some(plan.observe(app.registry(), usage));
    // The explainer works in cachet's estimates.
    let scale = Scale::of(&plan.marks, usage.input_total());
    let min = ex
        .model
        .as_deref()
        .and_then(|m| app.telemetry().min_cacheable_tokens(m))
        .unwrap_or(0);
    let facts = Facts {
        read: scale.to_estimate(usage.cache_read),
        retention: plan::retention(plan.provider),
        min_tokens: scale.to_estimate(min),
        now: app.clock().now(),
    };
    let mut miss = app
        .history()
        .explain_and_record(plan.tenant, fingerprint, facts);
    if let (Some(miss), Some(body), Some(endpoint)) = (&mut miss, &ex.excerpt_source, endpoint) {
        miss.excerpt = excerpt_of(endpoint, body, miss.segment_index, miss.offset);
    }
    ex.miss = miss;
}

/// The redacted excerpt of a request's segment at `offset` (only with `log.excerpts` on).
fn excerpt_of(endpoint: &Endpoint, body: &[u8], segment: usize, offset: usize) -> Option<String> {
    let tree: serde_json::Value = serde_json::from_slice(body).ok()?;
    let prompt = prompt::prompt(endpoint, &tree)?;
    let bytes = prompt.segments.get(segment)?.canonical();
    Some(explain::excerpt(&bytes, offset))
}

/// Reads a JSON body within `limit` bytes: 413 as soon as the limit is known to be exceeded.
async fn read_limited(
    mut body: Body,
    declared: Option<u64>,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    // Frames are copied once, into a buffer sized from content-length: collecting them and
    // then joining would hold a large body twice.
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    let mut single: Option<Bytes> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::BodyRead(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing the proxy reads
        };
        if buf.len() + single.as_ref().map_or(0, Bytes::len) + data.len() > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        // The common case, a body in one frame, is kept without a copy.
        match single.take() {
            None if buf.is_empty() => single = Some(data),
            None => buf.extend_from_slice(&data),
            Some(first) => {
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_names_must_be_short_and_printable() {
        let with = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(TEAM_HEADER, HeaderValue::from_static(v));
            team(&h)
        };
        assert_eq!(with(" search "), Some("search".into()));
        assert_eq!(with(""), None);
        assert_eq!(with("a\tb"), None);
        assert_eq!(with(&*"x".repeat(65).leak()), None);
        assert_eq!(team(&http::HeaderMap::new()), None);
    }
}
