//! How the heavy layers run: the memory-bounding choices of an execution plan that change the
//! temporaries, never the result (beyond float rounding).

use candle_core::{Result, Tensor};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct ComputeOptions {
    /// Queries per attention chunk: the score matrix is at most (batch·heads, chunk, keys).
    /// None computes all queries at once.
    pub attention_query_chunk: Option<usize>,
    /// Rows of batch·heads per attention pass: with query chunks, the score matrix is at most
    /// (head_chunk, query_chunk, keys).
    pub attention_head_chunk: Option<usize>,
    /// Tokens per feed-forward chunk: the GEGLU's 8x-wide hidden is at most this many tokens
    /// long. None runs all tokens at once.
    pub feed_forward_chunk: Option<usize>,
    /// Frames per pass of the spatial transformers (their work is per frame).
    pub spatial_frame_chunk: Option<usize>,
    /// Pixel columns per pass of the temporal layers (transformers and convolutions: their work
    /// is per pixel); their GroupNorms take statistics over all pixels, then normalise this many
    /// pixels of every video at a time.
    pub temporal_pixel_chunk: Option<usize>,
    /// Frames per pass of the per-frame convolution layers (resnet blocks, down- and upsampling,
    /// conv_in/conv_out): their work and GroupNorms are per frame, and at large sizes their
    /// im2col buffers and intermediates are the largest temporaries of the UNet.
    #[serde(default)]
    pub conv_frame_chunk: Option<usize>,
    /// Rows per band of the VAE's full-size layers (the encoder's down-block resnets, the
    /// decoder's up blocks and output layers, at each layer's own resolution): their im2col
    /// buffers and GroupNorm copies are bounded by the band, with the numbers of the unbanded
    /// VAE (`nn::row_bands`). The VAE's mid-block attention takes `attention_query_chunk` and
    /// `attention_head_chunk`.
    #[serde(default)]
    pub vae_row_band: Option<usize>,
}

/// One chunking choice, named for plan summaries (`code`, as in `q1024`) and for people.
pub struct ChunkChoice {
    pub code: &'static str,
    pub words: &'static str,
    pub value: Option<usize>,
}

impl ComputeOptions {
    /// Every choice in a fixed order: the one list that plan summaries and descriptions walk.
    pub fn choices(&self) -> [ChunkChoice; 7] {
        // Destructured so that a new field does not compile until it is listed here.
        let Self {
            attention_query_chunk,
            attention_head_chunk,
            feed_forward_chunk,
            spatial_frame_chunk,
            temporal_pixel_chunk,
            conv_frame_chunk,
            vae_row_band,
        } = *self;
        let c = |code, words, value| ChunkChoice { code, words, value };
        [
            c("q", "attention query chunk", attention_query_chunk),
            c("h", "attention head slice", attention_head_chunk),
            c("ff", "feed-forward chunk", feed_forward_chunk),
            c("sf", "spatial frame chunk", spatial_frame_chunk),
            c("tp", "temporal pixel chunk", temporal_pixel_chunk),
            c("cf", "convolution frame chunk", conv_frame_chunk),
            c("vb", "VAE row band", vae_row_band),
        ]
    }
}

/// `f(start, len)` over runs of at most `chunk` of `0..n`, concatenated on axis `dim`.
pub fn chunked_range(
    n: usize,
    chunk: Option<usize>,
    dim: usize,
    f: impl Fn(usize, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    match chunk {
        Some(c) if c > 0 && c < n => {
            let parts = (0..n)
                .step_by(c)
                .map(|s| f(s, c.min(n - s)))
                .collect::<Result<Vec<_>>>()?;
            Tensor::cat(&parts, dim)
        }
        _ => f(0, n),
    }
}

/// `f(x_part, start, len)` over frame chunks of `x` (frames on axis 0), concatenated.
pub fn per_frame_chunks(
    x: &Tensor,
    chunk: Option<usize>,
    f: impl Fn(&Tensor, usize, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    chunked_range(x.dim(0)?, chunk, 0, |start, len| {
        f(&x.narrow(0, start, len)?, start, len)
    })
}

/// `f` over slices of `x` of at most `chunk` along `dim`, concatenated; `f(x)` when `chunk` is
/// None or covers the whole axis.
pub fn chunked(
    x: &Tensor,
    dim: usize,
    chunk: Option<usize>,
    f: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    chunked_range(x.dim(dim)?, chunk, dim, |start, len| {
        f(&x.narrow(dim, start, len)?)
    })
}
