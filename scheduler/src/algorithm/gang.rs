//! Gangs: all or nothing. A gang's members are reserved one by one on a copy of the plan; if
//! fewer than `minMember` (counting members already bound) find places, the copy is dropped and
//! nothing is held, so competing gangs never deadlock: each cycle either completes a gang or
//! leaves the cluster as it was. With a topology rule, members are placed inside one domain of
//! the node label (`Required`), or preferably so (`Preferred`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::{PlanState, PodInfo};
use crate::framework::{Code, CycleState, GangProgress, Profile};
use crate::resources::GPU_RESOURCE;

use super::diagnosis::Diagnosis;
use super::schedule_one::{NodeSubset, permit, schedule_pod};

/// Most topology domains a gang tries before taking the best found.
pub const MAX_DOMAIN_SUCCESSES: usize = 4;

/// A gang's topology rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyRule {
    pub key: String,
    pub required: bool,
}

/// A gang to place.
#[derive(Clone, Debug)]
pub struct GangRequest {
    /// `namespace/podgroup`.
    pub key: Arc<str>,
    /// Pending members, in the order they are placed.
    pub members: Vec<Arc<PodInfo>>,
    pub min_member: u32,
    /// Members already bound or assumed.
    pub bound: Vec<Arc<PodInfo>>,
    pub topology: Option<TopologyRule>,
}

impl GangRequest {
    pub fn priority(&self) -> i32 {
        self.members.iter().map(|m| m.priority).max().unwrap_or(0)
    }

    fn needed(&self) -> u32 {
        self.min_member.saturating_sub(self.bound.len() as u32)
    }
}

/// Places the gang on a copy of `plan`; the copy is returned only if the gang is complete.
pub fn place_gang<'a>(
    profile: &Profile,
    plan: &PlanState<'a>,
    gang: &GangRequest,
) -> Result<PlanState<'a>, Diagnosis> {
    if (gang.members.len() + gang.bound.len()) < gang.min_member as usize {
        return Err(Diagnosis::note(
            plan.snapshot().len(),
            format!(
                "gang {} has {} of its {} members",
                gang.key,
                gang.members.len() + gang.bound.len(),
                gang.min_member
            ),
        ));
    }
    let Some(rule) = &gang.topology else {
        return place_members(profile, plan.clone(), gang, None);
    };
    match place_in_domains(profile, plan, gang, rule) {
        Ok(p) => Ok(p),
        Err(d) if rule.required => Err(d),
        Err(_) => place_members(profile, plan.clone(), gang, None),
    }
}

/// A topology domain's nodes, free whole GPUs and member slots.
type Domain = (Vec<usize>, i64, i64);

