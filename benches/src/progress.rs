//! Progress on stderr: a bar with rate and ETA, hidden when stderr is not a terminal or when
//! the user asked for quiet.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A handle scenarios report progress through. Cheap to clone; every clone drives the same bar.
#[derive(Clone, Debug)]
pub struct Progress {
    bar: ProgressBar,
    visible: bool,
}

impl Progress {
    /// A bar on stderr, unless `quiet` or stderr is not a terminal.
    pub fn new(quiet: bool) -> Progress {
        let visible = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = ProgressBar::with_draw_target(
            Some(0),
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        Progress { bar, visible }
    }

    /// Never draws (tests).
    pub fn hidden() -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            visible: false,
        }
    }

    pub fn is_visible(&self) -> bool {
        self.visible
    }

    /// Starts a phase of `total` steps.
    pub fn phase(&self, label: &str, total: u64) {
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.bar.set_style(style);
        self.bar.set_prefix(label.to_string());
        self.bar.set_message("");
        self.bar.reset();
        self.bar.set_length(total);
        self.bar.set_position(0);
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn set(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    pub fn message(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    /// Prints a line above the bar (or plainly when there is no bar).
    pub fn println(&self, line: impl AsRef<str>) {
        if self.visible {
            self.bar.println(line.as_ref());
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
