//! Logs: stderr and a daily-rotated file in the data directory's `logs/` (seven kept).

use std::path::Path;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber; the guard flushes the file on drop (keep it alive).
pub fn init(logs_dir: &Path) -> anyhow::Result<tracing_appender::non_blocking::WorkerGuard> {
    std::fs::create_dir_all(logs_dir)?;
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("vivify-serve")
        .filename_suffix("log")
        .max_log_files(7)
        .build(logs_dir)?;
    let (file, guard) = tracing_appender::non_blocking(appender);
    let filter =
        || EnvFilter::try_from_env("VIVIFY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .with_filter(filter()),
        )
        .try_init()?;
    Ok(guard)
}
