//! Why a pod is pending, summarised by reason across nodes:
//! `0/10000 nodes available: 9120 insufficient nvidia.com/gpu, 880 had untolerated taint {gpu-maintenance}`.

use std::collections::BTreeMap;
use std::fmt;

/// The failures of one attempt, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnosis {
    /// Nodes considered (all nodes of the cluster).
    pub nodes: usize,
    /// Nodes that failed, by reason (a node counts once per reason it gave).
    pub reasons: BTreeMap<String, usize>,
    /// Whether some node failed in a way preemption could fix.
    pub resolvable: bool,
    /// For a gang: the member that could not be placed, and what is missing.
    pub gang: Option<String>,
    /// A reason that is not about nodes (a gang without its PodGroup, an internal fault).
    pub note: Option<String>,
}

impl Diagnosis {
    /// A diagnosis that is not about nodes.
    pub fn note(nodes: usize, note: impl Into<String>) -> Diagnosis {
        Diagnosis {
            nodes,
            note: Some(note.into()),
            ..Default::default()
        }
    }

    pub fn add(&mut self, reason: &str) {
        match self.reasons.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.reasons.insert(reason.to_string(), 1);
            }
        }
    }

    /// `0/N nodes available: ...`, most common reason first.
    pub fn nodes_message(&self) -> String {
        let mut rs: Vec<(&String, &usize)> = self.reasons.iter().collect();
        rs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = rs.iter().map(|(r, n)| format!("{n} {r}")).collect();
        if parts.is_empty() {
            format!("0/{} nodes available", self.nodes)
        } else {
            format!("0/{} nodes available: {}", self.nodes, parts.join(", "))
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(g) = &self.gang {
            write!(f, "{g}: ")?;
        }
        match &self.note {
            Some(n) if self.reasons.is_empty() => f.write_str(n),
            Some(n) => write!(f, "{n}; {}", self.nodes_message()),
            None => f.write_str(&self.nodes_message()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_format() {
        let mut d = Diagnosis {
            nodes: 10000,
            ..Default::default()
        };
        for _ in 0..880 {
            d.add("had untolerated taint {gpu-maintenance}");
        }
        for _ in 0..9120 {
            d.add("insufficient nvidia.com/gpu");
        }
        assert_eq!(
            d.to_string(),
            "0/10000 nodes available: 9120 insufficient nvidia.com/gpu, 880 had untolerated taint {gpu-maintenance}"
        );
        d.gang = Some("gang ns/g: member ns/p-3 could not be placed".into());
        assert!(
            d.to_string()
                .starts_with("gang ns/g: member ns/p-3 could not be placed: 0/10000")
        );
    }
}
