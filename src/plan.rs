//! The cache plan of one request: its tenant, its prefix marks for the registry, the reusable
//! prefix (`x-cachet-prefix`), and what the registry predicts the provider will read.
//!
//! The per-provider strategies (breakpoints, cache keys, cached contents, replica choice) build
//! on this plan; until they exist the plan places nothing and only describes the request.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::time::Duration;

use crate::config::ProviderKind;
use crate::prefix::{Boundary, PrefixKey};
use crate::prompt::{Place, Prompt, SegmentKind};
use crate::registry::{Mark, Outcome, Registry, Report};
use crate::tenant::Tenant;
use crate::usage::Usage;

/// Which way the planner went for a request (`cachet_plan_branch_total{branch}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Branch {
    /// Breakpoints added.
    CacheControl,
    /// A `prompt_cache_key` added.
    PromptCacheKey,
    /// The client sent its own `prompt_cache_key`.
    ClientCacheKey,
    /// The client's markers fill every slot.
    ClientMarkers,
    /// A live Gemini cached content referenced.
    CachedContent,
    /// A Gemini cached content created for the request.
    CachedContentCreate,
    /// The client references its own cached content.
    ClientCachedContent,
    /// Nothing likely to come back in time, or below the minimum.
    NoCandidate,
    /// `x-cachet-rewrite: off`.
    RewriteOff,
    /// The upstream's `strategies` leave it out.
    StrategyOff,
    /// No strategy for this provider and route yet.
    Unplanned,
    /// Replica pools (counted besides the cache plan's branch: a second decision): the
    /// replica predicted to hold the longest prefix, within the load bound and worth its load.
    ReplicaAffinity,
    /// No replica holds any of the prefix: the least loaded.
    ReplicaCold,
    /// The replicas holding the longest prefix are over the load bound, or too busy for what
    /// they hold (a head every replica may hold): the best of the rest.
    ReplicaOverloaded,
    /// `replica_affinity` switched off: least loaded, round-robin among equals.
    ReplicaBalanced,
}

impl Branch {
    /// Every branch: the values `cachet_plan_branch_total{branch}` can take, as its description
    /// tells operators.
    pub const ALL: [Branch; 15] = [
        Branch::CacheControl,
        Branch::PromptCacheKey,
        Branch::ClientCacheKey,
        Branch::ClientMarkers,
        Branch::CachedContent,
        Branch::CachedContentCreate,
        Branch::ClientCachedContent,
        Branch::NoCandidate,
        Branch::RewriteOff,
        Branch::StrategyOff,
        Branch::Unplanned,
        Branch::ReplicaAffinity,
        Branch::ReplicaCold,
        Branch::ReplicaOverloaded,
        Branch::ReplicaBalanced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Branch::CacheControl => "cache_control",
            Branch::PromptCacheKey => "prompt_cache_key",
            Branch::ClientCacheKey => "client_cache_key",
            Branch::ClientMarkers => "client_markers",
            Branch::CachedContent => "cached_content",
            Branch::CachedContentCreate => "cached_content_create",
            Branch::ClientCachedContent => "client_cached_content",
            Branch::NoCandidate => "no_candidate",
            Branch::RewriteOff => "rewrite_off",
            Branch::StrategyOff => "strategy_off",
            Branch::Unplanned => "unplanned",
            Branch::ReplicaAffinity => "replica_affinity",
            Branch::ReplicaCold => "replica_cold",
            Branch::ReplicaOverloaded => "replica_overloaded",
            Branch::ReplicaBalanced => "replica_balanced",
        }
    }
}

/// Lifetime of an Anthropic cache entry, as a `cache_control` marker asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    FiveMinutes,
    OneHour,
}

#[derive(Clone, Debug)]
pub struct CachePlan {
    pub tenant: Tenant,
    pub provider: ProviderKind,
    /// The request's prefixes at segment ends, shortest first (estimated tokens).
    pub marks: Vec<Mark>,
    /// The longest prefix a later request can share: everything up to the trailing question
    /// of the last message.
    pub reusable: Option<Mark>,
}

impl CachePlan {
    /// Plans a request from its prompt's boundaries (`prefix::keys`). `question_max_tokens`
    /// tells a trailing question from context, as the rewrite does.
    pub fn new(
        tenant: Tenant,
        provider: ProviderKind,
        prompt: &Prompt<'_>,
        boundaries: &[Boundary],
        question_max_tokens: u64,
    ) -> Self {
        let marks: Vec<Mark> = boundaries
            .iter()
            .filter(|b| b.segment_end)
            .map(|b| Mark {
                key: b.key,
                tokens: b.tokens,
            })
            .collect();
        let first_question = trailing_question(prompt, boundaries, question_max_tokens);
        let reusable = boundaries
            .iter()
            .rfind(|b| b.segment_end && b.segment < first_question)
            .map(|b| Mark {
                key: b.key,
                tokens: b.tokens,
            });
        CachePlan {
            tenant,
            provider,
            marks,
            reusable,
        }
    }

