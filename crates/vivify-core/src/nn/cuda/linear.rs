//! Linear layers as one cuBLASLt GEMM over all tokens with the bias added in the GEMM's
//! epilogue. candle's `Linear` broadcasts the weight into a batched GEMM (thousands of 16-row
//! GEMMs for the temporal layers, whose batch is every pixel) and adds the bias in a separate
//! pass over the output.

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
        let dev = x.device().clone();
        let y = match x.dtype() {
            DType::F16 => gemm::<half::f16>(&dev, (x, xl), (w, wl), bias, rows, k, n_out)?,
            DType::BF16 => gemm::<half::bf16>(&dev, (x, xl), (w, wl), bias, rows, k, n_out)?,
            other => candle_core::bail!("linear: unsupported dtype {other:?}"),
        };
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

#[allow(clippy::too_many_arguments)]
fn gemm<T>(
    dev: &CudaDevice,
    (x, xl): (&CudaStorage, &Layout),
    (w, wl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    rows: usize,
    k: usize,
    n_out: usize,
) -> Result<CudaStorage>
where
    T: CudaDType + WithDType + DeviceRepr + ValidAsZeroBits,
    CudaBlasLT: Matmul<T>,
{
    let lt = handle(dev)?;
    let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
    let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
    let bs = match bias {
        Some((b, bl)) => Some(b.as_cuda_slice::<T>()?.slice(bl.start_offset()..)),
        None => None,
    };
    // SAFETY: the GEMM writes every element (beta = 0).
    let mut y = unsafe { dev.alloc::<T>(rows * n_out)? };
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
    // SAFETY: the buffers hold exactly the shapes described by `cfg`.
    unsafe { lt.matmul(cfg, &ws, &xs, &mut y, bs.as_ref(), None) }
        .map_err(candle_core::Error::wrap)?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
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
