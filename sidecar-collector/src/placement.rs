//! Learned prefix placements: which pod each prefix-affinity group goes to.
//!
//! Gateways report the affinity keys of the requests they route
//! (`PoolState.ReportPrefixes`). The first report of a key places it: on the
//! endpoint the gateway routed it to (whose KV cache now holds the prefix)
//! while that endpoint holds fewer than `load_factor` × the mean number of
//! keys per endpoint (or fewer than `min_keys`), else on the endpoint
//! holding the fewest keys. Every
//! snapshot carries the table, so every worker of every gateway replica sends
//! the group to the same pod, and groups are spread evenly over pods (a hash
//! alone puts ~35% more groups than the mean on the busiest of 8 pods).
//!
//! A key no gateway has reported for `ttl_ms` is dropped, and so is every key
//! of an endpoint that left the pool; a full table forgets the key seen
//! longest ago. The table is soft state: a restarted collector learns it
//! again from the next reports (each group pays one cache miss at most).
//! Collector replicas forward the reports they receive to their peers
//! (`--placement-peer`), so replicas learn the same table.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use pool_state::PrefixSeen;
use tokio::sync::Notify;

use crate::model::{DesiredPool, DesiredState};

#[derive(Debug, Clone, PartialEq)]
pub struct PlacementConfig {
    /// A key not reported for this long is forgotten.
    pub ttl_ms: u64,
    /// An endpoint takes a new key it was routed to while it holds fewer than
    /// `load_factor` × (keys + 1) / endpoints keys, rounded up, or fewer than
    /// `min_keys`: moving a group costs it a cache miss, and while every pod
    /// holds only a few groups, balancing them is not worth one.
    pub load_factor: f64,
    pub min_keys: usize,
    /// Keys kept per pool at most.
    pub max_keys: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            ttl_ms: 120_000,
            load_factor: 1.1,
            min_keys: 4,
            max_keys: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Placed {
    endpoint: String,
    last_seen_ms: u64,
}

/// One pool's placements.
#[derive(Debug, Clone, Default)]
pub struct PrefixPlacements {
    config: PlacementConfig,
    keys: HashMap<u64, Placed>,
    /// Keys per endpoint address.
    load: HashMap<String, usize>,
}

impl PrefixPlacements {
    pub fn new(config: PlacementConfig) -> Self {
        PrefixPlacements {
            config,
            keys: HashMap::new(),
            load: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Where `key` is placed, if it is.
    pub fn endpoint_of(&self, key: u64) -> Option<&str> {
        self.keys.get(&key).map(|p| p.endpoint.as_str())
    }

    /// Records that a gateway routed `key` to `routed_to` at `now_ms`, with
    /// `endpoints` the pool's current endpoint addresses. Returns whether the
    /// table changed (a key was placed or moved).
    pub fn observe(&mut self, key: u64, routed_to: &str, endpoints: &[&str], now_ms: u64) -> bool {
        if endpoints.is_empty() {
            return false;
        }
        if let Some(placed) = self.keys.get_mut(&key) {
            placed.last_seen_ms = placed.last_seen_ms.max(now_ms);
            if endpoints.contains(&placed.endpoint.as_str()) {
                return false;
            }
            self.remove(key);
        }
        if self.keys.len() >= self.config.max_keys {
            self.forget_oldest();
        }
        let endpoint = self.choose(routed_to, endpoints);
        *self.load.entry(endpoint.clone()).or_default() += 1;
        self.keys.insert(
            key,
            Placed {
                endpoint,
                last_seen_ms: now_ms,
            },
        );
        true
    }

    /// Drops keys not reported for `ttl_ms` and keys of endpoints no longer in
    /// `endpoints`. Returns whether the table changed.
    pub fn expire(&mut self, endpoints: &[&str], now_ms: u64) -> bool {
        let ttl = self.config.ttl_ms;
        let gone: Vec<u64> = self
            .keys
            .iter()
            .filter(|(_, p)| {
                now_ms.saturating_sub(p.last_seen_ms) > ttl
                    || !endpoints.contains(&p.endpoint.as_str())
            })
            .map(|(&k, _)| k)
            .collect();
        for key in &gone {
            self.remove(*key);
        }
        !gone.is_empty()
    }

    /// The table as the snapshot carries it (`pool_state::placements`): key
    /// and endpoint index into `endpoints`; keys of endpoints not listed are
    /// left out.
    pub fn table(&self, endpoints: &[&str]) -> Vec<u8> {
        let index: HashMap<&str, u32> = endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, &a)| u32::try_from(i).ok().map(|i| (a, i)))
            .collect();
        let pairs: Vec<(u64, u32)> = self
            .keys
            .iter()
            .filter_map(|(&key, p)| index.get(p.endpoint.as_str()).map(|&e| (key, e)))
            .collect();
        pool_state::placements::encode(&pairs)
    }

