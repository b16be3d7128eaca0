//! Configuration: built-in defaults → file → environment → command line, then validation.
//!
//! The defaults are `config/cachet.toml` itself (compiled in), so the documented file and the
//! behaviour cannot drift apart. Layers are merged as TOML trees; `[[upstreams]]` merge by
//! `name`. The merged tree is then read section by section so that every problem is reported
//! at once, each with its dotted path, instead of stopping at the first.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// The documented defaults, compiled in.
pub const DEFAULTS: &str = include_str!("../config/cachet.toml");
const DEFAULT_PATH: &str = "config/cachet.toml";
/// Pool defaults, as `config/cachet.toml` documents them (pool keys sit on upstreams, which
/// have no defaults section to hold them).
const DEFAULT_KV_CAPACITY_TOKENS: u64 = 1_000_000;
const DEFAULT_LOAD_EPSILON: f64 = 0.25;
/// Paths the proxy serves itself; a mount may not shadow them.
const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/dashboard", "/api"];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Serving threads; 0 = one per core.
    pub workers: usize,
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub shutdown: Shutdown,
    pub usage: UsageConfig,
    pub coalesce: CoalesceConfig,
    pub ledger: LedgerConfig,
    pub rewrite: RewriteConfig,
    pub registry: RegistryConfig,
    pub log: LogConfig,
    pub admin: Admin,
    pub pricing: PricingConfig,
    pub upstreams: Vec<Upstream>,
    /// cachet keys: what clients present to upstreams with `api_key_env`.
    pub keys: Vec<CachetKey>,
    /// Things worth telling the operator that do not stop the start (ignored variables).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(with = "duration")]
    pub connect: Duration,
    #[serde(with = "duration")]
    pub first_byte: Duration,
    #[serde(with = "duration")]
    pub idle: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shutdown {
    #[serde(with = "duration")]
    pub drain_delay: Duration,
    #[serde(with = "duration")]
    pub grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    pub inject_include_usage: bool,
}

/// A key cachet hands out to a team (DESIGN.md auth row): clients present it where their SDK
/// puts an API key; the upstream gets the upstream's own key instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachetKey {
    /// SHA-256 of the key: the config never holds the key itself.
    pub sha256: [u8; 32],
    pub team: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    key_sha256: String,
    team: String,
}

/// Where ledger records go (`ledger`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`; empty: no ledger.
    pub url: String,
    /// Records waiting to be written at most; beyond, they are dropped and counted.
    pub queue: usize,
    #[serde(with = "duration")]
    pub flush_interval: Duration,
}

/// Single-flight for cold prefixes (`flight`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalesceConfig {
    #[serde(with = "duration")]
    pub max_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// Redacted excerpts (≤ 40 characters) in miss explanations.
    #[serde(default)]
    pub excerpts: bool,
}

/// `[registry]`: the prefix registry and the tenant secret (DESIGN.md "Registry", "Tenant").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub tenant_secret: String,
    pub data_dir: PathBuf,
    pub max_bytes: u64,
}

/// `[rewrite]`: the request rewrites that make prefixes reusable (DESIGN.md "Question after
/// context").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub question_last: bool,
    pub question_max_tokens: u64,
    pub context_min_tokens: u64,
    pub stable_tools: bool,
    pub ground_question: bool,
    pub ground_sentence: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<SocketAddr>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Empty: the built-in table.
    pub file: String,
}

/// The provider an upstream speaks; decides the dialect of its modelled routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Deepseek,
    OpenaiCompatible,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Deepseek => "deepseek",
            Self::OpenaiCompatible => "openai-compatible",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Value::String(name.to_owned()).try_into().ok()
    }
}

#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// With `api_key_env`: the key cachet sends upstream in place of the client's, which must
    /// then present a cachet key.
    pub api_key: Option<String>,
    pub provider: ProviderKind,
    /// Host root (or simulator mount) without a trailing slash; a pool's first replica.
    pub base_url: Url,
    /// A replica pool (`base_urls`), each like `base_url`; empty for a single base URL.
    pub base_urls: Vec<Url>,
    /// KV cache of each pool replica, in the server's tokens.
    pub kv_capacity_tokens: u64,
    /// A pool replica takes a request while its in-flight count stays within (1 + ε) × the
    /// mean.
    pub load_epsilon: f64,
    /// Path prefix on the proxy, starting with '/', without a trailing slash.
    pub mount: String,
    /// The cache strategies cachet may apply to this upstream's requests (all by default; an
    /// empty list makes cachet transparent apart from the named rewrites).
    pub strategies: Vec<Strategy>,
    /// The upstream takes OpenAI's `prompt_cache_key` (OpenAI itself by default; an
    /// OpenAI-compatible server only when configured so).
    pub accepts_prompt_cache_key: bool,
}

