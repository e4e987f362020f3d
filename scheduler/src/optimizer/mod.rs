//! The ILP optimiser: places hard batches (large gangs, topology-constrained gangs, several gangs
//! competing) as a mixed-integer program over equivalence classes, within a time budget, with the
//! greedy plan as the starting point and the fallback. It also proposes defragmentation plans.
//!
//! It is a pure model: no API calls and no dependency on the rest of the scheduler.
//!
//! # How the framework calls it
//!
//! 1. From the cycle's snapshot, group candidate nodes into [`NodeClass`]es (same free shape, same
//!    value of the topology label the batch's gangs use; mark nodes with nothing running as
//!    `empty`), keeping each class's concrete node names in a stable order.
//! 2. Turn the batch into [`Gang`]s (a single pod is [`Gang::single`]), in queue order, with a
//!    priority-derived `weight`.
//! 3. Call [`optimize`]`(&problem, budget)`. The [`Outcome`] holds the [`Plan`] (in class counts),
//!    whether it came from the solver or the greedy, its objective and, when known, the solver's
//!    bound and gap.
//! 4. Call [`expand`] with the node names per class to get concrete `(gang, group, ordinal) → node`
//!    bindings, then assume/reserve/permit/bind them as usual. Device assignment (which GPU ids)
//!    stays with the plugins: the plan only guarantees the counts fit each node.
//!
//! [`propose_defrag`] answers "which preemptible pods would have to move where so that K whole
//! nodes become free", minimising moved GPU-hours; it executes nothing.
//!
//! # How it works
//!
//! - [`greedy`]: largest gangs first, best fit by GPU; microseconds per pod.
//! - The model (`ilp`, `solve`): integer counts of pods per pod class per node class and of
//!   nodes per *pattern* (a way pods can share one node), so per-node fit is exact while symmetry
//!   between identical nodes never appears. Single pods with the same request and weight are pooled
//!   into one count. Solved with good_lp's pure-Rust microlp backend (no system libraries), warm
//!   started from the greedy, with its own time limit and a relative gap tolerance.
//! - The solver runs on a thread; if it has not answered by the deadline (plus a small grace) the
//!   greedy plan is returned and the thread is abandoned — microlp stops itself at its own time
//!   limit shortly after. If the model has too many patterns ([`patterns::DEFAULT_MAX_PATTERNS`]),
//!   the greedy plan is returned without solving.
//! - Every plan is checked ([`check_plan`]) before it is returned, and the better of solver and
//!   greedy (by [`evaluate`]) wins, so the result is never worse than the greedy.

mod check;
mod defrag;
mod expand;
mod greedy;
mod ilp;
mod model;
pub mod patterns;
mod solve;
mod warm;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use check::{check_plan, evaluate};
pub use defrag::{DefragNode, DefragPlan, DefragRequest, Move, RunningPod, propose_defrag};
pub use expand::{Binding, expand};
pub use greedy::greedy;
pub use model::{
    Assignment, DEFAULT_PER_BROKEN_NODE, DEFAULT_PER_GPU, DEFAULT_PER_POD, DEFAULT_PER_USED_NODE,
    DEFAULT_PREFERRED_TOPOLOGY, Gang, GangPlacement, NodeClass, NodeUse, Plan, PodGroup, Problem,
    Shape, Topology, Weights,
};

/// Errors of the optimiser. "Does not fit" is not an error: such gangs are simply not placed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight is negative or not finite.
    #[error("invalid weight {what}: {value}")]
    InvalidWeight {
        /// Which weight.
        what: String,
        /// Its value.
        value: f64,
    },
    /// A gang is malformed (no pods, `min_member` out of range, a pod that requests nothing).
    #[error("invalid gang {gang}: {reason}")]
    InvalidGang {
        /// The gang's id.
        gang: String,
        /// What is wrong.
        reason: String,
    },
    /// A plan breaks capacity, all-or-nothing or topology (a bug if the optimiser produced it).
    #[error("invalid plan: {reason}")]
    InvalidPlan {
        /// What is wrong.
        reason: String,
    },
    /// A node shape admits too many patterns for the model to stay small.
    #[error("model too large: shape group {shape_group} has more than {limit} node patterns")]
    ModelTooLarge {
        /// The offending shape group.
        shape_group: usize,
        /// The pattern limit.
        limit: usize,
    },
    /// The solver failed or stopped without an answer.
    #[error("solver failed: {reason}")]
    Solver {
        /// What it said.
        reason: String,
    },
    /// The concrete node list given to [`expand`] does not match the problem.
    #[error("node class {class} has {given} node names for {needed} nodes in the plan")]
    MissingNodes {
        /// The class.
        class: usize,
        /// Names given.
        given: usize,
        /// Nodes the plan uses.
        needed: u64,
    },
}

/// Default relative gap at which the solver may stop.
pub const DEFAULT_MIP_GAP: f64 = 0.01;
/// Extra wait past the budget before the solver thread is abandoned.
pub const DEFAULT_GRACE: Duration = Duration::from_millis(50);

