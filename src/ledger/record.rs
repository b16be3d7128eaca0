//! One ledger row: an upstream call, what it cost, and what cachet did to it.

use crate::usage::Usage;

/// The facts of one upstream call, as stored. Money in nano-USD (`None`: a needed price is
/// missing); times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LedgerRecord {
    /// Wall time the call ended, Unix milliseconds.
    pub at_ms: i64,
    pub request_id: String,
    /// `client`, or a call cachet made on its own (`cache_create`, `cache_extend`, `resend`).
    pub call: &'static str,
    /// For cachet's own calls: the client request that caused it.
    pub caused_by: Option<String>,
    /// The cachet process that made the call.
    pub instance_id: String,
    /// The tenant's fingerprint (never the credential).
    pub tenant: String,
    pub team: Option<String>,
    pub upstream: String,
    pub provider: &'static str,
    pub model: Option<String>,
    pub endpoint: &'static str,
    pub stream: bool,
    pub status: u16,
    /// `ok`, `upstream_error`, `proxy_error` or `cancelled`.
    pub outcome: &'static str,
    /// The whole usage was read (a stream cut short or cancelled may not have reported it).
    pub usage_complete: bool,
    pub usage: Usage,
    pub cost_nusd: Option<i64>,
    /// The same input tokens all billed as uncached input (output as billed).
    pub cost_uncached_nusd: Option<i64>,
    /// What the cache writes cost over the same tokens at the input price.
    pub write_premium_nusd: Option<i64>,
    /// Gemini cache storage booked on this record.
    pub storage_nusd: Option<i64>,
    pub prefix_key: Option<String>,
    pub plan_branch: Option<&'static str>,
    /// Comma list, as in `x-cachet-rewrites`.
    pub rewrites: String,
    /// `cache_control` markers the client sent (a top-level one included).
    pub client_markers: u8,
    /// Breakpoints cachet added.
    pub breakpoints: u8,
    pub miss_reason: Option<&'static str>,
    /// Tokens the miss could have served.
    pub miss_tokens: Option<i64>,
    /// Where the request diverged from what its tenant sent before (`system 1`): a name,
    /// never text.
    pub miss_segment: Option<String>,
    /// What the miss cost: its tokens at the input price less the cache-read price.
    pub miss_cost_nusd: Option<i64>,
    pub latency_ms: f64,
    pub ttfb_ms: Option<f64>,
    pub overhead_ms: f64,
}
