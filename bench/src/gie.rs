//! GIE's endpoint picker, for comparison, in three profiles named for what
//! they are:
//! - `gie-default`: exactly the shipped default profile (GIE v1.2-v1.5
//!   `pkg/epp/config/loader/defaults.go`, llm-d-router v0.10 the same):
//!   queue-scorer 2, kv-cache-utilization-scorer 2, prefix-cache-scorer 3,
//!   max-score picker with random tie-break. No lora-affinity.
//! - `gie+lora`: the default plus the opt-in lora-affinity-scorer at weight 1.
//! - `gie+inflight`: the default plus an opt-in in-flight scorer at weight 1
//!   (the shape of llm-d-router's active-request scorer: (max - n) / max over
//!   the requests the picker has dispatched and not seen finish; 1 when none).
//!
//! As deployed, one active EPP per pool serves every gateway replica: the
//! simulation gives all replicas one shared picker (one prefix index, one
//! in-flight table) and refreshes its view of each pod every 50 ms at that
//! pod's own phase (see [`crate::simulation`]).
//!
//! The prefix scorer is GIE's *approximate* one: the picker hashes the prompt
//! text in 64-character blocks (block_size x 4 chars per token), chained from a
//! hash of the model name, at most 256 blocks, and remembers per pod, in an LRU
//! as large as the pod's KV blocks, which hashes it routed there. A pod's score
//! is its matched leading blocks / total blocks. The index lives in the one
//! picker process every replica asks.

use std::collections::{HashMap, VecDeque};

use pool_state::{Endpoint, Pool};

use crate::rng::Rng;

pub const QUEUE_WEIGHT: f64 = 2.0;
pub const KV_WEIGHT: f64 = 2.0;
pub const PREFIX_WEIGHT: f64 = 3.0;
/// Weight of the opt-in lora-affinity scorer in `gie+lora`.
pub const LORA_WEIGHT: f64 = 1.0;
/// Weight of the opt-in in-flight scorer in `gie+inflight`.
pub const INFLIGHT_WEIGHT: f64 = 1.0;

/// Which of GIE's scorers a picker runs, beyond the default three.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GieProfile {
    /// lora-affinity-scorer weight (0 = not configured, as in the default).
    pub lora_weight: f64,
    /// In-flight scorer weight (0 = not configured, as in the default).
    pub inflight_weight: f64,
}

impl GieProfile {
    /// The shipped default profile: queue 2, kv 2, prefix 3.
    pub const DEFAULT: GieProfile = GieProfile {
        lora_weight: 0.0,
        inflight_weight: 0.0,
    };
    pub const WITH_LORA: GieProfile = GieProfile {
        lora_weight: LORA_WEIGHT,
        inflight_weight: 0.0,
    };
    pub const WITH_INFLIGHT: GieProfile = GieProfile {
        lora_weight: 0.0,
        inflight_weight: INFLIGHT_WEIGHT,
    };
}
/// GIE's fallback block size in characters and its cap on blocks matched.
pub const DEFAULT_BLOCK_CHARS: usize = 64;
pub const MAX_PREFIX_BLOCKS: usize = 256;
/// GIE's default LRU entries per pod when the pod does not report its KV blocks.
pub const DEFAULT_LRU_CAPACITY: usize = 31_250;
const CHARS_PER_TOKEN: usize = 4;

/// Chained 64-bit hashes of the prompt's leading fixed-size character blocks;
/// a trailing partial block is ignored (as GIE does).
pub fn block_hashes(model: &str, prompt: &[u8], block_chars: usize, max_blocks: usize) -> Vec<u64> {
    let usable = prompt.len().min(block_chars * max_blocks);
    let mut prev = hash_bytes(model.as_bytes(), 0x6A09_E667_F3BC_C908);
    prompt[..usable]
        .chunks_exact(block_chars)
        .map(|block| {
            prev = hash_bytes(block, prev);
            prev
        })
        .collect()
}

/// A fast 64-bit hash (FNV-1a over 8-byte words, then a finaliser). GIE uses
/// xxhash; any well-mixed hash gives the same routing behaviour.
fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ 0xCBF2_9CE4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x0000_0100_0000_01B3).rotate_left(29);
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    h ^= h >> 33;
    h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    h ^ (h >> 33)
}

/// One pod's LRU of block hashes (lazy-deletion queue + last-use stamps).
#[derive(Default)]
struct PodLru {
    capacity: usize,
    stamps: HashMap<u64, u64>,
    order: VecDeque<(u64, u64)>,
}

/// GIE's approximate prefix index: hash -> pods that were sent it, bounded per pod.
#[derive(Default)]
pub struct PrefixIndex {
    clock: u64,
    pods: Vec<PodLru>,
    hash_to_pods: HashMap<u64, Vec<u32>>,
}

impl PrefixIndex {
    /// Matched leading blocks per pod (GIE's greedy walk: stop at the first
    /// block no pod has; every pod holding block i gets one more).
    pub fn matches(&self, hashes: &[u64], pods: usize) -> Vec<usize> {
        let mut counts = vec![0usize; pods];
        for h in hashes {
            match self.hash_to_pods.get(h) {
                Some(holders) if !holders.is_empty() => {
                    for &p in holders {
                        if let Some(c) = counts.get_mut(p as usize) {
                            *c += 1;
                        }
                    }
                }
                _ => break,
            }
        }
        counts
    }

