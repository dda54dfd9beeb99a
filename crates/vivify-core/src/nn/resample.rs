//! `Downsample2D` (3x3 conv, stride 2; padding 1, or the VAE's asymmetric zero pad) and `Upsample2D` (nearest x2 or to a size, then 3x3 conv).

use super::conv_cfg;
use crate::nn::conv::{Conv2d, conv2d};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
    pad_right_bottom: bool,
}

impl Downsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, conv_cfg(2, 1), vb.pp("conv"))?,
            pad_right_bottom: false,
        })
    }

    /// diffusers' `padding=0` form (the VAE's): one zero row and column appended at the bottom
    /// and right, then an unpadded conv, so the window grid starts at the top-left pixel.
    pub fn new_pad_right_bottom(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, conv_cfg(2, 0), vb.pp("conv"))?,
            pad_right_bottom: true,
        })
    }
}

impl Module for Downsample2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.pad_right_bottom {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    pub fn new(vb: VarBuilder, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(channels, channels, 3, conv_cfg(1, 1), vb.pp("conv"))?,
        })
    }

    /// `forward` (doubling) with the convolution `band` output rows at a time.
    pub fn forward_in_row_bands(&self, x: &Tensor, band: usize) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let up = interpolate_nearest(x, 2 * h, 2 * w)?;
        super::row_bands::conv3x3_in_row_bands(&self.conv, &up, band, |t| Ok(t.clone()))
    }

    /// Doubles H and W, or resizes to `size` when the skip connection's size is odd.
    pub fn forward(&self, x: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = size.unwrap_or((2 * h, 2 * w));
        self.conv.forward(&interpolate_nearest(x, oh, ow)?)
    }
}

/// Source index of each output position for PyTorch's `mode="nearest"`: floor(dst · (in/out))
/// with the scale rounded to f32, exactly as ATen computes it (the rounding decides ties).
fn nearest_indices(input: usize, output: usize) -> Vec<u32> {
    if output == input {
        return (0..output as u32).collect();
    }
    if output == 2 * input {
        return (0..output as u32).map(|i| i >> 1).collect();
    }
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| ((i as f32 * scale).floor() as usize).min(input - 1) as u32)
        .collect()
}

/// (N, C, H, W) -> (N, C, out_h, out_w) by nearest neighbour.
pub fn interpolate_nearest(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    if out_h == 2 * h && out_w == 2 * w {
        return x.upsample_nearest2d(out_h, out_w);
    }
    let device = x.device();
    let rows = Tensor::new(nearest_indices(h, out_h), device)?;
    let cols = Tensor::new(nearest_indices(w, out_w), device)?;
    x.index_select(&rows, 2)?.index_select(&cols, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_indices_follow_pytorch() {
        assert_eq!(nearest_indices(2, 3), vec![0, 0, 1]);
        assert_eq!(nearest_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(
            nearest_indices(6, 11),
            vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]
        );
    }
}
