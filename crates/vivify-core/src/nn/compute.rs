//! How the heavy layers run: the memory-bounding choices of an execution plan that change the
//! temporaries, never the result (beyond float rounding).

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ComputeOptions {
    /// Queries per attention chunk: the score matrix is at most (batch·heads, chunk, keys).
    /// None computes all queries at once.
    pub attention_query_chunk: Option<usize>,
    /// Tokens per feed-forward chunk: the GEGLU's 8x-wide hidden is at most this many tokens
    /// long. None runs all tokens at once.
    pub feed_forward_chunk: Option<usize>,
    /// Frames per pass of the spatial transformers (their work is per frame).
    pub spatial_frame_chunk: Option<usize>,
    /// Pixel columns per pass of the temporal transformers (their work is per pixel; the
    /// GroupNorm in front still sees all of them).
    pub temporal_pixel_chunk: Option<usize>,
}

/// `f` over slices of `x` of at most `chunk` along `dim`, concatenated; `f(x)` when `chunk` is
/// None or covers the whole axis.
pub fn chunked(
    x: &Tensor,
    dim: usize,
    chunk: Option<usize>,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let len = x.dim(dim)?;
    match chunk {
        Some(c) if c > 0 && c < len => {
            let parts = (0..len)
                .step_by(c)
                .map(|start| f(&x.narrow(dim, start, c.min(len - start))?))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, dim)
        }
        _ => f(x),
    }
}
