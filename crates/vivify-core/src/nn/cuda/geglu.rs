//! GEGLU on CUDA (kernels/geglu.cu): value · GELU(gate) from the projection's output in one pass.

use super::kernel_module::{KernelModule, kernel_module};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType,
};

const KERNELS: KernelModule = kernel_module!("geglu");

/// h (..., 2H) -> h[..., :H] · GELU(h[..., H:]), or None where the kernel does not apply.
pub fn geglu(h: &Tensor) -> Result<Option<Tensor>> {
    if !h.device().is_cuda()
        || !super::enabled("geglu")
        || !matches!(h.dtype(), DType::F16 | DType::BF16)
        || h.dims().last().is_none_or(|w| w % 2 != 0)
    {
        return Ok(None);
    }
    h.contiguous()?.apply_op1_no_bwd(&Geglu).map(Some)
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "vivify-geglu"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-geglu runs on CUDA only")
    }

    fn cuda_fwd(&self, h: &CudaStorage, hl: &Layout) -> Result<(CudaStorage, Shape)> {
        let dims = hl.shape().dims();
        let width = *dims.last().unwrap_or(&0);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().unwrap() = width / 2;
        let dev = h.device().clone();
        let y = match h.dtype() {
            DType::F16 => launch::<half::f16>(&dev, h, hl, width)?,
            DType::BF16 => launch::<half::bf16>(&dev, h, hl, width)?,
            other => candle_core::bail!("geglu: unsupported dtype {other:?}"),
        };
        Ok((y, Shape::from(out_dims)))
    }
}

fn launch<T: CudaDType + WithDType + DeviceRepr>(
    dev: &CudaDevice,
    h: &CudaStorage,
    hl: &Layout,
    width: usize,
) -> Result<CudaStorage> {
    let rows = (hl.shape().elem_count() / width) as i64;
    let half_width = (width / 2) as i32;
    let n = hl.shape().elem_count() / 2;
    let hs = h.as_cuda_slice::<T>()?.slice(hl.start_offset()..);
    // SAFETY: the kernel writes every element.
    let out = unsafe { dev.alloc::<T>(n)? };
    // 16 bytes per access over all rows where H is a multiple of 8, the output's chunks of 8
    // indexable in 32 bits, and h on a 16-byte boundary; else one block per row. Both kernels
    // loop past the grid.
    let v8 = (width / 2).is_multiple_of(8)
        && n / 8 < i32::MAX as usize
        && hl.start_offset().is_multiple_of(8)
        && super::enabled("wide_access");
    let name = match v8 {
        true => "geglu_v8",
        false => "geglu",
    };
    let func = KERNELS.kernel(
        dev,
        &format!("{name}_{}", super::kernel_type_name(T::DTYPE)),
    )?;
    let blocks = if v8 {
        (n / 8).div_ceil(256)
    } else {
        rows as usize
    };
    let cfg = LaunchConfig {
        grid_dim: (blocks.clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut builder = func.builder();
    builder.arg(&hs);
    builder.arg(&out);
    builder.arg(&rows);
    builder.arg(&half_width);
    // SAFETY: arguments match the kernel's signature.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
