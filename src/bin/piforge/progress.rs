//! The binary's [`Progress`]: indicatif bars on stderr, one per task (several at once while
//! downloading). Only on a terminal: off a terminal stderr carries nothing but warnings and
//! the one-line error (tests and scripts rely on that), so no reporter is made at all.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use piforge::progress::{Progress, Task};

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    /// Bars on stderr when it is a terminal; `None` otherwise.
    pub fn for_stderr() -> Option<Arc<Bars>> {
        std::io::stderr().is_terminal().then(|| {
            Arc::new(Bars {
                multi: MultiProgress::new(),
                bars: Mutex::default(),
            })
        })
    }
}

fn style(task: Task<'_>) -> ProgressStyle {
    let template = match task {
        Task::Download(_) => "{msg:>40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        _ => "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn begin(&self, task: Task<'_>, total: Option<u64>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let bar = bars.entry(task.label().to_string()).or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(0));
            b.set_style(style(task));
            b.set_message(task.label().to_string());
            b
        });
        bar.set_length(total.unwrap_or(0));
        bar.set_position(0);
    }

    fn advance(&self, task: Task<'_>, done: u64) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.get(task.label()) {
            bar.set_position(done);
        }
    }

    fn finish(&self, task: Task<'_>) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = bars.remove(task.label()) {
            match task {
                // Downloads stay listed (what was fetched); passes over the input go.
                Task::Download(_) => bar.finish(),
                _ => bar.finish_and_clear(),
            }
        }
    }
}