fn place_in_domains<'a>(
    profile: &Profile,
    plan: &PlanState<'a>,
    gang: &GangRequest,
    rule: &TopologyRule,
) -> Result<PlanState<'a>, Diagnosis> {
    // Each pending member needs at least `per_member` whole GPUs on one node, so a domain can
    // hold at most sum(free whole GPUs / per_member) of them: a domain whose count of such
    // slots is short of the members needed is never tried (for a 64 x 8-GPU gang: racks with
    // fewer than 64 wholly free nodes are skipped without placing anything).
    let needed: Vec<&Arc<PodInfo>> = gang.members.iter().take(gang.needed() as usize).collect();
    let per_member = needed
        .iter()
        .map(|m| i64::from(m.request.whole_gpus()))
        .filter(|&g| g > 0)
        .min();
    // Domains with their nodes, free whole GPUs and member slots.
    let mut domains: BTreeMap<&str, Domain> = BTreeMap::new();
    for (i, n) in plan.nodes() {
        if let Some(v) = n.labels().get(&rule.key) {
            let free = n.free_scalar(GPU_RESOURCE).max(0);
            let d = domains.entry(v.as_str()).or_default();
            d.0.push(i);
            d.1 += free;
            d.2 += per_member.map_or(0, |g| free / g);
        }
    }
    // Members already bound fix the domain.
    let fixed: Option<String> = gang.bound.iter().find_map(|b| {
        let node = plan.snapshot().node_named(&b.pod.spec.node_name)?;
        node.labels().get(&rule.key).cloned()
    });
    let need_gpus: i64 = needed
        .iter()
        .map(|m| i64::from(m.request.whole_gpus()))
        .sum();
    let need_slots = needed.iter().filter(|m| m.request.whole_gpus() > 0).count() as i64;
    let mut order: Vec<(&str, &Domain)> = domains
        .iter()
        .map(|(v, d)| (*v, d))
        .filter(|(v, _)| fixed.as_deref().is_none_or(|f| f == *v))
        .filter(|(_, (_, free, slots))| *free >= need_gpus && *slots >= need_slots)
        .collect();
    // Tightest domains first: large domains stay whole for large gangs.
    order.sort_by_key(|(v, (_, free, slots))| (*slots, *free, *v));
    let mut best: Option<(i64, PlanState<'a>)> = None;
    let mut successes = 0;
    let mut last_err: Option<Diagnosis> = None;
    for (value, (nodes, free, _)) in order {
        let subset = NodeSubset {
            nodes: Arc::new(nodes.clone()),
            reason: format!("not in the gang's {}={} domain", rule.key, value),
        };
        match place_members(profile, plan.clone(), gang, Some(subset)) {
            Ok(p) => {
                let left = free - need_gpus;
                if best.as_ref().is_none_or(|(l, _)| left < *l) {
                    best = Some((left, p));
                }
                successes += 1;
                if successes >= MAX_DOMAIN_SUCCESSES {
                    break;
                }
            }
            Err(d) => last_err = Some(d),
        }
    }
    match best {
        Some((_, p)) => Ok(p),
        None => {
            let mut d = last_err.unwrap_or_else(|| Diagnosis::note(plan.snapshot().len(), ""));
            let what = format!(
                "no {} domain has room for gang {} ({} domains)",
                rule.key,
                gang.key,
                domains.len()
            );
            d.note = Some(match d.note.take() {
                Some(n) if !n.is_empty() => format!("{what}; {n}"),
                _ => what,
            });
            Err(d)
        }
    }
}

fn place_members<'a>(
    profile: &Profile,
    mut plan: PlanState<'a>,
    gang: &GangRequest,
    subset: Option<NodeSubset>,
) -> Result<PlanState<'a>, Diagnosis> {
    let mut progress = GangProgress {
        gang: gang.key.to_string(),
        min_member: gang.min_member,
        bound: gang.bound.len() as u32,
        reserved: 0,
    };
    let mut first_failure: Option<Diagnosis> = None;
    let mut placed = Vec::new();
    for m in &gang.members {
        let mut state = CycleState::new();
        state.insert(progress.clone());
        if let Some(s) = &subset {
            state.insert(s.clone());
        }
        match schedule_pod(profile, &mut plan, m, &mut state) {
            Ok(_) => {
                progress.reserved += 1;
                placed.push(m.clone());
            }
            Err(mut d) => {
                if first_failure.is_none() {
                    d.gang = Some(format!(
                        "gang {}: member {} could not be placed ({}/{} members placed)",
                        gang.key,
                        m.key,
                        progress.bound + progress.reserved,
                        gang.min_member
                    ));
                    first_failure = Some(d);
                }
            }
        }
    }
    // Every reserved member must now be permitted; one that still waits sinks the gang.
    let mut state = CycleState::new();
    state.insert(progress);
    for m in &placed {
        let s = permit(profile, &state, m);
        if s.code != Code::Success {
            let mut d = first_failure.unwrap_or_else(|| Diagnosis::note(plan.snapshot().len(), ""));
            if d.note.is_none() || s.code != Code::Wait {
                d.note = Some(s.reasons.join(", "));
            }
            return Err(d);
        }
    }
    if placed.is_empty() && !gang.members.is_empty() {
        return Err(first_failure.unwrap_or_default());
    }
    Ok(plan)
}
