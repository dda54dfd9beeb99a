//! `BasicTransformerBlock`, the spatial `Transformer2DModel` (linear projections) and the
//! `TransformerTemporalModel` that attends across frames at each pixel.

use super::attention::Attention;
use super::compute::{ComputeOptions, chunked, chunked_range};
use super::feed_forward::{FeedForward, FeedForwardActivation};
use super::norm::{GroupNorm, LayerNorm};
use super::ops::{add, transpose_last2};
use crate::nn::linear::{Linear, linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// LayerNorm eps of the transformer blocks (diffusers' default `norm_eps`).
const BLOCK_NORM_EPS: f64 = 1e-5;
/// GroupNorm eps in front of both transformer models.
const TRANSFORMER_GROUP_NORM_EPS: f64 = 1e-6;

/// self-attention, then attention to `context` (or self-attention again when the block has no
/// cross-attention width), then a GEGLU feed-forward; each pre-normed and residual.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        heads: usize,
        dim_head: usize,
        cross_attention_dim: Option<usize>,
    ) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), dim, BLOCK_NORM_EPS)?,
            attn1: Attention::new(vb.pp("attn1"), dim, None, heads, dim_head, false)?,
            norm2: LayerNorm::new(vb.pp("norm2"), dim, BLOCK_NORM_EPS)?,
            attn2: Attention::new(
                vb.pp("attn2"),
                dim,
                cross_attention_dim,
                heads,
                dim_head,
                false,
            )?,
            norm3: LayerNorm::new(vb.pp("norm3"), dim, BLOCK_NORM_EPS)?,
            ff: FeedForward::new(vb.pp("ff"), dim, dim * 4, FeedForwardActivation::Geglu)?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        opts: ComputeOptions,
    ) -> Result<Tensor> {
        let x = add(
            &self
                .attn1
                .forward_chunked(&self.norm1.forward(x)?, None, opts)?,
            x,
        )?;
        let x = add(
            &self
                .attn2
                .forward_chunked(&self.norm2.forward(&x)?, context, opts)?,
            &x,
        )?;
        add(
            &self
                .ff
                .forward_chunked(&self.norm3.forward(&x)?, opts.feed_forward_chunk)?,
            &x,
        )
    }
}

/// GroupNorm, `proj_in`, one transformer block and `proj_out`: the parts both transformer
/// models share; they differ in what the tokens are.
#[derive(Debug, Clone)]
struct Projected {
    norm: GroupNorm,
    proj_in: Linear,
    block: BasicTransformerBlock,
    proj_out: Linear,
}

