//! Progress bars on stderr.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `total` steps of `stage`, showing step i/n, per-step time and ETA.
pub fn steps_bar(stage: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] step {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.to_string());
    bar
}
