//! Renders a build's event stream: docker-style `#N [stage i/n] STEP` lines in plain mode,
//! one spinner per running step on a terminal, nothing when quiet.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use rbuild_builder::events::{BuildEvent, EventSink, OutputStream, StepId};

use super::Style;

/// An [`EventSink`] that draws the build on stderr.
pub struct BuildView {
    style: Style,
    state: Mutex<ViewState>,
    multi: MultiProgress,
}

#[derive(Default)]
struct ViewState {
    /// docker numbers the steps in the order they start: `#1`, `#2`, ...
    numbers: HashMap<StepId, usize>,
    started: HashMap<StepId, Instant>,
    headers: HashMap<StepId, String>,
    bars: HashMap<StepId, ProgressBar>,
}

impl BuildView {
    /// A view in `style`.
    pub fn new(style: Style) -> BuildView {
        let multi = MultiProgress::with_draw_target(match style {
            Style::Tty => ProgressDrawTarget::stderr(),
            Style::Plain | Style::Quiet => ProgressDrawTarget::hidden(),
        });
        BuildView {
            style,
            state: Mutex::new(ViewState::default()),
            multi,
        }
    }

    /// Prints a line above the bars (tty) or as it is (plain); nothing when quiet.
    pub fn line(&self, text: &str) {
        match self.style {
            Style::Quiet => {}
            Style::Tty => {
                let _ = self.multi.println(text);
            }
            Style::Plain => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
        }
    }

    fn plain(&self, state: &mut ViewState, event: BuildEvent) {
        let num = |state: &mut ViewState, id: StepId| {
            let next = state.numbers.len() + 1;
            *state.numbers.entry(id).or_insert(next)
        };
        let mut err = std::io::stderr().lock();
        match event {
            BuildEvent::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let n = num(state, id);
                state.started.insert(id, Instant::now());
                let _ = writeln!(err, "#{n} {} {text}", header(&stage, index, total));
            }
            BuildEvent::StepCached { id } => {
                let n = num(state, id);
                let _ = writeln!(err, "#{n} CACHED");
            }
            BuildEvent::StepCacheMiss { id, reason } => {
                let n = num(state, id);
                let _ = writeln!(err, "#{n} cache miss: {reason}");
            }
            BuildEvent::StepOutput { id, line, .. } => {
                let n = num(state, id);
                let t = state
                    .started
                    .get(&id)
                    .map(|s| s.elapsed())
                    .unwrap_or_default();
                let _ = writeln!(
                    err,
                    "#{n} {:.3} {}",
                    t.as_secs_f64(),
                    String::from_utf8_lossy(&line)
                );
            }
            BuildEvent::StepTransfer { id, done, total } => {
                if total == Some(done) {
                    let n = num(state, id);
                    let _ = writeln!(err, "#{n} transferred {}", human_bytes(done));
                }
            }
            BuildEvent::StepDone { id, elapsed } => {
                let n = num(state, id);
                let _ = writeln!(err, "#{n} DONE {}", secs(elapsed));
            }
            BuildEvent::StepFailed { id, elapsed } => {
                let n = num(state, id);
                let _ = writeln!(err, "#{n} ERROR after {}", secs(elapsed));
            }
            BuildEvent::Warning(w) => {
                let _ = writeln!(err, "WARNING: {w}");
            }
            BuildEvent::Progress(line) => {
                let _ = writeln!(err, "#0 {line}");
            }
        }
    }

    fn tty(&self, state: &mut ViewState, event: BuildEvent) {
        let spinner = ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        match event {
            BuildEvent::StepStarted {
                id,
                stage,
                index,
                total,
                text,
            } => {
                let header = format!("{} {text}", header(&stage, index, total));
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(spinner);
                bar.set_message(header.clone());
                bar.enable_steady_tick(Duration::from_millis(120));
                state.headers.insert(id, header);
                state.bars.insert(id, bar);
            }
            BuildEvent::StepCached { id } => {
                if let Some(bar) = state.bars.remove(&id) {
                    bar.finish_and_clear();
                }
                let header = state.headers.get(&id).cloned().unwrap_or_default();
                let _ = self.multi.println(format!("  CACHED {header}"));
            }
            BuildEvent::StepCacheMiss { .. } => {}
            BuildEvent::StepOutput { stream, line, .. } => {
                let mark = if stream == OutputStream::Stderr {
                    "!"
                } else {
                    "|"
                };
                let _ = self
                    .multi
                    .println(format!("  {mark} {}", String::from_utf8_lossy(&line)));
            }
            BuildEvent::StepTransfer { id, done, total } => {
                if let (Some(bar), Some(header)) = (state.bars.get(&id), state.headers.get(&id)) {
                    let total = total.map(human_bytes).unwrap_or_else(|| "?".into());
                    bar.set_message(format!("{header} {} / {total}", human_bytes(done)));
                }
            }
            BuildEvent::StepDone { id, elapsed } => {
                if let Some(bar) = state.bars.remove(&id) {
                    bar.finish_and_clear();
                }
                let header = state.headers.get(&id).cloned().unwrap_or_default();
                let _ = self
                    .multi
                    .println(format!("  DONE {header} {}", secs(elapsed)));
            }
            BuildEvent::StepFailed { id, elapsed } => {
                if let Some(bar) = state.bars.remove(&id) {
                    bar.finish_and_clear();
                }
                let header = state.headers.get(&id).cloned().unwrap_or_default();
                let _ = self
                    .multi
                    .println(format!("  ERROR {header} after {}", secs(elapsed)));
            }
            BuildEvent::Warning(w) => {
                let _ = self.multi.println(format!("WARNING: {w}"));
            }
            BuildEvent::Progress(line) => {
                let _ = self.multi.println(format!("#0 {line}"));
            }
        }
    }
}

impl EventSink for BuildView {
    fn event(&self, event: BuildEvent) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match self.style {
            Style::Quiet => {}
            Style::Plain => self.plain(&mut state, event),
            Style::Tty => self.tty(&mut state, event),
        }
    }
}

/// `[stage 2/5]`, or `[2/5]` for a lone unnamed stage.
fn header(stage: &str, index: usize, total: usize) -> String {
    if stage.is_empty() {
        format!("[{index}/{total}]")
    } else {
        format!("[{stage} {index}/{total}]")
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// `1.5MB`-style sizes, as docker prints them (powers of 1000).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", UNITS[unit]).replace(".000", "")
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1_000), "1kB");
        assert_eq!(human_bytes(1_500_000), "1.500MB");
    }
}
