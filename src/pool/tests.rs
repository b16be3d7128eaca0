use super::*;

fn key(tag: u64, i: usize) -> PrefixKey {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&tag.to_le_bytes());
    bytes[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    PrefixKey(bytes)
}

/// A chain of `chunks` keys of 100 estimated tokens each; chains with the same `tag` share
/// their first `shared` keys with each other.
fn chain(tag: u64, shared: usize, chunks: usize) -> Chain {
    Chain(
        (0..chunks)
            .map(|i| {
                let k = if i < shared { key(0, i) } else { key(tag, i) };
                (k, (i as u64 + 1) * 100)
            })
            .collect(),
    )
}

const T: SystemTime = SystemTime::UNIX_EPOCH;

fn loads(in_flight: &[u32]) -> Vec<Load> {
    in_flight
        .iter()
        .map(|&n| Load {
            in_flight: n,
            healthy: true,
        })
        .collect()
}

#[test]
fn the_longest_predicted_prefix_wins() {
    let pick = choose(&loads(&[0, 0, 0, 0]), &[100, 700, 300, 0], 0.25, 0, true);
    assert_eq!(pick.order[0], 1);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
    assert_eq!(pick.predicted, 700);
    // Failover candidates follow by prefix too.
    assert_eq!(pick.order[1..], [2, 0, 3]);
}

