//! Where a pod may run: node and pod affinity, tolerations of node taints, and topology spread
//! constraints, in Kubernetes' shapes, with the matching rules the scheduler applies and their
//! validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::{PodSpec, Taint};
use crate::error::{FieldError, FieldErrors};
use crate::selector::LabelSelector;
use crate::validation::{
    QUALIFIED_NAME_EXPECTED, check_enum, check_label, check_positive, is_qualified_name,
};

/// Operators of a [`NodeSelectorRequirement`].
pub mod node_operator {
    pub const IN: &str = "In";
    pub const NOT_IN: &str = "NotIn";
    pub const EXISTS: &str = "Exists";
    pub const DOES_NOT_EXIST: &str = "DoesNotExist";
    pub const GT: &str = "Gt";
    pub const LT: &str = "Lt";
    pub const ALL: &[&str] = &[IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GT, LT];
}

/// Operators of a [`Toleration`].
pub mod toleration_operator {
    pub const EQUAL: &str = "Equal";
    pub const EXISTS: &str = "Exists";
    pub const ALL: &[&str] = &[EQUAL, EXISTS];
}

/// Effects of a taint (and of the tolerations that match it).
pub mod taint_effect {
    pub const NO_SCHEDULE: &str = "NoSchedule";
    pub const PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";
    pub const NO_EXECUTE: &str = "NoExecute";
    pub const ALL: &[&str] = &[NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE];
}

/// Values of [`TopologySpreadConstraint::when_unsatisfiable`].
pub mod unsatisfiable_action {
    pub const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
    pub const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";
    pub const ALL: &[&str] = &[DO_NOT_SCHEDULE, SCHEDULE_ANYWAY];
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Affinity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_affinity: Option<PodAffinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_anti_affinity: Option<PodAntiAffinity>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAffinity {
    /// Terms of which at least one must match (hard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// Weighted terms the scheduler prefers (soft).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
}

/// Node selector terms, ORed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelector {
    #[serde(default)]
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

/// Requirements, ANDed. An empty term matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorTerm {
    /// Requirements on node labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<NodeSelectorRequirement>,
    /// Requirements on node fields (only `metadata.name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_fields: Vec<NodeSelectorRequirement>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt` or `Lt`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreferredSchedulingTerm {
    /// 1 to 100.
    pub weight: i32,
    pub preference: NodeSelectorTerm,
}

/// Pod affinity or anti-affinity: terms on the pods already running in a topology domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAffinity {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_during_scheduling_ignored_during_execution: Vec<PodAffinityTerm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_during_scheduling_ignored_during_execution: Vec<WeightedPodAffinityTerm>,
}

/// Same shape as [`PodAffinity`]; the terms say where the pod must not go.
pub type PodAntiAffinity = PodAffinity;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAffinityTerm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Namespaces the selector applies to; empty with no `namespaceSelector` means the pod's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The node label whose value defines a domain (`kubernetes.io/hostname`, a rack, ...).
    #[serde(default)]
    pub topology_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_label_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatch_label_keys: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedPodAffinityTerm {
    /// 1 to 100.
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
}

/// Lets a pod run on nodes with a matching taint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Empty with operator `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (the default when empty) or `Exists`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Empty matches every effect.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub effect: String,
    /// For `NoExecute`: how long the pod stays bound after the taint appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

impl Toleration {
    /// Whether this toleration tolerates `taint` (Kubernetes' `ToleratesTaint`).
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            toleration_operator::EXISTS => true,
            "" | toleration_operator::EQUAL => self.value == taint.value,
            _ => false,
        }
    }
}

/// Whether some toleration in `tolerations` tolerates `taint`.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopologySpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    /// `DoNotSchedule` or `ScheduleAnyway`.
    pub when_unsatisfiable: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_domains: Option<i32>,
    /// `Honor` or `Ignore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity_policy: Option<String>,
    /// `Honor` or `Ignore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_taints_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_label_keys: Vec<String>,
}

impl NodeSelectorRequirement {
    /// Whether `value` (the node's label or field, if it has one) satisfies the requirement.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        let compare = |ord: std::cmp::Ordering| -> bool {
            let (Some(v), Some(bound)) = (value, self.values.first()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) => v.cmp(&b) == ord,
                _ => false,
            }
        };
        match self.operator.as_str() {
            node_operator::IN => value.is_some_and(contains),
            node_operator::NOT_IN => value.is_none_or(|v| !contains(v)),
            node_operator::EXISTS => value.is_some(),
            node_operator::DOES_NOT_EXIST => value.is_none(),
            node_operator::GT => compare(std::cmp::Ordering::Greater),
            node_operator::LT => compare(std::cmp::Ordering::Less),
            _ => false,
        }
    }
}

