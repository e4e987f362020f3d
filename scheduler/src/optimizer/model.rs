//! The pure placement model: node classes, gangs, weights, and the plan the optimiser returns.
//!
//! Nothing here knows about the API server or the rest of the scheduler. The framework builds a
//! [`Problem`] from its snapshot (grouping nodes with the same free shape and topology domain into a
//! [`NodeClass`]) and gets back a [`Plan`] in class counts, which [`super::expand`] turns into
//! concrete pod → node pairs.

use super::Error;

/// A bundle of resources: a node's free capacity or a pod's request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shape {
    /// CPU in thousandths of a core.
    pub cpu_milli: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Whole GPUs.
    pub gpus: u32,
    /// On a node: the model of its GPUs. On a request: the model required (`None` = any model).
    pub gpu_model: Option<String>,
}

impl Shape {
    /// A shape with the given CPU, memory and GPU count and no GPU model.
    pub fn new(cpu_milli: u64, memory_bytes: u64, gpus: u32) -> Self {
        Self {
            cpu_milli,
            memory_bytes,
            gpus,
            gpu_model: None,
        }
    }

    /// The same shape with a GPU model set.
    #[must_use]
    pub fn with_gpu_model(mut self, model: impl Into<String>) -> Self {
        self.gpu_model = Some(model.into());
        self
    }

    /// True when the request uses nothing at all (such a pod would fit without limit).
    pub fn is_zero(&self) -> bool {
        self.cpu_milli == 0 && self.memory_bytes == 0 && self.gpus == 0
    }

    /// True when a pod asking for `request` may run on a node of this free shape at all (GPU model).
    pub fn admits_model(&self, request: &Shape) -> bool {
        request.gpus == 0
            || match &request.gpu_model {
                None => true,
                Some(model) => self.gpu_model.as_deref() == Some(model.as_str()),
            }
    }

    /// How many pods of `request` fit side by side in this free shape (0 when the model differs).
    /// A zero request is rejected by [`Problem::validate`], so the result is finite.
    pub fn fit_count(&self, request: &Shape) -> u32 {
        if !self.admits_model(request) {
            return 0;
        }
        let by = |free: u64, ask: u64| free.checked_div(ask).unwrap_or(u64::MAX);
        let n = by(self.cpu_milli, request.cpu_milli)
            .min(by(self.memory_bytes, request.memory_bytes))
            .min(by(u64::from(self.gpus), u64::from(request.gpus)));
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// True when `counts[i]` pods of `requests[i]` all fit together in this free shape.
    pub fn holds(&self, requests: &[Shape], counts: &[u32]) -> bool {
        let (mut cpu, mut mem, mut gpu) = (0u128, 0u128, 0u128);
        for (request, &n) in requests.iter().zip(counts) {
            if n == 0 {
                continue;
            }
            if !self.admits_model(request) {
                return false;
            }
            cpu += u128::from(request.cpu_milli) * u128::from(n);
            mem += u128::from(request.memory_bytes) * u128::from(n);
            gpu += u128::from(request.gpus) * u128::from(n);
        }
        cpu <= u128::from(self.cpu_milli)
            && mem <= u128::from(self.memory_bytes)
            && gpu <= u128::from(self.gpus)
    }
}

/// Nodes that are interchangeable for placement: same free shape, same topology domain.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeClass {
    /// How many nodes the class stands for.
    pub count: u32,
    /// Free capacity of each node of the class.
    pub free: Shape,
    /// Value of the topology label gangs are kept within (rack, NVLink switch…), if the node has it.
    pub domain: Option<String>,
    /// True when nothing runs on these nodes: using one breaks up a whole node.
    pub empty: bool,
}

/// Pods of one gang with the same request.
#[derive(Debug, Clone, PartialEq)]
pub struct PodGroup {
    /// What each pod asks for.
    pub request: Shape,
    /// How many such pods.
    pub count: u32,
}

/// Whether a gang must, may or need not stay within one topology domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Anywhere.
    #[default]
    None,
    /// All pods on nodes with the same (present) domain.
    Required,
    /// One domain earns [`Weights::preferred_topology`]; spreading is allowed.
    Preferred,
}

/// Pods placed all together or not at all (a single pod is a gang of one).
#[derive(Debug, Clone, PartialEq)]
pub struct Gang {
    /// The framework's name for it (pod group or pod key); carried through untouched.
    pub id: String,
    /// Its pods, grouped by request.
    pub pods: Vec<PodGroup>,
    /// The gang is placed only if at least this many of its pods are.
    pub min_member: u32,
    /// Topology constraint over [`NodeClass::domain`].
    pub topology: Topology,
    /// Priority weight (≥ 0): a placed pod is worth `weight × (per_pod + per_gpu × gpus)`.
    pub weight: f64,
}

impl Gang {
    /// A single pod: a gang of one.
    pub fn single(id: impl Into<String>, request: Shape, weight: f64) -> Self {
        Self {
            id: id.into(),
            pods: vec![PodGroup { request, count: 1 }],
            min_member: 1,
            topology: Topology::None,
            weight,
        }
    }

    /// Total pods in the gang.
    pub fn total(&self) -> u32 {
        self.pods.iter().map(|g| g.count).sum()
    }