#[test]
fn bounded_load_overrides_affinity() {
    // 8 in flight on 4 replicas: with this one, at most ceil(1.25 × 9 / 4) = 3 each.
    let pick = choose(&loads(&[3, 2, 2, 1]), &[900, 0, 100, 0], 0.25, 0, true);
    assert_eq!(pick.order[0], 2, "the longest prefix within the bound");
    assert_eq!(pick.branch, Branch::ReplicaOverloaded);
    assert_eq!(
        *pick.order.last().unwrap(),
        0,
        "over the bound: last resort"
    );
    // Within the bound, affinity wins over a lighter replica.
    let pick = choose(&loads(&[2, 2, 2, 1]), &[900, 0, 100, 0], 0.25, 0, true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
}

#[test]
fn cold_prefixes_go_to_the_least_loaded() {
    let pick = choose(&loads(&[2, 1, 0, 1]), &[0; 4], 0.25, 0, true);
    assert_eq!(pick.order[0], 2);
    assert_eq!(pick.branch, Branch::ReplicaCold);
    // Ties rotate, so an idle pool is round-robin.
    let idle = loads(&[0, 0, 0]);
    let firsts: Vec<usize> = (0..4)
        .map(|s| choose(&idle, &[0; 3], 0.25, s, true).order[0])
        .collect();
    assert_eq!(firsts, [0, 1, 2, 0]);
}

#[test]
fn affinity_off_balances_by_load_alone() {
    let pick = choose(&loads(&[1, 0, 1]), &[900, 0, 0], 0.25, 0, false);
    assert_eq!(pick.order[0], 1);
    assert_eq!(pick.branch, Branch::ReplicaBalanced);
    let pool = Pool::new(3, 1 << 20, 0.25);
    let c = chain(1, 0, 4);
    let firsts: Vec<usize> = (0..6)
        .map(|_| pool.pick(Some(&c), false, T).order[0])
        .collect();
    assert_eq!(firsts, [0, 1, 2, 0, 1, 2], "round-robin when idle");
}

#[test]
fn a_pool_sends_a_repeated_prefix_back_and_cold_ones_elsewhere() {
    let pool = Arc::new(Pool::new(4, 1 << 20, 0.25));
    let a = chain(1, 0, 5);
    let first = pool.pick(Some(&a), true, T);
    assert_eq!(first.branch, Branch::ReplicaCold);
    drop(pool.start(first.order[0], Some(&a)));
    // Same conversation, one turn longer.
    let a2 = chain(1, 0, 7);
    for _ in 0..3 {
        let again = pool.pick(Some(&a2), true, T);
        assert_eq!(again.order[0], first.order[0]);
        assert_eq!(again.branch, Branch::ReplicaAffinity);
        assert_eq!(again.predicted, 500);
    }
    // An unrelated prompt goes to the least loaded replica.
    let held = pool.start(first.order[0], Some(&a2));
    let b = chain(2, 0, 5);
    let other = pool.pick(Some(&b), true, T);
    assert_ne!(other.order[0], first.order[0]);
    assert_eq!(other.branch, Branch::ReplicaCold);
    assert_eq!(pool.in_flight()[first.order[0]], 1);
    drop(held);
    assert_eq!(pool.in_flight(), [0; 4]);
}

#[test]
fn the_index_evicts_by_token_capacity_tails_first() {
    let mut lru = KeyLru::new(1000);
    let one = TokenScale::default();
    let a = chain(1, 0, 6); // 600 tokens
    let b = chain(2, 0, 6);
    lru.admit(&a, one);
    assert_eq!(lru.matched(&a), 600);
    lru.admit(&b, one);
    assert_eq!(lru.used, 1000);
    assert_eq!(lru.matched(&b), 600);
    // `a` lost its tail (its two last chunks), not its head.
    assert_eq!(lru.matched(&a), 400);
    // Weights follow the learnt scale: at 2 provider tokens per estimate, `a` alone fills it.
    let two = TokenScale {
        estimated: 1,
        reported: 2,
    };
    let mut lru = KeyLru::new(1000);
    lru.admit(&a, two);
    assert_eq!(lru.matched(&a), 500);
}

#[test]
fn reported_cached_tokens_correct_the_index() {
    let pool = Arc::new(Pool::new(1, 10_000, 0.25));
    let chains: Vec<Chain> = (1..=4).map(|t| chain(t, 0, 10)).collect();
    for c in &chains {
        drop(pool.start(0, Some(c)));
    }
    assert_eq!(pool.held_tokens(), [4000]);
    // Usage says 2 provider tokens per estimated one: the index is fuller than it thought.
    pool.reported(0, &chains[3], 1000, 2000, 2000);
    let fresh = chain(9, 0, 10);
    drop(pool.start(0, Some(&fresh)));
    assert_eq!(pool.held_tokens(), [6000]);
    // The replica read 400 of the 1000 predicted: it has evicted 600 estimated (1200 provider)
    // tokens more than the index, which drops its oldest as many.
    let before = pool.held_tokens()[0];
    pool.reported(0, &fresh, 1000, 2000, 800);
    assert_eq!(pool.held_tokens()[0], before - 1200);
    assert_eq!(pool.pick(Some(&fresh), true, T).predicted, 1000, "kept");
    assert!(pool.pick(Some(&chains[0]), true, T).predicted < 1000);
    // A matching report changes nothing.
    let held = pool.held_tokens();
    pool.reported(0, &fresh, 1000, 2000, 2000);
    assert_eq!(pool.held_tokens(), held);
}

#[test]
fn an_unhealthy_replica_is_skipped_then_retried_after_its_cool_down() {
    let pool = Pool::new(2, 1 << 20, 0.25);
    let a = chain(1, 0, 3);
    let pick = pool.pick(Some(&a), true, T);
    let first = pick.order[0];
    pool.failed(first, Some(&a), 0, T);
    for _ in 0..3 {
        let pick = pool.pick(Some(&a), true, T + Duration::from_secs(1));
        assert_ne!(pick.order[0], first);
        assert_eq!(pick.order[1], first, "still a last resort");
    }
    let later = T + COOL_DOWN;
    let firsts: Vec<usize> = (0..2)
        .map(|_| pool.pick(Some(&a), true, later).order[0])
        .collect();
    assert!(firsts.contains(&first), "tried again after the cool-down");
    pool.answered(first);
}

#[test]
fn a_failed_replica_gives_back_what_was_written_for_the_request() {
    let pool = Arc::new(Pool::new(2, 1 << 20, 0.25));
    let a = chain(1, 0, 4);
    drop(pool.start(0, Some(&a)));
    let longer = chain(1, 0, 8);
    let guard = pool.start(0, Some(&longer));
    pool.failed(0, Some(&longer), 400, T);
    drop(guard);
    pool.answered(0);
    assert_eq!(pool.pick(Some(&longer), true, T).predicted, 400);
}

#[test]
fn load_bound_is_ceil_of_one_plus_epsilon_times_mean() {
    assert_eq!(bound(0, 8, 0.25), 1);
    assert_eq!(bound(8, 4, 0.25), 3);
    assert_eq!(bound(31, 8, 0.25), 5);
    assert_eq!(bound(3, 0, 0.25), 5, "no healthy replica: the count itself");
}
