//! The one list of kinds Drover serves. Adding a kind: its type, and one line here.

use crate::resource::KindVisitor;

pub(crate) fn register_all<V: KindVisitor>(v: &mut V) {
    v.visit::<crate::core::Namespace>();
    v.visit::<crate::core::Node>();
    v.visit::<crate::core::Pod>();
    v.visit::<crate::core::Event>();
    v.visit::<crate::batch::Job>();
    v.visit::<crate::scheduling::PodGroup>();
    v.visit::<crate::scheduling::PriorityClass>();
    v.visit::<crate::coordination::Lease>();
}
