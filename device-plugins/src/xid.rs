//! NVIDIA XID errors by what they call for: nothing (the application's fault), a GPU reset, or
//! draining the node. The classes follow NVIDIA's XID catalogue and its "resolution bucket"s
//! (RESTART_APP, RESET_GPU, RESTART_BM / node service); an XID not listed needs a reset: better
//! idle until reset than corrupt.

use drover_api::device::DeviceRecovery;

/// What an XID calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XidClass {
    /// Caused by the application (a bad kernel, an illegal address): the GPU stays in service
    /// and only the process that caused it is affected.
    Application,
    /// The GPU needs a reset before it can be trusted again (ECC, NVLink, firmware faults).
    Reset,
    /// The GPU cannot come back without servicing the node (off the bus, uncontained memory
    /// errors, a halted micro-controller).
    Drain,
}

/// (XID, class, what it means).
const CATALOGUE: &[(u64, XidClass, &str)] = &[
    (13, XidClass::Application, "graphics engine exception"),
    (31, XidClass::Application, "GPU memory page fault"),
    (43, XidClass::Application, "GPU stopped processing"),
    (45, XidClass::Application, "preemptive cleanup"),
    (68, XidClass::Application, "video decoder exception"),
    (109, XidClass::Application, "context switch timeout"),
    (48, XidClass::Reset, "double-bit ECC error"),
    (
        63,
        XidClass::Reset,
        "ECC page retirement or row remapping recorded",
    ),
    (
        64,
        XidClass::Reset,
        "ECC page retirement or row remapping failed",
    ),
    (74, XidClass::Reset, "NVLink error"),
    (92, XidClass::Reset, "high single-bit ECC error rate"),
    (94, XidClass::Reset, "contained memory error"),
    (119, XidClass::Reset, "GSP RPC timeout"),
    (120, XidClass::Reset, "GSP error"),
    (61, XidClass::Drain, "internal micro-controller breakpoint"),
    (62, XidClass::Drain, "internal micro-controller halt"),
    (79, XidClass::Drain, "GPU has fallen off the bus"),
    (95, XidClass::Drain, "uncontained memory error"),
    (140, XidClass::Drain, "unrecovered ECC error"),
];

/// The class of an XID (`None`: the event carried no number).
pub fn classify(xid: Option<u64>) -> XidClass {
    xid.and_then(|x| CATALOGUE.iter().find(|(n, _, _)| *n == x))
        .map_or(XidClass::Reset, |(_, class, _)| *class)
}

/// What the device needs after this class of fault (`None` for the application's own).
pub fn recovery(class: XidClass) -> Option<DeviceRecovery> {
    match class {
        XidClass::Application => None,
        XidClass::Reset => Some(DeviceRecovery::Reset),
        XidClass::Drain => Some(DeviceRecovery::Drain),
    }
}

/// The health reason written for an XID: its number, meaning and what it needs, e.g.
/// `XID 79 (GPU has fallen off the bus): node needs draining`.
pub fn reason(xid: Option<u64>) -> String {
    let meaning = xid
        .and_then(|x| CATALOGUE.iter().find(|(n, _, _)| *n == x))
        .map_or("not in the catalogue", |(_, _, m)| *m);
    let needs = match classify(xid) {
        XidClass::Application => "application fault, GPU stays in service",
        XidClass::Reset => "needs a GPU reset",
        XidClass::Drain => "node needs draining",
    };
    match xid {
        Some(x) => format!("XID {x} ({meaning}): {needs}"),
        None => format!("XID without a number: {needs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_reasons() {
        let cases: &[(Option<u64>, XidClass, Option<DeviceRecovery>, &str)] = &[
            (
                Some(13),
                XidClass::Application,
                None,
                "XID 13 (graphics engine exception): application fault",
            ),
            (
                Some(48),
                XidClass::Reset,
                Some(DeviceRecovery::Reset),
                "XID 48 (double-bit ECC error): needs a GPU reset",
            ),
            (
                Some(79),
                XidClass::Drain,
                Some(DeviceRecovery::Drain),
                "XID 79 (GPU has fallen off the bus): node needs draining",
            ),
            (
                Some(999),
                XidClass::Reset,
                Some(DeviceRecovery::Reset),
                "XID 999 (not in the catalogue): needs a GPU reset",
            ),
            (
                None,
                XidClass::Reset,
                Some(DeviceRecovery::Reset),
                "XID without a number: needs a GPU reset",
            ),
        ];
        for (xid, class, rec, text) in cases {
            assert_eq!(classify(*xid), *class, "{xid:?}");
            assert_eq!(recovery(classify(*xid)), *rec, "{xid:?}");
            assert!(reason(*xid).starts_with(text), "{xid:?}: {}", reason(*xid));
        }
        // Every XID is listed once.
        let mut seen: Vec<u64> = CATALOGUE.iter().map(|(n, _, _)| *n).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), CATALOGUE.len());
    }
}
