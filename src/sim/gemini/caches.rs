//! The `cachedContents` resource: create, list, get, patch (expiry only) and delete, held in
//! memory and scoped to the API key that created each entry (another key gets 403, an unknown
//! or expired name 404). Entries keep what billing needs (model, token count, times), not the
//! contents themselves: nothing reads them back, since the resource's contents are input-only.
//!
//! Expired entries are dropped lazily: on lookup, and from the whole store on each create, so
//! the store stays bounded by the live entries. Billing (providers.md §3.4): a create bills the
//! cache's tokens at the input price; storage is booked when an entry ends, for the tokens
//! held from creation to deletion or expiry.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Caller, Ctx, D, bare_model, field, prompt_parts};
use crate::clock::{format_rfc3339, parse_duration, parse_rfc3339};
use crate::sim::engine::Engine;
use crate::sim::prompt::SimPrompt;
use crate::sim::wire::{SimError, ok_json, parse_object, require_str};

/// "If not set, the TTL defaults to 1 hour."
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_PAGE: usize = 100;
/// Larger `pageSize` values are coerced down, as the API does.
const MAX_PAGE: usize = 1000;

#[derive(Default)]
pub(crate) struct Store {
    entries: HashMap<String, Entry>,
}

struct Entry {
    /// Creation order, for listing.
    seq: u64,
    owner: String,
    name: String,
    /// Always `models/{model}`, the form the API returns.
    model: String,
    display_name: Option<Value>,
    tokens: u64,
    create_time: SystemTime,
    update_time: SystemTime,
    expire_time: SystemTime,
}

impl Entry {
    fn json(&self) -> Value {
        let mut out = Map::new();
        out.insert("name".into(), json!(self.name));
        out.insert("model".into(), json!(self.model));
        if let Some(display_name) = &self.display_name {
            out.insert("displayName".into(), display_name.clone());
        }
        out.insert("createTime".into(), json!(format_rfc3339(self.create_time)));
        out.insert("updateTime".into(), json!(format_rfc3339(self.update_time)));
        out.insert("expireTime".into(), json!(format_rfc3339(self.expire_time)));
        out.insert(
            "usageMetadata".into(),
            json!({"totalTokenCount": self.tokens}),
        );
        Value::Object(out)
    }
}

/// `cachedContents/abc` from either `abc` or `cachedContents/abc`.
fn full_name(name: &str) -> String {
    if name.starts_with("cachedContents/") {
        name.to_owned()
    } else {
        format!("cachedContents/{name}")
    }
}

impl Store {
    /// Removes the entry `name`, booking its storage up to `ended`.
    fn end(&mut self, engine: &Engine, name: &str, ended: SystemTime) {
        if let Some(e) = self.entries.remove(name) {
            let model = bare_model(&e.model);
            engine.gemini_cache_ended(
                &e.owner,
                model,
                e.tokens,
                e.create_time,
                ended.min(e.expire_time),
            );
        }
    }

    /// Ends every entry expired at `now`.
    fn drop_expired(&mut self, engine: &Engine, now: SystemTime) {
        let expired: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.expire_time <= now)
            .map(|e| e.name.clone())
            .collect();
        for name in expired {
            self.end(engine, &name, now);
        }
    }

    /// Deletes every entry `owner` holds, as if it had deleted them at `now` (the fault
    /// "caches deleted early"); returns how many there were.
    pub(crate) fn evict(&mut self, engine: &Engine, owner: &str, now: SystemTime) -> u64 {
        self.drop_expired(engine, now);
        let mine: Vec<String> = self
            .entries
            .values()
            .filter(|e| e.owner == owner)
            .map(|e| e.name.clone())
            .collect();
        for name in &mine {
            self.end(engine, name, now);
        }
        mine.len() as u64
    }

    /// Ends every entry at its expiry: what their owners are committed to pay for.
    pub(crate) fn settle(&mut self, engine: &Engine) {
        let names: Vec<String> = self.entries.keys().cloned().collect();
        for name in names {
            self.end(
                engine,
                &name,
                SystemTime::UNIX_EPOCH + Duration::from_secs(u64::MAX >> 2),
            );
        }
    }

    /// `/__sim/stats`: live entries and the tokens they hold, after booking expired ones.
    pub(crate) fn summary(&mut self, engine: &Engine, now: SystemTime) -> Value {
        self.drop_expired(engine, now);
        let tokens: u64 = self.entries.values().map(|e| e.tokens).sum();
        json!({"cached_contents": self.entries.len(), "tokens": tokens})
    }

    /// The caller's live entry called `name`.
    fn lookup(
        &mut self,
        engine: &Engine,
        key: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<&mut Entry, SimError> {
        let name = full_name(name);
        let expired = match self.entries.get(&name) {
            None => true,
            Some(entry) => entry.expire_time <= now,
        };
        if expired {
            self.end(engine, &name, now);
            return Err(SimError::not_found(
                D,
                format!("CachedContent not found: {name}"),
            ));
        }
        match self.entries.get_mut(&name) {
            Some(entry) if entry.owner == key => Ok(entry),
            _ => Err(SimError::new(
                D,
                StatusCode::FORBIDDEN,
                format!("You do not have permission to access the CachedContent {name}"),
            )),
        }
    }

    /// Tokens of the cache `name` used by a `generateContent` on `model`, which must be the
    /// cache's own ("Cached content can be only used with model it was created for").
    pub(super) fn tokens_for(
        &mut self,
        engine: &Engine,
        key: &str,
        name: &str,
        model: &str,
        now: SystemTime,
    ) -> Result<u64, SimError> {
        let entry = self.lookup(engine, key, name, now)?;
        if bare_model(&entry.model) != bare_model(model) {
            return Err(SimError::bad_request(
                D,
                format!(
                    "Model used by GenerateContent request (models/{}) and CachedContent ({}) \
                     has to be the same.",
                    bare_model(model),
                    entry.model
                ),
            ));
        }
        Ok(entry.tokens)
    }
}

