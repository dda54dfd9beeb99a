//! 2-D convolution through cuDNN, set up as PyTorch does it (f32 accumulation for half types,
//! tensor-core math allowed), with two differences: half types run channels last (NHWC, what the
//! tensor-core kernels read natively; vivify transposes in and out at full bandwidth), and the
//! algorithm is chosen by measurement (`FindConvolutionForwardAlgorithmEx` times each one on the
//! real buffers, once per shape, and the choice is kept on disk for later processes: see
//! `nn::conv_algorithms`). candle's own cuDNN call accumulates f16 in f16 without
//! tensor-op math and ran 17-22x slower than PyTorch on the H100; the legacy heuristic's first
//! pick on NCHW ran 2.5-3.5x slower. f32 keeps NCHW and FMA math so CUDA f32 stays comparable
//! with the CPU. `VIVIFY_CONV_LAYOUT=nchw|nhwc` pins a layout; `VIVIFY_CONV_LOG=1` prints each
//! algorithm chosen and whether it came from the disk cache or a search.

use crate::nn::conv_algorithms::{self, Choice, ConvKey};
use crate::nn::ops::{from_channels_last, to_channels_last};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;

/// (device, dtype, channels last, [n, c, h, w, k, kh, kw, stride, padding]).
type PlanKey = (DeviceId, DType, bool, [usize; 9]);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, as candle does.
    static HANDLES: RefCell<HashMap<DeviceId, Rc<Handle>>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<PlanKey, Rc<ConvPlan>>> = RefCell::new(HashMap::new());
}

/// Largest workspace an algorithm may ask for. The winners at the UNet's and VAE's shapes
/// (implicit GEMM, channels last) need none; the cap keeps the search from timing FFT variants
/// that would want gigabytes. The graph API's NCHW half-type convolutions may go up to copies of
/// x and y, what the transposes would allocate (`Conv::workspace_cap` in cudnn_graph_conv.rs).
pub(super) const WORKSPACE_CAP: usize = 64 << 20;

/// Cross-correlation of x (N, C, H, W) with w (K, C, kh, kw), square stride and padding: through
/// cuDNN's graph API where it has an engine for the shape (cudnn_graph_conv.rs), else (or with
/// `VIVIFY_CUDA_DISABLE=cudnn_graph`) through the legacy API.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if super::enabled("cudnn_graph")
        && let Some(y) = super::cudnn_graph_conv::conv2d(x, w, stride, padding)?
    {
        return Ok(y);
    }
    legacy_conv2d(x, w, stride, padding)
}

/// The same convolution of x given channels last, (N, H, W, C), answered channels last,
/// (N, H', W', K): for a GroupNorm that already wrote its output that way (conv.rs).
pub fn conv2d_channels_last(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    if super::enabled("cudnn_graph")
        && let Some(y) = super::cudnn_graph_conv::conv2d_channels_last(x, w, stride, padding)?
    {
        return Ok(y);
    }
    legacy_conv2d_channels_last(&x.contiguous()?, w, stride, padding)
}

/// w (K, C, kh, kw) as a convolution layer keeps it: stored channels last
/// ([`crate::nn::ops::channels_last_backed`]) where cuDNN reads it that way, so no call
/// transposes it again; as it is elsewhere (CPU, f32, 1x1 kernels, which run as a GEMM on NCHW,
/// `VIVIFY_CUDA_DISABLE=cudnn_conv` or `conv_weights_channels_last`).
pub fn stored_weight(w: Tensor) -> Result<Tensor> {
    let read_channels_last = w.device().is_cuda()
        && super::enabled("cudnn_conv")
        && super::enabled("conv_weights_channels_last")
        && channels_last(&w)
        && (w.dim(2)? > 1 || w.dim(3)? > 1);
    if read_channels_last {
        crate::nn::ops::channels_last_backed(&w)
    } else {
        Ok(w)
    }
}

/// The legacy API's path on its own (bench-ops times it against the graph path).
pub fn legacy_conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if channels_last(x) {
        conv2d_nhwc(x, w, stride, padding)
    } else {
        conv2d_nchw(&x.contiguous()?, &w.contiguous()?, stride, padding)
    }
}

