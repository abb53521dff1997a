//! Progress of a local run, on stderr (stdout may be the output): a bar when stderr is a
//! terminal (buildings done of all, rate, time left, failures so far), else a plain line every
//! few seconds, as a log file or CI wants it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::review::page::thousands;

/// How often a line is written when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    total: usize,
    /// Done before this run (resumed).
    before: usize,
    done: usize,
    failed: usize,
    started: Instant,
    last_line: Instant,
}

/// Prints a message above the bar (or on its own line): usable from another task.
#[derive(Clone)]
pub struct Printer(Option<ProgressBar>);

impl Printer {
    pub fn say(&self, message: &str) {
        match &self.0 {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }
}

impl Progress {
    /// `total` buildings in the input, `before` of them already in the output.
    pub fn start(total: usize, before: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {human_pos}/{human_len} buildings · {per_sec} · {eta} left{msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_position(before as u64);
            bar.reset_eta();
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            total,
            before,
            done: before,
            failed: 0,
            started: now,
            last_line: now,
        }
    }

    pub fn printer(&self) -> Printer {
        Printer(self.bar.clone())
    }

    /// `n` more buildings done, `failed` of them with an error.
    pub fn advance(&mut self, n: usize, failed: usize) {
        self.done += n;
        self.failed += failed;
        match &self.bar {
            Some(bar) => {
                bar.inc(n as u64);
                if self.failed > 0 {
                    bar.set_message(format!(" · {} failed", thousands(self.failed)));
                }
            }
            None if self.last_line.elapsed() >= LINE_EVERY => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// `progress: 3,000 of 5,000 buildings (60 %) · 352 a second · 6 s left · 12 failed`.
    fn line(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.done - self.before) as f64 / seconds;
        let left = self.total.saturating_sub(self.done);
        let mut line = format!(
            "progress: {} of {} buildings ({} %) · {:.0} a second",
            thousands(self.done),
            thousands(self.total),
            (self.done * 100).checked_div(self.total).unwrap_or(100),
            rate
        );
        if rate > 0.0 && left > 0 {
            line.push_str(&format!(" · {:.0} s left", left as f64 / rate));
        }
        line.push_str(&format!(" · {} failed", thousands(self.failed)));
        line
    }

    /// Takes the bar off the screen before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
