//! Properties every built-in workload keeps, and their pinned digests.

use std::sync::OnceLock;

use super::*;

/// Each built-in generated once per test binary (Ci scale): generating is the slow part.
pub(super) fn generated(name: &str) -> &'static [Workload] {
    static CACHE: [OnceLock<Vec<Workload>>; BUILT_IN.len()] = [const { OnceLock::new() }; 6];
    let i = BUILT_IN.iter().position(|n| *n == name).unwrap();
    CACHE[i].get_or_init(|| built_in(name, Scale::Ci).unwrap())
}

/// (workload, upstream, requests, digest). A change here changes what every benchmark measured:
/// only update it on purpose, and say so in the commit.
const PINNED: [(&str, &str, usize, &str); 19] = [
    (
        "docqa",
        "anthropic",
        24,
        "961e64f968b62942afc64d43c8424b2953f8c816691ad2cd0e14a3a66d5edec6",
    ),
    (
        "docqa",
        "openai",
        24,
        "5adbb820a0a08d27530e83a68d21947780b230976ce1712c13c3afedfddd4c4f",
    ),
    (
        "docqa",
        "gemini",
        24,
        "a7a7a140bb7d4c5dbaa4f88f42da7d79eded49616c408fb2fdbb5d75c9abf5a5",
    ),
    (
        "docqa",
        "deepseek",
        24,
        "3b2a0812e0743680613d816ed0abaab83780da74bec3d5d355cf877de032b60a",
    ),
    (
        "chat",
        "anthropic",
        72,
        "94e1310fbac0b33661fa1db744012a75facc7ed6d20370fad86dbfc127ee165b",
    ),
    (
        "chat",
        "openai",
        72,
        "228f7adb303aa41915639138b4f602ca0de05e05f512a5aa8e62d719726a9886",
    ),
    (
        "chat",
        "gemini",
        72,
        "224cf2f56f223b47218b72d609b9ab521005c8958b006d5f0a61614023bd47cd",
    ),
    (
        "chat",
        "deepseek",
        72,
        "b6f0f290acdea535f67894af7f525c7d9dfd51b419cf1046f9dd8ada9f64c1f3",
    ),
    (
        "agent",
        "anthropic",
        120,
        "2d66173715416cbd77de607b8b9321a31ae461aad23b3d6eab5772d4046bf70c",
    ),
    (
        "agent",
        "openai",
        120,
        "68fb0f9173e4e35235109eaa633102c74d468d21e24e9c008f82b595bdfea407",
    ),
    (
        "agent",
        "gemini",
        120,
        "926f987c7cb1d4def96149663f1cf460140d532a12d2a4868ca9c97bb7779f00",
    ),
    (
        "rag",
        "anthropic",
        200,
        "001f6d7727bda161146a67273c434b1445a95df7aada8dbdab1873dd96360497",
    ),
    (
        "rag",
        "openai",
        200,
        "ad1923fdd04900ad12019a5183e8534a4e1261369cb407a081314e98232150e7",
    ),
    (
        "rag",
        "gemini",
        200,
        "6b6a7e58a584d7865e67567a2f5179786a7f04d92c49b00276e2f398f9fbb2c8",
    ),
    (
        "rag",
        "deepseek",
        200,
        "5cca6842c3dcd1b3799372b5a18d6bc9634fccd91ff81458f0fa62e9e411d306",
    ),
    (
        "volatile",
        "anthropic",
        40,
        "d57af3b9332152f487fa8a4a5eb716c0683c5d41852811ae47d0b34a41d683c5",
    ),
    (
        "volatile",
        "openai",
        40,
        "deb8cf9dd46b47ed5ace5884e9d55cba706ac28bae25b68f4f0efaac737c3bd5",
    ),
    (
        "volatile",
        "gemini",
        40,
        "cf0256427386db9e305f8822ca941b7a1844fa946bd9207f3a58bcfc453ced42",
    ),
    (
        "mooncake",
        "vllm",
        500,
        "aa66b516d0f19a75c67e2cfd41248e3d67f8de1010ca03189efe0a185cfd4e7e",
    ),
];