fn conv2d_nchw(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let op = CudnnConv2d {
        stride,
        padding,
        nhwc: false,
    };
    x.apply_op2_no_bwd(w, &op)
}

/// The same convolution on channels-last copies, answered in NCHW.
fn conv2d_nhwc(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    from_channels_last(&legacy_conv2d_channels_last(
        &to_channels_last(x)?,
        w,
        stride,
        padding,
    )?)
}

/// x (N, H, W, C), contiguous, and w (K, C, kh, kw) in either layout -> (N, H', W', K).
fn legacy_conv2d_channels_last(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let op = CudnnConv2d {
        stride,
        padding,
        nhwc: true,
    };
    x.apply_op2_no_bwd(&to_channels_last(w)?, &op)
}

/// Whether this convolution runs channels last: half types do (the tensor-core kernels read NHWC
/// natively; with NCHW a UNet step took 2.3x as long on the H200), f32 does not;
/// VIVIFY_CONV_LAYOUT=nchw|nhwc pins either.
pub(crate) fn channels_last(x: &Tensor) -> bool {
    // Read once: this runs on every convolution.
    static PINNED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let pinned = PINNED.get_or_init(|| match std::env::var("VIVIFY_CONV_LAYOUT").as_deref() {
        Ok("nchw") => Some(false),
        Ok("nhwc") => Some(true),
        _ => None,
    });
    pinned.unwrap_or(x.dtype() != DType::F32)
}

pub(super) fn log_enabled() -> bool {
    std::env::var_os("VIVIFY_CONV_LOG").is_some_and(|v| v != "0")
}

struct CudnnConv2d {
    stride: usize,
    padding: usize,
    /// Both operands (and the output) are channels last: x (N, H, W, C), w (K, kh, kw, C).
    nhwc: bool,
}

type Dims4 = (usize, usize, usize, usize);

impl CudnnConv2d {
    /// Logical (N, C, H, W) and (K, C, kh, kw) whatever the physical layout.
    fn logical(&self, xd: Dims4, wd: Dims4) -> (Dims4, Dims4) {
        if self.nhwc {
            ((xd.0, xd.3, xd.1, xd.2), (wd.0, wd.3, wd.1, wd.2))
        } else {
            (xd, wd)
        }
    }

    fn out_dims(&self, x: Dims4, w: Dims4) -> Dims4 {
        let (n, _, h, wd) = x;
        let (k, _, kh, kw) = w;
        let oh = (h + 2 * self.padding - kh) / self.stride + 1;
        let ow = (wd + 2 * self.padding - kw) / self.stride + 1;
        (n, k, oh, ow)
    }
}

impl CustomOp2 for CudnnConv2d {
    fn name(&self) -> &'static str {
        "vivify-cudnn-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-cudnn-conv2d runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (xd, wd) = self.logical(xl.shape().dims4()?, wl.shape().dims4()?);
        if xd.1 != wd.1 || !xl.is_contiguous() || !wl.is_contiguous() {
            candle_core::bail!(
                "cudnn conv2d: input {:?} and weight {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let yd = self.out_dims(xd, wd);
        let dev = x.device().clone();
        let y = match x.dtype() {
            DType::F16 => self.launch::<half::f16>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            DType::BF16 => self.launch::<half::bf16>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            DType::F32 => self.launch::<f32>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            other => candle_core::bail!("cudnn conv2d: unsupported dtype {other:?}"),
        };
        let shape = if self.nhwc {
            Shape::from((yd.0, yd.2, yd.3, yd.1))
        } else {
            Shape::from(yd)
        };
        Ok((y, shape))
    }
}

impl CudnnConv2d {
    fn launch<T: CudaDType + WithDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
        &self,
        dev: &CudaDevice,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        xd: Dims4,
        wd: Dims4,
        yd: Dims4,
    ) -> Result<CudaStorage> {
        let stream = dev.cuda_stream();
        let handle = handle(dev, &stream)?;
        let key: PlanKey = (dev.id(), T::DTYPE, self.nhwc, self.shape(xd, wd));
        // SAFETY: cuDNN writes every element of the output (beta = 0).
        let mut y = unsafe { dev.alloc::<T>(yd.0 * yd.1 * yd.2 * yd.3)? };
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let (xp, _xg) = xs.device_ptr(&stream);
        let (wp, _wg) = ws.device_ptr(&stream);
        let (yp, _yg) = y.device_ptr_mut(&stream);
        let ptrs = Buffers {
            x: xp as *const c_void,
            w: wp as *const c_void,
            y: yp as *mut c_void,
        };
        let plan = match PLANS.with(|p| p.borrow().get(&key).cloned()) {
            Some(plan) => plan,
            None => {
                let plan = Rc::new(self.plan(dev, &handle, T::DTYPE, (xd, wd, yd), ptrs)?);
                PLANS.with(|p| p.borrow_mut().insert(key, plan.clone()));
                plan
            }
        };
        plan.run(&handle, &stream, ptrs)?;
        drop((_xg, _wg, _yg));
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }

