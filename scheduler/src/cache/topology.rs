//! Device topology of one node, and the choice of *which* devices a pod gets.
//!
//! A [`Topology`] is the shape of a node's devices of one resource: the link rank between every
//! pair and each device's NUMA node. Nodes of the same model share one `Topology` (the cache
//! interns them), and the choice of a device set for a given free mask is memoised on it, so
//! choosing GPUs costs a hash lookup after the first time a shape is seen.
//!
//! The best set for `k` whole devices maximises, in order: the slowest link inside the set
//! (NVSwitch > NVLink > PCIe switch > host bridge > cross-socket), being on one NUMA node, the
//! sum of the links inside the set, packing onto the NUMA node with the fewest free devices,
//! and how well the devices left free stay connected to each other (so whole sockets, NVLink
//! pairs and groups stay free for later requests). Ties go to the lowest indices.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_api::device::{DeviceInventory, LinkKind};

/// Most devices of one resource on one node the scheduler tracks (a bit mask of `u64`).
pub const MAX_DEVICES: usize = 64;
/// Above this many candidate sets the choice is greedy instead of exhaustive.
pub const MAX_EXHAUSTIVE_SETS: u64 = 4096;

/// How a candidate set ranks: slowest link, one NUMA node, sum of links, NUMA best fit,
/// connectivity of what is left free (larger is better).
type SetKey = (u32, bool, u64, std::cmp::Reverse<u64>, u64);

/// Link ranks and NUMA placement of a node's devices of one resource.
pub struct Topology {
    n: usize,
    /// `rank[a * n + b]`: how good the link a–b is (see `DeviceLink::rank`; 0 = unknown).
    rank: Vec<u32>,
    numa: Vec<Option<u32>>,
    // Lock order: only this lock; held for a lookup or an insert, never across a call out.
    memo: Mutex<HashMap<(u64, u32), Option<u64>>>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology").field("n", &self.n).finish()
    }
}

/// The identity of a topology, for interning.
pub type TopologyKey = (Vec<u32>, Vec<Option<u32>>);

impl Topology {
    /// The topology of `ids` (in the order given) from a node's inventory.
    pub fn key_of(inventory: &DeviceInventory, ids: &[&str]) -> TopologyKey {
        let n = ids.len();
        let mut rank = vec![0u32; n * n];
        for link in &inventory.links {
            let (Some(a), Some(b)) = (
                ids.iter().position(|i| *i == link.a),
                ids.iter().position(|i| *i == link.b),
            ) else {
                continue;
            };
            rank[a * n + b] = link.rank();
            rank[b * n + a] = link.rank();
        }
        let numa = ids
            .iter()
            .map(|id| inventory.device(id).and_then(|d| d.numa_node))
            .collect();
        (rank, numa)
    }