#[test]
fn digests_are_pinned() {
    let mut actual = Vec::new();
    for name in BUILT_IN {
        for workload in generated(name) {
            actual.push((
                name,
                workload.provider.upstream(),
                workload.requests.len(),
                workload.digest(),
            ));
        }
    }
    // Printed in PINNED's form, for a deliberate update.
    for (name, upstream, count, digest) in &actual {
        println!("    ({name:?}, {upstream:?}, {count}, {digest:?}),");
    }
    let pinned: Vec<(&str, &str, usize, String)> = PINNED
        .iter()
        .map(|&(n, u, c, d)| (n, u, c, d.to_owned()))
        .collect();
    assert_eq!(actual, pinned);
}

#[test]
fn generating_again_gives_the_same_digests() {
    for name in BUILT_IN {
        let again = built_in(name, Scale::Ci).unwrap();
        let first = generated(name);
        assert_eq!(again.len(), first.len());
        for (a, b) in again.iter().zip(first) {
            assert_eq!(a.digest(), b.digest(), "{name}");
        }
    }
}

#[test]
fn digest_covers_every_field() {
    let base = generated("volatile")[0].clone();
    let digest = base.digest();
    let mut changed = Vec::new();
    let mut edit = |f: &dyn Fn(&mut Workload)| {
        let mut w = base.clone();
        f(&mut w);
        changed.push(w.digest());
    };
    edit(&|w| w.requests[3].t += 0.001);
    edit(&|w| w.requests[3].upstream.push('x'));
    edit(&|w| w.requests[3].path.push('x'));
    edit(&|w| w.requests[3].headers[0].1.push('x'));
    edit(&|w| w.requests[3].body["max_tokens"] = 301.into());
    edit(&|w| w.context_first = Some(w.requests.clone()));
    assert!(changed.iter().all(|d| *d != digest && d.len() == 64));
    let mut labels = base.clone();
    labels.name = "other".into();
    assert_eq!(labels.digest(), digest);
}

#[test]
fn timelines_start_at_zero_and_are_sorted() {
    for name in BUILT_IN {
        for workload in generated(name) {
            let t: Vec<f64> = workload.requests.iter().map(|r| r.t).collect();
            assert_eq!(t[0], 0.0, "{name}");
            assert!(t.windows(2).all(|w| w[0] <= w[1]), "{name}");
            if let Some(twins) = &workload.context_first {
                let twin_t: Vec<f64> = twins.iter().map(|r| r.t).collect();
                assert_eq!(twin_t, t, "{name}");
            }
        }
    }
}

#[test]
fn requests_carry_the_workload_key_model_and_no_cache_markers() {
    for name in BUILT_IN {
        for workload in generated(name) {
            assert_eq!(workload.name, name);
            assert_eq!(workload.model, workload.provider.model());
            for request in &workload.requests {
                assert_eq!(request.upstream, workload.provider.upstream());
                let key = format!("sk-replay-{name}");
                assert!(request.headers.iter().any(|(_, v)| v.ends_with(&key)));
                let model = request.body.get("model").and_then(Value::as_str);
                let in_path = request
                    .path
                    .contains(&format!("models/{}:", workload.model));
                assert!(model == Some(workload.model.as_str()) || in_path);
            }
            // Checked on the last request only: the others are prefixes of it or alike.
            let last = workload.requests.last().unwrap().body.to_string();
            assert!(!last.contains("cache_control"), "{name}");
        }
    }
}

#[test]
fn only_docqa_has_a_context_first_layout() {
    for name in BUILT_IN {
        for workload in generated(name) {
            assert_eq!(workload.context_first.is_some(), name == "docqa", "{name}");
        }
    }
}

#[test]
fn unknown_names_list_the_built_ins() {
    let err = built_in("nope", Scale::Ci).unwrap_err();
    assert!(
        err.contains("docqa, chat, agent, rag, volatile, mooncake"),
        "{err}"
    );
}

#[test]
fn providers_round_trip_their_upstream_names() {
    for provider in Provider::ALL {
        assert_eq!(Provider::from_upstream(provider.upstream()), Some(provider));
    }
    assert_eq!(Provider::from_upstream("azure"), None);
}