    /// [n, c, h, w, k, kh, kw, stride, padding] of logical (N, C, H, W) and (K, C, kh, kw).
    fn shape(&self, xd: Dims4, wd: Dims4) -> [usize; 9] {
        let (n, c, h, w) = xd;
        let (k, _, kh, kw) = wd;
        [n, c, h, w, k, kh, kw, self.stride, self.padding]
    }

    /// The plan for a shape this thread has not run yet: the algorithm recorded on disk, else
    /// one searched for (and recorded).
    fn plan(
        &self,
        dev: &CudaDevice,
        handle: &Handle,
        dtype: DType,
        (xd, wd, yd): (Dims4, Dims4, Dims4),
        bufs: Buffers,
    ) -> Result<ConvPlan> {
        let mut plan = ConvPlan::describe(data_type(dtype)?, self, (xd, wd, yd))?;
        let key = disk_key(dev, dtype, self.nhwc, self.shape(xd, wd))?;
        // A recorded choice that cuDNN no longer accepts for these descriptors is searched again.
        let source = match conv_algorithms::lookup(&key) {
            Some(choice) if plan.adopt(handle, choice).is_ok() => "the cache".to_string(),
            _ => {
                let choice = plan.search(handle, &dev.cuda_stream(), bufs, WORKSPACE_CAP)?;
                conv_algorithms::record(key, choice);
                format!("a search, {:.3} ms", choice.time_ms)
            }
        };
        if log_enabled() {
            eprintln!(
                "cudnn {} x{xd:?} w{wd:?}: {:?} {:?}, workspace {} KiB (from {source})",
                if self.nhwc { "nhwc" } else { "nchw" },
                plan.algo,
                plan.math,
                plan.workspace >> 10
            );
        }
        Ok(plan)
    }
}

/// The key of this convolution's entry in the on-disk cache of algorithm choices.
pub fn disk_key(
    dev: &CudaDevice,
    dtype: DType,
    channels_last: bool,
    shape: [usize; 9],
) -> Result<ConvKey> {
    let gpu = dev
        .cuda_stream()
        .context()
        .name()
        .map_err(candle_core::Error::wrap)?;
    // SAFETY: a plain query of the loaded library.
    let cudnn = unsafe { sys::cudnnGetVersion() } as u64;
    Ok(ConvKey {
        gpu,
        cudnn,
        dtype: dtype.as_str().into(),
        layout: if channels_last { "nhwc" } else { "nchw" }.into(),
        shape,
    })
}

/// cuDNN's enum for a recorded value; `None` for one this binding does not know.
fn fwd_algo(v: i32) -> Option<sys::cudnnConvolutionFwdAlgo_t> {
    use sys::cudnnConvolutionFwdAlgo_t::*;
    [
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    ]
    .into_iter()
    .find(|a| *a as i32 == v)
}

fn math_type(v: i32) -> Option<sys::cudnnMathType_t> {
    use sys::cudnnMathType_t::*;
    [
        CUDNN_DEFAULT_MATH,
        CUDNN_TENSOR_OP_MATH,
        CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
        CUDNN_FMA_MATH,
    ]
    .into_iter()
    .find(|m| *m as i32 == v)
}