/// The expiry a create or patch body asks for: `ttl` (a Duration string) or `expireTime`
/// (RFC 3339), which are a oneof; `None` when neither is set.
fn requested_expiry(body: &Value, now: SystemTime) -> Result<Option<SystemTime>, SimError> {
    match (field(body, "ttl"), field(body, "expireTime")) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(SimError::bad_request(
            D,
            "only one of ttl and expireTime may be set",
        )),
        (Some(ttl), None) => ttl
            .as_str()
            .and_then(parse_duration)
            .map(|ttl| Some(now + ttl))
            .ok_or_else(|| {
                SimError::bad_request(D, format!("invalid ttl {ttl}: expected e.g. \"300s\""))
            }),
        (None, Some(at)) => at
            .as_str()
            .and_then(parse_rfc3339)
            .map(Some)
            .ok_or_else(|| {
                SimError::bad_request(D, format!("invalid expireTime {at}: expected RFC 3339"))
            }),
    }
}

pub(super) async fn create(
    State(ctx): State<Ctx>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, SimError> {
    let req = parse_object(D, &body)?;
    let model = format!("models/{}", bare_model(require_str(D, &req, "model")?));
    let now = ctx.sim.now();
    let expire_time = requested_expiry(&req, now)?.unwrap_or(now + DEFAULT_TTL);
    let seq = ctx.sim.next_id();
    let tokens = SimPrompt::build(prompt_parts(&req)).tokens();
    let min = ctx
        .sim
        .engine
        .gemini_min_cache_tokens(bare_model(&model), now);
    if tokens < min {
        // The API's own wording for a cache below the model's minimum.
        return Err(SimError::bad_request(
            D,
            format!(
                "Cached content is too small. total_token_count={tokens}, \
                 min_total_token_count={min}"
            ),
        ));
    }
    ctx.sim
        .engine
        .gemini_cache_created(&caller.key, bare_model(&model), tokens, now);
    let entry = Entry {
        seq,
        owner: caller.key,
        name: format!("cachedContents/sim-cache-{seq}"),
        model,
        display_name: field(&req, "displayName").cloned(),
        tokens,
        create_time: now,
        update_time: now,
        expire_time,
    };
    let out = entry.json();
    let mut store = ctx.caches();
    store.drop_expired(&ctx.sim.engine, now);
    store.entries.insert(entry.name.clone(), entry);
    Ok(ok_json(&out))
}

/// `GET cachedContents?pageSize=&pageToken=`: the caller's live entries in creation order; the
/// page token is the offset of the next page.
pub(super) async fn list(State(ctx): State<Ctx>, caller: Caller) -> Result<Response, SimError> {
    let size = match caller.query.get("pageSize") {
        None => DEFAULT_PAGE,
        Some(raw) => match raw.parse::<usize>() {
            Ok(0) => DEFAULT_PAGE,
            Ok(n) => n.min(MAX_PAGE),
            Err(_) => return Err(SimError::bad_request(D, format!("invalid pageSize {raw}"))),
        },
    };
    let offset = match caller.query.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| SimError::bad_request(D, format!("invalid pageToken {raw}")))?,
    };
    let now = ctx.sim.now();
    let store = ctx.caches();
    let mut mine: Vec<&Entry> = store
        .entries
        .values()
        .filter(|e| e.owner == caller.key && e.expire_time > now)
        .collect();
    mine.sort_by_key(|e| e.seq);
    let page: Vec<Value> = mine
        .iter()
        .skip(offset)
        .take(size)
        .map(|e| e.json())
        .collect();
    let mut out = json!({"cachedContents": page});
    if offset + size < mine.len() {
        out["nextPageToken"] = json!((offset + size).to_string());
    }
    Ok(ok_json(&out))
}

pub(super) async fn get(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, SimError> {
    let now = ctx.sim.now();
    let mut store = ctx.caches();
    let entry = store.lookup(&ctx.sim.engine, &caller.key, &id, now)?;
    Ok(ok_json(&entry.json()))
}

/// Only the expiry is updatable; other fields in the body are ignored, as `updateMask` limits.
pub(super) async fn patch(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, SimError> {
    let req = parse_object(D, &body)?;
    let now = ctx.sim.now();
    let expire_time = requested_expiry(&req, now)?
        .ok_or_else(|| SimError::bad_request(D, "set ttl or expireTime to update"))?;
    let mut store = ctx.caches();
    let entry = store.lookup(&ctx.sim.engine, &caller.key, &id, now)?;
    entry.expire_time = expire_time;
    entry.update_time = now;
    Ok(ok_json(&entry.json()))
}

pub(super) async fn delete(
    State(ctx): State<Ctx>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, SimError> {
    let now = ctx.sim.now();
    let mut store = ctx.caches();
    let name = store
        .lookup(&ctx.sim.engine, &caller.key, &id, now)?
        .name
        .clone();
    store.end(&ctx.sim.engine, &name, now);
    Ok(ok_json(&json!({})))
}
