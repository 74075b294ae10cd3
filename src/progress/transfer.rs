//! Renders registry transfers (push/pull): one indicatif bar per blob on a terminal, one
//! line per event otherwise, nothing in quiet mode.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_registry::{Outcome, Progress};
use rbuild_store::Digest;

use super::Style;

/// Whether we are pushing or pulling (the words differ, as docker's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sending blobs.
    Push,
    /// Receiving blobs.
    Pull,
}

/// A [`Progress`] that draws transfers.
pub struct TransferView {
    mode: Style,
    direction: Direction,
    multi: MultiProgress,
    bars: Mutex<HashMap<Digest, ProgressBar>>,
}

impl TransferView {
    /// A view for `mode`.
    pub fn new(mode: Style, direction: Direction) -> TransferView {
        let multi = MultiProgress::with_draw_target(if mode == Style::Tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        TransferView {
            mode,
            direction,
            multi,
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn short(digest: &Digest) -> &str {
        &digest.hex()[..12]
    }

    fn line(&self, text: String) {
        if self.mode == Style::Plain {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    fn bars(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, ProgressBar>> {
        self.bars.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bar(&self, digest: &Digest, size: u64) -> ProgressBar {
        self.bars()
            .entry(digest.clone())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(size));
                let style = ProgressStyle::with_template(
                    "{prefix}: {msg:>12} [{bar:30}] {bytes}/{total_bytes}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(Self::short(digest).to_string());
                bar
            })
            .clone()
    }

    /// Clears the bars (call before printing the result).
    pub fn finish(&self) {
        let _ = self.multi.clear();
    }
}

impl Progress for TransferView {
    fn started(&self, digest: &Digest, size: u64) {
        let verb = match self.direction {
            Direction::Push => "Pushing",
            Direction::Pull => "Downloading",
        };
        match self.mode {
            Style::Tty => self.bar(digest, size).set_message(verb),
            Style::Plain => self.line(format!("{}: {verb} {}", Self::short(digest), human(size))),
            Style::Quiet => {}
        }
    }

    fn advanced(&self, digest: &Digest, done: u64) {
        if self.mode == Style::Tty {
            if let Some(bar) = self.bars().get(digest) {
                bar.set_position(done);
            }
        }
    }

    fn finished(&self, digest: &Digest, outcome: Outcome) {
        let text = match (self.direction, outcome) {
            (Direction::Push, Outcome::Skipped) => "Layer already exists",
            (Direction::Push, Outcome::Mounted) => "Mounted",
            (Direction::Push, Outcome::Transferred) => "Pushed",
            (Direction::Pull, Outcome::Skipped) => "Already exists",
            (Direction::Pull, _) => "Pull complete",
        };
        match self.mode {
            Style::Tty => {
                let bar = self.bar(digest, 0);
                bar.finish_with_message(text);
            }
            Style::Plain => self.line(format!("{}: {text}", Self::short(digest))),
            Style::Quiet => {}
        }
    }

    fn retrying(&self, digest: &Digest, attempt: u32) {
        match self.mode {
            Style::Tty => self.bar(digest, 0).set_message(format!("Retry {attempt}")),
            Style::Plain => self.line(format!(
                "{}: Retrying (attempt {attempt})",
                Self::short(digest)
            )),
            Style::Quiet => {}
        }
    }
}

/// `12.3MB` as docker writes sizes.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_234_567), "1.2MB");
    }
}
