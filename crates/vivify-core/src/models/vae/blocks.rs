//! The VAE's 2-D blocks: `DownEncoderBlock2D`, `UpDecoderBlock2D`, `UNetMidBlock2D` and its
//! single-head spatial attention. No time embedding anywhere; every norm uses eps 1e-6.

use crate::nn::attention::Attention;
use crate::nn::compute::ComputeOptions;
use crate::nn::norm::GroupNorm;
use crate::nn::resample::{Downsample2D, Upsample2D};
use crate::nn::resnet::ResnetBlock2D;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// eps of every resnet, attention and output norm of diffusers' VAE.
pub const VAE_NORM_EPS: f64 = 1e-6;

fn resnet(vb: VarBuilder, c_in: usize, c_out: usize, groups: usize) -> Result<ResnetBlock2D> {
    ResnetBlock2D::new_without_time_embedding(vb, c_in, c_out, groups, VAE_NORM_EPS)
}

/// `resnets.0..layers`: the first takes `c_in` channels, all give `c_out`.
fn resnet_stack(
    vb: &VarBuilder,
    c_in: usize,
    c_out: usize,
    layers: usize,
    groups: usize,
) -> Result<Vec<ResnetBlock2D>> {
    (0..layers)
        .map(|i| {
            let c = if i == 0 { c_in } else { c_out };
            resnet(vb.pp("resnets").pp(i), c, c_out, groups)
        })
        .collect()
}

/// `DownEncoderBlock2D`: resnets, then an optional stride-2 downsampler (asymmetric pad).
#[derive(Debug, Clone)]
pub struct DownEncoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
}

impl DownEncoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        layers: usize,
        groups: usize,
        add_downsample: bool,
    ) -> Result<Self> {
        let resnets = resnet_stack(&vb, c_in, c_out, layers, groups)?;
        let downsampler = if add_downsample {
            Some(Downsample2D::new_pad_right_bottom(
                vb.pp("downsamplers").pp(0),
                c_out,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            downsampler,
        })
    }
}

impl DownEncoderBlock2D {
    /// `forward` with the resnets' full-size temporaries bounded by `band` rows (see
    /// `nn::row_bands`); the stride-2 downsampler's buffers are a quarter size and run whole.
    pub fn forward_in_row_bands(&self, x: &Tensor, band: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_without_time_in_row_bands(&x, band)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

impl Module for DownEncoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_without_time(&x)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(&x),
            None => Ok(x),
        }
    }
}

/// `UpDecoderBlock2D`: resnets, then an optional nearest x2 upsampler with a 3x3 conv.
#[derive(Debug, Clone)]
pub struct UpDecoderBlock2D {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

impl UpDecoderBlock2D {
    pub fn new(
        vb: VarBuilder,
        c_in: usize,
        c_out: usize,
        layers: usize,
        groups: usize,
        add_upsample: bool,
    ) -> Result<Self> {
        let resnets = resnet_stack(&vb, c_in, c_out, layers, groups)?;
        let upsampler = if add_upsample {
            Some(Upsample2D::new(vb.pp("upsamplers").pp(0), c_out)?)
        } else {
            None
        };
        Ok(Self { resnets, upsampler })
    }
}

impl UpDecoderBlock2D {
    /// `forward` with full-size temporaries bounded by `band` rows (see `nn::row_bands`).
    pub fn forward_in_row_bands(&self, x: &Tensor, band: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_without_time_in_row_bands(&x, band)?;
        }
        match &self.upsampler {
            Some(u) => u.forward_in_row_bands(&x, band),
            None => Ok(x),
        }
    }
}

impl Module for UpDecoderBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for r in &self.resnets {
            x = r.forward_without_time(&x)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(&x, None),
            None => Ok(x),
        }
    }
}

/// The mid-block attention: GroupNorm, then one head over all H·W positions (head width =
/// channels), output projection, plus the input (diffusers' `residual_connection=True`,
/// `rescale_output_factor=1`).
#[derive(Debug, Clone)]
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attention: Attention,
}

impl SpatialSelfAttention {
    pub fn new(vb: VarBuilder, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            group_norm: GroupNorm::new(vb.pp("group_norm"), groups, channels, VAE_NORM_EPS)?,
            attention: Attention::new(vb, channels, None, 1, channels, true)?,
        })
    }
}

impl Module for SpatialSelfAttention {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_chunked(x, ComputeOptions::default())
    }
}

impl SpatialSelfAttention {
    /// `forward` with the attention chunked as `opts` says.
    pub fn forward_chunked(&self, x: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        // (N, C, H, W) -> (N, H·W, C)
        let tokens = self
            .group_norm
            .forward(x)?
            .reshape((n, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let out = self.attention.forward_chunked(&tokens, None, opts)?;
        let out = out.transpose(1, 2)?.reshape((n, c, h, w))?;
        out + x
    }
}

/// `UNetMidBlock2D` with one layer: resnet, optional attention, resnet.
#[derive(Debug, Clone)]
pub struct MidBlock2D {
    pub resnets: [ResnetBlock2D; 2],
    pub attention: Option<SpatialSelfAttention>,
}

impl MidBlock2D {
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        groups: usize,
        add_attention: bool,
    ) -> Result<Self> {
        let attention = if add_attention {
            Some(SpatialSelfAttention::new(
                vb.pp("attentions").pp(0),
                channels,
                groups,
            )?)
        } else {
            None
        };
        Ok(Self {
            resnets: [
                resnet(vb.pp("resnets").pp(0), channels, channels, groups)?,
                resnet(vb.pp("resnets").pp(1), channels, channels, groups)?,
            ],
            attention,
        })
    }
}

impl Module for MidBlock2D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_chunked(x, ComputeOptions::default())
    }
}

impl MidBlock2D {
    /// `forward` with the attention chunked as `opts` says.
    pub fn forward_chunked(&self, x: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        let mut x = self.resnets[0].forward_without_time(x)?;
        if let Some(a) = &self.attention {
            x = a.forward_chunked(&x, opts)?;
        }
        self.resnets[1].forward_without_time(&x)
    }
}