impl Projected {
    fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        dim_head: usize,
        groups: usize,
        cross_attention_dim: Option<usize>,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        Ok(Self {
            norm: GroupNorm::new(vb.pp("norm"), groups, channels, TRANSFORMER_GROUP_NORM_EPS)?,
            proj_in: linear(channels, inner, vb.pp("proj_in"))?,
            block: BasicTransformerBlock::new(
                vb.pp("transformer_blocks.0"),
                inner,
                heads,
                dim_head,
                cross_attention_dim,
            )?,
            proj_out: linear(inner, channels, vb.pp("proj_out"))?,
        })
    }

    /// The CUDA channels-last handoff for x (B·F, C, H, W): GroupNorm (statistics over each
    /// video's F frames) writes the tokens' layout, (B, H·W, F·C), directly, and one pass adds
    /// proj_out's bias and the residual x while writing the output back as (B·F, C, H, W): the
    /// two transposes and the separate residual add of the plain path go. Tokens run through
    /// proj_in, the block and proj_out in chunks of `token_chunk` rows of (B·H·W, F, C) for
    /// F > 1, as the plain path does. None where it does not apply (not CUDA, not a half type,
    /// a kernel switched off).
    #[cfg(feature = "cuda")]
    fn channels_last_handoff(
        &self,
        x: &Tensor,
        frames: usize,
        context: Option<&Tensor>,
        opts: ComputeOptions,
        token_chunk: Option<usize>,
    ) -> Result<Option<Tensor>> {
        use super::cuda::elementwise::channel_add_from_channels_last;
        if !super::cuda::enabled("elementwise") {
            return Ok(None);
        }
        let Some(bias) = self.proj_out.bias() else {
            return Ok(None);
        };
        let Some(normed) = self.norm.forward_frames_channels_last(x, frames, false)? else {
            return Ok(None);
        };
        let (bf, c, h, w) = x.dims4()?;
        let b = bf / frames;
        let through = |t: &Tensor| -> Result<Tensor> {
            let t = self
                .block
                .forward(&self.proj_in.forward(t)?, context, opts)?;
            self.proj_out.forward_without_bias(&t)
        };
        let out = if frames == 1 {
            through(&normed.reshape((b, h * w, c))?)?
        } else {
            chunked(
                &normed.reshape((b * h * w, frames, c))?,
                0,
                token_chunk,
                through,
            )?
        };
        // The bias per channel of each frame: (F·C).
        let bias = bias.repeat(frames)?;
        let residual = x.reshape((b, frames * c, h, w))?;
        let y = channel_add_from_channels_last(
            &out.reshape((b, h, w, frames * c))?,
            &bias,
            Some(&residual),
        )?;
        y.map(|y| y.reshape((bf, c, h, w))).transpose()
    }

    /// Normalised tokens (N, L, channels) through proj_in, the block and proj_out.
    fn tokens(
        &self,
        tokens: &Tensor,
        context: Option<&Tensor>,
        opts: ComputeOptions,
    ) -> Result<Tensor> {
        let t = self
            .block
            .forward(&self.proj_in.forward(tokens)?, context, opts)?;
        self.proj_out.forward(&t)
    }
}

/// Spatial transformer: tokens are the H·W pixels of each frame; cross-attends to `context`.
#[derive(Debug, Clone)]
pub struct Transformer2DModel(Projected);

impl Transformer2DModel {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        dim_head: usize,
        groups: usize,
        cross_attention_dim: usize,
    ) -> Result<Self> {
        Projected::new(
            vb,
            channels,
            heads,
            dim_head,
            groups,
            Some(cross_attention_dim),
        )
        .map(Self)
    }

    /// x (N, C, H, W), context (N, S, cross_attention_dim); N frames, `opts.spatial_frame_chunk`
    /// at a time (every step, GroupNorm included, is per frame).
    pub fn forward(&self, x: &Tensor, context: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        chunked_range(x.dim(0)?, opts.spatial_frame_chunk, 0, |start, len| {
            self.forward_frames(
                &x.narrow(0, start, len)?,
                &context.narrow(0, start, len)?,
                opts,
            )
        })
    }

    /// `forward` without frame chunks through the CUDA channels-last handoff, whatever
    /// `VIVIFY_CUDA_DISABLE` says (cuda_ops tests it against [`Self::forward_without_handoff`]);
    /// None where it does not apply.
    #[cfg(feature = "cuda")]
    pub fn channels_last_handoff(
        &self,
        x: &Tensor,
        context: &Tensor,
        opts: ComputeOptions,
    ) -> Result<Option<Tensor>> {
        self.0
            .channels_last_handoff(x, 1, Some(context), opts, None)
    }

    fn forward_frames(&self, x: &Tensor, context: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        let _p = super::profile::scope("spatial transformer, other", x.device());
        #[cfg(feature = "cuda")]
        if super::cuda::enabled("channels_last_handoff")
            && let Some(y) = self.channels_last_handoff(x, context, opts)?
        {
            return Ok(y);
        }
        self.forward_without_handoff(x, context, opts)
    }

    /// `forward` without frame chunks and without the CUDA channels-last handoff: GroupNorm,
    /// transposes to tokens and back, the residual added in a pass of its own.
    pub fn forward_without_handoff(
        &self,
        x: &Tensor,
        context: &Tensor,
        opts: ComputeOptions,
    ) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        // (N, C, H·W) <-> (N, H·W, C)
        let tokens = transpose_last2(&self.0.norm.forward(x)?.reshape((n, c, h * w))?)?;
        let out = self.0.tokens(&tokens, Some(context), opts)?;
        add(&transpose_last2(&out)?.reshape((n, c, h, w))?, x)
    }
}