    /// True for a gang of one pod with no topology requirement, which the model pools with its peers.
    pub(crate) fn is_single(&self) -> bool {
        self.total() == 1 && self.topology != Topology::Required
    }
}

/// How the objective trades placed work against packing.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    /// Value of each placed pod (times the gang's weight).
    pub per_pod: f64,
    /// Extra value per GPU of each placed pod (times the gang's weight).
    pub per_gpu: f64,
    /// Cost of each node that receives at least one pod.
    pub per_used_node: f64,
    /// Extra cost of each [`NodeClass::empty`] node that receives a pod: keeps whole nodes free.
    pub per_broken_node: f64,
    /// Bonus, as a fraction of the gang's value, for a `Preferred` gang kept within one domain.
    pub preferred_topology: f64,
}

/// Default value per placed pod.
pub const DEFAULT_PER_POD: f64 = 1.0;
/// Default value per placed GPU.
pub const DEFAULT_PER_GPU: f64 = 1.0;
/// Default cost per used node: small, so that placing work always wins over packing.
pub const DEFAULT_PER_USED_NODE: f64 = 0.01;
/// Default extra cost per whole node broken up.
pub const DEFAULT_PER_BROKEN_NODE: f64 = 0.05;
/// Default bonus fraction for a `Preferred` gang kept in one domain.
pub const DEFAULT_PREFERRED_TOPOLOGY: f64 = 0.1;

impl Default for Weights {
    fn default() -> Self {
        Self {
            per_pod: DEFAULT_PER_POD,
            per_gpu: DEFAULT_PER_GPU,
            per_used_node: DEFAULT_PER_USED_NODE,
            per_broken_node: DEFAULT_PER_BROKEN_NODE,
            preferred_topology: DEFAULT_PREFERRED_TOPOLOGY,
        }
    }
}

impl Weights {
    /// Value of one placed pod of `request` in a gang of `weight`.
    pub fn pod_value(&self, weight: f64, request: &Shape) -> f64 {
        weight * (self.per_pod + self.per_gpu * f64::from(request.gpus))
    }

    /// Cost of one used node of `class`.
    pub fn node_cost(&self, class: &NodeClass) -> f64 {
        self.per_used_node
            + if class.empty {
                self.per_broken_node
            } else {
                0.0
            }
    }
}

/// A batch to place: the free cluster, in classes, and the gangs competing for it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Problem {
    /// Node classes; a plan refers to them by index.
    pub node_classes: Vec<NodeClass>,
    /// Gangs, in the queue's order (earlier wins ties); a plan refers to them by index.
    pub gangs: Vec<Gang>,
    /// Objective weights.
    pub weights: Weights,
}

impl Problem {
    /// Checks the inputs the optimiser relies on.
    pub fn validate(&self) -> Result<(), Error> {
        let w = &self.weights;
        for (name, v) in [
            ("per_pod", w.per_pod),
            ("per_gpu", w.per_gpu),
            ("per_used_node", w.per_used_node),
            ("per_broken_node", w.per_broken_node),
            ("preferred_topology", w.preferred_topology),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(Error::InvalidWeight {
                    what: name.to_string(),
                    value: v,
                });
            }
        }
        for gang in &self.gangs {
            if !gang.weight.is_finite() || gang.weight < 0.0 {
                return Err(Error::InvalidWeight {
                    what: format!("gang {}", gang.id),
                    value: gang.weight,
                });
            }
            let total = gang.total();
            if total == 0 || gang.min_member == 0 || gang.min_member > total {
                return Err(Error::InvalidGang {
                    gang: gang.id.clone(),
                    reason: format!("min_member {} with {total} pods", gang.min_member),
                });
            }
            if gang.pods.iter().any(|g| g.request.is_zero()) {
                return Err(Error::InvalidGang {
                    gang: gang.id.clone(),
                    reason: "a pod requests no resources".to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Nodes of one class that get the same pods: `content[p]` pods of the plan's pod class `p` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUse {
    /// Pods per pod class ([`Plan::pod_classes`]) on each of these nodes.
    pub content: Vec<u32>,
    /// How many nodes of the class carry this content.
    pub nodes: u32,
}

/// Part of a gang on one node class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Index into the gang's `pods`.
    pub group: usize,
    /// Index into [`Problem::node_classes`].
    pub node_class: usize,
    /// Pods of that group on that class.
    pub count: u32,
}

/// Where one gang goes (nothing when it is not placed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GangPlacement {
    /// True when the gang is placed (at least `min_member` pods).
    pub placed: bool,
    /// Its pods per group and node class; empty when not placed.
    pub assignments: Vec<Assignment>,
}

/// A placement in class counts; it changes nothing until the framework binds it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The distinct pod requests of the problem; `NodeUse::content` is indexed by them.
    pub pod_classes: Vec<Shape>,
    /// One entry per gang of the problem, same order.
    pub gangs: Vec<GangPlacement>,
    /// Per node class (same order as the problem), the contents of the nodes that receive pods.
    pub nodes: Vec<Vec<NodeUse>>,
}

impl Plan {
    /// Number of gangs placed.
    pub fn placed_gangs(&self) -> usize {
        self.gangs.iter().filter(|g| g.placed).count()
    }
}
