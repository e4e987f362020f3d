//! The one list of kinds Drover serves. Adding a kind: its type, and one line here.

use crate::resource::KindVisitor;

pub(crate) fn register_all<V: KindVisitor>(v: &mut V) {
    v.visit::<crate::core::Namespace>();
}