    fn keys_on(&self, endpoint: &str) -> usize {
        self.load.get(endpoint).copied().unwrap_or(0)
    }

    /// The routed-to endpoint while it is under its share, else the endpoint
    /// with the fewest keys (the first listed on a tie).
    fn choose(&self, routed_to: &str, endpoints: &[&str]) -> String {
        let share = self.config.load_factor * (self.keys.len() + 1) as f64 / endpoints.len() as f64;
        let routed_known = endpoints.contains(&routed_to);
        let cap = (share.ceil() as usize).max(self.config.min_keys);
        if routed_known && self.keys_on(routed_to) < cap {
            return routed_to.to_string();
        }
        endpoints
            .iter()
            .min_by_key(|a| self.keys_on(a))
            .map_or_else(|| routed_to.to_string(), |a| a.to_string())
    }

    fn remove(&mut self, key: u64) {
        if let Some(placed) = self.keys.remove(&key) {
            if let Some(n) = self.load.get_mut(&placed.endpoint) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.load.remove(&placed.endpoint);
                }
            }
        }
    }

    fn forget_oldest(&mut self) {
        let oldest = self
            .keys
            .iter()
            .min_by_key(|(&k, p)| (p.last_seen_ms, k))
            .map(|(&k, _)| k);
        if let Some(key) = oldest {
            self.remove(key);
        }
    }
}

/// Every pool's placements, shared by the gRPC service (which applies reports)
/// and the snapshot publisher (which reads the tables).
#[derive(Debug)]
pub struct Placements {
    enabled: bool,
    config: PlacementConfig,
    started: Instant,
    /// By pool (namespace, name).
    pools: Mutex<HashMap<PoolKey, PrefixPlacements>>,
    changed: AtomicBool,
    /// Woken when a report changed a table (the publisher waits on it).
    pub notify: Notify,
}

