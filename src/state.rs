//! Process-wide state shared by every request: config, the upstream client, telemetry.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use metrics_exporter_prometheus::PrometheusHandle;

use crate::clock::Clock;
use crate::config::{Config, Upstream};
use crate::explain::History;
use crate::flight::Flights;
use crate::plan::openai::Shards;
use crate::pool::Pool;
use crate::pricing::PriceTable;
use crate::registry::{ContentCaches, MemoryRegistry};
use crate::telemetry::{self, Telemetry};
use crate::tenant::{SecretError, TenantSecret};
use crate::upstream::UpstreamClient;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    config: Config,
    /// Upstream indexes, longest mount first, so `/vllm/fast` wins over `/vllm`.
    by_mount: Vec<usize>,
    upstream: UpstreamClient,
    telemetry: Telemetry,
    metrics: PrometheusHandle,
    draining: AtomicBool,
    tenant_secret: TenantSecret,
    registry: MemoryRegistry,
    history: History,
    clock: Arc<Clock>,
    shards: Shards,
    contents: ContentCaches,
    flights: Flights,
    /// The replica pool of each upstream with `base_urls`, by upstream name.
    pools: HashMap<String, Arc<Pool>>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, String> {
        Self::with_clock(config, Arc::new(Clock::system()))
    }

    /// The state on a given clock: `cachet replay` shares its virtual clock with the simulator,
    /// so the registry's beliefs age on the replayed timeline.
    pub fn with_clock(config: Config, clock: Arc<Clock>) -> Result<Self, String> {
        let prices = match config.pricing.file.as_str() {
            "" => PriceTable::built_in(),
            path => std::fs::read_to_string(path)
                .map_err(|e| vec![format!("pricing.file {path}: {e}")])
                .and_then(|text| PriceTable::parse(&text)),
        }
        .map_err(|errors| errors.join("\n"))?;
        let upstream =
            UpstreamClient::new(&config.timeouts).map_err(|e| format!("HTTP client: {e}"))?;
        let tenant_secret = match TenantSecret::load_or_create(
            Some(config.registry.tenant_secret.as_str()),
            &config.registry.data_dir,
        ) {
            Ok(secret) => secret,
            // A read-only filesystem (a locked-down sidecar) must not stop the proxy.
            Err(SecretError::Io { path, source }) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %source,
                    "cannot keep a tenant secret on disk; using one for this process only \
                     (set [registry] tenant_secret to keep tenants across restarts)"
                );
                TenantSecret::ephemeral().map_err(|e| format!("registry.tenant_secret: {e}"))?
            }
            Err(e) => return Err(format!("registry.tenant_secret: {e}")),
        };
        let registry = MemoryRegistry::new(clock.clone(), config.registry.max_bytes);
        // The miss explainer's fingerprints share the registry's memory bound.
        let history =
            History::new(usize::try_from(config.registry.max_bytes).unwrap_or(usize::MAX));
        let pools = config
            .upstreams
            .iter()
            .filter(|u| !u.base_urls.is_empty())
            .map(|u| {
                let pool = Pool::new(
                    u.base_urls.len(),
                    u.kv_capacity_tokens,
                    u.load_epsilon,
                    clock.clone(),
                );
                (u.name.clone(), Arc::new(pool))
            })
            .collect();
        let mut by_mount: Vec<usize> = (0..config.upstreams.len()).collect();
        by_mount.sort_by_key(|&i| std::cmp::Reverse(config.upstreams[i].mount.len()));
        Ok(Self(Arc::new(Inner {
            config,
            by_mount,
            upstream,
            telemetry: Telemetry::new(prices, clock.clone()),
            metrics: telemetry::metrics_handle(),
            draining: AtomicBool::new(false),
            tenant_secret,
            registry,
            history,
            clock,
            shards: Shards::default(),
            contents: ContentCaches::new(),
            flights: Flights::default(),
            pools,
        })))
    }

    pub fn tenant_secret(&self) -> &TenantSecret {
        &self.0.tenant_secret
    }

    /// The Gemini cached contents cachet created.
    pub fn content_caches(&self) -> &ContentCaches {
        &self.0.contents
    }

    /// Writes of new prefixes in flight (single-flight).
    pub fn flights(&self) -> &Flights {
        &self.0.flights
    }

    pub fn registry(&self) -> &MemoryRegistry {
        &self.0.registry
    }

    /// The time the registry, the planner and the explainer read.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// Per-key request counts for sharding hot `prompt_cache_key`s.
    pub fn cache_key_shards(&self) -> &Shards {
        &self.0.shards
    }

    /// The replica pool of `upstream`, when it has `base_urls`.
    pub fn pool(&self, upstream: &str) -> Option<&Arc<Pool>> {
        self.0.pools.get(upstream)
    }

    pub fn history(&self) -> &History {
        &self.0.history
    }

    pub fn config(&self) -> &Config {
        &self.0.config
    }

    pub fn upstream_client(&self) -> &UpstreamClient {
        &self.0.upstream
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.0.telemetry
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.0.metrics
    }

    /// The upstream mounted at the start of `path`, and the rest of the path (may be empty).
    pub fn resolve<'p>(&self, path: &'p str) -> Option<(&Upstream, &'p str)> {
        self.0.by_mount.iter().find_map(|&i| {
            let upstream = &self.0.config.upstreams[i];
            let rest = path.strip_prefix(upstream.mount.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((upstream, rest))
        })
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }
}
