//! The temporal (3,1,1) convolution on CUDA as cuBLAS GEMMs over overlapping frame windows.
//!
//! h (B, F, C, P) holds, for output frame f, the three input frames f-1, f, f+1 as one
//! contiguous (3C, P) block starting at frame f-1. So out[b, f] = W (C_out, 3C) · block, and the
//! interior frames are one strided batch of GEMMs whose A operands overlap (stride C·P). The first
//! and last frames see only two input frames (the padding is zeros): each is one GEMM over 2C
//! rows of the block with the matching two taps of W. No padded or shifted copies: one pass over
//! the input.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublas::{Gemm, GemmConfig, StridedBatchedConfig, sys};
use candle_core::cuda_backend::cudarc::driver::DeviceRepr;
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};

/// h (B, F, C, P) and `weight` (C_out, 3C) laid out as [tap][channel]; returns the convolution
/// with padding (1, 0, 0), (B, F, C_out, P), without bias. None unless CUDA f16/bf16.
pub fn conv_over_frames(h: &Tensor, weight: &Tensor) -> Result<Option<Tensor>> {
    if !h.device().is_cuda()
        || !super::enabled("frame_conv")
        || !matches!(h.dtype(), DType::F16 | DType::BF16)
    {
        return Ok(None);
    }
    let op = FrameConv;
    h.contiguous()?
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
        let (b, f, c, p) = xl.shape().dims4()?;
        let (c_out, k) = wl.shape().dims2()?;
        if f == 0 || k != 3 * c {
            candle_core::bail!(
                "frame conv: input {:?}, weight {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let dims = (b, f, c, p, c_out);
        let dev = x.device().clone();
        let out = match x.dtype() {
            DType::F16 => launch::<half::f16>(&dev, (x, xl), (w, wl), dims)?,
            DType::BF16 => launch::<half::bf16>(&dev, (x, xl), (w, wl), dims)?,
            other => candle_core::bail!("frame conv: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from((b, f, c_out, p))))
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
    // SAFETY: every element is written by the GEMMs (beta = 0): frames 0 and F-1 by the edge
    // GEMMs, 1..F-1 by the batch.
    let mut out = unsafe { dev.alloc::<T>(b * f * c_out * p)? };
    let i = |v: usize| v as i32;
    let (frame_in, frame_out) = (c * p, c_out * p);
    // Column-major view: C (P x C_out) = A (P x k, lda P) · B (k x C_out, ldb 3C), where A is k/C
    // consecutive input frames and B the rows of W for the taps that reach them.
    let gemm = |k: usize| GemmConfig {
        transa: sys::cublasOperation_t::CUBLAS_OP_N,
        transb: sys::cublasOperation_t::CUBLAS_OP_N,
        m: i(p),
        n: i(c_out),
        k: i(k),
        alpha: T::one(),
        lda: i(p),
        ldb: i(3 * c),
        beta: T::zero(),
        ldc: i(p),
    };
    for row in 0..b {
        let x_row = row * f * frame_in;
        let o_row = row * f * frame_out;
        // SAFETY (all three): each A operand is k/C whole frames inside this row's input, each B
        // operand k rows of W's 3C, each output one or more whole frames of this row's output.
        if f == 1 {
            // Only the centre tap meets a frame.
            let mut o = out.slice_mut(o_row..);
            unsafe { blas.gemm(gemm(c), &xs.slice(x_row..), &ws.slice(c..), &mut o) }.w()?;
            continue;
        }
        // Frame 0: input frames 0 and 1 with taps 1 and 2.
        let mut o = out.slice_mut(o_row..);
        unsafe { blas.gemm(gemm(2 * c), &xs.slice(x_row..), &ws.slice(c..), &mut o) }.w()?;
        // Frame F-1: input frames F-2 and F-1 with taps 0 and 1.
        let mut o = out.slice_mut(o_row + (f - 1) * frame_out..);
        let a = xs.slice(x_row + (f - 2) * frame_in..);
        unsafe { blas.gemm(gemm(2 * c), &a, &ws, &mut o) }.w()?;
        if f > 2 {
            // Frames 1..F-1: input frames f-1..f+1, all three taps; the A operands overlap,
            // which GEMM reads allow.
            let cfg = StridedBatchedConfig {
                gemm: gemm(3 * c),
                batch_size: i(f - 2),
                stride_a: frame_in as i64,
                stride_b: 0,
                stride_c: frame_out as i64,
            };
            let mut o = out.slice_mut(o_row + frame_out..);
            let a = xs.slice(x_row..);
            unsafe { blas.gemm_strided_batched(cfg, &a, &ws, &mut o) }.w()?;
        }
    }
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
