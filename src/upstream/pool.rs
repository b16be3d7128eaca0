//! Sending to a replica pool: the planned replica first, then the next candidates while a
//! replica refuses the connection or answers 5xx (passive health, `crate::pool`).
//!
//! A request is resent only while its body is in hand (modelled JSON routes and bodiless
//! requests); a streamed upload goes to one replica. The last candidate's 5xx reaches the
//! client as the replica sent it, like any upstream error.

use std::sync::Arc;

use crate::config::Upstream;
use crate::error::ProxyError;
use crate::pool::{Chain, InFlight, Pick, Pool};
use crate::usage::Usage;

use super::{Outgoing, OutgoingBody, UpstreamClient};

/// The replica a request went to, held until its response ends: the in-flight count, and what
/// the replica's usage then tells the pool.
pub struct Placed {
    pool: Arc<Pool>,
    chain: Option<Chain>,
    /// Estimated tokens the index predicted this replica held.
    predicted: u64,
    guard: InFlight,
}

impl Placed {
    pub fn replica(&self) -> usize {
        self.guard.replica
    }

    /// A complete answer's usage corrects the pool's index; then the request leaves.
    pub fn finish(self, usage: Option<&Usage>) {
        // A server that does not report cached tokens (vLLM without
        // --enable-prompt-tokens-details) reads as 0: only a positive count is evidence.
        let usage = usage.filter(|u| u.cache_read > 0);
        if let (Some(chain), Some(usage)) = (&self.chain, usage) {
            self.pool.reported(
                self.guard.replica,
                chain,
                self.predicted,
                usage.input_total(),
                usage.cache_read,
            );
        }
    }
}

/// Sends `out` to the pool along `pick.order`; returns the response and where it was placed.
pub async fn send(
    client: &UpstreamClient,
    upstream: &Upstream,
    pool: &Arc<Pool>,
    (pick, chain): (Pick, Option<Chain>),
    out: Outgoing,
) -> Result<(reqwest::Response, Placed), ProxyError> {
    let resendable = matches!(out.body, OutgoingBody::Empty | OutgoingBody::Bytes(_));
    let mut out = Some(out);
    let last = pick.order.len().saturating_sub(1);
    for (attempt, &replica) in pick.order.iter().enumerate() {
        let Some(base) = upstream.base_urls.get(replica) else {
            continue;
        };
        let final_try = attempt == last || !resendable;
        let this = match (final_try, &out) {
            (true, _) => out.take(),
            (false, Some(o)) => Some(o.clone_for_resend()),
            (false, None) => None,
        };
        let Some(this) = this else {
            break;
        };
        let predicted = pick.matched.get(replica).copied().unwrap_or(0);
        let guard = pool.start(replica, chain.as_ref());
        let result = client.send_to(upstream, base, this).await;
        let failed = match &result {
            Err(ProxyError::UpstreamConnect { .. }) => true,
            Ok(response) => response.status().is_server_error(),
            Err(_) => false,
        };
        if failed {
            pool.failed(replica, chain.as_ref(), predicted);
            tracing::warn!(
                upstream = %upstream.name,
                replica,
                "pool replica failed; passed over for a while"
            );
        } else if result.is_ok() {
            pool.answered(replica);
        }
        if failed && !final_try {
            continue;
        }
        let placed = Placed {
            pool: pool.clone(),
            chain,
            predicted,
            guard,
        };
        return result.map(|response| (response, placed));
    }
    Err(ProxyError::Internal(format!(
        "upstream {}: no replica to send to",
        upstream.name
    )))
}
