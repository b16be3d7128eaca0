use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_load_and_name_the_three_default_upstreams() {
    let c = Config::load_from(None, env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
    assert_eq!(c.shutdown.grace, Duration::from_secs(30));
    assert!(c.usage.inject_include_usage);
    let names: Vec<_> = c
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.mount.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("openai", "/openai"),
            ("anthropic", "/anthropic"),
            ("gemini", "/gemini")
        ]
    );
    assert_eq!(
        c.upstream("gemini").unwrap().base_url.as_str(),
        "https://generativelanguage.googleapis.com/"
    );
    assert_eq!(c.upstream("openai").unwrap().provider, ProviderKind::Openai);
}

#[test]
fn file_upstreams_merge_by_name_and_add_new_ones() {
    let file = r#"
listen = "0.0.0.0:9000"
[[upstreams]]
name = "openai"
base_url = "http://127.0.0.1:1/openai"
[[upstreams]]
name = "deepseek"
provider = "deepseek"
base_url = "https://api.deepseek.com"
[[upstreams]]
name = "pool"
provider = "openai-compatible"
base_url = "http://127.0.0.1:2/vllm/0/"
mount = "/vllm"
"#;
    let c = Config::load_from(Some(file), env(&[])).unwrap();
    assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.upstreams.len(), 5);
    let openai = c.upstream("openai").unwrap();
    assert_eq!(openai.base_url.as_str(), "http://127.0.0.1:1/openai");
    assert_eq!(
        openai.provider,
        ProviderKind::Openai,
        "provider kept from the defaults"
    );
    assert_eq!(openai.mount, "/openai");
    assert_eq!(c.upstream("deepseek").unwrap().mount, "/deepseek");
    let pool = c.upstream("pool").unwrap();
    assert_eq!(pool.provider, ProviderKind::OpenaiCompatible);
    assert_eq!(
        pool.base_url.as_str(),
        "http://127.0.0.1:2/vllm/0",
        "trailing slash dropped"
    );
    assert_eq!(pool.mount, "/vllm");
}

