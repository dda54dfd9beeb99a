//! GroupNorm (+ SiLU) on CUDA (kernels/group_norm.cu): statistics in f32 over each group, pooled
//! over frames for the temporal layers, in three passes over the data instead of candle ops'
//! ten over an f32 copy. `group_norm_channels_last` writes its output channels last for the
//! convolution that follows (conv.rs's norm-to-convolution handoff).

use super::kernel_module::{KernelModule, kernel_module};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};

const KERNELS: KernelModule = kernel_module!("group_norm");

const THREADS: u32 = 256;
/// Elements per statistics block: enough work per block, enough blocks for the card.
const SLICE: usize = 16 * 1024;
const MAX_SPLITS: usize = 64;

/// GroupNorm of x (B·F, C, ...) with statistics over each video's F frames, then the affine
/// and, with `silu`, SiLU. None when not on CUDA.
pub fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    let op = GroupNormOp {
        groups,
        frames,
        eps: eps as f32,
        silu,
        channels_last: false,
    };
    run(x, weight, bias, &op)
}

/// `group_norm` of x (B·F, C, H, W), f16 or bf16, answered channels last with the frames folded
/// in: (B, H, W, F·C), which is (N, H, W, C) for one frame. None where it does not apply (not
/// CUDA, f32, other dtypes, switched off).
pub fn group_norm_channels_last(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    frames: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !matches!(x.dtype(), DType::F16 | DType::BF16) || x.rank() != 4 {
        return Ok(None);
    }
    let op = GroupNormOp {
        groups,
        frames,
        eps: eps as f32,
        silu,
        channels_last: true,
    };
    run(x, weight, bias, &op)
}

/// `op` on CUDA with the kernel switched on and the affine in x's dtype; None otherwise.
fn run(x: &Tensor, weight: &Tensor, bias: &Tensor, op: &GroupNormOp) -> Result<Option<Tensor>> {
    // The kernels index within one frame's run of a group (its channels' pixels) in 32 bits.
    let run = x.elem_count() / x.dim(0)?.max(1) / op.groups.max(1);
    if !x.device().is_cuda()
        || !super::enabled("group_norm")
        || weight.dtype() != x.dtype()
        || bias.dtype() != x.dtype()
        || run > i32::MAX as usize
    {
        return Ok(None);
    }
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, op)
        .map(Some)
}

struct GroupNormOp {
    groups: usize,
    frames: usize,
    eps: f32,
    silu: bool,
    /// Output (B, H, W, F·C) from x (B·F, C, H, W).
    channels_last: bool,
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "vivify-group-norm"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-group-norm runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = xl.shape().dims();
        let (bf, c) = (dims[0], dims[1]);
        let pixels: usize = dims[2..].iter().product();
        if self.frames == 0 || bf % self.frames != 0 || self.groups == 0 || c % self.groups != 0 {
            candle_core::bail!(
                "group norm: shape {:?}, {} groups, {} frames",
                dims,
                self.groups,
                self.frames
            );
        }
        let dev = x.device().clone();
        let args = (x, xl, w, wl, b, bl, bf / self.frames, c, pixels);
        let y = match x.dtype() {
            DType::F32 => self.launch::<f32>(&dev, args)?,
            DType::F16 => self.launch::<half::f16>(&dev, args)?,
            DType::BF16 => self.launch::<half::bf16>(&dev, args)?,
            other => candle_core::bail!("group norm: unsupported dtype {other:?}"),
        };
        let shape = if self.channels_last {
            let mut d = vec![bf / self.frames];
            d.extend_from_slice(&dims[2..]);
            d.push(self.frames * c);
            Shape::from(d)
        } else {
            xl.shape().clone()
        };
        Ok((y, shape))
    }
}

type Args<'a> = (
    &'a CudaStorage,
    &'a Layout,
    &'a CudaStorage,
    &'a Layout,
    &'a CudaStorage,
    &'a Layout,
    usize,
    usize,
    usize,
);

