//! Per-cycle scratch state, looked up by type: a plugin stores what its pre-filter computed
//! (counts by topology domain, the gang's progress) under its own type, so no two plugins can
//! collide on a string key and no lookup needs a downcast that can fail by typo.

use std::any::{Any, TypeId};

/// A typemap for one scheduling cycle. A few entries (one per plugin that keeps state), read
/// once per node by each filter and score: a short list compared by `TypeId` costs less than
/// hashing one per read.
#[derive(Default)]
pub struct CycleState {
    map: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl std::fmt::Debug for CycleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CycleState")
            .field("entries", &self.map.len())
            .finish()
    }
}

impl CycleState {
    pub fn new() -> CycleState {
        CycleState::default()
    }

    fn position<T: Any>(&self) -> Option<usize> {
        let id = TypeId::of::<T>();
        self.map.iter().position(|(t, _)| *t == id)
    }

    /// Stores a value, replacing the previous value of the same type.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        match self.position::<T>() {
            Some(i) => self.map[i].1 = Box::new(value),
            None => self.map.push((TypeId::of::<T>(), Box::new(value))),
        }
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map[self.position::<T>()?].1.downcast_ref()
    }

    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        let i = self.position::<T>()?;
        self.map[i].1.downcast_mut()
    }

    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        let i = self.position::<T>()?;
        self.map.swap_remove(i).1.downcast().ok().map(|b| *b)
    }
}

/// A gang's progress in the current cycle: written by the gang planner
/// (`algorithm::gang`), read by permit plugins (GangPermit).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GangProgress {
    pub gang: String,
    pub min_member: u32,
    /// Members already bound (or assumed) before this cycle.
    pub bound: u32,
    /// Members reserved in this cycle's plan.
    pub reserved: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Counts(u32);
    #[derive(Debug, PartialEq)]
    struct Other(u32);

    #[test]
    fn values_are_found_by_type() {
        let mut s = CycleState::new();
        s.insert(Counts(1));
        s.insert(Other(2));
        assert_eq!(s.get::<Counts>(), Some(&Counts(1)));
        if let Some(c) = s.get_mut::<Counts>() {
            c.0 = 5;
        }
        assert_eq!(s.remove::<Counts>(), Some(Counts(5)));
        assert_eq!(s.get::<Counts>(), None);
        assert_eq!(s.get::<Other>(), Some(&Other(2)));
    }
}