impl Upstream {
    pub fn allows(&self, strategy: Strategy) -> bool {
        self.strategies.contains(&strategy)
    }
}

/// A cache strategy that can be switched off per upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Anthropic `cache_control` breakpoints.
    CacheControl,
    /// OpenAI `prompt_cache_key`.
    PromptCacheKey,
    /// Gemini `cachedContents`.
    CachedContent,
    /// Replica choice by the prefixes each holds.
    ReplicaAffinity,
    /// One write for concurrent requests on a new prefix.
    SingleFlight,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::CacheControl,
        Strategy::PromptCacheKey,
        Strategy::CachedContent,
        Strategy::ReplicaAffinity,
        Strategy::SingleFlight,
    ];
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    api_key_env: Option<String>,
    provider: Option<ProviderKind>,
    base_url: Option<String>,
    base_urls: Option<Vec<String>>,
    kv_capacity_tokens: Option<u64>,
    load_epsilon: Option<f64>,
    mount: Option<String>,
    strategies: Option<Vec<Strategy>>,
    accepts_prompt_cache_key: Option<bool>,
}

/// Every problem found, each as "dotted.path: message".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Loads the process's configuration: `file` (or CACHET_CONFIG, or the default path when it
    /// exists), the process environment, then `listen`.
    pub fn load(file: Option<&Path>, listen: Option<SocketAddr>) -> Result<Self, ConfigErrors> {
        let default_path = PathBuf::from(DEFAULT_PATH);
        let file = file.or_else(|| default_path.exists().then_some(default_path.as_path()));
        let text =
            match file {
                Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                    ConfigErrors(vec![format!("config file {}: {e}", path.display())])
                })?),
                None => None,
            };
        let mut config = Self::load_from(text.as_deref(), std::env::vars())?;
        if let Some(listen) = listen {
            config.listen = listen;
        }
        Ok(config)
    }

    /// Pure loader for tests: an optional TOML text and an explicit environment.
    pub fn load_from(
        file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigErrors> {
        let mut tree = parse_toml(DEFAULTS, "defaults")?;
        if let Some(text) = file {
            merge(&mut tree, parse_toml(text, "config file")?);
        }
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let vars: HashMap<String, String> = env.into_iter().collect();
        apply_env(
            &mut tree,
            vars.iter().map(|(k, v)| (k.clone(), v.clone())),
            &mut errors,
            &mut warnings,
        );
        let config = from_tree(tree, &vars, &mut errors).map(|c| Config { warnings, ..c });
        match config {
            Some(config) if errors.is_empty() => Ok(config),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The team of the cachet key `presented`, if it is one of `[[keys]]`.
    pub fn key_team(&self, presented: &[u8]) -> Option<&str> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(presented).into();
        self.keys
            .iter()
            .find(|k| k.sha256 == digest)
            .map(|k| k.team.as_str())
    }

    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

fn parse_toml(text: &str, what: &str) -> Result<Table, ConfigErrors> {
    text.parse::<Table>()
        .map_err(|e| ConfigErrors(vec![format!("{what}: {}", e.to_string().trim())]))
}

/// Deep-merges `top` into `base`; `upstreams` arrays merge element-wise by `name`.
fn merge(base: &mut Table, top: Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(t)) => merge(b, t),
            (Some(Value::Array(b)), Value::Array(t)) if key == "upstreams" => {
                for item in t {
                    merge_upstream(b, item);
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn merge_upstream(list: &mut Vec<Value>, item: Value) {
    let name = item.get("name").and_then(Value::as_str).map(str::to_owned);
    let existing = name.as_deref().and_then(|name| {
        list.iter_mut()
            .find(|u| u.get("name").and_then(Value::as_str) == Some(name))
    });
    match (existing, item) {
        (Some(Value::Table(base)), Value::Table(top)) => merge(base, top),
        (_, item) => list.push(item),
    }
}

/// Applies `CACHET_SECTION__KEY=value` overrides. A value replaces a string as a string; where
/// the current value is a number or boolean it is parsed as TOML, so `CACHET_X=123` cannot turn
/// a token into an integer.
///
/// A variable whose first part names no setting (`CACHET_BIN`, a script's own variable) is not
/// meant for cachet: it is ignored with a warning rather than stopping the start. Inside a known
/// section an unknown key is still an error, as it is in a file.
fn apply_env(
    tree: &mut Table,
    env: impl IntoIterator<Item = (String, String)>,
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let known: BTreeSet<String> = tree.keys().cloned().collect();
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("CACHET_") && k != "CACHET_CONFIG")
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let path: Vec<String> = key["CACHET_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if !known.contains(&path[0]) {
            warnings.push(format!("{key}: not a cachet setting, ignored"));
            continue;
        }
        if path.iter().any(String::is_empty) {
            errors.push(format!("{key}: malformed variable name"));
            continue;
        }
        let slot = if path[0] == "upstreams" && path.len() == 3 {
            upstream_slot(tree, &path[1], &path[2])
        } else if path[0] == "upstreams" {
            errors.push(format!("{key}: expected CACHET_UPSTREAMS__<NAME>__<KEY>"));
            continue;
        } else {
            table_slot(tree, &path)
        };
        match slot {
            Some((table, leaf)) => {
                let value = typed_env_value(table.get(&leaf), &leaf, &raw);
                table.insert(leaf, value);
            }
            None => errors.push(format!("{key}: {} is not a section", path[0])),
        }
    }
}

fn table_slot<'a>(tree: &'a mut Table, path: &[String]) -> Option<(&'a mut Table, String)> {
    let (leaf, sections) = path.split_last()?;
    let mut table = tree;
    for section in sections {
        table = table
            .entry(section.clone())
            .or_insert_with(|| Value::Table(Table::new()))
            .as_table_mut()?;
    }
    Some((table, leaf.clone()))
}

fn upstream_slot<'a>(
    tree: &'a mut Table,
    name: &str,
    key: &str,
) -> Option<(&'a mut Table, String)> {
    // Env names cannot hold '-', so `MY_LLM` also matches an upstream named `my-llm`.
    let same = |u: &Value| {
        u.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.replace('-', "_").eq_ignore_ascii_case(name))
    };
    let list = tree
        .entry("upstreams")
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()?;
    let index = match list.iter().position(same) {
        Some(index) => index,
        None => {
            let mut fresh = Table::new();
            fresh.insert("name".into(), Value::String(name.to_owned()));
            list.push(Value::Table(fresh));
            list.len() - 1
        }
    };
    Some((list.get_mut(index)?.as_table_mut()?, key.to_owned()))
}

