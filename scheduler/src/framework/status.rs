//! A plugin's verdict: a code that says what the queue does next, and reasons a person can read.

use std::borrow::Cow;
use std::fmt;

/// What the verdict means for the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// Fits / go on.
    Success,
    /// Does not fit now; may fit after the cluster changes (or after preemption).
    Unschedulable,
    /// Does not fit, and preemption would not help (a selector no node matches, a taint).
    UnschedulableAndUnresolvable,
    /// Fits, but must wait (a gang member waiting for the rest of its gang).
    Wait,
    /// An internal fault; retried with backoff.
    Error,
}

/// A verdict with its reasons and the plugin that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
    pub plugin: &'static str,
}

impl Status {
    pub const fn success() -> Status {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }

    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> Status {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: "",
        }
    }

    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Unschedulable, reason)
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn wait(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Wait, reason)
    }

    pub fn error(reason: impl Into<Cow<'static, str>>) -> Status {
        Status::new(Code::Error, reason)
    }

    /// The same status, naming the plugin that gave it.
    pub fn with_plugin(mut self, plugin: &'static str) -> Status {
        self.plugin = plugin;
        self
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether preemption could help (the pod fits once something is removed).
    pub fn is_resolvable(&self) -> bool {
        self.code == Code::Unschedulable
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.code)?;
        if !self.reasons.is_empty() {
            write!(f, ": {}", self.reasons.join(", "))?;
        }
        Ok(())
    }
}