    /// Records that `hashes` were routed to `pod` (GIE's PreRequest hook).
    pub fn add(&mut self, hashes: &[u64], pod: usize, capacity: usize) {
        if self.pods.len() <= pod {
            self.pods.resize_with(pod + 1, PodLru::default);
        }
        for &h in hashes {
            self.clock += 1;
            let lru = &mut self.pods[pod];
            lru.capacity = capacity.max(1);
            if lru.stamps.insert(h, self.clock).is_none() {
                let holders = self.hash_to_pods.entry(h).or_default();
                holders.push(pod as u32);
            }
            lru.order.push_back((h, self.clock));
            while lru.stamps.len() > lru.capacity {
                let (old, stamp) = lru.order.pop_front().expect("order covers stamps");
                if lru.stamps.get(&old) == Some(&stamp) {
                    lru.stamps.remove(&old);
                    if let Some(holders) = self.hash_to_pods.get_mut(&old) {
                        holders.retain(|p| *p as usize != pod);
                        if holders.is_empty() {
                            self.hash_to_pods.remove(&old);
                        }
                    }
                }
            }
            // keep the lazy queue from growing without bound under repeated hits
            if lru.order.len() > 4 * lru.capacity + 1024 {
                let stamps = &lru.stamps;
                lru.order.retain(|(h, s)| stamps.get(h) == Some(s));
            }
        }
    }
}

/// The request facts GIE's scorers read.
pub struct GieRequest<'a> {
    pub model: &'a str,
    pub prompt: &'a str,
}

/// One GIE endpoint-picker instance.
#[derive(Default)]
pub struct GiePicker {
    profile: GieProfile,
    index: PrefixIndex,
}

impl GiePicker {
    /// A picker with the shipped default profile.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_profile(profile: GieProfile) -> Self {
        GiePicker {
            profile,
            index: PrefixIndex::default(),
        }
    }

    /// Scores every endpoint of `pool` and returns the index of the pick.
    /// `inflight[i]`: requests this picker sent to endpoint i that have not
    /// finished (read only by the in-flight scorer).
    pub fn pick(
        &mut self,
        pool: &Pool,
        req: &GieRequest<'_>,
        inflight: &[u32],
        rng: &mut Rng,
    ) -> usize {
        let eps = &pool.endpoints;
        assert!(!eps.is_empty(), "GIE picker needs endpoints");
        let block_chars = eps
            .first()
            .filter(|e| e.block_size > 0)
            .map_or(DEFAULT_BLOCK_CHARS, |e| {
                e.block_size as usize * CHARS_PER_TOKEN
            });
        let hashes = block_hashes(
            req.model,
            req.prompt.as_bytes(),
            block_chars,
            MAX_PREFIX_BLOCKS,
        );
        let matched = self.index.matches(&hashes, eps.len());

        let (qmin, qmax) = eps.iter().fold((u32::MAX, 0), |(lo, hi), e| {
            (lo.min(e.waiting), hi.max(e.waiting))
        });
        let max_inflight = inflight.iter().copied().max().unwrap_or(0);
        let mut best = Vec::with_capacity(eps.len());
        let mut best_score = f64::NEG_INFINITY;
        for (i, e) in eps.iter().enumerate() {
            let queue = if qmax == qmin {
                1.0
            } else {
                f64::from(qmax - e.waiting) / f64::from(qmax - qmin)
            };
            let kv = 1.0 - f64::from(e.kv_cache_usage).clamp(0.0, 1.0);
            let prefix = if hashes.is_empty() {
                0.0
            } else {
                matched[i] as f64 / hashes.len() as f64
            };
            let mut score = QUEUE_WEIGHT * queue + KV_WEIGHT * kv + PREFIX_WEIGHT * prefix;
            if self.profile.lora_weight != 0.0 {
                score += self.profile.lora_weight * lora_affinity(pool, e, req.model);
            }
            if self.profile.inflight_weight != 0.0 {
                let n = inflight.get(i).copied().unwrap_or(0);
                let free = if max_inflight == 0 {
                    1.0
                } else {
                    f64::from(max_inflight - n) / f64::from(max_inflight)
                };
                score += self.profile.inflight_weight * free;
            }
            if score > best_score + 1e-12 {
                best_score = score;
                best.clear();
                best.push(i);
            } else if (score - best_score).abs() <= 1e-12 {
                best.push(i);
            }
        }
        let pick = best[rng.below(best.len())];
        let capacity = match eps[pick].num_gpu_blocks {
            0 => DEFAULT_LRU_CAPACITY,
            n => n as usize,
        };
        self.index.add(&hashes, pick, capacity);
        pick
    }
}

