//! Memory-bound passes on CUDA at full bandwidth (kernels/elementwise.cu): a batched transpose of
//! the last two axes, a per-channel add (bias, time embedding and residual in one pass; also from
//! a channels-last input, transposing on the way) and a same-shape add. Each returns None where
//! it does not apply (CPU, f32, switched off with `VIVIFY_CUDA_DISABLE=elementwise`), and the
//! caller uses candle's ops.

use super::kernel_module::{KernelModule, kernel_module};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
    WithDType,
};

const KERNELS: KernelModule = kernel_module!("elementwise");

fn applies(x: &Tensor) -> bool {
    x.device().is_cuda()
        && super::enabled("elementwise")
        && matches!(x.dtype(), DType::F16 | DType::BF16)
}

/// Contiguous and starting on a 16-byte boundary (the kernels' vector loads).
fn aligned(x: &Tensor) -> Result<Tensor> {
    if x.is_contiguous() && x.layout().start_offset().is_multiple_of(8) {
        Ok(x.clone())
    } else {
        x.contiguous()?.copy()
    }
}

/// (..., A, B) -> (..., B, A), contiguous.
pub fn transpose_last2(x: &Tensor) -> Result<Option<Tensor>> {
    if !applies(x) || x.rank() < 2 {
        return Ok(None);
    }
    aligned(x)?.apply_op1_no_bwd(&Transpose).map(Some)
}

/// x (N, C, ...) + v[n, c] (v (N, C) or (1, C) or (C,)) + residual (x's shape), in one pass.
pub fn channel_add(x: &Tensor, v: &Tensor, residual: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !applies(x) || x.rank() < 2 || v.dtype() != x.dtype() {
        return Ok(None);
    }
    let v = per_channel(v, x.dim(0)?, x.dim(1)?, x)?;
    let x = aligned(x)?;
    let op = ChannelAdd {
        from_channels_last: false,
    };
    match residual {
        Some(r) => {
            if r.shape() != x.shape() || r.dtype() != x.dtype() {
                candle_core::bail!("channel_add: residual {:?} for {:?}", r.shape(), x.shape());
            }
            x.apply_op3_no_bwd(&v, &aligned(r)?, &op).map(Some)
        }
        None => x.apply_op2_no_bwd(&v, &op).map(Some),
    }
}

/// The same sum for x given channels last, (N, H, W, C), answered (N, C, H, W): a channels-last
/// convolution's output with its bias, time embedding and residual, or a transformer's with
/// proj_out's bias and the residual, in the one pass that also transposes it back.
pub fn channel_add_from_channels_last(
    x: &Tensor,
    v: &Tensor,
    residual: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if !applies(x) || x.rank() != 4 || v.dtype() != x.dtype() {
        return Ok(None);
    }
    let (n, h, w, c) = x.dims4()?;
    let v = per_channel(v, n, c, x)?;
    let x = x.contiguous()?;
    let op = ChannelAdd {
        from_channels_last: true,
    };
    match residual {
        Some(r) => {
            if r.dims() != [n, c, h, w] || r.dtype() != x.dtype() {
                candle_core::bail!(
                    "channel_add_from_channels_last: residual {:?} for {:?}",
                    r.shape(),
                    x.shape()
                );
            }
            x.apply_op3_no_bwd(&v, &r.contiguous()?, &op).map(Some)
        }
        None => x.apply_op2_no_bwd(&v, &op).map(Some),
    }
}

/// v as (1, C) or (N, C), checked against x's N and C.
fn per_channel(v: &Tensor, n: usize, c: usize, x: &Tensor) -> Result<Tensor> {
    let v = match v.rank() {
        1 => v.reshape((1, v.dim(0)?))?,
        _ => v.flatten_from(1)?,
    };
    if v.dim(1)? != c || (v.dim(0)? != 1 && v.dim(0)? != n) {
        candle_core::bail!("channel_add: {:?} onto {:?}", v.shape(), x.shape());
    }
    v.contiguous()
}

/// a + b for tensors of one shape.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    if !applies(a) || a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Ok(None);
    }
    aligned(a)?.apply_op2_no_bwd(&aligned(b)?, &Add).map(Some)
}

fn grid(blocks: u64) -> u32 {
    blocks.clamp(1, 1 << 20) as u32
}

