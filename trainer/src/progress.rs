//! The progress bar: drawn on stderr for people, absent for pipes and logs.

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-based progress bar over the input file, or nothing.
pub struct Progress(ProgressBar);

impl Progress {
    /// `show` is the caller's decision (stderr is a terminal, not quiet).
    pub fn new(show: bool, total_bytes: u64) -> Progress {
        if !show {
            return Progress(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(total_bytes);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} reading [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(bar)
    }

    pub fn set(&self, bytes: u64) {
        self.0.set_position(bytes);
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
