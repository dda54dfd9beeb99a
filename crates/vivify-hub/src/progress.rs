use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Per-file progress of [`crate::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadEvent {
    /// A file download starts. `total` is its full size when the hub said it; `resumed_from`
    /// is the number of bytes already on disk from an interrupted download.
    Started {
        path: String,
        total: Option<u64>,
        resumed_from: u64,
    },
    /// `bytes` more bytes of `path` were written.
    Advanced { path: String, bytes: u64 },
    /// `path` is complete and linked into the snapshot.
    Finished { path: String },
    /// `path` was already in the cache (snapshot or blob); nothing was downloaded.
    Cached { path: String },
}

/// A progress callback that draws one `indicatif` bar per downloading file under `multi`.
pub fn indicatif_progress(multi: MultiProgress) -> impl Fn(DownloadEvent) + Send + Sync {
    let bars: Mutex<HashMap<String, ProgressBar>> = Mutex::new(HashMap::new());
    let style = ProgressStyle::with_template(
        "{msg:40!} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    move |event| {
        let mut bars = bars.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            DownloadEvent::Started {
                path,
                total,
                resumed_from,
            } => {
                let bar = multi.add(ProgressBar::new(total.unwrap_or(0)));
                bar.set_style(style.clone());
                bar.set_message(path.clone());
                bar.set_position(resumed_from);
                bars.insert(path, bar);
            }
            DownloadEvent::Advanced { path, bytes } => {
                if let Some(bar) = bars.get(&path) {
                    bar.inc(bytes);
                }
            }
            DownloadEvent::Finished { path } => {
                if let Some(bar) = bars.remove(&path) {
                    bar.finish();
                }
            }
            DownloadEvent::Cached { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::ProgressDrawTarget;

    #[test]
    fn indicatif_adapter_tracks_files() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
        let cb = indicatif_progress(multi);
        let path = "unet/x.safetensors".to_string();
        cb(DownloadEvent::Started {
            path: path.clone(),
            total: Some(10),
            resumed_from: 4,
        });
        cb(DownloadEvent::Advanced {
            path: path.clone(),
            bytes: 6,
        });
        cb(DownloadEvent::Finished { path: path.clone() });
        cb(DownloadEvent::Cached { path: path.clone() });
        cb(DownloadEvent::Advanced { path, bytes: 1 });
    }
}