struct Transpose;

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        "vivify-transpose"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-transpose runs on CUDA only")
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dims = xl.shape().dims();
        let (a, b) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let n = xl.shape().elem_count() / (a * b).max(1);
        let mut out_dims = dims.to_vec();
        let r = out_dims.len();
        out_dims.swap(r - 2, r - 1);
        let dev = x.device().clone();
        // 16-bit elements move as raw bits, whatever the type.
        let y = match x.dtype() {
            DType::F16 => launch_transpose::<half::f16>(&dev, x, xl, n, a, b)?,
            DType::BF16 => launch_transpose::<half::bf16>(&dev, x, xl, n, a, b)?,
            other => candle_core::bail!("transpose: unsupported dtype {other:?}"),
        };
        Ok((y, Shape::from(out_dims)))
    }
}

fn launch_transpose<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    x: &CudaStorage,
    xl: &Layout,
    n: usize,
    a: usize,
    b: usize,
) -> Result<CudaStorage> {
    let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n * a * b)? };
    // Even sides (every UNet and VAE shape) move as 32-bit pairs in 64-element tiles; `aligned`
    // started x on a 16-byte boundary.
    let pairs = a.is_multiple_of(2) && b.is_multiple_of(2) && super::enabled("pair_tiles");
    let (name, per_thread) = match pairs {
        true => ("transpose_pairs_u16", 2),
        false => ("transpose_u16", 1),
    };
    let func = KERNELS.kernel(dev, name)?;
    // Tiles of 32 accesses a side. The kernel strides over A's tiles as over the matrices (y
    // stops at 65535 blocks too).
    let tiles_a = a.div_ceil(32 * per_thread).clamp(1, 65535);
    let cfg = super::tile_launch(b / per_thread, tiles_a, n);
    let (n, a, b) = (n as i32, a as i32, b as i32);
    let mut builder = func.builder();
    builder.arg(&xs);
    builder.arg(&out);
    builder.arg(&n);
    builder.arg(&a);
    builder.arg(&b);
    // SAFETY: arguments match the kernel's signature.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

struct ChannelAdd {
    /// x is (N, ..., C) and the output (N, C, ...).
    from_channels_last: bool,
}

impl ChannelAdd {
    fn run(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (v, vl): (&CudaStorage, &Layout),
        residual: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let dims = xl.shape().dims();
        let (n, c) = match self.from_channels_last {
            true => (dims[0], dims[dims.len() - 1]),
            false => (dims[0], dims[1]),
        };
        let s = xl.shape().elem_count() / (n * c).max(1);
        let sizes = (n, c, s, vl.shape().dims()[0]);
        let dev = x.device().clone();
        let operands = ((x, xl), (v, vl), residual);
        let y = match (x.dtype(), self.from_channels_last) {
            (DType::F16, false) => launch_channel_add::<half::f16>(&dev, operands, sizes)?,
            (DType::BF16, false) => launch_channel_add::<half::bf16>(&dev, operands, sizes)?,
            (DType::F16, true) => launch_from_channels_last::<half::f16>(&dev, operands, sizes)?,
            (DType::BF16, true) => launch_from_channels_last::<half::bf16>(&dev, operands, sizes)?,
            (other, _) => candle_core::bail!("channel_add: unsupported dtype {other:?}"),
        };
        let shape = match self.from_channels_last {
            true => {
                let mut d = vec![n, c];
                d.extend_from_slice(&dims[1..dims.len() - 1]);
                Shape::from(d)
            }
            false => xl.shape().clone(),
        };
        Ok((y, shape))
    }
}

impl CustomOp2 for ChannelAdd {
    fn name(&self) -> &'static str {
        "vivify-channel-add"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-channel-add runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run((x, xl), (v, vl), None)
    }
}

impl CustomOp3 for ChannelAdd {
    fn name(&self) -> &'static str {
        "vivify-channel-add-residual"
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
        candle_core::bail!("vivify-channel-add runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
        r: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run((x, xl), (v, vl), Some((r, rl)))
    }
}

type Operand<'a> = (&'a CudaStorage, &'a Layout);
/// x, the per-channel vector and the optional residual.
type Operands<'a> = (Operand<'a>, Operand<'a>, Option<Operand<'a>>);
type Views<'a, T> = (CudaView<'a, T>, CudaView<'a, T>, Option<CudaView<'a, T>>);

