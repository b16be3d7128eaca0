//! Anthropic breakpoints (providers.md §1.2–§1.7): where cachet puts `cache_control` when the
//! client leaves slots free.
//!
//! Candidates, each a block end whose cumulative tokens reach the model's minimum:
//! - the longest prefix the registry believes is cached now (a breakpoint exactly there finds
//!   it whatever the 20-block lookback, as when an agent resumes after many steps);
//! - the reusable prefix: the end of the context before the trailing question;
//! - in a conversation, the end of the stable history (the block before the last message) and
//!   the end of the prompt (the next turn's history);
//! - the end of the system prompt, and of the tools.
//!
//! A candidate is worth a write only if it is likely to come back in time (see `place`).
//! They are ranked by expected saved tokens — a believed-cached prefix is read now (its tokens,
//! certain); the others are worth their tokens when a later request shares them — and the best
//! fill the slots the client left (4 in all, a top-level marker counting as one). The client's
//! markers always stay as sent. The result never breaks Anthropic's rules: at most 4
//! breakpoints, and a 1h marker never after a 5m one (a 1h choice that would follow a 5m marker
//! becomes 5m; a marker of ours that would precede a client's 1h marker is dropped); nothing on
//! the last block when the client set the top-level marker (the API rejects a conflicting TTL
//! there).
//!
//! TTL. With reads at 0.1×, a 5m write at 1.25× and a 1h write at 2× the input price, a prefix
//! reused every `g`: if `g ≤ 5 min` a 5m entry is refreshed by each read (0.1× per reuse);
//! if `5 min < g ≤ 1 h` a 5m entry is gone by then and rewritten each time (1.25× per reuse)
//! while a 1h entry is written once (2×) and read after (0.1×): 1h is cheaper from the second
//! reuse on; beyond 1 h neither survives and the 5m write is the cheaper one. The gap is the
//! registry's time since the prefix was last seen.

use std::time::Duration;

use crate::dialect::anthropic::markers::ClientMarkers;
use crate::prefix::{Boundary, PrefixKey};
use crate::prompt::{Place, Prompt, SegmentKind};

use super::Ttl;

/// Anthropic's breakpoint budget.
pub const MAX_BREAKPOINTS: usize = 4;
const FIVE_MINUTES: Duration = Duration::from_secs(300);
const ONE_HOUR: Duration = Duration::from_secs(3600);

/// What the registry says of one prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// Believed cached by the provider now.
    pub cached: bool,
    /// Time since it was last seen.
    pub gap: Option<Duration>,
    pub reuses: u64,
}

/// One candidate block end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub place: Place,
    /// Index of the block (segment) in the prompt.
    pub segment: usize,
    /// Estimated tokens of the prompt up to the end of this block.
    pub tokens: u64,
    /// Believed cached by the provider now: a read if a breakpoint lands here.
    pub cached: bool,
    /// Time since the registry last saw this prefix (`None`: never).
    pub gap: Option<Duration>,
    /// Requests after the first that carried this prefix.
    pub reuses: u64,
    /// For a new prefix, the time since the longest prefix of this request was last seen: the
    /// pace of the conversation it extends, which predicts when it comes back.
    pub pace: Option<Duration>,
    /// The end of the tools or of the system prompt: stable by nature.
    pub stable: bool,
}

/// Where to add markers, given the candidates (in block order, deduplicated), the client's
/// own markers, the model's minimum (estimated tokens) and the index of the last block.
pub fn place(
    candidates: &[Candidate],
    client: &ClientMarkers,
    min_tokens: u64,
    last_segment: usize,
    last_place: Option<Place>,
) -> Vec<(Place, Ttl)> {
    let free = MAX_BREAKPOINTS.saturating_sub(client.slots_used());
    if free == 0 {
        return Vec::new();
    }
    let taken = |c: &Candidate| client.blocks.iter().any(|(p, _)| *p == c.place);
    // A write pays off only if the prefix comes back in time. A prefix seen within the hour
    // will likely be; one seen longer ago will not survive either TTL. A new prefix is worth
    // writing when it is stable (tools, system) or extends a conversation the provider is
    // caching right now (agent steps, chat turns); a new document of a tenant that is not,
    // waits for its second request, which knows its reuse gap.
    let live = candidates.iter().any(|c| c.cached);
    let worth = |c: &Candidate| match c.gap {
        _ if c.cached => true,
        // Back within 5 minutes: a 5m entry will be read. Back within the hour, and more than
        // once already: a 1h entry pays (see `ttl`). Otherwise the write would expire unread.
        Some(gap) => gap <= FIVE_MINUTES || (gap <= ONE_HOUR && c.reuses >= 2),
        None => c.stable || live,
    };
    let mut ranked: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.tokens >= min_tokens && !taken(c) && worth(c))
        .filter(|c| client.top_level.is_none() || c.segment != last_segment)
        .collect();
    // A cached prefix is a certain read now; the others pay off only if shared later.
    ranked.sort_by_key(|c| std::cmp::Reverse((c.cached, c.tokens)));
    ranked.truncate(free);
    ranked.sort_by_key(|c| c.segment);
    let mut chosen: Vec<(usize, Place, Ttl)> = ranked
        .iter()
        .map(|c| (c.segment, c.place, ttl(c)))
        .collect();
    order_ttls(&mut chosen, client, last_place);
    chosen
        .into_iter()
        .map(|(_, place, ttl)| (place, ttl))
        .collect()
}

