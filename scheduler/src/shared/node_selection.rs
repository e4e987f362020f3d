//! Whether a pod's `nodeSelector` and required node affinity admit a node, by its name and
//! labels: what NodeAffinity filters by (its pre-filter compiles the same rules against the
//! label index) and which nodes count as PodTopologySpread's domains.

use std::collections::BTreeMap;

use drover_api::core::{NodeSelectorTerm, Pod};

/// Whether a node selector term matches a node (expressions and fields all hold).
pub fn term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions
        .iter()
        .all(|r| r.matches_value(labels.get(&r.key).map(String::as_str)))
        && term.match_fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(name);
            r.matches_value(v)
        })
}

/// Whether the pod's nodeSelector and required node affinity admit the node.
pub fn node_matches(pod: &Pod, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if !pod
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, name, labels)),
        None => true,
    }
}
