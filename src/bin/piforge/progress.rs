//! The binary's [`Progress`] reporters. On a terminal: indicatif bars on stderr, one per step,
//! all in one [`MultiProgress`] view, so downloads and nodes built at once each have their
//! own line, with throughput and ETA. Off a terminal: one plain line per finished step
//! (`piforge: decompress: 1.9 GiB in 11.2 s, 170 MiB/s`), nothing while it runs. `--quiet`
//! makes no reporter at all.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use piforge::progress::{Progress, Task};
use piforge::size::human;

/// The reporter for this run: bars on a terminal, plain lines otherwise, none when quiet.
pub fn reporter(quiet: bool) -> Option<Arc<dyn Progress>> {
    if quiet {
        None
    } else if std::io::stderr().is_terminal() {
        Some(Arc::new(Bars::new()))
    } else {
        Some(Arc::new(Lines::default()))
    }
}

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new() -> Bars {
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::default(),
        }
    }
}

fn style(total_known: bool) -> ProgressStyle {
    let template = if total_known {
        "{msg:>28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {elapsed}"
    } else {
        "{msg:>28} {spinner} {bytes} {bytes_per_sec} {elapsed}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn begin(&self, task: Task<'_>, total: Option<u64>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(task.label()).or_insert_with(|| {
            // Styled and labelled before it joins the view: set afterwards, the first draw
            // (set_message draws) showed indicatif's default style, a full bar and `0/0`.
            let b = ProgressBar::new(total.unwrap_or(0))
                .with_style(style(total.is_some()))
                .with_message(task.label());
            let b = self.multi.add(b);
            // Steps that report no position (a node's copy) still show time passing.
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        // Again for a task begun again (a retried download), whose total may differ.
        bar.set_style(style(total.is_some()));
        bar.set_length(total.unwrap_or(0));
        bar.set_position(0);
        bar.reset_elapsed();
    }

    fn advance(&self, task: Task<'_>, done: u64) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.get(&task.label()) {
            bar.set_position(done);
        }
    }

    fn finish(&self, task: Task<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.remove(&task.label()) {
            match task {
                // Passes over the input go; what was fetched and built stays listed.
                Task::Checksum | Task::Decompress => bar.finish_and_clear(),
                _ => bar.finish(),
            }
        }
    }
}

/// One line per finished step, for logs: its size, time and throughput.
#[derive(Default)]
pub struct Lines {
    started: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Progress for Lines {
    fn begin(&self, task: Task<'_>, _total: Option<u64>) {
        let mut s = self.started.lock().unwrap_or_else(|p| p.into_inner());
        s.insert(task.label(), (Instant::now(), 0));
    }

    fn advance(&self, task: Task<'_>, done: u64) {
        let mut s = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = s.get_mut(&task.label()) {
            e.1 = done;
        }
    }

    fn finish(&self, task: Task<'_>) {
        let mut s = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t0, bytes)) = s.remove(&task.label()) {
            eprintln!("piforge: {}", line(&task.label(), bytes, t0.elapsed()));
        }
    }
}

/// `decompress: 1.9 GiB in 11.2 s, 170.0 MiB/s`.
fn line(label: &str, bytes: u64, took: Duration) -> String {
    let secs = took.as_secs_f64();
    let rate = if secs > 0.0 {
        format!(", {}/s", human((bytes as f64 / secs) as u64))
    } else {
        String::new()
    };
    format!("{label}: {} in {secs:.1} s{rate}", human(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_has_size_time_and_rate() {
        assert_eq!(
            line("copy pi-w-1", 200 << 20, Duration::from_secs(2)),
            format!(
                "copy pi-w-1: {} in 2.0 s, {}/s",
                human(200 << 20),
                human(100 << 20)
            )
        );
    }
}