#[test]
fn environment_overrides_sections_and_upstreams_by_name() {
    let c = Config::load_from(
        None,
        env(&[
            ("CACHET_LISTEN", "127.0.0.1:7000"),
            ("CACHET_LIMITS__MAX_BODY_BYTES", "1024"),
            ("CACHET_USAGE__INJECT_INCLUDE_USAGE", "false"),
            ("CACHET_ADMIN__TOKEN", "12345"),
            (
                "CACHET_UPSTREAMS__ANTHROPIC__BASE_URL",
                "http://127.0.0.1:5/anthropic",
            ),
            (
                "CACHET_UPSTREAMS__DEEPSEEK__BASE_URL",
                "http://127.0.0.1:5/deepseek",
            ),
            ("CACHET_CONFIG", "ignored.toml"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(c.limits.max_body_bytes, 1024);
    assert!(!c.usage.inject_include_usage);
    assert_eq!(
        c.admin.token.as_deref(),
        Some("12345"),
        "a token stays a string"
    );
    assert_eq!(
        c.upstream("anthropic").unwrap().base_url.as_str(),
        "http://127.0.0.1:5/anthropic"
    );
    let ds = c.upstream("deepseek").unwrap();
    assert_eq!(
        ds.provider,
        ProviderKind::Deepseek,
        "provider inferred from the name"
    );
    assert_eq!(ds.mount, "/deepseek");
}

#[test]
fn validation_reports_every_problem_with_its_dotted_path() {
    let file = r#"
listen = "nowhere"
bogus = 1
[limits]
max_body_bytes = 0
[timeouts]
connect = "soon"
first_byte = "0s"
[[upstreams]]
name = "openai"
base_url = "ftp://example.com"
[[upstreams]]
name = "Local"
provider = "openai-compatible"
base_url = "http://127.0.0.1:1"
mount = "/metrics"
[[upstreams]]
name = "other"
provider = "martian"
base_url = "http://127.0.0.1:1"
[[upstreams]]
name = "nameless-provider"
base_url = "http://127.0.0.1:1"
"#;
    let err = Config::load_from(Some(file), env(&[("CACHET_LIMITS__MAX_BODY", "1")])).unwrap_err();
    let text = err.to_string();
    for needle in [
        "listen:",
        "bogus: unknown key",
        "limits.max_body: unknown field",
        "timeouts.connect:",
        "upstreams.openai.base_url:",
        "upstreams.other.provider:",
        "upstreams.nameless-provider.provider: missing",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    // Semantic checks run once the types parse; check them with a type-correct file.
    let file = r#"
[limits]
max_body_bytes = 0
[timeouts]
first_byte = "0s"
[[upstreams]]
name = "Local"
provider = "openai-compatible"
base_url = "http://127.0.0.1:1"
mount = "/metrics"
[[upstreams]]
name = "dup"
provider = "openai"
base_url = "http://127.0.0.1:1"
mount = "/openai"
"#;
    let err = Config::load_from(Some(file), env(&[])).unwrap_err();
    let text = err.to_string();
    for needle in [
        "limits.max_body_bytes: must be at least 1",
        "timeouts.first_byte: must be greater than 0s",
        "upstreams.Local.name:",
        "upstreams.Local.mount: /metrics is served by cachet itself",
        "upstreams.dup.mount: /openai is used by another upstream",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(err.0.len(), 5, "{text}");
}

#[test]
fn the_shipped_file_equals_the_built_in_defaults() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/cachet.toml"))
            .unwrap();
    assert_eq!(shipped, DEFAULTS);
    let a = Config::load_from(Some(&shipped), env(&[])).unwrap();
    assert_eq!(
        a.upstreams.len(),
        3,
        "loading the defaults over themselves changes nothing"
    );
}

#[test]
fn variables_that_name_no_setting_are_ignored_with_a_warning() {
    let c = Config::load_from(
        None,
        env(&[
            ("CACHET_BIN", "target/debug/cachet"),
            ("CACHET_SDK_LOG_DIR", "/tmp/x"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.warnings,
        [
            "CACHET_BIN: not a cachet setting, ignored",
            "CACHET_SDK_LOG_DIR: not a cachet setting, ignored"
        ]
    );
}

#[test]
fn a_section_that_fails_to_parse_does_not_hide_problems_elsewhere() {
    let err = Config::load_from(
        None,
        env(&[
            ("CACHET_LIMITS__MAX_BODY_BYTES", "abc"),
            ("CACHET_TIMEOUTS__CONNECT", "0s"),
            ("CACHET_UPSTREAMS__X__BASE_URL", "nope"),
        ]),
    )
    .unwrap_err();
    assert_eq!(
        err.0,
        [
            "limits.max_body_bytes: invalid type: string \"abc\", expected usize",
            "upstreams.x.base_url: \"nope\": relative URL without a base",
            "upstreams.x.provider: missing (anthropic, openai, gemini, deepseek, openai-compatible)",
            "timeouts.connect: must be greater than 0s",
        ]
    );
}

#[test]
fn rewrite_defaults_and_overrides() {
    let config = Config::load_from(None, env(&[])).unwrap();
    assert!(config.rewrite.question_last);
    assert_eq!(config.rewrite.question_max_tokens, 256);
    assert_eq!(config.rewrite.context_min_tokens, 1024);
    assert!(!config.rewrite.stable_tools && !config.rewrite.ground_question);
    assert_eq!(
        config.rewrite.ground_sentence,
        "Based on the information above, answer: "
    );
    assert!(!config.log.excerpts);
    let config = Config::load_from(
        Some("[rewrite]\nstable_tools = true\n"),
        env(&[
            ("CACHET_REWRITE__QUESTION_LAST", "false"),
            ("CACHET_LOG__EXCERPTS", "true"),
        ]),
    )
    .unwrap();
    assert!(!config.rewrite.question_last && config.rewrite.stable_tools);
    assert!(config.log.excerpts);
    let err = Config::load_from(
        Some("[rewrite]\nquestion_max_tokens = \"many\"\n"),
        env(&[]),
    )
    .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|e| e.starts_with("rewrite.question_max_tokens")),
        "{err}"
    );
}

#[test]
fn strategies_default_to_all_and_can_be_switched_off() {
    use crate::config::Strategy;
    let config = Config::load_from(None, env(&[])).unwrap();
    let anthropic = config.upstream("anthropic").unwrap();
    assert!(Strategy::ALL.iter().all(|s| anthropic.allows(*s)));
    let config = Config::load_from(
        Some("[[upstreams]]\nname = \"anthropic\"\nstrategies = [\"prompt_cache_key\"]\n"),
        env(&[]),
    )
    .unwrap();
    let anthropic = config.upstream("anthropic").unwrap();
    assert!(!anthropic.allows(Strategy::CacheControl));
    assert!(anthropic.allows(Strategy::PromptCacheKey));
    let err = Config::load_from(
        Some("[[upstreams]]\nname = \"anthropic\"\nstrategies = [\"magic\"]\n"),
        env(&[]),
    )
    .unwrap_err();
    assert!(
        err.0.iter().any(|e| e.starts_with("upstreams.anthropic")),
        "{err}"
    );
}

#[test]
fn a_pool_of_base_urls_with_its_keys_from_a_file_or_the_environment() {
    let file = r#"
[[upstreams]]
name = "vllm"
provider = "openai-compatible"
base_urls = ["http://10.0.0.1:8000/", "http://10.0.0.2:8000"]
kv_capacity_tokens = 2000000
"#;
    let c = Config::load_from(Some(file), env(&[])).unwrap();
    let u = c.upstream("vllm").unwrap();
    let urls: Vec<&str> = u.base_urls.iter().map(|u| u.as_str()).collect();
    assert_eq!(urls, ["http://10.0.0.1:8000/", "http://10.0.0.2:8000/"]);
    assert_eq!(u.base_url, u.base_urls[0]);
    assert_eq!(u.kv_capacity_tokens, 2_000_000);
    assert_eq!(u.load_epsilon, 0.25, "documented default");
    // A single base URL is no pool; the defaults' upstreams have the documented pool keys.
    let openai = c.upstream("openai").unwrap();
    assert!(openai.base_urls.is_empty());
    assert_eq!(openai.kv_capacity_tokens, 1_000_000);
    // The environment: lists as commas or TOML, numbers typed, even on a new upstream.
    let c = Config::load_from(
        None,
        env(&[
            ("CACHET_UPSTREAMS__POOL__PROVIDER", "openai-compatible"),
            (
                "CACHET_UPSTREAMS__POOL__BASE_URLS",
                "http://a:1, http://b:2,http://c:3",
            ),
            ("CACHET_UPSTREAMS__POOL__KV_CAPACITY_TOKENS", "4096"),
            ("CACHET_UPSTREAMS__POOL__LOAD_EPSILON", "0.5"),
            ("CACHET_UPSTREAMS__POOL__STRATEGIES", ""),
            (
                "CACHET_UPSTREAMS__OPENAI__STRATEGIES",
                r#"["prompt_cache_key"]"#,
            ),
        ]),
    )
    .unwrap();
    let pool = c.upstream("pool").unwrap();
    assert_eq!(pool.base_urls.len(), 3);
    assert_eq!(pool.base_url.as_str(), "http://a:1/");
    assert_eq!(pool.kv_capacity_tokens, 4096);
    assert_eq!(pool.load_epsilon, 0.5);
    assert!(pool.strategies.is_empty());
    assert_eq!(
        c.upstream("openai").unwrap().strategies,
        [Strategy::PromptCacheKey]
    );
}

#[test]
fn pool_keys_are_checked() {
    let file = r#"
[[upstreams]]
name = "vllm"
provider = "openai-compatible"
base_urls = ["http://ok:1", "ftp://bad"]
kv_capacity_tokens = 0
load_epsilon = -1.0

[[upstreams]]
name = "nothing"
provider = "openai-compatible"
"#;
    let errors = Config::load_from(Some(file), env(&[])).unwrap_err().0;
    let has = |needle: &str| errors.iter().any(|e| e.starts_with(needle));
    assert!(
        has("upstreams.vllm.base_urls[1]: \"ftp://bad\""),
        "{errors:?}"
    );
    assert!(has("upstreams.nothing.base_url: missing"), "{errors:?}");
    let file = file.replace("\"ftp://bad\"", "\"http://ok:2\"");
    let errors = Config::load_from(Some(&file), env(&[])).unwrap_err().0;
    assert!(
        errors.contains(&"upstreams.vllm.kv_capacity_tokens: must be at least 1".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("upstreams.vllm.load_epsilon: ")),
        "{errors:?}"
    );
}
