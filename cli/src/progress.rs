//! Progress of long work on stderr: a redrawn line on a terminal, plain lines elsewhere,
//! JSON events with `-o json` (stdout stays one JSON document).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use platter_control::Event;
use platter_types::format_size;

use crate::args::OutputFormat;

pub struct Progress {
    json: bool,
    tty: bool,
    started: Instant,
    last: Option<Instant>,
    drew: bool,
}

impl Progress {
    pub fn new(output: OutputFormat) -> Self {
        Progress {
            json: output == OutputFormat::Json,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
            drew: false,
        }
    }

    pub fn event(&mut self, e: Event) {
        let mut err = std::io::stderr().lock();
        if self.json {
            let _ = writeln!(err, "{}", serde_json::to_string(&e).unwrap_or_default());
            return;
        }
        match e {
            Event::Message { text } => {
                self.clear(&mut err);
                let _ = writeln!(err, "{text}");
            }
            Event::Progress { done, total } => {
                let now = Instant::now();
                let due = self.last.is_none_or(|l| {
                    now - l >= Duration::from_millis(if self.tty { 100 } else { 2000 })
                });
                if !due && done < total {
                    return;
                }
                self.last = Some(now);
                let secs = self.started.elapsed().as_secs_f64().max(0.001);
                let rate = done as f64 / secs;
                let eta = if rate > 0.0 && total > done {
                    format!(", ETA {:.0}s", (total - done) as f64 / rate)
                } else {
                    String::new()
                };
                let pct = (done * 100).checked_div(total).unwrap_or(100);
                let line = format!(
                    "{pct:3}% {} / {} ({}/s{eta})",
                    format_size(done),
                    format_size(total),
                    format_size(rate as u64)
                );
                if self.tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                    self.drew = true;
                    if done >= total {
                        let _ = writeln!(err);
                        self.drew = false;
                    }
                } else {
                    let _ = writeln!(err, "progress: {line}");
                }
            }
        }
    }

    fn clear(&mut self, err: &mut impl Write) {
        if self.drew {
            let _ = write!(err, "\r\x1b[2K");
            self.drew = false;
        }
    }
}

impl Drop for Progress {
    /// A bar left half drawn (the work failed or was cancelled) is cleared, so the error
    /// line that follows stands alone.
    fn drop(&mut self) {
        let mut err = std::io::stderr().lock();
        self.clear(&mut err);
    }
}
