//! Normalisations computed in two passes (mean, then variance of the deviations) in at least f32,
//! as PyTorch does: candle's fused layer norm uses E[x²] − E[x]², which loses digits when the
//! mean is large against the spread.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

fn internal_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// Normalises `x` over its last dimension; `x` must already be in the internal dtype.
fn normalize_last_dim(x: &Tensor, eps: f64) -> Result<Tensor> {
    let n = x.dim(D::Minus1)? as f64;
    let centered = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / n)?)?;
    let var = (centered.sqr()?.sum_keepdim(D::Minus1)? / n)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)
}

/// `nn.LayerNorm` with affine weight and bias over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _p = super::profile::scope("layer norm", x.device());
        #[cfg(feature = "cuda")]
        if let Some(y) = super::cuda::layer_norm::layer_norm(x, &self.weight, &self.bias, self.eps)?
        {
            return Ok(y);
        }
        let dtype = x.dtype();
        let normed = normalize_last_dim(&x.to_dtype(internal_dtype(dtype))?, self.eps)?;
        normed
            .to_dtype(dtype)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// `nn.GroupNorm` with affine weight and bias.
///
/// `forward` normalises each sample of an (N, C, ...) tensor; `forward_frames` treats an
/// (B·F, C, H, W) tensor as B videos of F frames and pools the statistics over all frames of a
/// video, which is what diffusers' GroupNorm on a (B, C, F, H, W) tensor does in the temporal
/// layers, without moving the frames axis.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!(
                "GroupNorm: {channels} channels are not divisible into {groups} groups"
            );
        }
        Ok(Self {
            weight: vb.get(channels, "weight")?,
            bias: vb.get(channels, "bias")?,
            groups,
            eps,
        })
    }

    pub fn forward_frames(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        self.normalize(x, frames, false)
    }

    /// `forward` then SiLU (fused on CUDA).
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        self.normalize(x, 1, true)
    }

    /// `forward_frames` (then SiLU with `silu`) of x (B·F, C, H, W) answered channels last with
    /// the frames folded in, (B, H, W, F·C), by the CUDA kernel; None where that kernel does not
    /// apply (then take the NCHW forms).
    #[cfg(feature = "cuda")]
    pub fn forward_frames_channels_last(
        &self,
        x: &Tensor,
        frames: usize,
        silu: bool,
    ) -> Result<Option<Tensor>> {
        let _p = super::profile::scope("group norm", x.device());
        super::cuda::group_norm::group_norm_channels_last(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            frames,
            self.eps,
            silu,
        )
    }

    /// `forward_frames` then SiLU (fused on CUDA).
    pub fn forward_frames_silu(&self, x: &Tensor, frames: usize) -> Result<Tensor> {
        self.normalize(x, frames, true)
    }

    fn normalize(&self, x: &Tensor, frames: usize, silu: bool) -> Result<Tensor> {
        let _p = super::profile::scope("group norm", x.device());
        #[cfg(feature = "cuda")]
        if let Some(y) = super::cuda::group_norm::group_norm(
            x,
            &self.weight,
            &self.bias,
            self.groups,
            frames,
            self.eps,
            silu,
        )? {
            return Ok(y);
        }
        let dims = x.dims().to_vec();
        let (bf, c) = (dims[0], dims[1]);
        if frames == 0 || bf % frames != 0 {
            candle_core::bail!("GroupNorm: batch·frames {bf} is not a multiple of {frames} frames");
        }
        let per_group: usize = dims[2..].iter().product::<usize>() * (c / self.groups);
        let dtype = x.dtype();
        // (B, F, G, per_group): the statistics reduce over axes 1 and 3.
        let xs = x.to_dtype(internal_dtype(dtype))?.reshape((
            bf / frames,
            frames,
            self.groups,
            per_group,
        ))?;
        let n = (frames * per_group) as f64;
        let mean = (xs.sum_keepdim(3)?.sum_keepdim(1)? / n)?;
        let centered = xs.broadcast_sub(&mean)?;
        let var = (centered.sqr()?.sum_keepdim(3)?.sum_keepdim(1)? / n)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        let y = self.affine(&normed.to_dtype(dtype)?.reshape(dims)?)?;
        if silu { y.silu() } else { Ok(y) }
    }

    /// Per-sample, per-group statistics of x (N, C, H, W) over whole samples, computed over row
    /// bands of at most `band` rows (the same two passes as `forward`: the mean, then the mean
    /// squared deviation), so that the sample can be normalised band by band with `apply_stats`
    /// and give the numbers of `forward` without its full-size temporaries.
    pub fn stats_in_row_bands(&self, x: &Tensor, band: usize) -> Result<GroupStats> {
        let (n, c, h, w) = x.dims4()?;
        let band = band.clamp(1, h.max(1));
        let it = internal_dtype(x.dtype());
        let grouped = |start: usize| -> Result<Tensor> {
            let len = band.min(h - start);
            x.narrow(2, start, len)?
                .to_dtype(it)?
                .reshape((n, self.groups, ()))
        };
        let count = ((c / self.groups) * h * w) as f64;
        let mut sum = Tensor::zeros((n, self.groups, 1), it, x.device())?;
        for start in (0..h).step_by(band) {
            sum = (sum + grouped(start)?.sum_keepdim(2)?)?;
        }
        let mean = (sum / count)?;
        let mut squares = Tensor::zeros((n, self.groups, 1), it, x.device())?;
        for start in (0..h).step_by(band) {
            let centered = grouped(start)?.broadcast_sub(&mean)?;
            squares = (squares + centered.sqr()?.sum_keepdim(2)?)?;
        }
        let std = ((squares / count)? + self.eps)?.sqrt()?;
        Ok(GroupStats { mean, std })
    }

    /// Statistics of x (B, F, C, P) per video and group over all its frames and pixels (what
    /// `forward_frames` pools), computed over chunks of at most `chunk` pixel columns.
    pub fn frame_stats_in_pixel_chunks(&self, x: &Tensor, chunk: usize) -> Result<GroupStats> {
        let (b, f, c, p) = x.dims4()?;
        let chunk = chunk.clamp(1, p.max(1));
        let it = internal_dtype(x.dtype());
        let part = |start: usize| -> Result<Tensor> {
            x.narrow(3, start, chunk.min(p - start))?
                .to_dtype(it)?
                .reshape((b, f, self.groups, ()))
        };
        let count = (f * (c / self.groups) * p) as f64;
        let mut sum = Tensor::zeros((b, 1, self.groups, 1), it, x.device())?;
        for start in (0..p).step_by(chunk) {
            sum = (sum + part(start)?.sum_keepdim(3)?.sum_keepdim(1)?)?;
        }
        let mean = (sum / count)?;
        let mut squares = Tensor::zeros((b, 1, self.groups, 1), it, x.device())?;
        for start in (0..p).step_by(chunk) {
            let centered = part(start)?.broadcast_sub(&mean)?;
            squares = (squares + centered.sqr()?.sum_keepdim(3)?.sum_keepdim(1)?)?;
        }
        let std = ((squares / count)? + self.eps)?.sqrt()?;
        Ok(GroupStats { mean, std })
    }

    /// A part (B, F, C, p) of videos normalised with their `frame_stats_in_pixel_chunks`, then
    /// the affine (channels on axis 2).
    pub fn apply_frame_stats(&self, x: &Tensor, stats: &GroupStats) -> Result<Tensor> {
        let (b, f, c, p) = x.dims4()?;
        let dtype = x.dtype();
        let normed = x
            .to_dtype(internal_dtype(dtype))?
            .reshape((b, f, self.groups, ()))?
            .broadcast_sub(&stats.mean)?
            .broadcast_div(&stats.std)?
            .to_dtype(dtype)?
            .reshape((b, f, c, p))?;
        normed
            .broadcast_mul(&self.weight.reshape((1, 1, c, 1))?)?
            .broadcast_add(&self.bias.reshape((1, 1, c, 1))?)
    }

    /// A part (N, C, rows, W) of a sample normalised with its whole sample's `stats`, then the
    /// affine.
    pub fn apply_stats(&self, x: &Tensor, stats: &GroupStats) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let dtype = x.dtype();
        let xs = x
            .to_dtype(internal_dtype(dtype))?
            .reshape((dims[0], self.groups, ()))?;
        let normed = xs.broadcast_sub(&stats.mean)?.broadcast_div(&stats.std)?;
        self.affine(&normed.to_dtype(dtype)?.reshape(dims)?)
    }

    fn affine(&self, x: &Tensor) -> Result<Tensor> {
        let mut shape = vec![1; x.rank()];
        shape[1] = self.weight.dim(0)?;
        x.broadcast_mul(&self.weight.reshape(shape.clone())?)?
            .broadcast_add(&self.bias.reshape(shape)?)
    }
}

/// GroupNorm statistics of whole samples: mean and sqrt(var + eps), each (N, groups, 1) (or
/// (B, 1, groups, 1) pooled over frames).
#[derive(Debug, Clone)]
pub struct GroupStats {
    mean: Tensor,
    std: Tensor,
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_frames(x, 1)
    }
}
