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

/// What a request in flight costs in the pure choice's tests (estimated tokens).
const P: u64 = LOAD_TOKENS;

fn clock() -> Arc<Clock> {
    Arc::new(Clock::manual(T))
}

fn load(in_flight: u32, average: f64) -> Load {
    Load {
        in_flight,
        average,
        healthy: true,
    }
}

/// Loads in a steady state: each replica's time average is its count now.
fn loads(in_flight: &[u32]) -> Vec<Load> {
    in_flight.iter().map(|&n| load(n, f64::from(n))).collect()
}

#[test]
fn the_longest_predicted_prefix_wins() {
    let pick = choose(&loads(&[0, 0, 0, 0]), &[100, 700, 300, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 1);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
    assert_eq!(pick.predicted, 700);
    // Failover candidates follow by prefix too.
    assert_eq!(pick.order[1..], [2, 0, 3]);
}

#[test]
fn bounded_load_overrides_affinity() {
    // 8 in flight on 4 replicas, 2 on average: a replica averaging over 1.25 × 2 is passed over.
    let pick = choose(&loads(&[3, 2, 2, 1]), &[9000, 0, 1000, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 2, "the longest prefix within the bound");
    assert_eq!(pick.branch, Branch::ReplicaOverloaded);
    assert_eq!(
        *pick.order.last().unwrap(),
        0,
        "over the bound: last resort"
    );
    // Within the bound, affinity wins over a lighter replica.
    let pick = choose(&loads(&[2, 2, 2, 1]), &[9000, 0, 1000, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
}

#[test]
fn the_bound_is_on_the_time_averaged_load_with_a_guard_against_bursts() {
    // 10 in flight on 4 replicas: the count bound, ceil(1.25 × 11 / 4) = 4, would hold replica
    // 0 over with 4; its load over time is the pool's mean, so its conversation stays.
    let even = [load(4, 2.0), load(2, 2.0), load(2, 2.0), load(2, 2.0)];
    let pick = choose(&even, &[9000, 0, 0, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
    // A burst past twice that bound, ceil(2.5 × 7 / 4) = 5, is held over whatever its average.
    let burst = [load(6, 1.0), load(0, 1.0), load(0, 1.0), load(0, 1.0)];
    let pick = choose(&burst, &[9000, 0, 100, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 2, "the next-longest prefix");
    assert_eq!(pick.branch, Branch::ReplicaOverloaded);
    assert_eq!(pick.order[3], 0);
    // Under one request on average, a replica is never over: a lone conversation on an idle
    // pool stays on one replica.
    let lone = [load(0, 0.6), load(0, 0.0), load(0, 0.0), load(0, 0.0)];
    let pick = choose(&lone, &[9000, 0, 0, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
}

#[test]
fn a_prefix_is_weighed_against_the_requests_in_flight() {
    // Only a head (one request's worth of tokens) on a replica with two in flight: an idle
    // replica costs less than resending the head.
    let even = |in_flight: [u32; 4]| in_flight.map(|n| load(n, 1.0));
    let pick = choose(&even([2, 0, 1, 1]), &[P, 0, 0, 0], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 1);
    assert_eq!(pick.branch, Branch::ReplicaOverloaded);
    // A conversation's history outweighs a few requests in flight.
    let busy = [load(3, 1.5), load(1, 1.5), load(1, 1.5), load(1, 1.5)];
    let pick = choose(&busy, &[20 * P, P, P, P], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
    // With the head everywhere, the least loaded takes the next one, then the rest by cost.
    let pick = choose(&even([2, 1, 0, 1]), &[P; 4], P, 0.25, 0, true);
    assert_eq!(pick.order, [2, 1, 3, 0]);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
}

#[test]
fn cold_prefixes_go_to_the_least_loaded() {
    let pick = choose(&loads(&[2, 1, 0, 1]), &[0; 4], P, 0.25, 0, true);
    assert_eq!(pick.order[0], 2);
    assert_eq!(pick.branch, Branch::ReplicaCold);
    // Ties rotate, so an idle pool is round-robin.
    let idle = loads(&[0, 0, 0]);
    let firsts: Vec<usize> = (0..4)
        .map(|s| choose(&idle, &[0; 3], P, 0.25, s, true).order[0])
        .collect();
    assert_eq!(firsts, [0, 1, 2, 0]);
}

#[test]
fn affinity_off_balances_by_load_alone() {
    let pick = choose(&loads(&[1, 0, 1]), &[900, 0, 0], P, 0.25, 0, false);
    assert_eq!(pick.order[0], 1);
    assert_eq!(pick.branch, Branch::ReplicaBalanced);
    let pool = Pool::new(3, 1 << 20, 0.25, clock());
    let c = chain(1, 0, 4);
    let firsts: Vec<usize> = (0..6)
        .map(|_| pool.pick(Some(&c), false).order[0])
        .collect();
    assert_eq!(firsts, [0, 1, 2, 0, 1, 2], "round-robin when idle");
}

#[test]
fn a_pool_sends_a_repeated_prefix_back_and_cold_ones_elsewhere() {
    let pool = Arc::new(Pool::new(4, 1 << 20, 0.25, clock()));
    let a = chain(1, 0, 5);
    let first = pool.pick(Some(&a), true);
    assert_eq!(first.branch, Branch::ReplicaCold);
    drop(pool.start(first.order[0], Some(&a)));
    // Same conversation, one turn longer.
    let a2 = chain(1, 0, 7);
    for _ in 0..3 {
        let again = pool.pick(Some(&a2), true);
        assert_eq!(again.order[0], first.order[0]);
        assert_eq!(again.branch, Branch::ReplicaAffinity);
        assert_eq!(again.predicted, 500);
    }
    // An unrelated prompt goes to the least loaded replica.
    let held = pool.start(first.order[0], Some(&a2));
    let b = chain(2, 0, 5);
    let other = pool.pick(Some(&b), true);
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
    let pool = Arc::new(Pool::new(1, 10_000, 0.25, clock()));
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
    assert_eq!(pool.pick(Some(&fresh), true).predicted, 1000, "kept");
    assert!(pool.pick(Some(&chains[0]), true).predicted < 1000);
    // A matching report changes nothing.
    let held = pool.held_tokens();
    pool.reported(0, &fresh, 1000, 2000, 2000);
    assert_eq!(pool.held_tokens(), held);
}

#[test]
fn an_unhealthy_replica_is_skipped_then_retried_after_its_cool_down() {
    let clock = clock();
    let pool = Pool::new(2, 1 << 20, 0.25, clock.clone());
    let a = chain(1, 0, 3);
    let pick = pool.pick(Some(&a), true);
    let first = pick.order[0];
    pool.failed(first, Some(&a), 0);
    clock.set(T + Duration::from_secs(1));
    for _ in 0..3 {
        let pick = pool.pick(Some(&a), true);
        assert_ne!(pick.order[0], first);
        assert_eq!(pick.order[1], first, "still a last resort");
    }
    clock.set(T + COOL_DOWN);
    let firsts: Vec<usize> = (0..2).map(|_| pool.pick(Some(&a), true).order[0]).collect();
    assert!(firsts.contains(&first), "tried again after the cool-down");
    pool.answered(first);
}

#[test]
fn a_failed_replica_gives_back_what_was_written_for_the_request() {
    let pool = Arc::new(Pool::new(2, 1 << 20, 0.25, clock()));
    let a = chain(1, 0, 4);
    drop(pool.start(0, Some(&a)));
    let longer = chain(1, 0, 8);
    let guard = pool.start(0, Some(&longer));
    pool.failed(0, Some(&longer), 400);
    drop(guard);
    pool.answered(0);
    assert_eq!(pool.pick(Some(&longer), true).predicted, 400);
}

#[test]
fn load_bound_is_ceil_of_one_plus_epsilon_times_mean() {
    assert_eq!(bound(0, 8, 0.25), 1);
    assert_eq!(bound(8, 4, 0.25), 3);
    assert_eq!(bound(31, 8, 0.25), 5);
    assert_eq!(bound(3, 0, 0.25), 5, "no healthy replica: the count itself");
}

#[test]
fn the_in_flight_count_is_averaged_over_time() {
    let clock = clock();
    let pool = Arc::new(Pool::new(2, 1 << 20, 0.25, clock.clone()));
    let guard = pool.start(0, None);
    clock.set(T + LOAD_WINDOW);
    let one_window = 1.0 - (-1.0f64).exp();
    let averages = pool.average_in_flight();
    assert!((averages[0] - one_window).abs() < 1e-9, "{averages:?}");
    assert_eq!(averages[1], 0.0);
    drop(guard);
    clock.set(T + 2 * LOAD_WINDOW);
    let averages = pool.average_in_flight();
    assert!(
        (averages[0] - one_window * (-1.0f64).exp()).abs() < 1e-9,
        "{averages:?}"
    );
}

#[test]
fn a_replica_busy_for_a_while_is_passed_over_and_taken_again_once_it_has_cooled() {
    let clock = clock();
    let pool = Arc::new(Pool::new(2, 1 << 20, 0.25, clock.clone()));
    let a = chain(1, 0, 5);
    drop(pool.start(0, Some(&a)));
    // Three long requests on replica 0 for two minutes: it has averaged 2.6 in flight, against
    // a mean of 1.3; the count (3 of 3 in flight) is within the burst guard.
    let busy: Vec<InFlight> = (0..3).map(|_| pool.start(0, None)).collect();
    clock.set(T + 2 * LOAD_WINDOW);
    let pick = pool.pick(Some(&a), true);
    assert_eq!(pick.order, [1, 0]);
    assert_eq!(pick.branch, Branch::ReplicaOverloaded);
    assert_eq!(pick.matched, [500, 0]);
    drop(busy);
    // Idle for a few minutes, it is under one request on average again: `a` goes back.
    clock.set(T + 5 * LOAD_WINDOW);
    let pick = pool.pick(Some(&a), true);
    assert_eq!(pick.order[0], 0);
    assert_eq!(pick.branch, Branch::ReplicaAffinity);
}