impl NodeSelectorTerm {
    /// Whether a node with these labels and this name satisfies every requirement. An empty
    /// term matches nothing, as in Kubernetes.
    pub fn matches(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        if self.match_expressions.is_empty() && self.match_fields.is_empty() {
            return false;
        }
        self.match_expressions
            .iter()
            .all(|r| r.matches_value(labels.get(&r.key).map(String::as_str)))
            && self.match_fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then_some(node_name);
                r.matches_value(value)
            })
    }
}

impl NodeSelector {
    /// Whether some term matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
        self.node_selector_terms
            .iter()
            .any(|t| t.matches(labels, node_name))
    }
}

impl Affinity {
    /// The required node selector, if any.
    pub fn required_node_selector(&self) -> Option<&NodeSelector> {
        self.node_affinity.as_ref().and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    }
}

/// Checks tolerations, affinity and topology spread constraints of a pod spec at `path`.
pub(crate) fn validate_placement(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    validate_tolerations(spec, path, errs);
    validate_affinity(spec, path, errs);
    validate_spread(spec, path, errs);
}

fn validate_tolerations(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    for (i, t) in spec.tolerations.iter().enumerate() {
        let p = format!("{path}.tolerations[{i}]");
        if !t.key.is_empty() && !is_qualified_name(&t.key) {
            errs.push(FieldError::invalid(
                format!("{p}.key"),
                format!("{:?}: {QUALIFIED_NAME_EXPECTED}", t.key),
            ));
        }
        check_enum(
            errs,
            &format!("{p}.operator"),
            &t.operator,
            toleration_operator::ALL,
            true,
        );
        if t.key.is_empty() && t.operator != toleration_operator::EXISTS {
            errs.push(FieldError::invalid(
                format!("{p}.operator"),
                format!(
                    "{:?}: expected Exists when the key is empty (to tolerate every taint)",
                    t.operator
                ),
            ));
        }
        if t.operator == toleration_operator::EXISTS && !t.value.is_empty() {
            errs.push(FieldError::invalid(
                format!("{p}.value"),
                format!("{:?}: expected no value with operator Exists", t.value),
            ));
        }
        check_enum(
            errs,
            &format!("{p}.effect"),
            &t.effect,
            taint_effect::ALL,
            true,
        );
        if t.toleration_seconds.is_some() && t.effect != taint_effect::NO_EXECUTE {
            errs.push(FieldError::invalid(
                format!("{p}.effect"),
                format!(
                    "{:?}: expected NoExecute when tolerationSeconds is set",
                    t.effect
                ),
            ));
        }
    }
}

fn validate_affinity(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    let Some(a) = &spec.affinity else { return };
    let p = format!("{path}.affinity");
    if let Some(na) = &a.node_affinity {
        let np = format!("{p}.nodeAffinity");
        if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
            let rp = format!("{np}.requiredDuringSchedulingIgnoredDuringExecution");
            if req.node_selector_terms.is_empty() {
                errs.push(FieldError::required(
                    format!("{rp}.nodeSelectorTerms"),
                    "expected at least one node selector term",
                ));
            }
            for (i, t) in req.node_selector_terms.iter().enumerate() {
                validate_node_term(t, &format!("{rp}.nodeSelectorTerms[{i}]"), errs);
            }
        }
        for (i, t) in na
            .preferred_during_scheduling_ignored_during_execution
            .iter()
            .enumerate()
        {
            let tp = format!("{np}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            check_weight(errs, &tp, t.weight);
            validate_node_term(&t.preference, &format!("{tp}.preference"), errs);
        }
    }
    for (pa, name) in [
        (&a.pod_affinity, "podAffinity"),
        (&a.pod_anti_affinity, "podAntiAffinity"),
    ] {
        if let Some(pa) = pa {
            validate_pod_affinity(pa, &format!("{p}.{name}"), errs);
        }
    }
}

fn check_weight(errs: &mut FieldErrors, path: &str, weight: i32) {
    if !(1..=100).contains(&weight) {
        errs.push(FieldError::invalid(
            format!("{path}.weight"),
            format!("{weight}: expected a weight between 1 and 100"),
        ));
    }
}