/// Keys that are not strings even where no current value tells (an upstream the environment
/// adds, or a key the defaults leave unset).
const TYPED_KEYS: &[&str] = &[
    "kv_capacity_tokens",
    "load_epsilon",
    "accepts_prompt_cache_key",
];
/// List keys: a TOML array (`["a", "b"]`) or words separated by commas (`a,b`; empty: none).
const LIST_KEYS: &[&str] = &["base_urls", "strategies"];

fn typed_env_value(current: Option<&Value>, leaf: &str, raw: &str) -> Value {
    if LIST_KEYS.contains(&leaf) && !raw.trim_start().starts_with('[') {
        let items = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
        return Value::Array(items.map(|s| Value::String(s.to_owned())).collect());
    }
    let typed = matches!(
        current,
        Some(Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Array(_))
    ) || TYPED_KEYS.contains(&leaf)
        || LIST_KEYS.contains(&leaf);
    if typed && let Ok(mut t) = format!("v = {raw}").parse::<Table>() {
        if let Some(v) = t.remove("v") {
            return v;
        }
    }
    Value::String(raw.to_owned())
}

/// Reads each section on its own so that all type errors surface together.
///
/// A section that fails to parse is replaced by its default for the rest of the checks, so the
/// semantic problems of every other section are reported in the same run.
fn from_tree(
    mut tree: Table,
    vars: &HashMap<String, String>,
    errors: &mut Vec<String>,
) -> Option<Config> {
    let mut defaults = parse_toml(DEFAULTS, "defaults").ok()?;
    let mut section = |key: &str| SectionReader {
        value: tree.remove(key),
        default: defaults.remove(key),
        key: key.to_owned(),
    };
    let workers = section("workers");
    let coalesce = section("coalesce");
    let ledger = section("ledger");
    let (listen, limits, timeouts, shutdown) = (
        section("listen"),
        section("limits"),
        section("timeouts"),
        section("shutdown"),
    );
    let (usage, rewrite, registry, log, admin, pricing) = (
        section("usage"),
        section("rewrite"),
        section("registry"),
        section("log"),
        section("admin"),
        section("pricing"),
    );
    let listen = listen.read::<SocketAddr>(errors);
    let workers = workers.read::<usize>(errors);
    let limits = limits.read::<Limits>(errors);
    let timeouts = timeouts.read::<Timeouts>(errors);
    let shutdown = shutdown.read::<Shutdown>(errors);
    let usage = usage.read::<UsageConfig>(errors);
    let coalesce = coalesce.read::<CoalesceConfig>(errors);
    let ledger = ledger.read::<LedgerConfig>(errors);
    let rewrite = rewrite.read::<RewriteConfig>(errors);
    let registry = registry.read::<RegistryConfig>(errors);
    let log = log.read::<LogConfig>(errors);
    let admin = admin.read::<Admin>(errors);
    let pricing = pricing.read::<PricingConfig>(errors);
    let upstreams = upstreams(tree.remove("upstreams"), vars, errors);
    let keys = keys(tree.remove("keys"), errors);
    for key in tree.keys() {
        errors.push(format!("{key}: unknown key"));
    }
    let config = Config {
        listen: listen?,
        workers: workers?,
        limits: limits?,
        timeouts: timeouts?,
        shutdown: shutdown?,
        usage: usage?,
        coalesce: coalesce?,
        ledger: ledger?,
        rewrite: rewrite?,
        registry: registry?,
        log: log?,
        admin: admin?,
        pricing: pricing?,
        upstreams,
        keys,
        warnings: Vec::new(),
    };
    validate(&config, errors);
    Some(config)
}

