//! An adapter that declares a plugin [`NodeView::Shape`] without touching its file: for plugins
//! whose filter and score read only a node's free shape but that do not (yet) say so themselves.
//! Fragmentation is registered through it: it reads free cpu and per-device free thousandths of
//! healthy GPUs and the topology's device choice, all of which a node class shares.

use std::sync::Arc;

use crate::cache::PodInfo;
use crate::framework::{
    CycleState, Filter, NodeView, Permit, Plugin, PreFilter, RegistryError, Reserve, Score,
};

/// The wrapped plugin, seen as reading only the node's shape.
pub struct ShapeOnly(pub Arc<dyn Plugin>);

impl Plugin for ShapeOnly {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn node_view(&self, _: &CycleState, _: &PodInfo) -> NodeView {
        NodeView::Shape
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilter> {
        self.0.as_pre_filter()
    }
    fn as_filter(&self) -> Option<&dyn Filter> {
        self.0.as_filter()
    }
    fn as_score(&self) -> Option<&dyn Score> {
        self.0.as_score()
    }
    fn as_reserve(&self) -> Option<&dyn Reserve> {
        self.0.as_reserve()
    }
    fn as_permit(&self) -> Option<&dyn Permit> {
        self.0.as_permit()
    }
}

/// Fragmentation, declared [`NodeView::Shape`].
pub fn fragmentation(args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(ShapeOnly(super::fragmentation::new(args)?)))
}
