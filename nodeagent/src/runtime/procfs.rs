//! Reading `/proc/<pid>/stat`: whether a recorded process is still the one the agent started
//! (pids are reused; the start time is not).

use super::ProcessId;

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// The one-letter state (`R`, `S`, `Z`, ...).
    pub state: char,
    pub pgid: u32,
    pub start_ticks: u64,
}

/// Parses the content of a `stat` file; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 5 is pgrp; field 22 is starttime.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgid: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// The stat of a live process, `None` when there is none with that pid.
pub fn stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Whether the process `id` names still runs (and is not a zombie awaiting its reaper).
pub fn is_alive(id: ProcessId) -> bool {
    stat(id.pid).is_some_and(|s| s.start_ticks == id.start_ticks && s.state != 'Z')
}

/// The identity of a process that was just started.
pub fn identify(pid: u32) -> ProcessId {
    ProcessId {
        pid,
        start_ticks: stat(pid).map_or(0, |s| s.start_ticks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let line = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.pgid, 1234);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn rejects_truncated_lines() {
        assert_eq!(parse_stat("12 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive() {
        let id = identify(std::process::id());
        assert!(is_alive(id));
        assert!(!is_alive(ProcessId {
            start_ticks: id.start_ticks + 1,
            ..id
        }));
    }
}
