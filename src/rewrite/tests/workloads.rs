//! The built-in workloads know, by construction, what the question-after-context rewrite must
//! send (`context_first`): rewriting each request must give exactly that, byte for byte, and
//! leave the workloads without a twin exactly as they are.

use http::Method;

use super::config;
use crate::config::ProviderKind;
use crate::dialect::classify;
use crate::replay::workload::{BUILT_IN, Provider, Scale, Workload, built_in};
use crate::rewrite::rewrite;

/// `mooncake`'s requests are long and alike (text parts of 512 words): a few suffice.
const MOONCAKE_REQUESTS: usize = 50;

fn kind(provider: Provider) -> ProviderKind {
    match provider {
        Provider::Anthropic => ProviderKind::Anthropic,
        Provider::OpenAi => ProviderKind::Openai,
        Provider::Gemini => ProviderKind::Gemini,
        Provider::DeepSeek => ProviderKind::Deepseek,
        Provider::Vllm => ProviderKind::OpenaiCompatible,
    }
}

fn check(workload: &Workload, limit: usize) {
    let config = config();
    let mut changed = 0;
    for (i, request) in workload.requests.iter().take(limit).enumerate() {
        let at = format!("{} {:?} request {i}", workload.name, workload.provider);
        let endpoint = classify(kind(workload.provider), &Method::POST, &request.path).unwrap();
        let twin = workload
            .context_first
            .as_ref()
            .map_or(&request.body, |twins| &twins[i].body);
        let mut body = request.body.clone();
        let applied = rewrite(&endpoint, &mut body, &config);
        assert_eq!(body.to_string(), twin.to_string(), "{at}");
        assert_eq!(
            applied.is_empty(),
            body == request.body,
            "{at}: {applied:?}"
        );
        changed += usize::from(!applied.is_empty());
        let mut again = twin.clone();
        assert!(
            rewrite(&endpoint, &mut again, &config).is_empty(),
            "{at}: twin rewritten"
        );
    }
    let twins = workload.context_first.is_some();
    assert_eq!(
        changed > 0,
        twins,
        "{} {:?}",
        workload.name,
        workload.provider
    );
}

#[test]
fn each_request_rewrites_to_its_context_first_twin() {
    for name in BUILT_IN.into_iter().filter(|name| *name != "mooncake") {
        for workload in built_in(name, Scale::Ci).unwrap() {
            check(&workload, usize::MAX);
        }
    }
}

#[test]
fn mooncake_requests_are_left_as_sent() {
    for workload in built_in("mooncake", Scale::Ci).unwrap() {
        check(&workload, MOONCAKE_REQUESTS);
    }
}