/// Temporal transformer: tokens are the F frames at each pixel; both attentions are
/// self-attention and there is no positional embedding.
#[derive(Debug, Clone)]
pub struct TransformerTemporalModel(Projected);

impl TransformerTemporalModel {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        dim_head: usize,
        groups: usize,
    ) -> Result<Self> {
        Projected::new(vb, channels, heads, dim_head, groups, None).map(Self)
    }

    /// `forward` through the CUDA channels-last handoff, whatever `VIVIFY_CUDA_DISABLE` says
    /// (cuda_ops tests it against [`Self::forward_without_handoff`]); None where it does not
    /// apply. The GroupNorm runs over all pixels at once: on CUDA it has no f32 temporaries to
    /// bound.
    #[cfg(feature = "cuda")]
    pub fn channels_last_handoff(
        &self,
        x: &Tensor,
        frames: usize,
        opts: ComputeOptions,
    ) -> Result<Option<Tensor>> {
        self.0
            .channels_last_handoff(x, frames, None, opts, opts.temporal_pixel_chunk)
    }

    /// x (B·F, C, H, W); the pixel columns go through `opts.temporal_pixel_chunk` at a time
    /// (the GroupNorm in front takes its statistics over all of them, then normalises that
    /// many pixels of every video at a time).
    pub fn forward(&self, x: &Tensor, frames: usize, opts: ComputeOptions) -> Result<Tensor> {
        let _p = super::profile::scope("temporal transformer, other", x.device());
        #[cfg(feature = "cuda")]
        if super::cuda::enabled("channels_last_handoff")
            && let Some(y) = self.channels_last_handoff(x, frames, opts)?
        {
            return Ok(y);
        }
        self.forward_without_handoff(x, frames, opts)
    }

    /// `forward` without the CUDA channels-last handoff: GroupNorm, transposes to tokens and
    /// back, the residual added in a pass of its own.
    pub fn forward_without_handoff(
        &self,
        x: &Tensor,
        frames: usize,
        opts: ComputeOptions,
    ) -> Result<Tensor> {
        let (bf, c, h, w) = x.dims4()?;
        let b = bf / frames;
        // (B, F, C, H, W) -> (B, H, W, F, C) -> (B·H·W, F, C)
        let norm = &self.0.norm;
        let normed = match opts.temporal_pixel_chunk.filter(|&k| k > 0 && k < h * w) {
            // statistics over all pixels, then normalised a chunk at a time: no full-size f32
            // temporaries
            Some(k) => {
                let xs = x.reshape((b, frames, c, h * w))?;
                let stats = norm.frame_stats_in_pixel_chunks(&xs, k)?;
                chunked(&xs, 3, Some(k), |part| norm.apply_frame_stats(part, &stats))?
            }
            None => norm.forward_frames(x, frames)?,
        };
        // (B, F·C, H·W) -> (B, H·W, F·C) = (B·H·W, F, C)
        let tokens = transpose_last2(&normed.reshape((b, frames * c, h * w))?)?.reshape((
            b * h * w,
            frames,
            c,
        ))?;
        let out = chunked(&tokens, 0, opts.temporal_pixel_chunk, |t| {
            self.0.tokens(t, None, opts)
        })?;
        let out = transpose_last2(&out.reshape((b, h * w, frames * c))?)?.reshape((bf, c, h, w))?;
        add(&out, x)
    }
}
