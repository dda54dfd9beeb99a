//! Typed errors of the core library.

/// Everything the core can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    Config { path: String, message: String },
    #[error("invalid value for `{field}`: {message}")]
    InvalidArgument {
        field: &'static str,
        message: String,
    },
    #[error("{path}: {message}")]
    Weights { path: String, message: String },
    #[error("checkpoint does not match the model:\n{0}")]
    CheckpointMismatch(String),
}

pub type Result<T> = std::result::Result<T, Error>;