impl GroupNormOp {
    fn launch<T: CudaDType + WithDType + DeviceRepr>(
        &self,
        dev: &CudaDevice,
        (x, xl, w, wl, b, bl, videos, channels, pixels): Args,
    ) -> Result<CudaStorage> {
        let group_len = self.frames * (channels / self.groups) * pixels;
        let splits = group_len.div_ceil(SLICE).clamp(1, MAX_SPLITS);
        let blocks = videos * self.groups;
        let type_name = super::kernel_type_name(T::DTYPE);
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let bs = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
        // SAFETY: the statistics kernel writes every partial.
        let partial = unsafe { dev.alloc::<f32>(blocks * splits * 3)? };
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, splits as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let ints = [self.frames, channels, pixels, self.groups, splits].map(|v| v as i32);
        // 16 bytes per access where every run of a channel's pixels starts on a 16-byte boundary.
        let vec = 16 / T::DTYPE.size_in_bytes();
        let wide = pixels.is_multiple_of(vec)
            && xl.start_offset().is_multiple_of(vec)
            && super::enabled("wide_access");
        let suffix = if wide { "_v" } else { "" };
        let stats = KERNELS.kernel(dev, &format!("group_norm_stats_{type_name}{suffix}"))?;
        let mut builder = stats.builder();
        builder.arg(&xs);
        builder.arg(&partial);
        for v in &ints {
            builder.arg(v);
        }
        // SAFETY: arguments match the kernel's signature.
        unsafe { builder.launch(cfg) }.w()?;
        if self.channels_last {
            let dims = (videos, channels, pixels);
            let x = (&xs, xl.start_offset());
            let y = self.apply_channels_last::<T>(dev, x, (&ws, &bs), &partial, splits, dims)?;
            return Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()));
        }
        let apply = KERNELS.kernel(dev, &format!("group_norm_apply_{type_name}{suffix}"))?;
        let silu = i32::from(self.silu);
        // SAFETY: the apply kernel writes every output.
        let y = unsafe { dev.alloc::<T>(xl.shape().elem_count())? };
        let mut builder = apply.builder();
        builder.arg(&xs);
        builder.arg(&partial);
        builder.arg(&ws);
        builder.arg(&bs);
        builder.arg(&y);
        for v in &ints {
            builder.arg(v);
        }
        builder.arg(&self.eps);
        builder.arg(&silu);
        // SAFETY: arguments match the kernel's signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }

    /// Merges each (video, group)'s slices once, then normalises into (B, P, F·C) through
    /// shared-memory tiles.
    fn apply_channels_last<T: CudaDType + WithDType + DeviceRepr>(
        &self,
        dev: &CudaDevice,
        (xs, xs_offset): (&CudaView<T>, usize),
        (ws, bs): (&CudaView<T>, &CudaView<T>),
        partial: &CudaSlice<f32>,
        splits: usize,
        (batch, channels, pixels): (usize, usize, usize),
    ) -> Result<CudaSlice<T>> {
        let rows = self.frames * channels;
        let len = batch * rows * pixels;
        let count = batch * self.groups;
        // SAFETY: the finalize kernel writes every pair, the apply kernel every output.
        let stat = unsafe { dev.alloc::<f32>(count * 2)? };
        let y = unsafe { dev.alloc::<T>(len)? };
        let finalize = KERNELS.kernel(dev, "group_norm_finalize")?;
        let (count_i, splits_i) = (count as i32, splits as i32);
        let mut builder = finalize.builder();
        builder.arg(partial);
        builder.arg(&stat);
        builder.arg(&count_i);
        builder.arg(&splits_i);
        builder.arg(&self.eps);
        let cfg = LaunchConfig {
            grid_dim: (count.div_ceil(THREADS as usize) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match the kernel's signature.
        unsafe { builder.launch(cfg) }.w()?;
        // 16-bit pairs (pair_tile.cuh) where F·C and P are even and x starts on 4 bytes.
        let pairs = T::DTYPE.size_in_bytes() == 2
            && rows.is_multiple_of(2)
            && pixels.is_multiple_of(2)
            && xs_offset.is_multiple_of(2)
            && super::enabled("pair_tiles");
        let per_thread = if pairs { 2 } else { 1 };
        let apply = KERNELS.kernel(
            dev,
            &format!(
                "group_norm_apply_channels_last{}_{}",
                if pairs { "_pairs" } else { "" },
                super::kernel_type_name(T::DTYPE)
            ),
        )?;
        let ints = [
            batch,
            self.frames,
            channels,
            pixels,
            self.groups,
            usize::from(self.silu),
        ]
        .map(|v| v as i32);
        let mut builder = apply.builder();
        builder.arg(xs);
        builder.arg(&stat);
        builder.arg(ws);
        builder.arg(bs);
        builder.arg(&y);
        for v in &ints {
            builder.arg(v);
        }
        let cfg = super::tile_launch(pixels / per_thread, rows.div_ceil(32 * per_thread), batch);
        // SAFETY: arguments match the kernel's signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(y)
    }
}