#[derive(Clone, Copy)]
struct Buffers {
    x: *const c_void,
    w: *const c_void,
    y: *mut c_void,
}

pub(super) fn data_type(dtype: DType) -> Result<sys::cudnnDataType_t> {
    Ok(match dtype {
        DType::F16 => sys::cudnnDataType_t::CUDNN_DATA_HALF,
        DType::BF16 => sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16,
        DType::F32 => sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        other => candle_core::bail!("cudnn conv2d: unsupported dtype {other:?}"),
    })
}

fn check(status: sys::cudnnStatus_t) -> Result<()> {
    status.result().map_err(candle_core::Error::wrap)
}

/// A cuDNN handle bound to candle's stream.
pub(super) struct Handle(pub(super) sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: created by cudnnCreate, destroyed once.
        unsafe { sys::cudnnDestroy(self.0) };
    }
}

pub(super) fn handle(dev: &CudaDevice, stream: &CudaStream) -> Result<Rc<Handle>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let mut raw = std::ptr::null_mut();
        // SAFETY: out-pointer to a fresh handle, then bound to candle's stream.
        unsafe {
            check(sys::cudnnCreate(&mut raw))?;
            check(sys::cudnnSetStream(
                raw,
                stream.cu_stream() as sys::cudaStream_t,
            ))?;
        }
        let c = Rc::new(Handle(raw));
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// Descriptors, algorithm, math type and workspace size for one convolution shape.
struct ConvPlan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    math: sys::cudnnMathType_t,
    workspace: usize,
}

impl Drop for ConvPlan {
    fn drop(&mut self) {
        // SAFETY: each descriptor was created once by `describe`.
        unsafe {
            sys::cudnnDestroyTensorDescriptor(self.x);
            sys::cudnnDestroyFilterDescriptor(self.w);
            sys::cudnnDestroyTensorDescriptor(self.y);
            sys::cudnnDestroyConvolutionDescriptor(self.conv);
        }
    }
}

impl ConvPlan {
    /// The descriptors for one shape; the algorithm is chosen by `adopt` or `search`.
    fn describe(
        dtype: sys::cudnnDataType_t,
        op: &CudnnConv2d,
        (xd, wd, yd): (Dims4, Dims4, Dims4),
    ) -> Result<Self> {
        let i = |v: usize| v as i32;
        let format = if op.nhwc {
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
        } else {
            sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
        };
        // The math type a search starts from: tensor cores for half types, FMA for f32.
        let math = if dtype == sys::cudnnDataType_t::CUDNN_DATA_FLOAT {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        };
        let mut plan = ConvPlan {
            x: std::ptr::null_mut(),
            w: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            conv: std::ptr::null_mut(),
            algo: sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
            math,
            workspace: 0,
        };
        // SAFETY: descriptors are created into the plan (destroyed by its Drop) and described
        // with the buffers' exact shapes.
        unsafe {
            check(sys::cudnnCreateTensorDescriptor(&mut plan.x))?;
            check(sys::cudnnCreateFilterDescriptor(&mut plan.w))?;
            check(sys::cudnnCreateTensorDescriptor(&mut plan.y))?;
            check(sys::cudnnCreateConvolutionDescriptor(&mut plan.conv))?;
            check(sys::cudnnSetTensor4dDescriptor(
                plan.x,
                format,
                dtype,
                i(xd.0),
                i(xd.1),
                i(xd.2),
                i(xd.3),
            ))?;
            check(sys::cudnnSetFilter4dDescriptor(
                plan.w,
                dtype,
                format,
                i(wd.0),
                i(wd.1),
                i(wd.2),
                i(wd.3),
            ))?;
            check(sys::cudnnSetTensor4dDescriptor(
                plan.y,
                format,
                dtype,
                i(yd.0),
                i(yd.1),
                i(yd.2),
                i(yd.3),
            ))?;
            check(sys::cudnnSetConvolution2dDescriptor(
                plan.conv,
                i(op.padding),
                i(op.padding),
                i(op.stride),
                i(op.stride),
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            ))?;
        }
        Ok(plan)
    }

