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
    /// An allocation failed in `stage` and no lower-memory rung of the plan fixed it.
    #[error("out of memory in {stage}: {detail}")]
    OutOfMemory { stage: String, detail: String },
    /// The caller stopped the run between steps (a cancelled job, a server shutting down).
    #[error("stopped: {0}")]
    Stopped(String),
}

impl Error {
    /// Whether this is an allocation failure (device or host) that a lower-memory plan may fix.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            Error::Candle(e) => is_out_of_memory(e),
            Error::OutOfMemory { .. } => true,
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::OutOfMemory,
            _ => false,
        }
    }
}

/// Texts by which allocation failures surface through candle: the cudarc driver error
/// (`DriverError(CUDA_ERROR_OUT_OF_MEMORY, "out of memory")`, boxed in `candle_core::Error::Cuda`,
/// usually wrapped in `WithBacktrace`), cuBLAS's and cuDNN's allocation statuses, Metal buffer
/// failures, and the messages of vivify's own budget guard and fault injector.
const OUT_OF_MEMORY_MARKERS: [&str; 6] = [
    "CUDA_ERROR_OUT_OF_MEMORY",
    "out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
    "failed to allocate",
    "memory allocation",
];

/// Whether a candle error is an allocation failure. Host allocations on the CPU backend abort
/// the process in Rust's allocator rather than return an error, so only allocation failures
/// that candle reports (device memory, I/O `OutOfMemory`, messages) are recognised.
pub fn is_out_of_memory(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            is_out_of_memory(inner)
        }
        E::Io(io) => io.kind() == std::io::ErrorKind::OutOfMemory,
        E::Cuda(_) | E::Metal(_) | E::Msg(_) | E::Wrapped(_) | E::WrappedContext { .. } => {
            let text = e.to_string().to_ascii_lowercase();
            OUT_OF_MEMORY_MARKERS
                .iter()
                .any(|m| text.contains(&m.to_ascii_lowercase()))
        }
        _ => false,
    }
}

pub type Result<T> = std::result::Result<T, Error>;
