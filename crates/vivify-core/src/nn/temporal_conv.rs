//! `TemporalConvLayer`: four stages of GroupNorm, SiLU and a (3,1,1) convolution over frames,
//! added to the input.
//!
//! Frames stay where the spatial layers keep them, (B·F, C, H, W): the (3,1,1) convolution is
//! three channel matmuls over frame-shifted views, so no (B, C, F, H, W) copy is made.

use super::compute::chunked;
use super::norm::GroupNorm;
use candle_core::{IndexOp, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
struct Stage {
    norm: GroupNorm,
    /// Conv3d weight (out, in, 3, 1, 1).
    weight: Tensor,
    bias: Tensor,
}

impl Stage {
    fn new(
        vb: VarBuilder,
        conv_index: &str,
        groups: usize,
        c_in: usize,
        c_out: usize,
    ) -> Result<Self> {
        let conv = vb.pp(conv_index);
        Ok(Self {
            norm: GroupNorm::new(vb.pp("0"), groups, c_in, 1e-5)?,
            weight: conv.get((c_out, c_in, 3, 1, 1), "weight")?,
            bias: conv.get(c_out, "bias")?,
        })
    }

    /// x: (B, F, C, H·W) -> (B, F, C_out, H·W).
    fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        let (b, f, c, hw) = x.dims4()?;
        let h = self
            .norm
            .forward_frames_silu(&x.reshape((b * f, c, hw))?, frames)?
            .reshape((b, f, c, hw))?;
        conv_over_frames(&h, &self.weight, &self.bias)
    }

    /// `forward` over chunks of at most `chunk` pixel columns (the convolution is per pixel),
    /// with the GroupNorm statistics of all of them: every temporary is chunk-sized.
    fn forward_in_pixel_chunks(&self, x: &Tensor, chunk: usize) -> Result<Tensor> {
        let stats = self.norm.frame_stats_in_pixel_chunks(x, chunk)?;
        chunked(x, 3, Some(chunk), |part| {
            let h = self.norm.apply_frame_stats(part, &stats)?.silu()?;
            conv_over_frames(&h, &self.weight, &self.bias)
        })
    }
}

/// The (3,1,1) convolution with padding (1,0,0) of h (B, F, C, H·W) by a Conv3d weight
/// (C_out, C, 3, 1, 1): three channel matmuls over frame-shifted views.
pub fn conv_over_frames(h: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let _p = super::profile::scope("temporal conv (3,1,1)", h.device());
    let (b, f, c, hw) = h.dims4()?;
    #[cfg(feature = "cuda")]
    {
        // (C_out, C, 3, 1, 1) -> (C_out, 3·C) as [tap][channel] for the GEMM path.
        let taps = weight
            .squeeze(4)?
            .squeeze(3)?
            .transpose(1, 2)?
            .reshape((weight.dim(0)?, 3 * c))?;
        if let Some(out) = super::cuda::frame_conv::conv_over_frames(h, &taps)? {
            let (c_out, hw) = (out.dim(2)?, out.dim(3)?);
            return super::ops::add_per_channel(
                &out.reshape((b * f, c_out, hw))?,
                Some(bias),
                None,
                None,
            )?
            .reshape((b, f, c_out, hw));
        }
    }
    // Zero frame on each side: padding (1, 0, 0).
    let zeros = Tensor::zeros((b, 1, c, hw), h.dtype(), h.device())?;
    let padded = Tensor::cat(&[&zeros, h, &zeros], 1)?;
    let mut out: Option<Tensor> = None;
    for k in 0..3 {
        let w = weight.i((.., .., k, 0, 0))?.contiguous()?;
        let shifted = padded
            .narrow(1, k, f)?
            .contiguous()?
            .reshape((b * f, c, hw))?;
        let term = w.broadcast_matmul(&shifted)?;
        out = Some(match out {
            None => term,
            Some(acc) => (acc + term)?,
        });
    }
    let out = out.expect("three taps").reshape((b, f, (), hw))?;
    out.broadcast_add(&bias.reshape((1, 1, (), 1))?)
}

#[derive(Debug, Clone)]
pub struct TemporalConvLayer {
    stages: [Stage; 4],
}

impl TemporalConvLayer {
    pub fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        // diffusers' Sequential indices: conv1 has no Dropout, so its conv is at 2; the rest at 3.
        Ok(Self {
            stages: [
                Stage::new(vb.pp("conv1"), "2", groups, channels, channels)?,
                Stage::new(vb.pp("conv2"), "3", groups, channels, channels)?,
                Stage::new(vb.pp("conv3"), "3", groups, channels, channels)?,
                Stage::new(vb.pp("conv4"), "3", groups, channels, channels)?,
            ],
        })
    }

    /// x: (B·F, C, H, W).
    pub fn forward(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        self.forward_chunked(x, frames, None)
    }

    /// `forward` over `pixel_chunk` pixel columns (of every video) at a time, GroupNorm
    /// statistics over all of them: the same numbers with chunk-sized temporaries.
    pub fn forward_chunked(
        &self,
        x: &Tensor,
        frames: usize,
        pixel_chunk: Option<usize>,
    ) -> Result<Tensor> {
        let _p = super::profile::scope("temporal conv layer, other", x.device());
        let (bf, c, h, w) = x.dims4()?;
        if frames == 0 || bf % frames != 0 {
            candle_core::bail!(
                "TemporalConvLayer: batch·frames {bf} is not a multiple of {frames}"
            );
        }
        let input = x.reshape((bf / frames, frames, c, h * w))?;
        let mut hs = input.clone();
        let chunk = pixel_chunk.filter(|&k| k > 0 && k < h * w);
        for stage in &self.stages {
            hs = match chunk {
                Some(k) => stage.forward_in_pixel_chunks(&hs, k)?,
                None => stage.forward(&hs, frames)?,
            };
        }
        super::ops::add(&input, &hs)?.reshape((bf, c, h, w))
    }
}
