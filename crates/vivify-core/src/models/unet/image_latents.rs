//! The image-latent branches of I2VGen-XL: the per-pixel temporal encoder that mixes the
//! image-latent frames, and the convolutional stack that turns frame 0 into context tokens.

use crate::nn::attention::Attention;
use crate::nn::conv::{Conv2d, conv2d};
use crate::nn::conv_cfg;
use crate::nn::feed_forward::{FeedForward, FeedForwardActivation};
use crate::nn::norm::LayerNorm;
use crate::nn::pool::adaptive_avg_pool2d;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Side of the pooled grid before the two stride-2 convolutions (32 -> 8x8 = 64 tokens).
const CONTEXT_POOL_SIZE: usize = 32;

/// `I2VGenXLTransformerTemporalEncoder`: LayerNorm, 2-head self-attention over frames, GELU
/// feed-forward (applied to the un-normalised residual stream, as diffusers does).
#[derive(Debug, Clone)]
pub struct TemporalEncoder {
    norm1: LayerNorm,
    attn1: Attention,
    ff: FeedForward,
}

impl TemporalEncoder {
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(vb.pp("attn1"), dim, None, 2, dim, false)?,
            ff: FeedForward::new(vb.pp("ff"), dim, dim * 4, FeedForwardActivation::Gelu)?,
        })
    }

    /// x: (N, F, dim) with N = batch·pixels.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        self.ff.forward(&x)? + x
    }
}

/// `image_latents_proj_in`: three 3x3 convolutions (4 -> 16 -> 16 -> 4) with SiLU between.
#[derive(Debug, Clone)]
pub struct ProjIn {
    convs: [Conv2d; 3],
}

impl ProjIn {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        let wide = channels * 4;
        let c = |i: &str, a, b| conv2d(a, b, 3, conv_cfg(1, 1), vb.pp(i));
        Ok(Self {
            convs: [
                c("0", 4, wide)?,
                c("2", wide, wide)?,
                c("4", wide, channels)?,
            ],
        })
    }
}

impl Module for ProjIn {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.convs[0].forward(x)?.silu()?;
        let x = self.convs[1].forward(&x)?.silu()?;
        self.convs[2].forward(&x)
    }
}

/// `image_latents_context_embedding`: conv 4 -> 32, SiLU, adaptive pool to 32x32, two
/// stride-2 convs to (cross_attention_dim, 8, 8), read out as 64 tokens.
#[derive(Debug, Clone)]
pub struct ContextEmbedding {
    conv0: Conv2d,
    conv3: Conv2d,
    conv5: Conv2d,
}

impl ContextEmbedding {
    pub fn new(vb: VarBuilder, channels: usize, cross_attention_dim: usize) -> Result<Self> {
        Ok(Self {
            conv0: conv2d(4, channels * 8, 3, conv_cfg(1, 1), vb.pp("0"))?,
            conv3: conv2d(channels * 8, channels * 16, 3, conv_cfg(2, 1), vb.pp("3"))?,
            conv5: conv2d(
                channels * 16,
                cross_attention_dim,
                3,
                conv_cfg(2, 1),
                vb.pp("5"),
            )?,
        })
    }

    /// (B, 4, H, W) -> (B, tokens, cross_attention_dim).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.conv0.forward(x)?.silu()?;
        let x = adaptive_avg_pool2d(&x, CONTEXT_POOL_SIZE, CONTEXT_POOL_SIZE)?;
        let x = self.conv3.forward(&x)?.silu()?;
        let x = self.conv5.forward(&x)?;
        let (b, c, h, w) = x.dims4()?;
        x.permute((0, 2, 3, 1))?.reshape((b, h * w, c))
    }
}