/// Tuning for [`optimize_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Wall-clock budget for the whole call (greedy, model building and solving).
    pub budget: Duration,
    /// Relative gap at which the solver may stop with its incumbent.
    pub mip_gap: f64,
    /// Most node patterns per shape before the model counts as too large.
    pub max_patterns: usize,
}

impl Options {
    /// Default options with the given budget.
    pub fn with_budget(budget: Duration) -> Self {
        Self {
            budget,
            mip_gap: DEFAULT_MIP_GAP,
            max_patterns: patterns::DEFAULT_MAX_PATTERNS,
        }
    }
}

/// Which planner produced the returned plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The ILP solver (at least as good as the greedy).
    Solver,
    /// The greedy (the solver was slower than the budget, failed, or found nothing better).
    Greedy,
}

/// The result of [`optimize`].
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The chosen plan.
    pub plan: Plan,
    /// Who produced it.
    pub source: Source,
    /// Its value by [`evaluate`].
    pub objective: f64,
    /// Best proven upper bound on the objective, when the solver reported one.
    pub bound: Option<f64>,
    /// `(bound - objective) / |bound|`, when a bound is known.
    pub gap: Option<f64>,
    /// True when the solver proved its plan optimal (within the model).
    pub proven_optimal: bool,
    /// Why the solver's answer was not used, if it was not.
    pub solver_note: Option<String>,
    /// Time spent.
    pub elapsed: Duration,
}

/// Places `problem` within `budget` with default options. See [`optimize_with`].
pub fn optimize(problem: &Problem, budget: Duration) -> Result<Outcome, Error> {
    optimize_with(problem, &Options::with_budget(budget))
}

/// Places `problem`: greedy first, then the ILP warm-started from it within the remaining budget;
/// returns the better checked plan. Errors only for invalid input.
pub fn optimize_with(problem: &Problem, options: &Options) -> Result<Outcome, Error> {
    let started = Instant::now();
    problem.validate()?;
    let greedy_plan = greedy(problem);
    check_plan(problem, &greedy_plan)?;
    let greedy_value = evaluate(problem, &greedy_plan);
    let mut outcome = Outcome {
        plan: greedy_plan,
        source: Source::Greedy,
        objective: greedy_value,
        bound: None,
        gap: None,
        proven_optimal: false,
        solver_note: None,
        elapsed: Duration::ZERO,
    };
    match run_solver(problem, options, &outcome.plan, started) {
        Ok(solved) => {
            outcome.bound = solved.bound;
            match check_plan(problem, &solved.plan) {
                Ok(()) => {
                    let value = evaluate(problem, &solved.plan);
                    if value > greedy_value + 1e-9 {
                        outcome.plan = solved.plan;
                        outcome.objective = value;
                        outcome.source = Source::Solver;
                    }
                    outcome.proven_optimal = solved.optimal;
                }
                Err(e) => outcome.solver_note = Some(e.to_string()),
            }
        }
        Err(e) => outcome.solver_note = Some(e.to_string()),
    }
    outcome.gap = outcome
        .bound
        .map(|b| ((b - outcome.objective) / b.abs().max(1e-9)).max(0.0));
    outcome.elapsed = started.elapsed();
    tracing::debug!(
        source = ?outcome.source,
        objective = outcome.objective,
        gap = ?outcome.gap,
        elapsed_ms = outcome.elapsed.as_millis() as u64,
        note = ?outcome.solver_note,
        "optimiser done"
    );
    Ok(outcome)
}

/// Builds the model and solves it on a thread, waiting at most until the budget (plus grace).
fn run_solver(
    problem: &Problem,
    options: &Options,
    start: &Plan,
    started: Instant,
) -> Result<solve::Solved, Error> {
    let model = ilp::Model::build(problem, options.max_patterns)?;
    let remaining = options.budget.saturating_sub(started.elapsed());
    if remaining.is_zero() {
        return Err(Error::Solver {
            reason: "budget spent before solving".into(),
        });
    }
    let problem = Arc::new(problem.clone());
    let start = start.clone();
    let gap = options.mip_gap as f32;
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("drover-ilp".into())
        .spawn(move || {
            let result = solve::solve(&problem, &model, Some(&start), remaining, gap, false);
            // The receiver may have given up; nothing to do then.
            let _ = tx.send(result);
        })
        .map_err(|e| Error::Solver {
            reason: format!("cannot start solver thread: {e}"),
        })?;
    match rx.recv_timeout(remaining + DEFAULT_GRACE) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Solver {
            reason: "no answer within the budget".into(),
        }),
        // The thread panicked (microlp asserts on some numerical edge cases).
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Solver {
            reason: "solver thread stopped without an answer".into(),
        }),
    }
}

/// The optimum of the LP relaxation of `problem`'s model: an upper bound on any plan's objective
/// (used by the benchmark to report the gap when the solver stops before proving one).
pub fn relaxation_bound(problem: &Problem, options: &Options) -> Result<f64, Error> {
    problem.validate()?;
    let model = ilp::Model::build(problem, options.max_patterns)?;
    let solved = solve::solve(problem, &model, None, options.budget, 0.0, true)?;
    solved.bound.ok_or(Error::Solver {
        reason: "no relaxation bound".into(),
    })
}
