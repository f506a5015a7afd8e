//! Progress of long work on stderr: an indicatif bar (bytes, rate, ETA; a spinner with
//! bytes and rate when the total is unknown) on a terminal, plain `progress:` lines
//! elsewhere, and the events themselves as JSON lines with `-o json` (stdout stays one
//! JSON document). The events are the same whether the work runs in this process or in
//! `platter serve` (they come over the control socket then).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use platter_control::Event;
use platter_types::format_size;

use crate::args::OutputFormat;

/// Plain lines are for logs: one at the start of a phase, then at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

/// `-q/--quiet`: no progress and no messages (errors still go to stderr).
static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// `-v/--verbose`: detail messages too (see [`Event::Message`]).
static VERBOSE: AtomicBool = AtomicBool::new(false);

pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

pub struct Progress {
    mode: Mode,
    phase: Option<Phase>,
    /// When the previous phase's last count came (the command's start at first): a
    /// phase's work began then, not at its first count, which comes 100 ms or more in.
    since: Instant,
}

enum Mode {
    Quiet,
    Json,
    Plain { printed: Option<Instant> },
    Bar(Option<ProgressBar>),
}

/// One run of byte counts: a new total, or a count going back, starts the next.
#[derive(Debug, Clone, Copy)]
struct Phase {
    total: Option<u64>,
    started: Instant,
    done: u64,
    /// The plain line for `done` was printed.
    shown: bool,
}

impl Progress {
    pub fn new(output: OutputFormat) -> Self {
        let mode = if QUIET.load(Ordering::Relaxed) {
            Mode::Quiet
        } else if output == OutputFormat::Json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar(None)
        } else {
            Mode::Plain { printed: None }
        };
        Progress {
            mode,
            phase: None,
            since: Instant::now(),
        }
    }

    pub fn event(&mut self, e: Event) {
        if let Mode::Quiet = self.mode {
            return;
        }
        if let Mode::Json = self.mode {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{}", serde_json::to_string(&e).unwrap_or_default());
            return;
        }
        match e {
            Event::Message { text, detail } => {
                if !detail || VERBOSE.load(Ordering::Relaxed) {
                    self.message(&text)
                }
            }
            Event::Progress { done, total } => self.bytes(done, total),
            Event::Finished => self.finished(),
        }
    }

    fn message(&mut self, text: &str) {
        match &self.mode {
            // Printed above the bar, which is redrawn below it.
            Mode::Bar(Some(bar)) => bar.suspend(|| eprintln!("{text}")),
            _ => eprintln!("{text}"),
        }
    }

    fn bytes(&mut self, done: u64, total: Option<u64>) {
        let now = Instant::now();
        // The server reports a total overrun by the count as the count itself: that is
        // the same phase growing, not a new one.
        let new_phase = self.phase.is_none_or(|p| {
            done < p.done
                || match (p.total, total) {
                    (Some(a), Some(b)) => a != b && b != done,
                    (a, b) => a.is_some() != b.is_some(),
                }
        });
        if new_phase {
            self.phase = Some(Phase {
                total,
                started: self.since,
                done,
                shown: false,
            });
        }
        self.since = now;
        let Some(phase) = self.phase.as_mut() else {
            return;
        };
        if phase.done != done {
            phase.shown = false;
        }
        phase.done = done;
        phase.total = total;
        match &mut self.mode {
            Mode::Quiet | Mode::Json => {}
            Mode::Bar(bar) => {
                if new_phase {
                    if let Some(old) = bar.take() {
                        old.finish_and_clear();
                    }
                    *bar = Some(new_bar(total));
                }
                if let Some(b) = bar {
                    if let Some(t) = total {
                        b.set_length(t);
                    }
                    b.set_position(done);
                    b.set_message(plain_line(phase, now));
                }
            }
            Mode::Plain { printed } => {
                let complete = total.is_some_and(|t| done >= t);
                let due = new_phase || complete || printed.is_none_or(|at| now - at >= PLAIN_EVERY);
                if due && !phase.shown {
                    eprintln!("progress: {}", plain_line(phase, now));
                    phase.shown = true;
                    *printed = Some(now);
                }
            }
        }
    }

    fn finished(&mut self) {
        match &mut self.mode {
            Mode::Quiet | Mode::Json => {}
            Mode::Bar(bar) => {
                // The last state stays on screen: what was done, how fast.
                if let Some(b) = bar.take() {
                    if let Some(p) = &self.phase {
                        b.set_message(plain_line(p, Instant::now()));
                    }
                    b.finish();
                    // The cursor is left after the bar; what follows starts a new line.
                    eprintln!();
                }
            }
            Mode::Plain { .. } => {
                if let Some(p) = self.phase.as_mut().filter(|p| !p.shown) {
                    eprintln!("progress: {}", plain_line(p, Instant::now()));
                    p.shown = true;
                }
            }
        }
    }
}

/// A bar when the total is known, else a spinner (a stream of unknown length). The text
/// beside it is the plain line's: indicatif's own rate and ETA average the last steps, so
/// a jump over a hole read as TiB/s and the ETA as 0 s; the line's come from the
/// phase's wall-clock time over its byte count.
fn new_bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            "{bar:30} {msg}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    if total.is_none() {
        // A spinner that turns while the source is silent shows the work is alive.
        bar.enable_steady_tick(Duration::from_millis(120));
    }
    bar
}

/// `45% 12.0 MiB / 26.0 MiB (3.0 MiB/s, ETA 4s)`, or `12.0 MiB (3.0 MiB/s)` without a
/// total.
fn plain_line(p: &Phase, now: Instant) -> String {
    let secs = (now - p.started).as_secs_f64().max(0.001);
    let rate = p.done as f64 / secs;
    let Some(total) = p.total else {
        return format!("{} ({}/s)", format_size(p.done), format_size(rate as u64));
    };
    let eta = if rate > 0.0 && total > p.done {
        format!(", ETA {:.0}s", (total - p.done) as f64 / rate)
    } else {
        String::new()
    };
    let pct = (p.done.min(total) * 100).checked_div(total).unwrap_or(100);
    format!(
        "{pct:3}% {} / {} ({}/s{eta})",
        format_size(p.done),
        format_size(total),
        format_size(rate as u64)
    )
}

impl Drop for Progress {
    /// A bar left unfinished (the work failed or was cancelled) is cleared, so the error
    /// line that follows stands alone.
    fn drop(&mut self) {
        if let Mode::Bar(Some(bar)) = &self.mode {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_with_and_without_a_total() {
        let t = Instant::now();
        let p = Phase {
            total: Some(100 << 20),
            started: t,
            done: 50 << 20,
            shown: false,
        };
        let line = plain_line(&p, t + Duration::from_secs(5));
        assert!(line.starts_with(" 50% "), "{line}");
        assert!(line.contains("/s, ETA 5s)"), "{line}");
        let p = Phase { total: None, ..p };
        let line = plain_line(&p, t + Duration::from_secs(5));
        assert!(line.ends_with("/s)") && !line.contains('%'), "{line}");
    }
}