struct SectionReader {
    value: Option<Value>,
    default: Option<Value>,
    key: String,
}

impl SectionReader {
    /// The section as given, else (its error recorded) its default.
    fn read<T: DeserializeOwned>(self, errors: &mut Vec<String>) -> Option<T> {
        let value = self.value.unwrap_or_else(|| Value::Table(Table::new()));
        decode(value, &self.key, errors)
            .or_else(|| decode(self.default?, &self.key, &mut Vec::new()))
    }
}

fn decode<T: DeserializeOwned>(value: Value, at: &str, errors: &mut Vec<String>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." || inner.is_empty() {
                at.to_owned()
            } else {
                format!("{at}.{inner}")
            };
            // toml appends "in `key`" on a second line; the path already says where.
            let message = e.inner().to_string();
            let first_line = message.lines().next().unwrap_or_default().trim().to_owned();
            errors.push(format!("{path}: {first_line}"));
            None
        }
    }
}

fn keys(value: Option<Value>, errors: &mut Vec<String>) -> Vec<CachetKey> {
    let items = match value {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push("keys: expected an array of tables ([[keys]])".into());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("keys[{i}]");
        let Some(raw) = decode::<RawKey>(item, &at, errors) else {
            continue;
        };
        let mut sha256 = [0u8; 32];
        let hex = raw.key_sha256.trim();
        let valid = hex.len() == 64
            && hex.is_ascii()
            && (0..32).all(|j| {
                u8::from_str_radix(&hex[2 * j..2 * j + 2], 16)
                    .map(|b| sha256[j] = b)
                    .is_ok()
            });
        if !valid {
            errors.push(format!(
                "{at}.key_sha256: expected 64 hex digits (sha256 of the key)"
            ));
            continue;
        }
        if raw.team.trim().is_empty() {
            errors.push(format!("{at}.team: must not be empty"));
            continue;
        }
        out.push(CachetKey {
            sha256,
            team: raw.team,
        });
    }
    out
}

