//! cachet: a context-caching HTTP proxy for LLM APIs.
//!
//! The request path, one module per stage (see `../shared/DESIGN.md`):
//!
//! ```text
//! http (ingress: mount → upstream, route → dialect)
//!   → dialect (the only code that knows a provider's JSON: model, stream, usage, errors,
//!     and the canonical `prompt` of a body)
//!   → prefix (blake3 key chain over the prompt, salted by the `tenant`)
//!   → envelope (original bytes + editable JSON; untouched requests go out as their bytes)
//!   → upstream (one pooled client; ObservedBody taps usage from JSON and streams)
//!   → telemetry (one log line, Prometheus metrics) and pricing (nano-USD)
//! ```
//!
//! `sim` is the upstream simulator used by `cachet sim`, `cachet demo` and the tests.

pub mod clock;
pub mod config;
pub mod demo;
pub mod dialect;
pub mod envelope;
pub mod error;
pub mod explain;
pub mod flight;
pub mod http;
pub mod ledger;
pub mod mix;
pub mod plan;
pub mod pool;
pub mod prefix;
pub mod pricing;
pub mod prompt;
pub mod registry;
pub mod replay;
pub mod rewrite;
pub mod server;
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod tenant;
pub mod upstream;
pub mod usage;
pub mod workers;

pub use http::app;
pub use state::AppState;
