//! GangPermit (coscheduling): a gang member may be bound only once `minMember` members of its
//! gang have places. Until then it waits; the gang planner reserves members one by one and asks
//! again, and a gang whose members still wait at the end of its plan is dropped whole.

use std::sync::Arc;

use crate::cache::PodInfo;
use crate::framework::{CycleState, GangProgress, Permit, Plugin, RegistryError, Status};

pub const NAME: &str = "GangPermit";

#[derive(Debug, Default)]
pub struct GangPermit;

pub fn new(_args: &serde_json::Value) -> Result<Arc<dyn Plugin>, RegistryError> {
    Ok(Arc::new(GangPermit))
}

impl Plugin for GangPermit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_permit(&self) -> Option<&dyn Permit> {
        Some(self)
    }
}

impl Permit for GangPermit {
    fn permit(&self, state: &CycleState, pod: &PodInfo) -> Status {
        if pod.gang.is_none() {
            return Status::success();
        }
        let Some(g) = state.get::<GangProgress>() else {
            return Status::error("gang member scheduled outside a gang cycle");
        };
        let have = g.bound + g.reserved;
        if have >= g.min_member {
            Status::success()
        } else {
            Status::wait(format!(
                "waiting for {} more member(s) of gang {} ({}/{} placed)",
                g.min_member - have,
                g.gang,
                have,
                g.min_member
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Code;
    use crate::testing::pod;

    #[test]
    fn table() {
        let progress = |bound, reserved| GangProgress {
            gang: "ns/g".into(),
            min_member: 4,
            bound,
            reserved,
        };
        let member = pod("ns", "m").gang("g").info();
        let cases = [
            ("single pod", pod("ns", "p").info(), None, Code::Success),
            ("too few", member.clone(), Some(progress(0, 3)), Code::Wait),
            (
                "enough",
                member.clone(),
                Some(progress(1, 3)),
                Code::Success,
            ),
            ("no gang state", member, None, Code::Error),
        ];
        for (name, p, g, want) in cases {
            let mut s = CycleState::new();
            if let Some(g) = g {
                s.insert(g);
            }
            assert_eq!(GangPermit.permit(&s, &p).code, want, "{name}");
        }
    }
}