fn upstreams(
    value: Option<Value>,
    vars: &HashMap<String, String>,
    errors: &mut Vec<String>,
) -> Vec<Upstream> {
    let Some(Value::Array(items)) = value else {
        errors.push("upstreams: expected an array of tables".into());
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = match item.get("name").and_then(Value::as_str) {
            Some(name) => format!("upstreams.{name}"),
            None => format!("upstreams[{i}]"),
        };
        let Some(raw) = decode::<RawUpstream>(item, &at, errors) else {
            continue;
        };
        let pool: Vec<Result<Url, ()>> = raw
            .base_urls
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, url)| {
                parse_base_url(url)
                    .map_err(|msg| errors.push(format!("{at}.base_urls[{i}]: {msg}")))
            })
            .collect();
        // A pool replaces a single base URL (one the defaults set included).
        let base_url = match (pool.first(), raw.base_url.as_deref()) {
            (Some(first), _) => first.clone(),
            (None, Some(url)) => {
                parse_base_url(url).map_err(|msg| errors.push(format!("{at}.base_url: {msg}")))
            }
            (None, None) => {
                errors.push(format!("{at}.base_url: missing (or a pool in base_urls)"));
                Err(())
            }
        };
        let Some(provider) = raw.provider.or_else(|| ProviderKind::from_name(&raw.name)) else {
            errors.push(format!(
                "{at}.provider: missing (anthropic, openai, gemini, deepseek, openai-compatible)"
            ));
            continue;
        };
        let (Ok(base_url), Ok(base_urls)) = (base_url, pool.into_iter().collect()) else {
            continue;
        };
        let mount = raw.mount.unwrap_or_else(|| format!("/{}", raw.name));
        let api_key = match raw.api_key_env.as_deref() {
            None => None,
            Some(var) => match vars.get(var).filter(|v| !v.is_empty()) {
                Some(key) => Some(key.clone()),
                None => {
                    errors.push(format!("{at}.api_key_env: {var} is not set"));
                    continue;
                }
            },
        };
        out.push(Upstream {
            api_key,
            name: raw.name,
            provider,
            base_url,
            base_urls,
            kv_capacity_tokens: raw.kv_capacity_tokens.unwrap_or(DEFAULT_KV_CAPACITY_TOKENS),
            load_epsilon: raw.load_epsilon.unwrap_or(DEFAULT_LOAD_EPSILON),
            mount,
            strategies: raw.strategies.unwrap_or_else(|| Strategy::ALL.to_vec()),
            accepts_prompt_cache_key: raw
                .accepts_prompt_cache_key
                .unwrap_or(provider == ProviderKind::Openai),
        });
    }
    out
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw.trim_end_matches('/')).map_err(|e| format!("{raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?}: scheme must be http or https"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?}: must not carry a query or fragment"));
    }
    Ok(url)
}

fn validate(config: &Config, errors: &mut Vec<String>) {
    if config.limits.max_body_bytes == 0 {
        errors.push("limits.max_body_bytes: must be at least 1".into());
    }
    // A zero timeout would fail every request; it is never what was meant.
    for (key, value) in [
        ("timeouts.connect", config.timeouts.connect),
        ("timeouts.first_byte", config.timeouts.first_byte),
        ("timeouts.idle", config.timeouts.idle),
        ("ledger.flush_interval", config.ledger.flush_interval),
    ] {
        if value.is_zero() {
            errors.push(format!("{key}: must be greater than 0s"));
        }
    }
    if config.ledger.queue == 0 {
        errors.push("ledger.queue: must be at least 1".into());
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        errors.push(format!("log.level: {e}"));
    }
    if config.admin.listen == Some(config.listen) {
        errors.push("admin.listen: equals listen; leave it unset to share the listener".into());
    }
    let mut names = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for u in &config.upstreams {
        let at = format!("upstreams.{}", u.name);
        let valid_name = !u.name.is_empty()
            && u.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            errors.push(format!(
                "{at}.name: use lowercase letters, digits, '-' and '_'"
            ));
        }
        if !names.insert(u.name.as_str()) {
            errors.push(format!("{at}.name: defined twice"));
        }
        // Mounts are matched segment by segment; a trailing slash would never match.
        if !u.mount.starts_with('/') || u.mount.len() < 2 || u.mount.ends_with('/') {
            errors.push(format!(
                "{at}.mount: must look like \"/name\" (no trailing slash)"
            ));
        }
        if RESERVED_PATHS
            .iter()
            .any(|r| u.mount == *r || u.mount.starts_with(&format!("{r}/")))
        {
            errors.push(format!(
                "{at}.mount: {} is served by cachet itself",
                u.mount
            ));
        }
        if u.kv_capacity_tokens == 0 {
            errors.push(format!("{at}.kv_capacity_tokens: must be at least 1"));
        }
        // Below 0 the bound would sit under the mean load, which no pool can meet.
        if !(u.load_epsilon.is_finite() && u.load_epsilon >= 0.0) {
            errors.push(format!("{at}.load_epsilon: must be a number, 0 or more"));
        }
        if !mounts.insert(u.mount.as_str()) {
            errors.push(format!(
                "{at}.mount: {} is used by another upstream",
                u.mount
            ));
        }
    }
}

mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests;
