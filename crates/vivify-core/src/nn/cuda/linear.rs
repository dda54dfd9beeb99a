//! Linear layers as one cuBLASLt GEMM over all tokens with the bias added in the GEMM's
//! epilogue. candle's `Linear` broadcasts the weight into a batched GEMM (thousands of 16-row
//! GEMMs for the temporal layers, whose batch is every pixel) and adds the bias in a separate
//! pass over the output. Also the 1x1 convolution on NCHW as one strided-batched cuBLASLt matmul
//! ([`channel_matmul`], one of the ways `nn::cuda::conv_path` times).

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cublaslt::{CudaBlasLT, Matmul, MatmulConfig};
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Arc<CudaBlasLT>>> = RefCell::new(HashMap::new());
}

/// x (..., K) · wᵀ + b for w (N, K) and b (N), or None where this path does not apply (CPU,
/// f32, switched off).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Option<Tensor>> {
    let supported = x.device().is_cuda()
        && super::enabled("linear")
        && matches!(x.dtype(), DType::F16 | DType::BF16)
        && w.dtype() == x.dtype()
        && b.is_none_or(|b| b.dtype() == x.dtype());
    if !supported {
        return Ok(None);
    }
    let dims = x.dims();
    let k = *dims.last().unwrap_or(&0);
    let (n_out, wk) = w.dims2()?;
    if k != wk || k == 0 {
        candle_core::bail!("linear: input {:?} and weight {:?}", x.shape(), w.shape());
    }
    let rows = x.elem_count() / k;
    let x2 = x.contiguous()?.reshape((rows, k))?;
    let w = w.contiguous()?;
    let y = match b {
        Some(b) => x2.apply_op3_no_bwd(&w, &b.contiguous()?, &LtLinear)?,
        None => x2.apply_op2_no_bwd(&w, &LtLinear)?,
    };
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().unwrap() = n_out;
    y.reshape(out_dims).map(Some)
}

/// A 1x1 convolution on NCHW: w (M, K) · x[i] (K, P) for each i of x (N, K, P) -> (N, M, P), one
/// strided-batched cuBLASLt matmul that reads w for every i (`nn::cuda::conv_path` times it
/// against cuBLAS's batched matmul); None where it does not apply (CPU, f32).
pub fn channel_matmul(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let supported = x.device().is_cuda()
        && matches!(x.dtype(), DType::F16 | DType::BF16)
        && w.dtype() == x.dtype();
    if !supported {
        return Ok(None);
    }
    let ((_, k, _), (_, wk)) = (x.dims3()?, w.dims2()?);
    if k != wk {
        candle_core::bail!(
            "channel matmul: input {:?} and weight {:?}",
            x.shape(),
            w.shape()
        );
    }
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &ChannelMatmul)
        .map(Some)
}

struct ChannelMatmul;

impl CustomOp2 for ChannelMatmul {
    fn name(&self) -> &'static str {
        "vivify-channel-matmul"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-channel-matmul runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, k, p) = xl.shape().dims3()?;
        let (m, _) = wl.shape().dims2()?;
        // Column-major view, per i: y[i]ᵀ (P x M) = x[i]ᵀ (P x K) · wᵀ (K x M), w's batch stride 0.
        let cfg = MatmulConfig {
            transa: false,
            transb: false,
            transc: false,
            m: p as u64,
            n: m as u64,
            k: k as u64,
            alpha: 1.0,
            lda: p as i64,
            ldb: k as i64,
            beta: 0.0,
            ldc: p as i64,
            stride_a: Some((k * p) as i64),
            stride_b: Some(0),
            stride_c: Some((m * p) as i64),
            stride_bias: None,
            batch_size: Some(n as i32),
        };
        let y = lt_matmul((x, xl), (w, wl), None, cfg, n * m * p)?;
        Ok((y, Shape::from((n, m, p))))
    }
}

struct LtLinear;

impl LtLinear {
    fn run(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        bias: Option<(&CudaStorage, &Layout)>,
    ) -> Result<(CudaStorage, Shape)> {
        let (rows, k) = xl.shape().dims2()?;
        let (n_out, _) = wl.shape().dims2()?;
        // Column-major view: yᵀ (n_out x rows) = w (stored K x n_out, transposed) · xᵀ (K x rows);
        // the epilogue's bias runs along yᵀ's rows, i.e. one value per output feature.
        let cfg = MatmulConfig {
            transa: true,
            transb: false,
            transc: false,
            m: n_out as u64,
            n: rows as u64,
            k: k as u64,
            alpha: 1.0,
            lda: k as i64,
            ldb: k as i64,
            beta: 0.0,
            ldc: n_out as i64,
            stride_a: None,
            stride_b: None,
            stride_c: None,
            stride_bias: None,
            batch_size: None,
        };
        let y = lt_matmul((w, wl), (x, xl), bias, cfg, rows * n_out)?;
        Ok((y, Shape::from((rows, n_out))))
    }
}

impl CustomOp2 for LtLinear {
    fn name(&self) -> &'static str {
        "vivify-linear"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-linear runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        self.run((x, xl), (w, wl), None)
    }
}

impl CustomOp3 for LtLinear {
    fn name(&self) -> &'static str {
        "vivify-linear-bias"
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
        candle_core::bail!("vivify-linear runs on CUDA only")
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
        self.run((x, xl), (w, wl), Some((b, bl)))
    }
}

/// One cuBLASLt matmul as `cfg` describes it (column-major), a · b into a fresh buffer of
/// `out_len` elements, plus `bias` in the epilogue, in the operands' dtype.
fn lt_matmul(
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    cfg: MatmulConfig,
    out_len: usize,
) -> Result<CudaStorage> {
    match a.0.dtype() {
        DType::F16 => lt_matmul_typed::<half::f16>(a, b, bias, cfg, out_len),
        DType::BF16 => lt_matmul_typed::<half::bf16>(a, b, bias, cfg, out_len),
        other => candle_core::bail!("cuBLASLt matmul: unsupported dtype {other:?}"),
    }
}

fn lt_matmul_typed<T>(
    (a, al): (&CudaStorage, &Layout),
    (b, bl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    cfg: MatmulConfig,
    out_len: usize,
) -> Result<CudaStorage>
where
    T: CudaDType + WithDType + DeviceRepr + ValidAsZeroBits,
    CudaBlasLT: Matmul<T>,
{
    let dev = a.device().clone();
    let lt = handle(&dev)?;
    let a = a.as_cuda_slice::<T>()?.slice(al.start_offset()..);
    let b = b.as_cuda_slice::<T>()?.slice(bl.start_offset()..);
    let bias = match bias {
        Some((s, l)) => Some(s.as_cuda_slice::<T>()?.slice(l.start_offset()..)),
        None => None,
    };
    // SAFETY: the matmul writes every element (beta = 0).
    let mut y = unsafe { dev.alloc::<T>(out_len)? };
    // SAFETY: the buffers hold exactly the shapes described by `cfg`.
    unsafe { lt.matmul(cfg, &a, &b, &mut y, bias.as_ref(), None) }
        .map_err(candle_core::Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}

fn handle(dev: &CudaDevice) -> Result<Arc<CudaBlasLT>> {
    HANDLES.with(|h| {
        if let Some(lt) = h.borrow().get(&dev.id()) {
            return Ok(lt.clone());
        }
        let lt = Arc::new(CudaBlasLT::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?);
        h.borrow_mut().insert(dev.id(), lt.clone());
        Ok(lt)
    })
}
