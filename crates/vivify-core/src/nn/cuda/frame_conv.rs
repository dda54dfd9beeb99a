//! The temporal (3,1,1) convolution on CUDA as one cuBLAS strided-batched GEMM per batch row.
//!
//! With the frames zero-padded, h (B, F+2, C, P) holds, for output frame f, the three input
//! frames f, f+1, f+2 as one contiguous (3C, P) block starting at frame f. So out[b, f] =
//! W (C_out, 3C) · block_f, and the F blocks are a batch of GEMMs whose A operands overlap
//! (stride C·P): no shifted copies, one pass over the input.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig, sys};
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};

/// `padded` (B, F+2, C, P) (zero frames at both ends) and `weight` (C_out, 3C) laid out as
/// [tap][channel]; returns (B, F, C_out, P) without bias. None unless CUDA f16/bf16.
pub fn conv_over_padded_frames(padded: &Tensor, weight: &Tensor) -> Result<Option<Tensor>> {
    if !padded.device().is_cuda()
        || !super::enabled("frame_conv")
        || !matches!(padded.dtype(), DType::F16 | DType::BF16)
    {
        return Ok(None);
    }
    let op = FrameConv;
    padded
        .contiguous()?
        .apply_op2_no_bwd(&weight.contiguous()?, &op)
        .map(Some)
}

struct FrameConv;

impl CustomOp2 for FrameConv {
    fn name(&self) -> &'static str {
        "vivify-frame-conv"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-frame-conv runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (b, fp, c, p) = xl.shape().dims4()?;
        let (c_out, k) = wl.shape().dims2()?;
        if fp < 3 || k != 3 * c {
            candle_core::bail!(
                "frame conv: input {:?}, weight {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let dims = (b, fp - 2, c, p, c_out);
        let dev = x.device().clone();
        let out = match x.dtype() {
            DType::F16 => launch::<half::f16>(&dev, (x, xl), (w, wl), dims)?,
            DType::BF16 => launch::<half::bf16>(&dev, (x, xl), (w, wl), dims)?,
            other => candle_core::bail!("frame conv: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from((b, fp - 2, c_out, p))))
    }
}

fn launch<T>(
    dev: &CudaDevice,
    (x, xl): (&CudaStorage, &Layout),
    (w, wl): (&CudaStorage, &Layout),
    (b, f, c, p, c_out): (usize, usize, usize, usize, usize),
) -> Result<CudaStorage>
where
    T: CudaDType + WithDType + DeviceRepr,
    candle_core::cuda_backend::cudarc::cublas::CudaBlas: Gemm<T>,
{
    let blas = dev.cublas_handle();
    let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
    // SAFETY: every element is written by the GEMMs (beta = 0).
    let mut out = unsafe { dev.alloc::<T>(b * f * c_out * p)? };
    let i = |v: usize| v as i32;
    // Column-major view: C (P x C_out) = A (P x 3C, lda P) · B (3C x C_out, ldb 3C).
    let cfg = StridedBatchedConfig {
        gemm: GemmConfig {
            transa: sys::cublasOperation_t::CUBLAS_OP_N,
            transb: sys::cublasOperation_t::CUBLAS_OP_N,
            m: i(p),
            n: i(c_out),
            k: i(3 * c),
            alpha: T::one(),
            lda: i(p),
            ldb: i(3 * c),
            beta: T::zero(),
            ldc: i(p),
        },
        batch_size: i(f),
        stride_a: (c * p) as i64,
        stride_b: 0,
        stride_c: (c_out * p) as i64,
    };
    for row in 0..b {
        let a = xs.slice(row * (f + 2) * c * p..);
        let mut o = out.slice_mut(row * f * c_out * p..);
        // SAFETY: operands and strides stay inside the row's (F+2, C, P) input and (F, C_out, P)
        // output; the A operands overlap, which GEMM reads allow.
        unsafe { blas.gemm_strided_batched(cfg, &a, &ws, &mut o) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