fn views<'a, T: CudaDType + WithDType>(
    ((x, xl), (v, vl), residual): Operands<'a>,
) -> Result<Views<'a, T>> {
    let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let vs = v.as_cuda_slice::<T>()?.slice(vl.start_offset()..);
    let rs = match residual {
        Some((r, rl)) => Some(r.as_cuda_slice::<T>()?.slice(rl.start_offset()..)),
        None => None,
    };
    Ok((xs, vs, rs))
}

fn launch_channel_add<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    operands: Operands,
    (n, c, s, v_rows): (usize, usize, usize, usize),
) -> Result<CudaStorage> {
    let vec = if s.is_multiple_of(8) { 8 } else { 1 };
    let name = format!("channel_add_{}_v{vec}", super::kernel_type_name(T::DTYPE));
    let cfg = LaunchConfig {
        grid_dim: (grid((n * c) as u64), 1, 1),
        block_dim: (((s / vec).clamp(32, 256) as u32).next_multiple_of(32), 1, 1),
        shared_mem_bytes: 0,
    };
    launch_sum::<T>(dev, operands, (n, c, s, v_rows), &name, cfg)
}

fn launch_from_channels_last<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    operands: Operands,
    (n, c, s, v_rows): (usize, usize, usize, usize),
) -> Result<CudaStorage> {
    // As the transpose: even sides, and x and the residual on 4-byte boundaries, by pairs.
    let ((_, xl), _, residual) = operands;
    let pairs = c.is_multiple_of(2)
        && s.is_multiple_of(2)
        && xl.start_offset().is_multiple_of(2)
        && residual.is_none_or(|(_, rl)| rl.start_offset().is_multiple_of(2))
        && super::enabled("pair_tiles");
    let per_thread = if pairs { 2 } else { 1 };
    let name = format!(
        "channel_add_from_channels_last{}_{}",
        if pairs { "_pairs" } else { "" },
        super::kernel_type_name(T::DTYPE)
    );
    let cfg = super::tile_launch(s / per_thread, c.div_ceil(32 * per_thread), n);
    launch_sum::<T>(dev, operands, (n, c, s, v_rows), &name, cfg)
}

/// Either per-channel add kernel: both take (x, v, residual or null, out, rows = N·C, C, S,
/// v_rows).
fn launch_sum<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    operands: Operands,
    (n, c, s, v_rows): (usize, usize, usize, usize),
    name: &str,
    cfg: LaunchConfig,
) -> Result<CudaStorage> {
    let (xs, vs, rs) = views::<T>(operands)?;
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n * c * s)? };
    let func = KERNELS.kernel(dev, name)?;
    let rows = (n * c) as i64;
    let (c, s, v_rows) = (c as i32, s as i32, v_rows as i32);
    let null: u64 = 0;
    let mut builder = func.builder();
    builder.arg(&xs);
    builder.arg(&vs);
    match &rs {
        Some(r) => builder.arg(r),
        None => builder.arg(&null),
    };
    builder.arg(&out);
    builder.arg(&rows);
    builder.arg(&c);
    builder.arg(&s);
    builder.arg(&v_rows);
    // SAFETY: arguments match the kernel's signature; a null residual is checked in the kernel.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}

struct Add;

impl CustomOp2 for Add {
    fn name(&self) -> &'static str {
        "vivify-add"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-add runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        a: &CudaStorage,
        al: &Layout,
        b: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = a.device().clone();
        let y = match a.dtype() {
            DType::F16 => launch_add::<half::f16>(&dev, (a, al), (b, bl))?,
            DType::BF16 => launch_add::<half::bf16>(&dev, (a, al), (b, bl))?,
            other => candle_core::bail!("add: unsupported dtype {other:?}"),
        };
        Ok((y, al.shape().clone()))
    }
}

fn launch_add<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    (a, al): (&CudaStorage, &Layout),
    (b, bl): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let n = al.shape().elem_count();
    let as_ = a.as_cuda_slice::<T>()?.slice(al.start_offset()..);
    let bs = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    let vec = if n.is_multiple_of(8) { 8 } else { 1 };
    let func = KERNELS.kernel(
        dev,
        &format!("add_{}_v{vec}", super::kernel_type_name(T::DTYPE)),
    )?;
    let cfg = LaunchConfig {
        grid_dim: (grid((n / vec).div_ceil(256) as u64), 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let n = n as i64;
    let mut builder = func.builder();
    builder.arg(&as_);
    builder.arg(&bs);
    builder.arg(&out);
    builder.arg(&n);
    // SAFETY: arguments match the kernel's signature.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