    pub fn reusable_key(&self) -> Option<PrefixKey> {
        self.reusable.map(|m| m.key)
    }

    /// Tells the registry what the provider reported for this request.
    pub fn observe(&self, registry: &dyn Registry, usage: &Usage) -> Outcome {
        let report = Report {
            input_total: usage.input_total(),
            cache_read: usage.cache_read,
            cache_write: match self.provider {
                // Anthropic writes only at breakpoints: what it wrote is all it holds.
                ProviderKind::Anthropic => Some(usage.cache_write()),
                // The automatic caches keep the prompt they have just processed.
                ProviderKind::Openai
                | ProviderKind::Deepseek
                | ProviderKind::Gemini
                | ProviderKind::OpenaiCompatible => None,
            },
            retention: retention(self.provider),
        };
        registry.observe(&self.tenant, &self.marks, report)
    }
}

/// How long a provider keeps a prefix after its last use (providers.md): Anthropic's default
/// 5m TTL; OpenAI's 5–10 minutes of inactivity (the lower figure: beliefs should err short);
/// DeepSeek's "a few hours"; Gemini's implicit caching and vLLM publish none.
pub fn retention(provider: ProviderKind) -> Duration {
    match provider {
        ProviderKind::Anthropic | ProviderKind::Openai => Duration::from_secs(300),
        ProviderKind::Deepseek => Duration::from_secs(3 * 3600),
        ProviderKind::Gemini | ProviderKind::OpenaiCompatible => Duration::from_secs(300),
    }
}

/// Index of the first segment of the last message's trailing question: the run of short text
/// parts that ends the prompt (none when the prompt ends in context or the last message is not
/// the user's).
fn trailing_question(
    prompt: &Prompt<'_>,
    boundaries: &[Boundary],
    question_max_tokens: u64,
) -> usize {
    let segments = &prompt.segments;
    let Some(last) = segments.last() else {
        return 0;
    };
    let Place::Message {
        index: last_message,
        ..
    } = last.place
    else {
        return segments.len();
    };
    let tokens_of = |i: usize| -> u64 {
        let end = boundaries
            .iter()
            .filter(|b| b.segment == i)
            .map(|b| b.tokens)
            .max()
            .unwrap_or(0);
        let start = boundaries
            .iter()
            .filter(|b| b.segment < i)
            .map(|b| b.tokens)
            .max()
            .unwrap_or(0);
        end.saturating_sub(start)
    };
    let mut first = segments.len();
    for i in (0..segments.len()).rev() {
        let segment = &segments[i];
        let in_last =
            matches!(segment.place, Place::Message { index, .. } if index == last_message);
        let is_user = segment.role.is_none_or(|r| r == "user");
        if !in_last
            || !is_user
            || segment.kind != SegmentKind::Text
            || tokens_of(i) > question_max_tokens
        {
            break;
        }
        first = i;
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Endpoint;
    use crate::prefix::keys;
    use crate::tenant::{Credential, TenantSecret};
    use serde_json::json;

    fn plan_of(body: &serde_json::Value) -> (CachePlan, Vec<Boundary>) {
        let prompt = crate::prompt::prompt(&Endpoint::AnthropicMessages, body).unwrap();
        let tenant = Tenant::of(
            &TenantSecret::from_bytes([1; 32]),
            "anthropic",
            &Credential::default(),
        );
        let boundaries = keys(&prompt, &tenant);
        let plan = CachePlan::new(tenant, ProviderKind::Anthropic, &prompt, &boundaries, 256);
        (plan, boundaries)
    }

    #[test]
    fn the_reusable_prefix_stops_before_the_trailing_question() {
        let doc = "A long document about many things. ".repeat(200);
        let body = json!({"model": "m", "system": "Answer briefly.", "messages": [
            {"role": "user", "content": [{"type": "text", "text": doc}, {"type": "text", "text": "What is it?"}]}]});
        let (plan, boundaries) = plan_of(&body);
        let doc_end = boundaries
            .iter()
            .rfind(|b| b.segment == 1 && b.segment_end)
            .unwrap();
        assert_eq!(plan.reusable.unwrap().key, doc_end.key);
        assert_eq!(plan.marks.len(), 3, "system, document, question");
        // The same document with another question shares the reusable prefix.
        let other = json!({"model": "m", "system": "Answer briefly.", "messages": [
            {"role": "user", "content": [{"type": "text", "text": doc}, {"type": "text", "text": "Who wrote it?"}]}]});
        assert_eq!(plan_of(&other).0.reusable_key(), plan.reusable_key());
    }

    #[test]
    fn a_prompt_ending_in_context_is_reusable_to_its_end() {
        let doc = "A long document about many things. ".repeat(200);
        let body = json!({"model": "m", "messages": [{"role": "user", "content": doc}]});
        let (plan, boundaries) = plan_of(&body);
        assert_eq!(plan.reusable.unwrap().key, boundaries.last().unwrap().key);
    }

    #[test]
    fn a_lone_question_has_nothing_reusable() {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "Hi?"}]});
        assert!(plan_of(&body).0.reusable.is_none());
    }
}
