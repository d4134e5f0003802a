//! Prefix-cache affinity without a shared index.
//!
//! The prompt (the raw JSON text of completions `prompt` or chat `messages`) is
//! cut into 64-byte blocks and hashed as a chain, so a block's hash names the
//! whole prefix up to it. The request's *affinity key* is the chain hash at a
//! fixed depth (or at the last whole block of a shorter prompt). Every worker of
//! every Envoy replica ranks the pool's endpoints by rendezvous (highest random
//! weight) hashing of that key, so requests sharing the first
//! `affinity_depth_blocks` blocks agree on the same owner pod with no index to
//! share. Bounded load: an owner that is saturated, stale, or whose queue
//! (waiting + requests sent since the scrape) exceeds `load_factor` × the mean
//! (+ `load_slack`) is skipped for the next
//! endpoint in rendezvous order, which every replica also agrees on, so a hot
//! prefix spills onto a second pod instead of piling onto one.

use serde::Deserialize;

/// Characters (bytes of raw JSON text) per hashed block, as in GIE.
pub const BLOCK_BYTES: usize = 64;

/// Tuning of the prefix-affinity scorer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefixConfig {
    /// Upper bound of `affinity_depth_blocks` (the blocks hashed per request:
    /// only those the affinity key needs are).
    pub max_blocks: usize,
    /// Depth (in blocks) of the chain hash that names a request's affinity
    /// group. Short enough that every turn of a conversation shares it, long
    /// enough to tell different system prompts apart.
    pub affinity_depth_blocks: usize,
    /// An owner whose queue (waiting + this Envoy's requests the last scrape
    /// has not seen, `scheduling::affinity_queue`) exceeds
    /// `load_factor` × the candidates' mean + `load_slack` gives way.
    /// Defaults 1.25 and 3 (were 1.5 and 2): on the routing benchmark's
    /// bursty mix the owner gives way sooner under load (p90 TTFT lower at 80%
    /// and 100% over seeds 1-4, the other workloads within ±3 ms), while the
    /// slack keeps a handful of concurrent conversations on their owners on an
    /// idle pool (BENCHMARKS.md, "Bounded load 1.5 × mean + 2 → 1.25 × mean + 3").
    pub load_factor: f64,
    pub load_slack: f64,
    /// Follow the collector's learned placements (and report keys so it can
    /// learn them); off, the owner is the rendezvous hash alone.
    pub learned_placement: bool,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            max_blocks: 256,
            affinity_depth_blocks: 4,
            load_factor: 1.25,
            load_slack: 3.0,
            learned_placement: true,
        }
    }
}

impl PrefixConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_blocks == 0 {
            return Err("prefix.max_blocks must be at least 1".into());
        }
        if self.affinity_depth_blocks == 0 || self.affinity_depth_blocks > self.max_blocks {
            return Err("prefix.affinity_depth_blocks must be in 1..=max_blocks".into());
        }
        if !self.load_factor.is_finite() || self.load_factor < 1.0 {
            return Err("prefix.load_factor must be a finite number >= 1".into());
        }
        if !self.load_slack.is_finite() || self.load_slack < 0.0 {
            return Err("prefix.load_slack must be a finite number >= 0".into());
        }
        Ok(())
    }
}

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: a cheap bijective mixer with good avalanche.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_with_seed(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(MUL);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(MUL)
            .rotate_left(29);
    }
    let mut tail = [0u8; 8];
    let rest = words.remainder();
    if let Some(head) = tail.get_mut(..rest.len()) {
        head.copy_from_slice(rest);
    }
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(MUL);
    mix64(h)
}

/// A stable 64-bit hash, identical on every platform (wasm32 and native).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    hash_with_seed(0x6C6C_6D67_7721_0001, bytes)
}

/// Chained hashes of the prompt's whole 64-byte blocks, at most `max_blocks`.
/// `hashes[i]` identifies bytes `0..64*(i+1)`.
pub fn block_hashes(prompt: &[u8], max_blocks: usize) -> Vec<u64> {
    let mut hashes = Vec::with_capacity((prompt.len() / BLOCK_BYTES).min(max_blocks));
    let mut chain = 0u64;
    for block in prompt.chunks_exact(BLOCK_BYTES).take(max_blocks) {
        chain = hash_with_seed(chain, block);
        hashes.push(chain);
    }
    hashes
}

