//! Node patterns: the ways pods can share one node, which make the class model exact.
//!
//! Aggregate capacity (`Σ requests ≤ count × free`) would let a class hold fractions of a pod per
//! node: two nodes with 3 free cores "hold" a 6-core pod. Instead each node of a class is given a
//! pattern — how many pods of each class it runs — and only patterns that fit one node exist.
//! Only maximal patterns are needed (the model says "at most"), and for GPU pods they are few:
//! an 8-GPU node and 1/2/4/8-GPU pods have 10. Enumeration stops at a limit; past it the caller
//! falls back to the greedy plan instead of building a model too large to solve in time.

use super::model::{NodeUse, Shape};

/// Most patterns enumerated for one free shape before giving up.
pub const DEFAULT_MAX_PATTERNS: usize = 512;
/// Most search steps spent enumerating patterns for one free shape.
const MAX_STEPS: usize = 200_000;

/// The maximal patterns of pods from `relevant` classes on one node of `free` (vectors indexed by
/// all pod classes), or `None` when there are more than `limit`.
pub fn maximal_patterns(
    free: &Shape,
    shapes: &[Shape],
    relevant: &[usize],
    limit: usize,
) -> Option<Vec<Vec<u32>>> {
    let relevant: Vec<usize> = relevant
        .iter()
        .copied()
        .filter(|&p| free.fit_count(&shapes[p]) > 0)
        .collect();
    let mut out = Vec::new();
    let mut current = vec![0u32; shapes.len()];
    let mut steps = 0usize;
    let left = (free.cpu_milli, free.memory_bytes, u64::from(free.gpus));
    if dfs(
        shapes,
        &relevant,
        0,
        left,
        &mut current,
        &mut out,
        limit,
        &mut steps,
    ) {
        Some(out)
    } else {
        None
    }
}

/// Depth-first over pod classes, largest count first; false when a limit is hit.
#[allow(clippy::too_many_arguments)]
fn dfs(
    shapes: &[Shape],
    relevant: &[usize],
    depth: usize,
    left: (u64, u64, u64),
    current: &mut [u32],
    out: &mut Vec<Vec<u32>>,
    limit: usize,
    steps: &mut usize,
) -> bool {
    *steps += 1;
    if *steps > MAX_STEPS {
        return false;
    }
    let fits = |s: &Shape, (cpu, mem, gpu): (u64, u64, u64)| {
        s.cpu_milli <= cpu && s.memory_bytes <= mem && u64::from(s.gpus) <= gpu
    };
    let Some(&p) = relevant.get(depth) else {
        // Maximal: no relevant pod could still be added.
        if relevant.iter().any(|&q| fits(&shapes[q], left)) {
            return true;
        }
        if current.iter().any(|&n| n > 0) {
            if out.len() >= limit {
                return false;
            }
            out.push(current.to_vec());
        }
        return true;
    };
    let s = &shapes[p];
    let by = |free: u64, ask: u64| free.checked_div(ask).unwrap_or(u64::MAX);
    let max = by(left.0, s.cpu_milli)
        .min(by(left.1, s.memory_bytes))
        .min(by(left.2, u64::from(s.gpus)));
    let max = u32::try_from(max).unwrap_or(u32::MAX);
    for n in (0..=max).rev() {
        let k = u64::from(n);
        let rest = (
            left.0 - s.cpu_milli * k,
            left.1 - s.memory_bytes * k,
            left.2 - u64::from(s.gpus) * k,
        );
        current[p] = n;
        if !dfs(
            shapes,
            relevant,
            depth + 1,
            rest,
            current,
            out,
            limit,
            steps,
        ) {
            current[p] = 0;
            return false;
        }
    }
    current[p] = 0;
    true
}

/// Fills nodes that carry `patterns` (pattern, node count), in order, with `used[p]` pods of each
/// class, and returns the contents actually used, grouped, without empty nodes. The expansion to
/// concrete nodes follows the same order, so a plan and its expansion agree.
pub fn fill(patterns: &[(Vec<u32>, u32)], used: &[u64], np: usize) -> Vec<NodeUse> {
    let mut left: Vec<u64> = used.to_vec();
    left.resize(np, 0);
    let mut out: Vec<NodeUse> = Vec::new();
    for (pattern, nodes) in patterns {
        for _ in 0..*nodes {
            if left.iter().all(|&n| n == 0) {
                return out;
            }
            let content: Vec<u32> = (0..np)
                .map(|p| {
                    let cap = u64::from(pattern.get(p).copied().unwrap_or(0));
                    let take = cap.min(left[p]);
                    left[p] -= take;
                    // `take` is at most a pattern entry, itself a u32.
                    u32::try_from(take).unwrap_or(u32::MAX)
                })
                .collect();
            if content.iter().all(|&n| n == 0) {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.content == content => last.nodes += 1,
                _ => out.push(NodeUse { content, nodes: 1 }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eight_gpu_node_with_power_of_two_pods_has_ten_patterns() {
        let free = Shape::new(128_000, 1 << 40, 8);
        let shapes: Vec<Shape> = [1, 2, 4, 8]
            .iter()
            .map(|&g| Shape::new(1000, 1 << 30, g))
            .collect();
        let patterns = maximal_patterns(&free, &shapes, &[0, 1, 2, 3], 100).unwrap_or_default();
        assert_eq!(patterns.len(), 10);
        assert!(patterns.iter().all(|p| free.holds(&shapes, p)));
    }

    #[test]
    fn too_many_patterns_is_reported() {
        let free = Shape::new(1_000_000, 1 << 40, 0);
        let shapes: Vec<Shape> = (1..6).map(|c| Shape::new(c * 1000, 1 << 20, 0)).collect();
        assert!(maximal_patterns(&free, &shapes, &[0, 1, 2, 3, 4], 50).is_none());
    }

    #[test]
    fn fill_uses_nodes_in_order_and_drops_empty_ones() {
        let uses = fill(&[(vec![2, 1], 3)], &[3, 1], 2);
        assert_eq!(
            uses,
            vec![
                NodeUse {
                    content: vec![2, 1],
                    nodes: 1
                },
                NodeUse {
                    content: vec![1, 0],
                    nodes: 1
                },
            ]
        );
    }
}