/// 1h when the prefix comes back after more than 5 minutes and within the hour (module docs).
/// A 1h write costs 1× input more than no write and each read saves 0.9×: it pays from the
/// second read, so a known prefix gets it once it has come back at least twice; a new prefix
/// follows the pace of the conversation it extends.
fn ttl(c: &Candidate) -> Ttl {
    let (gap, repeats) = match c.gap {
        Some(gap) => (Some(gap), c.reuses >= 2),
        None => (c.pace, true),
    };
    match gap {
        Some(g) if repeats && g > FIVE_MINUTES && g <= ONE_HOUR => Ttl::OneHour,
        _ => Ttl::FiveMinutes,
    }
}

/// The render order of blocks: tools, then system, then messages by index and part.
fn order_key(place: Place) -> (u8, usize, usize) {
    match place {
        Place::Tools(i) => (0, i, 0),
        Place::System(j) => (1, j, 0),
        Place::Message { index, part } => (2, index, part),
    }
}

/// Enforces "1h before 5m" against the client's markers, which stay as sent: a 1h of ours that
/// would follow a 5m marker becomes 5m, and a 5m of ours that would precede a client's 1h
/// marker is dropped.
fn order_ttls(
    chosen: &mut Vec<(usize, Place, Ttl)>,
    client: &ClientMarkers,
    last_place: Option<Place>,
) {
    let mut theirs: Vec<((u8, usize, usize), Ttl)> = client
        .blocks
        .iter()
        .map(|&(p, t)| (order_key(p), t))
        .collect();
    if let (Some(ttl), Some(last)) = (client.top_level, last_place) {
        theirs.push((order_key(last), ttl));
    }
    let last_client_1h = theirs
        .iter()
        .filter(|(_, t)| *t == Ttl::OneHour)
        .map(|(k, _)| *k)
        .max();
    chosen.retain(|&(_, place, _)| last_client_1h.is_none_or(|k| order_key(place) > k));
    // Everything of ours now follows every client 1h marker; a 5m anywhere before one of ours
    // (the client's or ours) makes ours 5m too.
    for i in 0..chosen.len() {
        let key = order_key(chosen[i].1);
        let five_before = theirs
            .iter()
            .any(|(k, t)| *k < key && *t == Ttl::FiveMinutes)
            || chosen[..i].iter().any(|c| c.2 == Ttl::FiveMinutes);
        if five_before {
            chosen[i].2 = Ttl::FiveMinutes;
        }
    }
}

/// The candidates of a prompt (module docs), in block order, deduplicated. `known` answers
/// for a boundary's key: believed cached now, and the time since it was last seen.
pub fn candidates(
    prompt: &Prompt<'_>,
    boundaries: &[Boundary],
    reusable: Option<PrefixKey>,
    known: impl Fn(&PrefixKey) -> Known,
) -> Vec<Candidate> {
    let ends: Vec<&Boundary> = boundaries.iter().filter(|b| b.segment_end).collect();
    let markable = |b: &&&Boundary| {
        prompt
            .segments
            .get(b.segment)
            .is_some_and(|s| s.kind != SegmentKind::Other)
    };
    let last_of = |pick: &dyn Fn(Place) -> bool| {
        ends.iter()
            .filter(markable)
            .rfind(|b| {
                prompt
                    .segments
                    .get(b.segment)
                    .is_some_and(|s| pick(s.place))
            })
            .copied()
    };
    let last_message = prompt.segments.iter().filter_map(|s| match s.place {
        Place::Message { index, .. } => Some(index),
        _ => None,
    });
    let last_message = last_message.max();
    let mut picks: Vec<&Boundary> = Vec::new();
    let tools = last_of(&|p| matches!(p, Place::Tools(_)));
    let system = last_of(&|p| matches!(p, Place::System(_)));
    let stable: Vec<usize> = tools
        .iter()
        .chain(system.iter())
        .map(|b| b.segment)
        .collect();
    picks.extend(tools);
    picks.extend(system);
    if let Some(last) = last_message.filter(|&l| l > 0) {
        // In a conversation the whole prompt is the next turn's history: its end, and the end
        // of the history before the newest message.
        picks.extend(last_of(
            &|p| matches!(p, Place::Message { index, .. } if index < last),
        ));
        picks.extend(ends.iter().rfind(|b| markable(b)).copied());
    }
    picks.extend(
        ends.iter()
            .filter(markable)
            .rfind(|b| Some(b.key) == reusable)
            .copied(),
    );
    // The longest prefix believed cached now.
    picks.extend(
        ends.iter()
            .filter(markable)
            .rfind(|b| known(&b.key).cached)
            .copied(),
    );
    let pace = ends.iter().rev().find_map(|b| known(&b.key).gap);
    picks.sort_by_key(|b| b.segment);
    picks.dedup_by_key(|b| b.segment);
    picks
        .into_iter()
        .filter_map(|b| {
            let place = prompt.segments.get(b.segment)?.place;
            let Known {
                cached,
                gap,
                reuses,
            } = known(&b.key);
            Some(Candidate {
                place,
                segment: b.segment,
                tokens: b.tokens,
                cached,
                gap,
                reuses,
                pace,
                stable: stable.contains(&b.segment),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