    /// Takes a recorded choice without searching; cuDNN's workspace query doubles as the check
    /// that the algorithm still runs these descriptors in that math type.
    fn adopt(&mut self, handle: &Handle, choice: Choice) -> Result<()> {
        let bad = || candle_core::Error::Msg(format!("cudnn conv2d: recorded {choice:?}"));
        let algo = fwd_algo(choice.algo).ok_or_else(bad)?;
        let math = math_type(choice.math_type).ok_or_else(bad)?;
        let mut workspace = 0;
        // SAFETY: descriptors this plan owns; the size is written into a local.
        unsafe {
            check(sys::cudnnSetConvolutionMathType(self.conv, math))?;
            check(sys::cudnnGetConvolutionForwardWorkspaceSize(
                handle.0,
                self.x,
                self.w,
                self.conv,
                self.y,
                algo,
                &mut workspace,
            ))?;
        }
        (self.algo, self.math, self.workspace) = (algo, math, workspace);
        Ok(())
    }

    /// Times every algorithm on the real buffers and takes the fastest that ran.
    fn search(
        &mut self,
        handle: &Handle,
        stream: &std::sync::Arc<CudaStream>,
        bufs: Buffers,
        workspace_cap: usize,
    ) -> Result<Choice> {
        // SAFETY: a descriptor this plan owns.
        unsafe { check(sys::cudnnSetConvolutionMathType(self.conv, self.math))? };
        // The largest workspace the device can spare right now, up to the cap.
        let mut cap = workspace_cap;
        let scratch = loop {
            // SAFETY: scratch space only.
            match unsafe { stream.alloc::<u8>(cap.max(1)) } {
                Ok(s) => break s,
                Err(_) if cap > 1 << 20 => cap /= 4,
                Err(e) => return Err(candle_core::Error::wrap(e)),
            }
        };
        const ALGOS: usize = 8;
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; ALGOS] = unsafe { std::mem::zeroed() };
        let mut returned = 0;
        {
            let (sp, _sg) = scratch.device_ptr(stream);
            // SAFETY: the descriptors match the buffers; the scratch holds `cap` bytes.
            unsafe {
                check(sys::cudnnFindConvolutionForwardAlgorithmEx(
                    handle.0,
                    self.x,
                    bufs.x,
                    self.w,
                    bufs.w,
                    self.conv,
                    self.y,
                    bufs.y,
                    ALGOS as i32,
                    &mut returned,
                    perf.as_mut_ptr(),
                    sp as *mut c_void,
                    cap,
                ))?;
            }
        }
        drop(scratch);
        // Sorted fastest first; keep the first that ran, in the math mode it was timed with.
        let best = perf[..returned.max(0) as usize]
            .iter()
            .find(|p| p.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS && p.memory <= cap)
            .ok_or_else(|| candle_core::Error::Msg("cudnn conv2d: no algorithm ran".into()))?;
        (self.algo, self.math, self.workspace) = (best.algo, best.mathType, best.memory);
        // SAFETY: a descriptor this plan owns.
        unsafe { check(sys::cudnnSetConvolutionMathType(self.conv, best.mathType))? };
        Ok(Choice {
            algo: best.algo as i32,
            math_type: best.mathType as i32,
            workspace_bytes: best.memory as u64,
            time_ms: best.time,
        })
    }

    fn run(
        &self,
        handle: &Handle,
        stream: &std::sync::Arc<CudaStream>,
        bufs: Buffers,
    ) -> Result<()> {
        // SAFETY: scratch space only.
        let workspace = unsafe { stream.alloc::<u8>(self.workspace.max(1)) }
            .map_err(candle_core::Error::wrap)?;
        let (wsp, _g) = workspace.device_ptr(stream);
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: the plan's descriptors describe these buffers; the workspace is large enough.
        unsafe {
            check(sys::cudnnConvolutionForward(
                handle.0,
                &alpha as *const f32 as *const c_void,
                self.x,
                bufs.x,
                self.w,
                bufs.w,
                self.conv,
                self.algo,
                wsp as *mut c_void,
                self.workspace,
                &beta as *const f32 as *const c_void,
                self.y,
                bufs.y,
            ))
        }
    }
}
