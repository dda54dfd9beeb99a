//! `ResnetBlock2D` (pre-norm, SiLU, output scale 1), with a time embedding (the UNet's) or
//! without one (the VAE's, diffusers' `temb_channels=None`).

use super::conv_cfg;
use super::norm::GroupNorm;
use super::row_bands::conv3x3_in_row_bands;
use crate::nn::conv::{Conv2d, conv2d};
use crate::nn::linear::{Linear, linear};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
}

impl ResnetBlock2D {
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        temb_channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Self::build(
            vb,
            in_channels,
            out_channels,
            Some(temb_channels),
            groups,
            eps,
        )
    }

    /// A block without `time_emb_proj`, run with [`Self::forward_without_time`].
    pub fn new_without_time_embedding(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Self::build(vb, in_channels, out_channels, None, groups, eps)
    }

    fn build(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        temb_channels: Option<usize>,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        let conv_shortcut = if in_channels != out_channels {
            Some(conv2d(
                in_channels,
                out_channels,
                1,
                conv_cfg(1, 0),
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        let time_emb_proj = match temb_channels {
            Some(t) => Some(linear(t, out_channels, vb.pp("time_emb_proj"))?),
            None => None,
        };
        Ok(Self {
            norm1: GroupNorm::new(vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: conv2d(in_channels, out_channels, 3, conv_cfg(1, 1), vb.pp("conv1"))?,
            time_emb_proj,
            norm2: GroupNorm::new(vb.pp("norm2"), groups, out_channels, eps)?,
            conv2: conv2d(
                out_channels,
                out_channels,
                3,
                conv_cfg(1, 1),
                vb.pp("conv2"),
            )?,
            conv_shortcut,
        })
    }

    /// x (N, C, H, W), temb (N, temb_channels).
    pub fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, Some(temb))
    }

    /// x (N, C, H, W) through a block built without a time embedding.
    pub fn forward_without_time(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_impl(x, None)
    }

    /// `forward_without_time` with every full-size temporary bounded by `band` rows (see
    /// `row_bands`): the same numbers, up to float summation order.
    pub fn forward_without_time_in_row_bands(&self, x: &Tensor, band: usize) -> Result<Tensor> {
        if self.time_emb_proj.is_some() {
            candle_core::bail!("ResnetBlock2D: this block needs a time embedding");
        }
        let s1 = self.norm1.stats_in_row_bands(x, band)?;
        let h = conv3x3_in_row_bands(&self.conv1, x, band, |t| {
            self.norm1.apply_stats(t, &s1)?.silu()
        })?;
        let s2 = self.norm2.stats_in_row_bands(&h, band)?;
        let h = conv3x3_in_row_bands(&self.conv2, &h, band, |t| {
            self.norm2.apply_stats(t, &s2)?.silu()
        })?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        shortcut + h
    }

    fn forward_impl(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let _p = super::profile::scope("resnet, other", x.device());
        let t = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => Some(proj.forward(&temb.silu()?)?),
            (None, None) => None,
            (Some(_), None) => {
                candle_core::bail!("ResnetBlock2D: this block needs a time embedding")
            }
            (None, Some(_)) => {
                candle_core::bail!("ResnetBlock2D: this block has no time embedding projection")
            }
        };
        let h = self
            .conv1
            .forward_plus_after_norm(&self.norm1, x, t.as_ref(), None)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        self.conv2
            .forward_plus_after_norm(&self.norm2, &h, None, Some(&shortcut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn time_embedding_presence_must_match_the_call() {
        let dev = Device::Cpu;
        let vb = VarBuilder::zeros(DType::F32, &dev);
        let x = Tensor::zeros((1, 4, 3, 3), DType::F32, &dev).unwrap();
        let temb = Tensor::zeros((1, 8), DType::F32, &dev).unwrap();
        let with = ResnetBlock2D::new(vb.clone(), 4, 4, 8, 2, 1e-5).unwrap();
        let without = ResnetBlock2D::new_without_time_embedding(vb, 4, 4, 2, 1e-6).unwrap();
        assert!(with.forward(&x, &temb).is_ok());
        assert!(with.forward_without_time(&x).is_err());
        assert!(without.forward_without_time(&x).is_ok());
        assert!(without.forward(&x, &temb).is_err());
    }
}
