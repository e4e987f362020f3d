//! Node labels by key, as small ids: for each label key, every node's value id. Plugins that
//! read one label of every node (spread and affinity by topology key) compute their verdict per
//! value id once in the pre-filter and then look a node up with two array reads instead of a
//! string map lookup and a string hash per node.
//!
//! A [`Column`] recognises the nodes it describes (by their node's `Node` object and its index
//! in the snapshot); for any other `NodeInfo` it answers [`Lookup::Unknown`] and the caller reads
//! the label itself.

use std::collections::HashMap;
use std::sync::Arc;

use super::node_info::NodeInfo;

const ABSENT: u32 = u32::MAX;

/// One label key over every node.
#[derive(Clone, Debug, Default)]
pub struct LabelColumn {
    ids: HashMap<String, u32>,
    of_node: Vec<u32>,
    /// Nodes with each value id (a value no node has any more keeps its id, with 0).
    nodes_with: Vec<u32>,
}

impl LabelColumn {
    /// The id of a value, if some node ever had it.
    pub fn id(&self, value: &str) -> Option<u32> {
        self.ids.get(value).copied()
    }

    /// Every value with its id.
    pub fn values(&self) -> impl Iterator<Item = (&str, u32)> {
        self.ids.iter().map(|(v, id)| (v.as_str(), *id))
    }

    /// Ids run below this.
    pub fn id_bound(&self) -> usize {
        self.ids.len()
    }

    /// Nodes that have the value of this id now.
    pub fn nodes_with(&self, id: u32) -> u32 {
        self.nodes_with.get(id as usize).copied().unwrap_or(0)
    }
}

/// What a column says of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Value(u32),
    Absent,
    /// The node is not one the column describes: read its labels.
    Unknown,
}

/// A column with what it needs to recognise its nodes.
#[derive(Clone, Debug)]
pub struct Column {
    pub column: Arc<LabelColumn>,
    nodes: Arc<Vec<usize>>,
}

impl Column {
    pub fn lookup(&self, node: &NodeInfo) -> Lookup {
        if self.nodes.get(node.index) != Some(&(Arc::as_ptr(&node.node) as usize)) {
            return Lookup::Unknown;
        }
        match self.column.of_node.get(node.index) {
            Some(&ABSENT) | None => Lookup::Absent,
            Some(&id) => Lookup::Value(id),
        }
    }

    pub fn id(&self, value: &str) -> Option<u32> {
        self.column.id(value)
    }
}

/// Every label key's column.
#[derive(Clone, Debug, Default)]
pub struct LabelIndex {
    columns: HashMap<String, Arc<LabelColumn>>,
    /// The `Node` object of each node index (as an address), to recognise `NodeInfo`s.
    nodes: Arc<Vec<usize>>,
}

impl LabelIndex {
    /// Records node `idx`'s labels (`old`: what it had before), or forgets them.
    pub fn set(&mut self, idx: usize, node: Option<&NodeInfo>, old: Option<&NodeInfo>) {
        if let Some(old) = old {
            for k in old.labels().keys() {
                if let Some(c) = self.columns.get_mut(k)
                    && c.of_node.get(idx).is_some_and(|&s| s != ABSENT)
                {
                    let c = Arc::make_mut(c);
                    let id = std::mem::replace(&mut c.of_node[idx], ABSENT) as usize;
                    if let Some(n) = c.nodes_with.get_mut(id) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
        }
        let nodes = Arc::make_mut(&mut self.nodes);
        if nodes.len() <= idx {
            nodes.resize(idx + 1, 0);
        }
        nodes[idx] = node.map_or(0, |n| Arc::as_ptr(&n.node) as usize);
        let Some(node) = node else { return };
        for (k, v) in node.labels() {
            let c = Arc::make_mut(self.columns.entry(k.clone()).or_default());
            let next = c.ids.len() as u32;
            let id = *c.ids.entry(v.clone()).or_insert(next);
            if c.of_node.len() <= idx {
                c.of_node.resize(idx + 1, ABSENT);
            }
            c.of_node[idx] = id;
            if c.nodes_with.len() <= id as usize {
                c.nodes_with.resize(id as usize + 1, 0);
            }
            c.nodes_with[id as usize] += 1;
        }
    }

    /// The value id node `idx` has for `key` (`None`: it lacks the key).
    pub fn id_at(&self, key: &str, idx: usize) -> Option<u32> {
        match self.columns.get(key)?.of_node.get(idx) {
            Some(&ABSENT) | None => None,
            Some(&id) => Some(id),
        }
    }

    /// The column of a label key (`None` when no node ever had the key).
    pub fn column(&self, key: &str) -> Option<Column> {
        self.columns.get(key).map(|c| Column {
            column: c.clone(),
            nodes: self.nodes.clone(),
        })
    }
}
