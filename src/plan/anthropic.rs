//! Anthropic breakpoints (providers.md §1.2–§1.7): where cachet puts `cache_control` when the
//! client leaves slots free.
//!
//! Candidates, each a block end whose cumulative tokens reach the model's minimum:
//! - the longest prefix the registry believes is cached now (a breakpoint exactly there finds
//!   it whatever the 20-block lookback, as when an agent resumes after many steps);
//! - the reusable prefix: the end of the context before the trailing question;
//! - in a conversation, the end of the stable history (the block before the last message) and
//!   the end of the prompt (the next turn's history);
//! - the end of the system prompt, and of the tools;
//! - the longest prefix seen within the hour (a popular document among varying ones).
//!
//! A candidate is worth a write only if it is likely to be read before it expires (`worth`):
//! a new prefix waits for its second request, which knows its reuse gap, except the turns of a
//! live conversation (each is the next turn's history) and a tenant's very first tools and
//! system prompt. They are ranked by expected saved tokens — a believed-cached prefix is read
//! now (its tokens, certain); the others are worth their tokens when a later request shares
//! them — and the best fill the slots the client left (4 in all, a top-level marker counting
//! as one). The client's markers always stay as sent. The result never breaks Anthropic's
//! rules: at most 4 breakpoints, and a 1h marker never after a 5m one (ours before a 1h marker
//! are raised to 1h, which billing makes free; ours after a client's 5m marker become 5m);
//! nothing on the last block when the client set the top-level marker (the API rejects a
//! conflicting TTL there).
//!
//! TTL. With reads at 0.1×, a 5m write at 1.25× and a 1h write at 2× the input price, a prefix
//! reused every `g`: if `g ≤ 5 min` a 5m entry is refreshed by each read (0.1× per reuse);
//! if `5 min < g ≤ 1 h` a 5m entry is gone by then and rewritten each time (1.25× per reuse)
//! while a 1h entry is written once (2×) and read after (0.1×): 1h is cheaper from the second
//! reuse on; beyond 1 h neither survives and the 5m write is the cheaper one. The gap is the
//! registry's time since the prefix was last seen; a conversation's turns weigh the 1h premium
//! on what they write against rewriting the whole history (`ttl`).

use std::time::Duration;

use crate::dialect::anthropic::markers::ClientMarkers;
use crate::prefix::{Boundary, PrefixKey};
use crate::prompt::{Place, Prompt, SegmentKind};

use super::Ttl;

/// Anthropic's breakpoint budget.
pub const MAX_BREAKPOINTS: usize = 4;
const FIVE_MINUTES: Duration = Duration::from_secs(300);
const ONE_HOUR: Duration = Duration::from_secs(3600);
/// The turns whose gaps tell a conversation's pace: a few, so that one long pause (a user away,
/// an agent's steps sent elsewhere) stops deciding once the conversation is brisk again.
const RECENT_TURNS: usize = 3;

/// What the registry says of one prefix.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Known {
    /// Believed cached by the provider now.
    pub cached: bool,
    /// Time since it was last seen.
    pub gap: Option<Duration>,
    /// Time since it was first seen.
    pub age: Option<Duration>,
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
    /// When the request continues a conversation that came back within the hour (it extends
    /// the messages of earlier requests): how its recent turns were spaced, which predicts
    /// when the next turn comes.
    pub pace: Option<Pace>,
    /// The end of the tools or of the system prompt: stable by nature.
    pub stable: bool,
}

/// The recent gaps between a conversation's turns (the current one included, at most
/// [`RECENT_TURNS`], none longer than an hour): how many, and how many of them longer than 5
/// minutes, which a 5m entry would not have survived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub gaps: u32,
    pub slow: u32,
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
    // A tenant's first request: nothing of it has been seen before.
    let cold = candidates.iter().all(|c| c.gap.is_none());
    let mut ranked: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.tokens >= min_tokens && !taken(c) && worth(c, cold))
        .filter(|c| client.top_level.is_none() || c.segment != last_segment)
        .collect();
    // A cached prefix is a certain read now; the others pay off only if shared later.
    ranked.sort_by_key(|c| std::cmp::Reverse((c.cached, c.tokens)));
    ranked.truncate(free);
    ranked.sort_by_key(|c| c.segment);
    // What this request is expected to read: the longest prefix believed cached.
    let held = candidates
        .iter()
        .filter(|c| c.cached)
        .map(|c| c.tokens)
        .max()
        .unwrap_or(0);
    let mut chosen: Vec<(usize, Place, Ttl)> = ranked
        .iter()
        .map(|c| (c.segment, c.place, ttl(c, held)))
        .collect();
    order_ttls(&mut chosen, client, last_place);
    chosen
        .into_iter()
        .map(|(_, place, ttl)| (place, ttl))
        .collect()
}

/// Whether a write at this candidate is likely to be read before it expires. With reads at
/// 0.1× and writes at 1.25× (5m) or 2× (1h) the input price, a 5m write pays when the prefix
/// comes back within 5 minutes about one time in three, a 1h write only when it comes back
/// within the hour at least twice; a write nobody reads is pure premium.
/// - A prefix believed cached is a read, not a write.
/// - In a live conversation (`pace`), every new turn is the next turn's history: the whole
///   prompt is read again by the next request, and by each one after it.
/// - A prefix seen within 5 minutes will likely be back as soon. One seen within the hour will
///   survive a 1h write when it has already come back more than once, or when it is the end of
///   the tools or of the system prompt, which requests share by nature.
/// - A new prefix waits for its second request, which knows its reuse gap: a document asked
///   about once, or a system prompt that changes with every request (a timestamp), costs no
///   premium. Only a tenant's very first request writes its tools and system prompt at once.
fn worth(c: &Candidate, cold: bool) -> bool {
    if c.cached || (!c.stable && c.pace.is_some()) {
        return true;
    }
    match c.gap {
        None => c.stable && cold,
        Some(gap) => gap <= FIVE_MINUTES || (gap <= ONE_HOUR && (c.reuses >= 2 || c.stable)),
    }
}

