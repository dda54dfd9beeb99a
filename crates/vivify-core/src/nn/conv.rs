//! `nn.Conv2d` with diffusers' weight names. On CUDA with the `cudnn` feature the convolution
//! runs through vivify's cuDNN setup (tensor cores, f32 accumulation); elsewhere through candle.

use super::norm::GroupNorm;
use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2dConfig, VarBuilder};

#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

/// A square-kernel convolution with bias, loaded from `vb` ("weight", "bias").
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
    #[cfg(feature = "cudnn")]
    let weight = super::cuda::cudnn_conv::stored_weight(weight)?;
    let bias = vb.get(out_channels, "bias")?;
    Ok(Conv2d {
        weight,
        bias: Some(bias),
        stride: cfg.stride,
        padding: cfg.padding,
    })
}

impl Conv2d {
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Conv2d {
    /// The convolution plus its bias, a per-sample `extra` (N, C_out) such as the time embedding,
    /// and a `residual`: one pass over the output on CUDA.
    pub fn forward_plus(
        &self,
        x: &Tensor,
        extra: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = convolve(x, &self.weight, self.stride, self.padding)?;
        super::ops::add_per_channel(&y, self.bias.as_ref(), extra, residual)
    }
}

impl Conv2d {
    /// `forward_plus(&norm.forward_silu(x)?, extra, residual)`: a resnet block's GroupNorm, SiLU
    /// and convolution. On CUDA the GroupNorm writes channels last for the convolution and the
    /// bias pass reads its channels-last output ([`norm_conv_channels_last`]): two full-size
    /// transposes fewer (`VIVIFY_CUDA_DISABLE=channels_last_handoff` keeps them).
    pub fn forward_plus_after_norm(
        &self,
        norm: &GroupNorm,
        x: &Tensor,
        extra: Option<&Tensor>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        #[cfg(feature = "cudnn")]
        if super::cuda::enabled("channels_last_handoff")
            && let Some(y) = norm_conv_channels_last(self, norm, x, extra, residual)?
        {
            return Ok(y);
        }
        self.forward_plus(&norm.forward_silu(x)?, extra, residual)
    }
}

/// [`Conv2d::forward_plus_after_norm`]'s channels-last handoff, whatever
/// `VIVIFY_CUDA_DISABLE=channels_last_handoff` says (cuda_ops tests it against the plain path):
/// None where it does not apply (not CUDA, not a half type, a layout or kernel choice that is
/// not cuDNN channels last, a 1x1 convolution, any of its kernels switched off).
#[cfg(feature = "cudnn")]
pub fn norm_conv_channels_last(
    conv: &Conv2d,
    norm: &GroupNorm,
    x: &Tensor,
    extra: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    use super::cuda::{cudnn_conv, elementwise, enabled};
    let applies = x.device().is_cuda()
        && enabled("cudnn_conv")
        && enabled("elementwise")
        && cudnn_conv::channels_last(x)
        && conv.weight.dim(2)? > 1;
    if !applies {
        return Ok(None);
    }
    let Some(v) = super::ops::per_channel_sum(conv.bias.as_ref(), extra)? else {
        return Ok(None);
    };
    let Some(h) = norm.forward_frames_channels_last(x, 1, true)? else {
        return Ok(None);
    };
    let y = {
        let _p = super::profile::scope("conv2d", x.device());
        cudnn_conv::conv2d_channels_last(&h, &conv.weight, conv.stride, conv.padding)?
    };
    elementwise::channel_add_from_channels_last(&y, &v, residual)
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_plus(x, None, None)
    }
}

/// The convolution alone (no bias): on CUDA with the `cudnn` feature the fastest way for its
/// shape (`nn::cuda::conv_path`; for f32 cuDNN in NCHW, cuBLAS for 1x1), else candle.
pub fn convolve(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let _p = super::profile::scope("conv2d", x.device());
    #[cfg(feature = "cudnn")]
    if let Some(y) = super::cuda::conv_path::convolve(x, w, stride, padding)? {
        return Ok(y);
    }
    #[cfg(feature = "cuda")]
    if x.device().is_cuda()
        && super::cuda::enabled("conv1x1_gemm")
        && is_pointwise(w, stride, padding)?
    {
        return conv1x1_gemm(x, w);
    }
    #[cfg(feature = "cudnn")]
    if x.device().is_cuda() && super::cuda::enabled("cudnn_conv") {
        return super::cuda::cudnn_conv::conv2d(x, w, stride, padding);
    }
    x.conv2d(w, padding, stride, 1, 1)
}

/// Whether w (K, C, kh, kw) at this stride and padding is a 1x1 convolution that a channel
/// matmul computes.
#[cfg(feature = "cuda")]
pub(crate) fn is_pointwise(w: &Tensor, stride: usize, padding: usize) -> Result<bool> {
    Ok(w.dim(2)? == 1 && w.dim(3)? == 1 && stride == 1 && padding == 0)
}

/// A 1x1 convolution (stride 1, no padding) as a channel matmul, w (K, C) broadcast over x's
/// batch: cuDNN's heuristic pick ran 20x slower than PyTorch's at (16, 320, 32, 32) -> 640 on
/// the H200, cuBLAS runs it near full speed.
#[cfg(feature = "cuda")]
pub(crate) fn conv1x1_gemm(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let w2 = w.reshape((w.dim(0)?, c))?;
    w2.broadcast_matmul(&x.reshape((n, c, h * wd))?.contiguous()?)?
        .reshape((n, (), h, wd))
}