/// GIE's lora-affinity-scorer: 1.0 adapter active, 0.8 a slot free, 0.6 adapter
/// waiting, else 0. The base model is never "active", so base requests prefer
/// pods with free slots, exactly as GIE scores them.
fn lora_affinity(pool: &Pool, e: &Endpoint, model: &str) -> f64 {
    let has = |list: &[u32]| {
        list.iter()
            .any(|&i| pool.adapter_names.get(i as usize).map(String::as_str) == Some(model))
    };
    if has(&e.running_adapters) {
        1.0
    } else if (e.running_adapters.len() + e.waiting_adapters.len()) < e.max_loras as usize {
        0.8
    } else if has(&e.waiting_adapters) {
        0.6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(waiting: u32, kv: f32) -> Endpoint {
        Endpoint {
            address: "10.0.0.1:8000".into(),
            pod: "p".into(),
            ready: true,
            waiting,
            kv_cache_usage: kv,
            block_size: 16,
            num_gpu_blocks: 1000,
            ..Endpoint::default()
        }
    }

    #[test]
    fn hashes_chain_and_ignore_partial_blocks() {
        let a = block_hashes("m", &[b'x'; 200], 64, 256);
        assert_eq!(a.len(), 3);
        let mut other = vec![b'x'; 200];
        other[100] = b'y';
        let b = block_hashes("m", &other, 64, 256);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_ne!(a[2], b[2], "a changed block changes every later hash");
        assert_ne!(block_hashes("n", &[b'x'; 200], 64, 256)[0], a[0]);
        assert_eq!(block_hashes("m", &[b'x'; 100_000], 64, 256).len(), 256);
    }

    #[test]
    fn prefers_short_queue_then_low_kv() {
        let pool = Pool {
            endpoints: vec![endpoint(5, 0.1), endpoint(0, 0.9), endpoint(0, 0.2)],
            ..Pool::default()
        };
        let mut g = GiePicker::new();
        let mut rng = Rng::new(1);
        let req = GieRequest {
            model: "m",
            prompt: "short",
        };
        assert_eq!(g.pick(&pool, &req, &[], &mut rng), 2);
    }

    #[test]
    fn prefix_affinity_follows_the_index_and_lru_evicts() {
        let pool = Pool {
            endpoints: vec![endpoint(0, 0.0); 4],
            ..Pool::default()
        };
        let mut g = GiePicker::new();
        let mut rng = Rng::new(2);
        let prompt = "s".repeat(64 * 10);
        let req = GieRequest {
            model: "m",
            prompt: &prompt,
        };
        let first = g.pick(&pool, &req, &[], &mut rng);
        for _ in 0..20 {
            assert_eq!(g.pick(&pool, &req, &[], &mut rng), first);
        }
        let mut idx = PrefixIndex::default();
        let hashes: Vec<u64> = (0..10).collect();
        idx.add(&hashes, 1, 5);
        assert_eq!(idx.matches(&hashes, 2), vec![0, 0], "oldest blocks evicted");
        assert_eq!(idx.matches(&hashes[5..], 2), vec![0, 5]);
    }

    #[test]
    fn the_default_profile_ignores_adapters_and_inflight_the_others_do_not() {
        // Two idle pods; pod 1 has the request's adapter active.
        let mut e1 = endpoint(0, 0.0);
        e1.max_loras = 1;
        e1.running_adapters = vec![0];
        let mut e0 = endpoint(0, 0.0);
        e0.max_loras = 1;
        e0.running_adapters = vec![1];
        let pool = Pool {
            endpoints: vec![e0, e1],
            adapter_names: vec!["a".into(), "b".into()],
            ..Pool::default()
        };
        let req = GieRequest {
            model: "a",
            prompt: "short",
        };
        let mut rng = Rng::new(5);
        let picks = |profile: GieProfile, inflight: &[u32], rng: &mut Rng| {
            (0..40)
                .map(|_| GiePicker::with_profile(profile).pick(&pool, &req, inflight, rng))
                .collect::<Vec<_>>()
        };
        let d = picks(GieProfile::DEFAULT, &[], &mut rng);
        assert!(
            d.contains(&0) && d.contains(&1),
            "default: a tie, random pick"
        );
        assert!(picks(GieProfile::WITH_LORA, &[], &mut rng)
            .iter()
            .all(|&p| p == 1));
        assert!(picks(GieProfile::WITH_INFLIGHT, &[3, 0], &mut rng)
            .iter()
            .all(|&p| p == 1));
        assert!(picks(GieProfile::WITH_INFLIGHT, &[0, 3], &mut rng)
            .iter()
            .all(|&p| p == 0));
    }

    #[test]
    fn lora_affinity_scores() {
        let mut e = endpoint(0, 0.0);
        let pool = Pool {
            adapter_names: vec!["a".into(), "b".into(), "c".into()],
            ..Pool::default()
        };
        e.max_loras = 2;
        e.running_adapters = vec![0];
        assert_eq!(lora_affinity(&pool, &e, "a"), 1.0);
        assert_eq!(lora_affinity(&pool, &e, "b"), 0.8);
        e.waiting_adapters = vec![1];
        assert_eq!(lora_affinity(&pool, &e, "b"), 0.6);
        assert_eq!(lora_affinity(&pool, &e, "c"), 0.0);
    }
}