/// 1h when the prefix comes back after more than 5 minutes and within the hour (module docs).
///
/// In a conversation the next turn reads the whole prompt if its entry is still there. A 1h
/// write costs 0.75× more than a 5m one on the tokens written now (the prompt beyond what is
/// read, `held`); a 5m entry gone before the next turn makes it rewrite the whole prompt at
/// 1.25× instead of reading it at 0.1×. With `p` the share of recent gaps longer than 5
/// minutes, 1h wins when `0.75 × written < p × 1.15 × tokens`: a chat whose user often takes
/// more than 5 minutes gets 1h for each turn's few new tokens, while an agent's brisk steps,
/// or a turn that writes a long history after a single pause, stay 5m.
///
/// A known prefix gets 1h when it has come back at least twice (a 1h write pays from the second
/// read), or is the end of the tools or system prompt.
fn ttl(c: &Candidate, held: u64) -> Ttl {
    if let (false, Some(pace)) = (c.stable, c.pace) {
        let written = u128::from(c.tokens.saturating_sub(held));
        let one_hour = 75 * written * u128::from(pace.gaps)
            < 115 * u128::from(c.tokens) * u128::from(pace.slow);
        return match one_hour {
            true => Ttl::OneHour,
            false => Ttl::FiveMinutes,
        };
    }
    match c.gap {
        Some(g) if g > FIVE_MINUTES && g <= ONE_HOUR && (c.reuses >= 2 || c.stable) => Ttl::OneHour,
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

/// Enforces "1h before 5m" against the client's markers, which stay as sent. Billing makes a
/// marker's TTL free to raise: every token from the cache hit to the last 1h marker is written
/// at the 1h price whatever the markers between say, and tokens up to the hit are read. So a
/// marker of ours before a 1h marker (the client's or ours) becomes 1h, and only one after a
/// client's 5m marker must become 5m.
fn order_ttls(
    chosen: &mut [(usize, Place, Ttl)],
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
    let first_client_5m = theirs
        .iter()
        .filter(|(_, t)| *t == Ttl::FiveMinutes)
        .map(|(k, _)| *k)
        .min();
    for c in chosen.iter_mut() {
        if first_client_5m.is_some_and(|k| order_key(c.1) > k) {
            c.2 = Ttl::FiveMinutes;
        }
    }
    let last_1h = theirs
        .iter()
        .filter(|(_, t)| *t == Ttl::OneHour)
        .map(|(k, _)| *k)
        .chain(
            chosen
                .iter()
                .filter(|c| c.2 == Ttl::OneHour)
                .map(|c| order_key(c.1)),
        )
        .max();
    for c in chosen.iter_mut() {
        if last_1h.is_some_and(|k| order_key(c.1) < k) {
            c.2 = Ttl::OneHour;
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
    // The longest prefix seen within the hour: shared by earlier requests, it may be worth a
    // write of its own (a popular document among varying ones).
    picks.extend(
        ends.iter()
            .filter(markable)
            .rfind(|b| known(&b.key).gap.is_some_and(|g| g <= ONE_HOUR))
            .copied(),
    );
    let pace = pace(prompt, &ends, &known);
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
                ..
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

/// The pace of the conversation a request continues (`Candidate::pace`). Its turns are told
/// by the message ends of earlier requests it repeats: each was first seen by the turn that
/// sent it, so the gaps between their first sightings are the gaps between turns, and the time
/// since the longest of them was last seen is the current one. `None` when the request repeats
/// no earlier message end, or its conversation was last seen more than an hour ago.
fn pace(
    prompt: &Prompt<'_>,
    ends: &[&Boundary],
    known: &impl Fn(&PrefixKey) -> Known,
) -> Option<Pace> {
    let message_of = |b: &Boundary| match prompt.segments.get(b.segment)?.place {
        Place::Message { index, .. } => Some(index),
        _ => None,
    };
    let last_message = ends.iter().filter_map(|b| message_of(b)).max()?;
    // Message ends before the last message: where an earlier request's prompt may have ended.
    let message_ends = ends.iter().enumerate().filter(|(i, b)| {
        let index = message_of(b);
        index.is_some_and(|m| m < last_message)
            && ends.get(i + 1).is_none_or(|next| message_of(next) != index)
    });
    let seen: Vec<Known> = message_ends
        .map(|(_, b)| known(&b.key))
        .filter(|k| k.gap.is_some())
        .collect();
    let current = seen.last()?.gap?;
    if current > ONE_HOUR {
        return None;
    }
    // Newest first: the gaps between turns, from the latest back.
    let mut ages: Vec<Duration> = seen.iter().filter_map(|k| k.age).collect();
    ages.sort();
    ages.dedup();
    let earlier = ages.windows(2).map(|w| w[1].saturating_sub(w[0]));
    let recent = [current].into_iter().chain(earlier).take(RECENT_TURNS);
    let (gaps, slow) = recent
        .filter(|&g| g <= ONE_HOUR)
        .fold((0, 0), |(n, slow), g| {
            (n + 1, slow + u32::from(g > FIVE_MINUTES))
        });
    Some(Pace { gaps, slow })
}

#[cfg(test)]
mod tests;
