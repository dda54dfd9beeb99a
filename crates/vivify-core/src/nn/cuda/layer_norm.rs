//! LayerNorm on CUDA (kernels/layer_norm.cu): one warp per row, f32 statistics in two passes.

use super::kernel_module::{KernelModule, kernel_module};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};

const KERNELS: KernelModule = kernel_module!("layer_norm");

/// 16-byte chunks of a row one lane of layer_norm_v keeps (kernels/layer_norm.cu).
const MAX_CHUNKS: usize = 8;

const WARPS: u32 = 8;

/// LayerNorm of x over its last dimension with `weight` and `bias`; None when not on CUDA.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Option<Tensor>> {
    if !x.device().is_cuda()
        || !super::enabled("layer_norm")
        || weight.dtype() != x.dtype()
        || bias.dtype() != x.dtype()
    {
        return Ok(None);
    }
    let op = LayerNormOp { eps: eps as f32 };
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &op)
        .map(Some)
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "vivify-layer-norm"
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
        candle_core::bail!("vivify-layer-norm runs on CUDA only")
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
        let dim = *xl.shape().dims().last().unwrap_or(&0);
        if dim == 0 || wl.shape().elem_count() != dim || bl.shape().elem_count() != dim {
            candle_core::bail!(
                "layer norm: input {:?}, weight {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let dev = x.device().clone();
        let args = [(x, xl), (w, wl), (b, bl)];
        let y = match x.dtype() {
            DType::F32 => self.launch::<f32>(&dev, args, dim)?,
            DType::F16 => self.launch::<half::f16>(&dev, args, dim)?,
            DType::BF16 => self.launch::<half::bf16>(&dev, args, dim)?,
            other => candle_core::bail!("layer norm: unsupported dtype {other:?}"),
        };
        Ok((y, xl.shape().clone()))
    }
}

impl LayerNormOp {
    fn launch<T: CudaDType + WithDType + DeviceRepr>(
        &self,
        dev: &CudaDevice,
        [(x, xl), (w, wl), (b, bl)]: [(&CudaStorage, &Layout); 3],
        dim: usize,
    ) -> Result<CudaStorage> {
        let n = xl.shape().elem_count();
        let rows = (n / dim) as i64;
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let bs = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
        // SAFETY: every row is written by the kernel.
        let y = unsafe { dev.alloc::<T>(n)? };
        // 16 bytes per access, the row kept in registers, where it is whole 16-byte chunks (at
        // most MAX_CHUNKS a lane) and x, weight and bias start on 16-byte boundaries.
        let vec = 16 / T::DTYPE.size_in_bytes();
        let in_registers = dim.is_multiple_of(vec)
            && dim / vec <= 32 * MAX_CHUNKS
            && [xl, wl, bl]
                .iter()
                .all(|l| l.start_offset().is_multiple_of(vec))
            && super::enabled("wide_access");
        let name = if in_registers {
            "layer_norm_v"
        } else {
            "layer_norm"
        };
        let func = KERNELS.kernel(
            dev,
            &format!("{name}_{}", super::kernel_type_name(T::DTYPE)),
        )?;
        let cfg = LaunchConfig {
            grid_dim: ((rows as u64).div_ceil(u64::from(WARPS)) as u32, 1, 1),
            block_dim: (WARPS * 32, 1, 1),
            shared_mem_bytes: 0,
        };
        let dim = dim as i32;
        let mut builder = func.builder();
        builder.arg(&xs);
        builder.arg(&ws);
        builder.arg(&bs);
        builder.arg(&y);
        builder.arg(&rows);
        builder.arg(&dim);
        builder.arg(&self.eps);
        // SAFETY: arguments match the kernel's signature.
        unsafe { builder.launch(cfg) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
}