impl Placements {
    /// `enabled` false: reports are ignored and snapshots say the collector
    /// does not learn placements (filters use rendezvous hashing alone).
    pub fn new(config: PlacementConfig, enabled: bool) -> Self {
        Placements {
            enabled,
            config,
            started: Instant::now(),
            pools: Mutex::new(HashMap::new()),
            changed: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, PrefixPlacements>> {
        // A panic while holding the lock cannot leave a table half-updated in
        // a way that matters (soft state), so a poisoned lock is still used.
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies gateway reports. Returns how many named a known pool and one of
    /// its endpoints (the others are ignored: the pool or pod may be gone).
    pub fn report(&self, seen: &[PrefixSeen], desired: &DesiredState) -> usize {
        if !self.enabled {
            return 0;
        }
        let now_ms = self.now_ms();
        // Each pool's ready endpoints, worked out once per report, not per key.
        let mut ready: HashMap<usize, Vec<&str>> = HashMap::new();
        let mut pools = self.lock();
        let mut accepted = 0;
        let mut changed = false;
        for s in seen {
            let Some(index) = reported_pool(desired, s) else {
                continue;
            };
            let pool = &desired.pools[index];
            let ready = ready.entry(index).or_insert_with(|| ready_addresses(pool));
            if !pool.endpoints.iter().any(|e| e.address == s.endpoint) {
                continue;
            }
            let table = pools
                .entry(pool_key(pool))
                .or_insert_with(|| PrefixPlacements::new(self.config.clone()));
            changed |= table.observe(s.key, &s.endpoint, ready, now_ms);
            accepted += 1;
        }
        drop(pools);
        if changed {
            self.changed.store(true, Ordering::Release);
            self.notify.notify_one();
        }
        accepted
    }

    /// Whether a report changed a table since the last call.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// The pool's table for a snapshot, after dropping expired keys and keys
    /// of endpoints no longer in the pool.
    pub fn table(&self, pool: &DesiredPool) -> Vec<u8> {
        if !self.enabled {
            return Vec::new();
        }
        let now_ms = self.now_ms();
        let mut pools = self.lock();
        let Some(table) = pools.get_mut(&pool_key(pool)) else {
            return Vec::new();
        };
        let all: Vec<&str> = pool.endpoints.iter().map(|e| e.address.as_str()).collect();
        table.expire(&all, now_ms);
        table.table(&all)
    }

    /// Forgets the tables of pools no longer in the desired state.
    pub fn retain_pools(&self, desired: &DesiredState) {
        self.lock()
            .retain(|key, _| desired.pools.iter().any(|p| &pool_key(p) == key));
    }
}

/// A pool's identity: (namespace, name).
type PoolKey = (String, String);

fn pool_key(pool: &DesiredPool) -> PoolKey {
    (pool.namespace.clone(), pool.name.clone())
}

/// The index of the pool a report names: by namespace and name; a report
/// without a namespace (a gateway from before pools were namespaced) names
/// the pool of that name only while exactly one namespace has one.
fn reported_pool(desired: &DesiredState, seen: &PrefixSeen) -> Option<usize> {
    if !seen.namespace.is_empty() {
        return desired
            .pools
            .iter()
            .position(|p| p.namespace == seen.namespace && p.name == seen.pool);
    }
    let mut named = desired
        .pools
        .iter()
        .enumerate()
        .filter(|(_, p)| p.name == seen.pool)
        .map(|(i, _)| i);
    match (named.next(), named.next()) {
        (Some(only), None) => Some(only),
        _ => None,
    }
}

fn ready_addresses(pool: &DesiredPool) -> Vec<&str> {
    pool.endpoints
        .iter()
        .filter(|e| e.pod_ready)
        .map(|e| e.address.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_parse::Engine;
    use crate::model::DesiredEndpoint;
    use pool_state::FailureMode;

    const PODS: [&str; 4] = ["a:1", "b:1", "c:1", "d:1"];

    fn keys_per_endpoint(p: &PrefixPlacements) -> Vec<usize> {
        PODS.iter().map(|a| p.keys_on(a)).collect()
    }

    #[test]
    fn a_key_stays_where_it_was_first_routed_while_that_pod_has_room() {
        let mut p = PrefixPlacements::new(PlacementConfig::default());
        assert!(p.observe(1, "b:1", &PODS, 0));
        assert_eq!(p.endpoint_of(1), Some("b:1"));
        assert!(
            !p.observe(1, "c:1", &PODS, 10),
            "a placed key does not move"
        );
        assert_eq!(p.endpoint_of(1), Some("b:1"));
    }

    #[test]
    fn keys_routed_to_one_pod_are_spread_over_all() {
        let mut p = PrefixPlacements::new(PlacementConfig::default());
        for key in 0..100 {
            p.observe(key, "a:1", &PODS, key);
        }
        let load = keys_per_endpoint(&p);
        assert_eq!(load.iter().sum::<usize>(), 100);
        // cap = ceil(1.1 * keys / pods): 28 of 100 at most, 22 at least
        assert!(load.iter().all(|&n| (22..=28).contains(&n)), "{load:?}");
    }

    #[test]
    fn the_first_few_keys_stay_where_they_were_routed() {
        // Reports in an unlucky order: two groups on each of four pods, the
        // first three reports naming only two pods.
        let mut p = PrefixPlacements::new(PlacementConfig::default());
        let routed = ["a:1", "a:1", "b:1", "b:1", "c:1", "c:1", "d:1", "d:1"];
        for (key, pod) in routed.iter().enumerate() {
            p.observe(key as u64, pod, &PODS, 0);
        }
        for (key, pod) in routed.iter().enumerate() {
            assert_eq!(p.endpoint_of(key as u64), Some(*pod), "key {key} moved");
        }
        // Past `min_keys` per pod the balance cap applies again.
        for key in 8..12 {
            p.observe(key, "a:1", &PODS, 0);
        }
        assert_eq!(p.keys_on("a:1"), 4);
    }

    #[test]
    fn keys_expire_and_follow_their_endpoint_out_of_the_pool() {
        let config = PlacementConfig {
            ttl_ms: 1_000,
            ..PlacementConfig::default()
        };
        let mut p = PrefixPlacements::new(config);
        p.observe(1, "a:1", &PODS, 0);
        p.observe(2, "b:1", &PODS, 0);
        p.observe(2, "b:1", &PODS, 900); // seen again
        assert!(p.expire(&PODS, 1_500));
        assert_eq!((p.endpoint_of(1), p.endpoint_of(2)), (None, Some("b:1")));
        assert!(p.expire(&PODS[2..], 1_600), "b:1 left the pool");
        assert!(p.is_empty());
        // a key whose pod left is placed again when next reported
        p.observe(3, "a:1", &PODS, 0);
        assert!(p.observe(3, "c:1", &PODS[1..], 10));
        assert_eq!(p.endpoint_of(3), Some("c:1"));
    }

    #[test]
    fn a_full_table_forgets_the_key_seen_longest_ago() {
        let config = PlacementConfig {
            max_keys: 2,
            ..PlacementConfig::default()
        };
        let mut p = PrefixPlacements::new(config);
        p.observe(1, "a:1", &PODS, 0);
        p.observe(2, "a:1", &PODS, 5);
        p.observe(1, "a:1", &PODS, 10);
        p.observe(3, "a:1", &PODS, 20);
        assert_eq!(p.len(), 2);
        assert_eq!(p.endpoint_of(2), None);
    }

    #[test]
    fn the_table_is_sorted_and_indexes_the_endpoint_list() {
        let mut p = PrefixPlacements::new(PlacementConfig::default());
        p.observe(9, "c:1", &PODS, 0);
        p.observe(3, "a:1", &PODS, 0);
        let table = p.table(&["c:1", "a:1"]);
        let pairs: Vec<(u64, u32)> = pool_state::placements::records(&table).collect();
        assert_eq!(pairs, vec![(3, 1), (9, 0)]);
        assert_eq!(
            p.table(&["z:1"]),
            Vec::<u8>::new(),
            "keys of unlisted endpoints are left out"
        );
    }

    fn desired() -> DesiredState {
        let endpoint = |address: &str, pod_ready: bool| DesiredEndpoint {
            address: address.into(),
            pod: address.into(),
            pod_ready,
            engine: Engine::Vllm,
        };
        DesiredState {
            pools: vec![DesiredPool {
                name: "pool".into(),
                namespace: "default".into(),
                failure_mode: FailureMode::FailClose,
                endpoints: vec![endpoint("a:1", true), endpoint("b:1", false)],
                model_rules: Vec::new(),
                objectives: Vec::new(),
            }],
            problems: Vec::new(),
            synced: true,
        }
    }

    fn seen(pool: &str, key: u64, endpoint: &str) -> PrefixSeen {
        PrefixSeen {
            pool: pool.into(),
            key,
            endpoint: endpoint.into(),
            namespace: String::new(),
        }
    }

    #[test]
    fn same_named_pools_in_two_namespaces_keep_their_own_tables() {
        let placements = Placements::new(PlacementConfig::default(), true);
        let mut state = desired();
        let mut other = state.pools[0].clone();
        other.namespace = "team-b".into();
        other.endpoints[0].address = "c:1".into();
        other.endpoints[1].address = "d:1".into();
        state.pools.push(other);
        let in_ns = |ns: &str, key, endpoint| PrefixSeen {
            namespace: ns.into(),
            ..seen("pool", key, endpoint)
        };
        let accepted = placements.report(
            &[
                in_ns("default", 1, "a:1"),
                in_ns("team-b", 2, "c:1"),
                // An endpoint of the other namespace's pool: ignored.
                in_ns("team-b", 3, "a:1"),
                in_ns("team-c", 4, "a:1"),
                // No namespace and two pools of that name: ignored.
                seen("pool", 5, "a:1"),
            ],
            &state,
        );
        assert_eq!(accepted, 2);
        let keys = |pool: &DesiredPool| -> Vec<(u64, u32)> {
            pool_state::placements::records(&placements.table(pool)).collect()
        };
        assert_eq!(keys(&state.pools[0]), vec![(1, 0)]);
        assert_eq!(keys(&state.pools[1]), vec![(2, 0)]);
        // Once only one namespace has the name, a bare report finds it.
        state.pools.truncate(1);
        placements.retain_pools(&state);
        assert_eq!(placements.report(&[seen("pool", 5, "a:1")], &state), 1);
        assert_eq!(keys(&state.pools[0]), vec![(1, 0), (5, 0)]);
    }

    #[test]
    fn reports_of_unknown_pools_or_endpoints_are_ignored() {
        let placements = Placements::new(PlacementConfig::default(), true);
        let state = desired();
        let accepted = placements.report(
            &[
                seen("pool", 1, "a:1"),
                seen("other", 2, "a:1"),
                seen("pool", 3, "z:9"),
            ],
            &state,
        );
        assert_eq!(accepted, 1);
        assert!(placements.take_changed());
        assert!(!placements.take_changed());
        let table = placements.table(&state.pools[0]);
        assert_eq!(pool_state::placements::lookup(&table, 1), Some(0));
    }

    #[test]
    fn a_key_routed_to_an_unready_pod_is_placed_on_a_ready_one() {
        let placements = Placements::new(PlacementConfig::default(), true);
        let state = desired();
        assert_eq!(placements.report(&[seen("pool", 7, "b:1")], &state), 1);
        let table = placements.table(&state.pools[0]);
        assert_eq!(
            pool_state::placements::records(&table).collect::<Vec<_>>(),
            vec![(7, 0)],
            "a:1, the ready one"
        );
    }

    #[test]
    fn disabled_placements_ignore_reports() {
        let placements = Placements::new(PlacementConfig::default(), false);
        let state = desired();
        assert_eq!(placements.report(&[seen("pool", 1, "a:1")], &state), 0);
        assert!(placements.table(&state.pools[0]).is_empty());
        assert!(!placements.take_changed());
    }
}