/// The hash naming the request's affinity group; `None` for prompts shorter
/// than one block (nothing worth caching).
pub fn affinity_key(hashes: &[u64], depth_blocks: usize) -> Option<u64> {
    let depth = depth_blocks.min(hashes.len());
    depth.checked_sub(1).and_then(|i| hashes.get(i)).copied()
}

/// Rendezvous weight of an endpoint for a key: the highest weight owns the key.
pub fn rendezvous_weight(key: u64, endpoint_hash: u64) -> u64 {
    mix64(key ^ endpoint_hash.wrapping_mul(MUL))
}

/// Load facts of one candidate as the affinity owner check needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CandidateLoad {
    pub endpoint_hash: u64,
    /// Waiting requests plus this Envoy's requests not yet seen by a scrape.
    pub queue: f64,
    /// Saturated or with stale metrics: never an owner.
    pub saturated: bool,
}

/// Where a key's owner comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerRule {
    /// `preferred` (the collector's placement) while it fits, else the first
    /// fitting endpoint in rendezvous order; with no placement, rendezvous.
    Rendezvous,
    /// The collector learns placements but has not placed this key yet:
    /// `preferred` (where this worker sent it) while it fits, else no owner,
    /// so the load scorers place it.
    Learning,
}

/// Index (into `candidates`) of the endpoint that owns `key`: `preferred` if
/// it is not overloaded, else as `rule` says; `None` when nothing fits.
pub fn affinity_owner(
    key: u64,
    candidates: &[CandidateLoad],
    preferred: Option<usize>,
    rule: OwnerRule,
    config: &PrefixConfig,
) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let mean = candidates.iter().map(|c| c.queue).sum::<f64>() / candidates.len() as f64;
    let limit = config.load_factor * mean + config.load_slack;
    let fits = |c: &CandidateLoad| !c.saturated && c.queue <= limit;
    if let Some(i) = preferred.filter(|&i| candidates.get(i).is_some_and(fits)) {
        return Some(i);
    }
    if rule == OwnerRule::Learning {
        return None;
    }
    // The first fitting candidate in rendezvous order (highest weight first,
    // a tie by lower index so every replica agrees) is the fitting one with
    // the highest weight: one pass, no sort.
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| fits(c))
        .map(|(i, c)| (rendezvous_weight(key, c.endpoint_hash), i))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(hash: u64, queue: f64) -> CandidateLoad {
        CandidateLoad {
            endpoint_hash: hash_bytes(&hash.to_le_bytes()),
            queue,
            saturated: false,
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn hashes_are_chained_and_capped() {
        let a = vec![b'a'; 64 * 10 + 5];
        let mut b = a.clone();
        b[64 * 3] = b'b';
        let ha = block_hashes(&a, 100);
        let hb = block_hashes(&b, 100);
        assert_eq!(ha.len(), 10, "partial trailing block is not hashed");
        assert_eq!(ha[..3], hb[..3]);
        assert!(
            ha[3..].iter().zip(&hb[3..]).all(|(x, y)| x != y),
            "chain carries the change"
        );
        assert_eq!(block_hashes(&a, 4).len(), 4);
        assert!(block_hashes(b"short", 4).is_empty());
        // identical blocks at different positions hash differently (chained)
        assert_ne!(ha[0], ha[1]);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn hash_is_stable_across_platforms() {
        // Pinned values: a change here breaks affinity between mixed-version replicas.
        assert_eq!(hash_bytes(b""), hash_bytes(b""));
        assert_ne!(hash_bytes(b"10.0.0.1:8000"), hash_bytes(b"10.0.0.2:8000"));
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161D_100B_05E5);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn affinity_key_uses_depth_or_last_block() {
        let h = [1, 2, 3, 4, 5, 6];
        assert_eq!(affinity_key(&h, 4), Some(4));
        assert_eq!(affinity_key(&h[..2], 4), Some(2));
        assert_eq!(affinity_key(&[], 4), None);
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn owner_is_deterministic_and_independent_of_candidate_order() {
        let config = PrefixConfig::default();
        let cands: Vec<_> = (0..8).map(|i| cand(i, 1.0)).collect();
        let mut reversed = cands.clone();
        reversed.reverse();
        for key in 0..200u64 {
            let a = affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config).unwrap();
            let b = affinity_owner(key, &reversed, None, OwnerRule::Rendezvous, &config).unwrap();
            assert_eq!(cands[a].endpoint_hash, reversed[b].endpoint_hash);
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn owner_is_the_first_fitting_endpoint_in_rendezvous_order() {
        // The definition, as a sort: highest weight first, then lower index.
        let reference = |key: u64, cands: &[CandidateLoad], config: &PrefixConfig| {
            let mean = cands.iter().map(|c| c.queue).sum::<f64>() / cands.len().max(1) as f64;
            let limit = config.load_factor * mean + config.load_slack;
            let mut order: Vec<(u64, usize)> = cands
                .iter()
                .enumerate()
                .map(|(i, c)| (rendezvous_weight(key, c.endpoint_hash), i))
                .collect();
            order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            order
                .into_iter()
                .map(|(_, i)| i)
                .find(|&i| !cands[i].saturated && cands[i].queue <= limit)
        };
        let config = PrefixConfig::default();
        let mut state = 3u64;
        for round in 0..300u64 {
            let n = 1 + (round % 17) as usize;
            let cands: Vec<_> = (0..n)
                .map(|i| {
                    state = mix64(state);
                    // Duplicate hashes now and then: ties must go to the lower index.
                    let hash = if state.is_multiple_of(7) {
                        1
                    } else {
                        i as u64 + round
                    };
                    CandidateLoad {
                        saturated: state.is_multiple_of(5),
                        ..cand(hash, (state >> 8) as f64 % 12.0)
                    }
                })
                .collect();
            for key in 0..20 {
                assert_eq!(
                    affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config),
                    reference(key, &cands, &config),
                    "round {round}, key {key}"
                );
            }
        }
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn keys_spread_over_endpoints() {
        let config = PrefixConfig::default();
        let cands: Vec<_> = (0..8).map(|i| cand(i, 0.0)).collect();
        let mut owned = [0u32; 8];
        for key in 0..8000u64 {
            owned[affinity_owner(mix64(key), &cands, None, OwnerRule::Rendezvous, &config)
                .unwrap()] += 1;
        }
        assert!(owned.iter().all(|&n| (700..1300).contains(&n)), "{owned:?}");
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn overloaded_or_saturated_owner_gives_way_to_the_next_in_order() {
        let config = PrefixConfig::default();
        let mut cands: Vec<_> = (0..4).map(|i| cand(i, 1.0)).collect();
        let key = 42;
        let first = affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config).unwrap();
        cands[first].queue = 50.0;
        let second = affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config).unwrap();
        assert_ne!(first, second);
        cands[first].queue = 1.0;
        cands[first].saturated = true;
        assert_eq!(
            affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config),
            Some(second)
        );
        for c in &mut cands {
            c.saturated = true;
        }
        assert_eq!(
            affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config),
            None
        );
        assert_eq!(
            affinity_owner(key, &[], None, OwnerRule::Rendezvous, &config),
            None
        );
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn config_validation() {
        assert!(PrefixConfig::default().validate().is_ok());
        let bad = |f: fn(&mut PrefixConfig)| {
            let mut c = PrefixConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.max_blocks = 0));
        assert!(bad(|c| c.affinity_depth_blocks = 0));
        assert!(bad(|c| c.affinity_depth_blocks = 1000));
        assert!(bad(|c| c.load_factor = 0.5));
        assert!(bad(|c| c.load_factor = f64::NAN));
        assert!(bad(|c| c.load_slack = -1.0));
    }

    #[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
    #[cfg_attr(not(target_arch = "wasm32"), test)]
    fn a_preferred_endpoint_owns_while_it_fits_then_the_rule_decides() {
        let config = PrefixConfig::default();
        let mut cands: Vec<_> = (0..4).map(|i| cand(i, 0.0)).collect();
        let key = 77;
        let hashed = affinity_owner(key, &cands, None, OwnerRule::Rendezvous, &config).unwrap();
        let other = (hashed + 1) % 4;
        for rule in [OwnerRule::Rendezvous, OwnerRule::Learning] {
            assert_eq!(
                affinity_owner(key, &cands, Some(other), rule, &config),
                Some(other)
            );
        }
        assert_eq!(
            affinity_owner(key, &cands, None, OwnerRule::Learning, &config),
            None
        );
        // The preferred endpoint over the limit: rendezvous spills, learning
        // leaves the pick to the load scorers.
        cands[other].queue = 10.0;
        assert_eq!(
            affinity_owner(key, &cands, Some(other), OwnerRule::Rendezvous, &config),
            Some(hashed)
        );
        assert_eq!(
            affinity_owner(key, &cands, Some(other), OwnerRule::Learning, &config),
            None
        );
        assert_eq!(
            affinity_owner(key, &cands, Some(9), OwnerRule::Rendezvous, &config),
            Some(hashed),
            "an index out of range is ignored"
        );
    }
}