    pub fn new(key: TopologyKey) -> Topology {
        let (rank, numa) = key;
        Topology {
            n: numa.len(),
            rank,
            numa,
            memo: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn rank(&self, a: usize, b: usize) -> u32 {
        self.rank[a * self.n + b]
    }

    /// The best set of `count` devices among `free` (a mask), or `None` if too few are free.
    pub fn choose(&self, free: u64, count: u32) -> Option<u64> {
        if free.count_ones() < count {
            return None;
        }
        if count == 0 {
            return Some(0);
        }
        let memo = |m: &Mutex<HashMap<(u64, u32), Option<u64>>>| {
            m.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(free, count))
                .copied()
        };
        if let Some(hit) = memo(&self.memo) {
            return hit;
        }
        let choice = self.compute(free, count);
        let mut m = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() > 100_000 {
            m.clear();
        }
        m.insert((free, count), choice);
        choice
    }

    /// How good a set is for a pod, 0–100: the slowest link inside it and NUMA locality.
    pub fn quality(&self, set: u64) -> i64 {
        let bits = bits(set);
        if bits.len() <= 1 {
            return 100;
        }
        let (min_rank, same_numa, _) = self.inner(&bits);
        let base = match min_rank {
            r if r >= 10_000 => 100,
            r if r >= 1_000 => 85,
            r if r >= 300 => 60,
            r if r >= 200 => 45,
            r if r >= 100 => 15,
            _ => 30,
        };
        if same_numa { base } else { base * 2 / 3 }
    }

    fn inner(&self, bits: &[usize]) -> (u32, bool, u64) {
        let mut min_rank = u32::MAX;
        let mut sum = 0u64;
        for (i, &a) in bits.iter().enumerate() {
            for &b in &bits[i + 1..] {
                let r = self.rank(a, b);
                min_rank = min_rank.min(r);
                sum += u64::from(r);
            }
        }
        let first = bits.first().and_then(|&a| self.numa[a]);
        let same_numa = bits.iter().all(|&a| self.numa[a] == first);
        (min_rank, same_numa, sum)
    }

    /// How connected the devices left free are: each one's best link to another free one.
    fn leftover(&self, rest: u64) -> u64 {
        let bits = bits(rest);
        bits.iter()
            .map(|&a| {
                bits.iter()
                    .filter(|&&b| b != a)
                    .map(|&b| u64::from(self.rank(a, b)))
                    .max()
                    .unwrap_or(0)
            })
            .sum()
    }

    fn compute(&self, free: u64, count: u32) -> Option<u64> {
        let candidates = bits(free);
        if binomial(candidates.len() as u64, u64::from(count)) > MAX_EXHAUSTIVE_SETS {
            return Some(self.greedy(&candidates, count));
        }
        // Best fit by NUMA node: prefer sets on nodes with fewer free devices, so whole
        // sockets stay free for large requests.
        let numa_free = |a: usize| {
            candidates
                .iter()
                .filter(|&&b| self.numa[b] == self.numa[a])
                .count() as u64
        };
        let mut best: Option<(SetKey, u64)> = None;
        let mut combo: Vec<usize> = (0..count as usize).collect();
        loop {
            let set: Vec<usize> = combo.iter().map(|&i| candidates[i]).collect();
            let mask = set.iter().fold(0u64, |m, &b| m | (1 << b));
            let (min_rank, same_numa, sum) = self.inner(&set);
            let packing = std::cmp::Reverse(set.iter().map(|&a| numa_free(a)).sum::<u64>());
            let key = (
                min_rank,
                same_numa,
                sum,
                packing,
                self.leftover(free & !mask),
            );
            // Combinations come in increasing order, so a strict `>` keeps the lowest indices.
            if best.as_ref().is_none_or(|(k, _)| key > *k) {
                best = Some((key, mask));
            }
            if !next_combination(&mut combo, candidates.len()) {
                break;
            }
        }
        best.map(|(_, m)| m)
    }

    /// Large device counts: fill one NUMA node at a time, following the best links.
    fn greedy(&self, candidates: &[usize], count: u32) -> u64 {
        let mut order: Vec<usize> = candidates.to_vec();
        order.sort_by_key(|&a| (self.numa[a], a));
        let mut chosen: Vec<usize> = vec![order.remove(0)];
        while chosen.len() < count as usize && !order.is_empty() {
            let last = chosen[chosen.len() - 1];
            let pos = (0..order.len())
                .max_by_key(|&i| {
                    (
                        self.numa[order[i]] == self.numa[last],
                        self.rank(last, order[i]),
                        std::cmp::Reverse(order[i]),
                    )
                })
                .unwrap_or(0);
            chosen.push(order.remove(pos));
        }
        chosen.iter().fold(0u64, |m, &b| m | (1 << b))
    }
}

/// Indices of the set bits of `mask`, lowest first.
pub fn bits(mut mask: u64) -> Vec<usize> {
    let mut out = Vec::with_capacity(mask.count_ones() as usize);
    while mask != 0 {
        out.push(mask.trailing_zeros() as usize);
        mask &= mask - 1;
    }
    out
}

fn binomial(n: u64, k: u64) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut r: u64 = 1;
    for i in 0..k {
        r = r.saturating_mul(n - i) / (i + 1);
    }
    r
}

fn next_combination(combo: &mut [usize], n: usize) -> bool {
    let k = combo.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if combo[i] < n - k + i {
            combo[i] += 1;
            for j in i + 1..k {
                combo[j] = combo[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// A link kind's rank floor, for tests and docs.
pub fn kind_rank(kind: LinkKind) -> u32 {
    match kind {
        LinkKind::NVSwitch => 10_000,
        LinkKind::NVLink => 1_000,
        LinkKind::PCIeSwitch => 300,
        LinkKind::PCIeHostBridge => 200,
        LinkKind::CrossSocket => 100,
    }
}

/// Interns topologies so nodes of one model share one (and its memo).
#[derive(Debug, Default)]
pub struct TopologyInterner {
    known: HashMap<TopologyKey, Arc<Topology>>,
}

impl TopologyInterner {
    pub fn intern(&mut self, key: TopologyKey) -> Arc<Topology> {
        self.known
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Topology::new(key)))
            .clone()
    }
}
