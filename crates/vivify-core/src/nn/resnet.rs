//! `ResnetBlock2D` with a time embedding (pre-norm, SiLU, output scale 1).

use super::conv_cfg;
use super::norm::GroupNorm;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Linear, VarBuilder, conv2d, linear};

#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
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
        Ok(Self {
            norm1: GroupNorm::new(vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: conv2d(in_channels, out_channels, 3, conv_cfg(1, 1), vb.pp("conv1"))?,
            time_emb_proj: linear(temb_channels, out_channels, vb.pp("time_emb_proj"))?,
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
        let h = self.conv1.forward(&self.norm1.forward(x)?.silu()?)?;
        let t = self
            .time_emb_proj
            .forward(&temb.silu()?)?
            .unsqueeze(2)?
            .unsqueeze(3)?;
        let h = h.broadcast_add(&t)?;
        let h = self.conv2.forward(&self.norm2.forward(&h)?.silu()?)?;
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        shortcut + h
    }
}