fn validate_node_term(t: &NodeSelectorTerm, p: &str, errs: &mut FieldErrors) {
    for (list, field) in [
        (&t.match_expressions, "matchExpressions"),
        (&t.match_fields, "matchFields"),
    ] {
        for (i, r) in list.iter().enumerate() {
            let rp = format!("{p}.{field}[{i}]");
            if field == "matchFields" && r.key != "metadata.name" {
                errs.push(FieldError::not_supported(
                    format!("{rp}.key"),
                    format!("{:?}: expected metadata.name", r.key),
                ));
            } else if field == "matchExpressions" && !is_qualified_name(&r.key) {
                errs.push(FieldError::invalid(
                    format!("{rp}.key"),
                    format!("{:?}: {QUALIFIED_NAME_EXPECTED}", r.key),
                ));
            }
            let n = r.values.len();
            let vp = format!("{rp}.values");
            match r.operator.as_str() {
                node_operator::IN | node_operator::NOT_IN if n == 0 => {
                    errs.push(FieldError::required(
                        vp,
                        format!("expected at least one value with operator {}", r.operator),
                    ))
                }
                node_operator::EXISTS | node_operator::DOES_NOT_EXIST if n > 0 => {
                    errs.push(FieldError::forbidden(
                        vp,
                        format!("expected no values with operator {}", r.operator),
                    ))
                }
                node_operator::GT | node_operator::LT
                    if n != 1 || r.values[0].parse::<i64>().is_err() =>
                {
                    errs.push(FieldError::invalid(
                        vp,
                        format!(
                            "{:?}: expected exactly one integer value with operator {}",
                            r.values, r.operator
                        ),
                    ))
                }
                op if node_operator::ALL.contains(&op) => {}
                op => errs.push(FieldError::not_supported(
                    format!("{rp}.operator"),
                    format!("{op:?}: expected one of In, NotIn, Exists, DoesNotExist, Gt, Lt"),
                )),
            }
        }
    }
}

fn validate_pod_affinity(pa: &PodAffinity, p: &str, errs: &mut FieldErrors) {
    for (i, t) in pa
        .required_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        validate_affinity_term(
            t,
            &format!("{p}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            errs,
        );
    }
    for (i, w) in pa
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .enumerate()
    {
        let wp = format!("{p}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        check_weight(errs, &wp, w.weight);
        validate_affinity_term(&w.pod_affinity_term, &format!("{wp}.podAffinityTerm"), errs);
    }
}

fn validate_affinity_term(t: &PodAffinityTerm, p: &str, errs: &mut FieldErrors) {
    if t.topology_key.is_empty() {
        errs.push(FieldError::required(
            format!("{p}.topologyKey"),
            "expected a node label key such as kubernetes.io/hostname",
        ));
    } else if !is_qualified_name(&t.topology_key) {
        errs.push(FieldError::invalid(
            format!("{p}.topologyKey"),
            format!("{:?}: {QUALIFIED_NAME_EXPECTED}", t.topology_key),
        ));
    }
    if let Some(s) = &t.label_selector {
        errs.extend(s.validate(&format!("{p}.labelSelector")));
    }
    if let Some(s) = &t.namespace_selector {
        errs.extend(s.validate(&format!("{p}.namespaceSelector")));
    }
    for (i, ns) in t.namespaces.iter().enumerate() {
        check_label(errs, &format!("{p}.namespaces[{i}]"), ns);
    }
}

fn validate_spread(spec: &PodSpec, path: &str, errs: &mut FieldErrors) {
    for (i, c) in spec.topology_spread_constraints.iter().enumerate() {
        let p = format!("{path}.topologySpreadConstraints[{i}]");
        if c.max_skew <= 0 {
            errs.push(FieldError::invalid(
                format!("{p}.maxSkew"),
                format!("{}: expected a number greater than 0", c.max_skew),
            ));
        }
        if c.topology_key.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.topologyKey"),
                "expected a node label key such as topology.kubernetes.io/zone",
            ));
        } else if !is_qualified_name(&c.topology_key) {
            errs.push(FieldError::invalid(
                format!("{p}.topologyKey"),
                format!("{:?}: {QUALIFIED_NAME_EXPECTED}", c.topology_key),
            ));
        }
        check_enum(
            errs,
            &format!("{p}.whenUnsatisfiable"),
            &c.when_unsatisfiable,
            unsatisfiable_action::ALL,
            false,
        );
        check_positive(errs, &format!("{p}.minDomains"), c.min_domains);
        if c.min_domains.is_some() && c.when_unsatisfiable != unsatisfiable_action::DO_NOT_SCHEDULE
        {
            errs.push(FieldError::invalid(
                format!("{p}.minDomains"),
                "expected minDomains only with whenUnsatisfiable DoNotSchedule",
            ));
        }
        if let Some(s) = &c.label_selector {
            errs.extend(s.validate(&format!("{p}.labelSelector")));
        }
    }
}
