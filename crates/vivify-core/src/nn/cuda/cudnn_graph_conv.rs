//! 2-D convolution through cuDNN's backend (graph) API, built the way cudnn-frontend and PyTorch
//! build it: tensor, convolution and operation descriptors in one operation graph, engine configs
//! ranked by heuristics mode A (no timing), and the first that finalizes as an execution plan.
//! The legacy API's algorithms ran 1.3-2.5x slower than PyTorch's at the UNet's and VAE's 3x3
//! shapes on the H200, and its measured search cost 1-7.5 s in every run's first step; the graph
//! API offers other engines and chooses without running them. Same layouts as cudnn_conv.rs: half
//! types channels last, f32 NCHW without tensor cores (TF32 engines are skipped). The default
//! since its H200 run (bench/gpu/RESULTS.md); `VIVIFY_CONV_LOG=1` prints each shape's engine.
//! `VIVIFY_CONV_GRAPH_SEARCH=N` times the first N configs instead and keeps the fastest on disk
//! (conv_algorithms.rs), as `torch.backends.cudnn.benchmark` does; not yet measured on a device.

use super::cudnn_conv::{Handle, WORKSPACE_CAP, channels_last, data_type, handle, log_enabled};
use crate::nn::conv_algorithms;
use crate::nn::ops::{from_channels_last, stored_channels_last, to_channels_last};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;

use sys::cudnnBackendAttributeName_t as Attr;
use sys::cudnnBackendAttributeType_t as Type;
use sys::cudnnBackendDescriptorType_t as Kind;

/// Logical (N, C, H, W) or (K, C, kh, kw) dims, whatever the layout.
type Dims4 = (usize, usize, usize, usize);

/// (device, dtype, layouts, [n, c, h, w, k, kh, kw, stride, padding], byte alignment).
type GraphKey = (DeviceId, DType, Layouts, [usize; 9], usize);

/// How the operands are stored: x and y channels last or NCHW, and w channels last or not on
/// its own (a weight stored channels last also serves an NCHW convolution).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Layouts {
    nhwc: bool,
    w_nhwc: bool,
}

impl Layouts {
    /// Everything channels last, as the half types' convolutions run.
    const NHWC: Layouts = Layouts {
        nhwc: true,
        w_nhwc: true,
    };

    fn name(self) -> &'static str {
        match (self.nhwc, self.w_nhwc) {
            (true, true) => "nhwc",
            (false, false) => "nchw",
            (false, true) => "nchw, w nhwc",
            (true, false) => "nhwc, w nchw",
        }
    }
}

thread_local! {
    // None: no engine finalized for the shape, which stays on the legacy path.
    static PLANS: RefCell<HashMap<GraphKey, Option<Rc<GraphPlan>>>> = RefCell::new(HashMap::new());
}

/// The tensors' unique ids in the operation graph and the variant pack.
const X_UID: i64 = 1;
const W_UID: i64 = 2;
const Y_UID: i64 = 3;

/// Cross-correlation of x (N, C, H, W) with w (K, C, kh, kw), square stride and padding, through
/// the graph API; None when no engine finalizes for the shape (the caller takes the legacy path).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Option<Tensor>> {
    conv2d_in_layout(x, w, stride, padding, channels_last(x))
}

/// [`conv2d`] with the layout cuDNN is given chosen here: channels last (through transposes of
/// x and y) or NCHW strides as they are, where cuDNN's engines change the layout themselves as
/// they do for PyTorch's NCHW tensors (bench-ops times both). A weight stored channels last
/// ([`crate::nn::ops::channels_last_backed`]) is read in place either way.
pub fn conv2d_in_layout(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    nhwc: bool,
) -> Result<Option<Tensor>> {
    let (dims, w_dims) = (x.dims4()?, w.dims4()?);
    let (x, w, layouts) = if nhwc {
        (to_channels_last(x)?, to_channels_last(w)?, Layouts::NHWC)
    } else {
        let (w, w_nhwc) = match stored_channels_last(w)? {
            Some(stored) if !w.is_contiguous() => (stored, true),
            _ => (w.contiguous()?, false),
        };
        (x.contiguous()?, w, Layouts { nhwc, w_nhwc })
    };
    let align = alignment(&x).min(alignment(&w));
    let Some(op) = prepare(&x, dims, &w, w_dims, (stride, padding), layouts, align)? else {
        return Ok(None);
    };
    let y = x.apply_op2_no_bwd(&w, &op)?;
    if nhwc {
        from_channels_last(&y).map(Some)
    } else {
        Ok(Some(y))
    }
}

/// The same convolution of x given channels last, (N, H, W, C), answered channels last,
/// (N, H', W', K): for a GroupNorm that already wrote its output that way (conv.rs).
pub fn conv2d_channels_last(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Option<Tensor>> {
    let w_dims = w.dims4()?;
    let (x, w) = (x.contiguous()?, to_channels_last(w)?);
    let (n, h, wd, c) = x.dims4()?;
    let align = alignment(&x).min(alignment(&w));
    let Some(op) = prepare(
        &x,
        (n, c, h, wd),
        &w,
        w_dims,
        (stride, padding),
        Layouts::NHWC,
        align,
    )?
    else {
        return Ok(None);
    };
    x.apply_op2_no_bwd(&w, &op).map(Some)
}

/// The cached plan for convolving x, of logical shape (N, C, H, W), with w of logical shape
/// (K, C, kh, kw), stored in the given layouts, as the op that runs it; None when no engine
/// finalizes for the shape.
fn prepare(
    x: &Tensor,
    (n, c, h, wd): Dims4,
    w: &Tensor,
    (k, wc, kh, kw): Dims4,
    (stride, padding): (usize, usize),
    layouts: Layouts,
    align: usize,
) -> Result<Option<GraphConv2d>> {
    let dtype = x.dtype();
    if wc != c || w.dtype() != dtype || h + 2 * padding < kh || wd + 2 * padding < kw {
        candle_core::bail!(
            "cudnn graph conv: input {:?} {:?} and weight {:?} {:?}",
            x.shape(),
            dtype,
            w.shape(),
            w.dtype()
        );
    }
    let dev = x.device().as_cuda_device()?;
    let conv = Conv {
        x: [n, c, h, wd],
        w: [k, c, kh, kw],
        y: [
            n,
            k,
            (h + 2 * padding - kh) / stride + 1,
            (wd + 2 * padding - kw) / stride + 1,
        ],
        stride,
        padding,
        layouts,
    };
    let key: GraphKey = (
        dev.id(),
        dtype,
        layouts,
        [n, c, h, wd, k, kh, kw, stride, padding],
        align,
    );
    let Some(plan) = cached_plan(dev, key, &conv)? else {
        return Ok(None);
    };
    let [_, _, oh, ow] = conv.y;
    Ok(Some(GraphConv2d {
        plan,
        out: if layouts.nhwc {
            Shape::from((n, oh, ow, k))
        } else {
            Shape::from((n, k, oh, ow))
        },
    }))
}

/// The byte alignment (up to 16) of a contiguous tensor's first element, given that candle's
/// allocations are at least 256-byte aligned (checked again on the pointers before each run).
fn alignment(t: &Tensor) -> usize {
    let bytes = t.layout().start_offset() * t.dtype().size_in_bytes();
    if bytes == 0 {
        16
    } else {
        (1usize << bytes.trailing_zeros()).min(16)
    }
}

/// The cached plan for a shape, built on first use.
fn cached_plan(dev: &CudaDevice, key: GraphKey, conv: &Conv) -> Result<Option<Rc<GraphPlan>>> {
    if let Some(cached) = PLANS.with(|p| p.borrow().get(&key).cloned()) {
        return Ok(cached);
    }
    let stream = dev.cuda_stream();
    let (dtype, layouts, shape, align) = (key.1, key.2, key.3, key.4);
    let pick = match search_width() {
        0 => Pick::First,
        width => {
            let mut disk = super::cudnn_conv::disk_key(dev, dtype, layouts.nhwc, shape)?;
            disk.layout = format!("{} graph", layouts.name());
            match conv_algorithms::lookup(&disk) {
                Some(c) => Pick::Recorded {
                    engine: i64::from(c.algo),
                    rank: usize::try_from(c.math_type).unwrap_or(usize::MAX),
                },
                None => Pick::Timed {
                    width,
                    stream: stream.clone(),
                    disk,
                    elem: dtype.size_in_bytes(),
                },
            }
        }
    };
    let built = match GraphPlan::build(handle(dev, &stream)?, data_type(dtype)?, conv, align, pick)
    {
        Ok(plan) => {
            if log_enabled() {
                eprintln!(
                    "cudnn graph {} {:?} x{:?} w{:?} stride {} pad {}: engine {} (config {} of {}), \
                     workspace {} KiB{}",
                    conv.layouts.name(),
                    dtype,
                    conv.x,
                    conv.w,
                    conv.stride,
                    conv.padding,
                    plan.engine,
                    plan.rank + 1,
                    plan.configs,
                    plan.workspace >> 10,
                    plan.how
                );
            }
            Some(Rc::new(plan))
        }
        Err(f) if f.unsupported() => {
            if log_enabled() {
                eprintln!(
                    "cudnn graph {} {:?} x{:?} w{:?} stride {} pad {}: no engine ({f}); legacy path",
                    conv.layouts.name(),
                    dtype,
                    conv.x,
                    conv.w,
                    conv.stride,
                    conv.padding
                );
            }
            None
        }
        Err(f) => return Err(candle_core::Error::Msg(format!("cudnn graph conv: {f}"))),
    };
    PLANS.with(|p| p.borrow_mut().insert(key, built.clone()));
    Ok(built)
}

/// Logical [N, C, H, W] / [K, C, kh, kw] / [N, K, OH, OW] dims and the convolution's geometry.
#[derive(Clone, Copy)]
struct Conv {
    x: [usize; 4],
    w: [usize; 4],
    y: [usize; 4],
    stride: usize,
    padding: usize,
    layouts: Layouts,
}

impl Conv {
    /// The largest workspace an engine may ask for. Channels last, and f32 (native NCHW), keep
    /// the fixed cap. A half-type NCHW convolution may also have what vivify's transposes would
    /// allocate instead, copies of x and y: the engines that change the layout themselves (as
    /// PyTorch's NCHW convolutions run) keep those copies in their workspace, which at the
    /// UNet's 64x64 and the VAE's shapes is above the fixed cap.
    fn workspace_cap(&self, half: bool) -> usize {
        if self.layouts.nhwc || !half {
            return WORKSPACE_CAP;
        }
        let bytes = |dims: [usize; 4]| dims.iter().product::<usize>() * 2;
        WORKSPACE_CAP.max(bytes(self.x) + bytes(self.y))
    }
}

/// Strides of logical [N, C, H, W] dims, stored NHWC (C fastest) or NCHW.
fn strides([_, c, h, w]: [usize; 4], nhwc: bool) -> [i64; 4] {
    let s = if nhwc {
        [h * w * c, 1, w * c, c]
    } else {
        [c * h * w, h * w, w, 1]
    };
    s.map(|v| v as i64)
}

/// A failed cuDNN call: the step, its status, and cuDNN's own last message.
struct Failure {
    step: String,
    status: sys::cudnnStatus_t,
    detail: String,
}

impl Failure {
    /// CUDNN_STATUS_NOT_SUPPORTED and its sub-codes (3000-3999): this engine or graph does not
    /// cover the case, which is no bug; other statuses (BAD_PARAM, ...) mean a malformed call.
    fn unsupported(&self) -> bool {
        (3000..4000).contains(&(self.status as u32))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}", self.step, self.status)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

type Step<T> = std::result::Result<T, Failure>;

fn check(status: sys::cudnnStatus_t, step: impl FnOnce() -> String) -> Step<()> {
    if status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        return Ok(());
    }
    let mut buf = [0 as std::ffi::c_char; 512];
    // SAFETY: cuDNN writes a NUL-terminated message of at most `buf.len()` bytes.
    let detail = unsafe {
        sys::cudnnGetLastErrorString(buf.as_mut_ptr(), buf.len());
        std::ffi::CStr::from_ptr(buf.as_ptr())
    };
    Err(Failure {
        step: step(),
        status,
        detail: detail.to_string_lossy().trim().to_string(),
    })
}

/// One backend descriptor, destroyed with its owner. The setters take the C type each attribute
/// type names (cudnn_graph_v9.h / the backend API reference), so type and pointer always agree.
struct Desc(sys::cudnnBackendDescriptor_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnBackendCreateDescriptor, destroyed once.
        unsafe { sys::cudnnBackendDestroyDescriptor(self.0) };
    }
}

impl Desc {
    fn new(kind: Kind) -> Step<Self> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: out-pointer to a fresh descriptor, owned from here on.
        check(
            unsafe { sys::cudnnBackendCreateDescriptor(kind, &mut raw) },
            || format!("create {kind:?}"),
        )?;
        Ok(Desc(raw))
    }

    /// Sets `name` to `values`.
    ///
    /// SAFETY: `T` is the C type that `ty` names.
    unsafe fn set<T>(&self, name: Attr, ty: Type, values: &[T]) -> Step<()> {
        let (count, ptr) = (values.len() as i64, values.as_ptr().cast());
        // SAFETY: `count` elements of the type `ty` names, as the caller guarantees.
        let status = unsafe { sys::cudnnBackendSetAttribute(self.0, name, ty, count, ptr) };
        check(status, || format!("set {name:?}"))
    }

    fn set_i64s(&self, name: Attr, values: &[i64]) -> Step<()> {
        // SAFETY: CUDNN_TYPE_INT64 elements are int64_t.
        unsafe { self.set(name, Type::CUDNN_TYPE_INT64, values) }
    }

    fn set_data_type(&self, name: Attr, value: sys::cudnnDataType_t) -> Step<()> {
        // SAFETY: a CUDNN_TYPE_DATA_TYPE element is a cudnnDataType_t.
        unsafe { self.set(name, Type::CUDNN_TYPE_DATA_TYPE, &[value]) }
    }

    fn set_f32(&self, name: Attr, value: f32) -> Step<()> {
        // SAFETY: a CUDNN_TYPE_FLOAT element is a float.
        unsafe { self.set(name, Type::CUDNN_TYPE_FLOAT, &[value]) }
    }

    fn set_handle(&self, name: Attr, handle: &Handle) -> Step<()> {
        // SAFETY: a CUDNN_TYPE_HANDLE element is a cudnnHandle_t.
        unsafe { self.set(name, Type::CUDNN_TYPE_HANDLE, &[handle.0]) }
    }

    fn set_descs(&self, name: Attr, values: &[&Desc]) -> Step<()> {
        let raw: Vec<sys::cudnnBackendDescriptor_t> = values.iter().map(|d| d.0).collect();
        // SAFETY: CUDNN_TYPE_BACKEND_DESCRIPTOR elements are cudnnBackendDescriptor_t.
        unsafe { self.set(name, Type::CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw) }
    }

    fn set_ptrs(&self, name: Attr, values: &[*mut c_void]) -> Step<()> {
        // SAFETY: CUDNN_TYPE_VOID_PTR elements are void*.
        unsafe { self.set(name, Type::CUDNN_TYPE_VOID_PTR, values) }
    }

    fn finalize(&self, step: impl FnOnce() -> String) -> Step<()> {
        // SAFETY: a live descriptor.
        check(unsafe { sys::cudnnBackendFinalize(self.0) }, step)
    }

    /// Reads up to `out.len()` elements of the C type `ty` into `out`; returns how many cuDNN
    /// wrote.
    ///
    /// SAFETY: `T` is the C type `ty` names.
    unsafe fn get_raw<T>(&self, name: Attr, ty: Type, out: &mut [T]) -> Step<usize> {
        let mut count = 0i64;
        // SAFETY: cuDNN writes at most `out.len()` elements of `T`, as the caller guarantees.
        let status = unsafe {
            sys::cudnnBackendGetAttribute(
                self.0,
                name,
                ty,
                out.len() as i64,
                &mut count,
                out.as_mut_ptr().cast(),
            )
        };
        check(status, || format!("get {name:?}"))?;
        Ok(count.clamp(0, out.len() as i64) as usize)
    }

    fn get_i64(&self, name: Attr) -> Step<i64> {
        let mut v = [0i64];
        // SAFETY: CUDNN_TYPE_INT64 elements are int64_t.
        unsafe { self.get_raw(name, Type::CUDNN_TYPE_INT64, &mut v)? };
        Ok(v[0])
    }

    /// How many descriptors `name` holds (a query with no room for any).
    fn count_descs(&self, name: Attr) -> Step<usize> {
        let mut count = 0i64;
        // SAFETY: a count query: cuDNN writes only the count.
        let status = unsafe {
            sys::cudnnBackendGetAttribute(
                self.0,
                name,
                Type::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                0,
                &mut count,
                std::ptr::null_mut(),
            )
        };
        check(status, || format!("count {name:?}"))?;
        Ok(count.max(0) as usize)
    }

    /// Copies `name`'s descriptors into `out`, created beforehand with the right kind (cuDNN
    /// fills caller-owned descriptors); returns how many it filled.
    fn get_descs(&self, name: Attr, out: &[Desc]) -> Step<usize> {
        let mut raw: Vec<sys::cudnnBackendDescriptor_t> = out.iter().map(|d| d.0).collect();
        // SAFETY: CUDNN_TYPE_BACKEND_DESCRIPTOR elements are cudnnBackendDescriptor_t; cuDNN
        // fills the descriptors they name, which stay owned by `out`.
        unsafe { self.get_raw(name, Type::CUDNN_TYPE_BACKEND_DESCRIPTOR, &mut raw) }
    }
}

/// A finalized execution plan for one convolution shape, with everything it was built from kept
/// alive as long as it (cudnn-frontend's plans hold their engine config the same way).
struct GraphPlan {
    plan: Desc,
    /// The chosen config, then the heuristics, graph, operation, convolution and tensors, in the
    /// order they can be destroyed.
    _sources: Vec<Desc>,
    handle: Rc<Handle>,
    workspace: usize,
    /// The byte alignment the tensors were described with; the pointers are checked against it.
    align: usize,
    /// The engine's global index, its config's rank among the heuristics' results, and their
    /// number (for VIVIFY_CONV_LOG).
    engine: i64,
    rank: usize,
    configs: usize,
    /// How the config was picked, for VIVIFY_CONV_LOG: "" (heuristics' first), or the timings
    /// or the record it came from.
    how: String,
}

/// How [`GraphPlan::build`] picks among the configs that pass the filters and finalize.
enum Pick {
    /// The heuristics' best ranked, as PyTorch picks without `cudnn.benchmark`.
    First,
    /// The config a search recorded on disk, if the heuristics still rank that engine there.
    Recorded { engine: i64, rank: usize },
    /// The fastest of the first `width`, timed on scratch buffers, then recorded on disk.
    Timed {
        width: usize,
        stream: Arc<CudaStream>,
        disk: conv_algorithms::ConvKey,
        /// Bytes per element of the scratch buffers.
        elem: usize,
    },
}

/// `VIVIFY_CONV_GRAPH_SEARCH=N`: time the first N configs per shape and keep the fastest (as
/// `torch.backends.cudnn.benchmark` does); 0 or unset takes the heuristics' first. Read once.
pub(super) fn search_width() -> usize {
    static WIDTH: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *WIDTH.get_or_init(|| {
        let raw = std::env::var("VIVIFY_CONV_GRAPH_SEARCH").unwrap_or_default();
        raw.trim().parse().unwrap_or_else(|_| {
            if !raw.trim().is_empty() {
                eprintln!(
                    "warning: VIVIFY_CONV_GRAPH_SEARCH={raw:?} is not a number of configs; \
                     taking cuDNN's heuristics' first"
                );
            }
            0
        })
    })
}

/// A config that passed the filters, with its finalized plan (declared first: dropped before
/// the config it was built from).
struct Viable {
    plan: Desc,
    cfg: Desc,
    rank: usize,
    engine: i64,
    workspace: usize,
}

/// The finalized convolution forward operation and the descriptors it refers to.
struct Operation {
    op: Desc,
    conv: Desc,
    x: Desc,
    w: Desc,
    y: Desc,
}

impl Operation {
    /// Describes `conv` on tensors of `dtype` aligned to `align` bytes. Needs no handle and no
    /// device: only the operation graph and what follows it do.
    fn describe(dtype: sys::cudnnDataType_t, conv: &Conv, align: usize) -> Step<Self> {
        let tensor = |uid: i64, dims: [usize; 4]| -> Step<Desc> {
            let t = Desc::new(Kind::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
            t.set_data_type(Attr::CUDNN_ATTR_TENSOR_DATA_TYPE, dtype)?;
            t.set_i64s(Attr::CUDNN_ATTR_TENSOR_DIMENSIONS, &dims.map(|v| v as i64))?;
            let nhwc = match uid {
                W_UID => conv.layouts.w_nhwc,
                _ => conv.layouts.nhwc,
            };
            t.set_i64s(Attr::CUDNN_ATTR_TENSOR_STRIDES, &strides(dims, nhwc))?;
            t.set_i64s(Attr::CUDNN_ATTR_TENSOR_UNIQUE_ID, &[uid])?;
            t.set_i64s(Attr::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, &[align as i64])?;
            t.finalize(|| format!("finalize tensor {uid} {dims:?}"))?;
            Ok(t)
        };
        let (x, w, y) = (
            tensor(X_UID, conv.x)?,
            tensor(W_UID, conv.w)?,
            tensor(Y_UID, conv.y)?,
        );

        let desc = Desc::new(Kind::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
        let (s, p) = (conv.stride as i64, conv.padding as i64);
        desc.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, &[2])?;
        // f32 accumulation for every dtype, as the legacy path and PyTorch do.
        desc.set_data_type(
            Attr::CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
            sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
        )?;
        // SAFETY: a CUDNN_TYPE_CONVOLUTION_MODE element is a cudnnConvolutionMode_t.
        unsafe {
            desc.set(
                Attr::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
                Type::CUDNN_TYPE_CONVOLUTION_MODE,
                &[sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
            )?
        };
        desc.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, &[p, p])?;
        desc.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, &[p, p])?;
        desc.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, &[s, s])?;
        desc.set_i64s(Attr::CUDNN_ATTR_CONVOLUTION_DILATIONS, &[1, 1])?;
        desc.finalize(|| "finalize convolution descriptor".into())?;

        let op = Desc::new(Kind::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
        op.set_descs(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, &[&x])?;
        op.set_descs(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, &[&w])?;
        op.set_descs(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, &[&y])?;
        op.set_descs(
            Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
            &[&desc],
        )?;
        // Float scalars with a float compute type (double only for double compute).
        op.set_f32(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, 1.0)?;
        op.set_f32(Attr::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, 0.0)?;
        op.finalize(|| "finalize convolution forward operation".into())?;
        Ok(Operation {
            op,
            conv: desc,
            x,
            w,
            y,
        })
    }
}

impl GraphPlan {
    fn build(
        handle: Rc<Handle>,
        dtype: sys::cudnnDataType_t,
        shape: &Conv,
        align: usize,
        pick: Pick,
    ) -> Step<Self> {
        let Operation { op, conv, x, w, y } = Operation::describe(dtype, shape, align)?;
        let graph = Desc::new(Kind::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        graph.set_handle(Attr::CUDNN_ATTR_OPERATIONGRAPH_HANDLE, &handle)?;
        graph.set_descs(Attr::CUDNN_ATTR_OPERATIONGRAPH_OPS, &[&op])?;
        graph.finalize(|| "finalize operation graph".into())?;

        let heur = Desc::new(Kind::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
        heur.set_descs(Attr::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, &[&graph])?;
        // SAFETY: a CUDNN_TYPE_HEUR_MODE element is a cudnnBackendHeurMode_t.
        unsafe {
            heur.set(
                Attr::CUDNN_ATTR_ENGINEHEUR_MODE,
                Type::CUDNN_TYPE_HEUR_MODE,
                &[sys::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A],
            )?
        };
        heur.finalize(|| "finalize engine heuristics (mode A)".into())?;
        let count = heur.count_descs(Attr::CUDNN_ATTR_ENGINEHEUR_RESULTS)?;
        let mut configs = (0..count)
            .map(|_| Desc::new(Kind::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
            .collect::<Step<Vec<_>>>()?;
        let filled = heur.get_descs(Attr::CUDNN_ATTR_ENGINEHEUR_RESULTS, &configs)?;
        configs.truncate(filled);
        let total = configs.len();

        // Ranked best first: the configs that pass the filters and finalize, as far as `pick`
        // looks (cudnn-frontend's and PyTorch's heuristics modes take the first).
        let wanted = match &pick {
            Pick::First => 1,
            Pick::Recorded { rank, .. } => rank.saturating_add(1),
            Pick::Timed { width, .. } => *width,
        };
        let f32_math = dtype == sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let workspace_cap = shape.workspace_cap(!f32_math);
        let mut viable = Vec::new();
        let mut skipped = Vec::new();
        let mut malformed = None;
        for (rank, cfg) in configs.into_iter().enumerate() {
            if viable.len() == wanted {
                break;
            }
            let engine = Desc::new(Kind::CUDNN_BACKEND_ENGINE_DESCRIPTOR)?;
            cfg.get_descs(
                Attr::CUDNN_ATTR_ENGINECFG_ENGINE,
                std::slice::from_ref(&engine),
            )?;
            let index = engine.get_i64(Attr::CUDNN_ATTR_ENGINE_GLOBAL_INDEX)?;
            if let Some(note) = excluded_note(&engine, f32_math)? {
                skipped.push(format!("engine {index}: {note}"));
                continue;
            }
            let plan = Desc::new(Kind::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
            plan.set_handle(Attr::CUDNN_ATTR_EXECUTION_PLAN_HANDLE, &handle)?;
            plan.set_descs(Attr::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, &[&cfg])?;
            if let Err(f) = plan.finalize(|| format!("finalize execution plan for engine {index}"))
            {
                skipped.push(format!("engine {index}: {:?}", f.status));
                // Keep the first real error: if no engine finalizes it is reported, not hidden.
                if !f.unsupported() && malformed.is_none() {
                    malformed = Some(f);
                }
                continue;
            }
            let workspace = plan.get_i64(Attr::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)?;
            let workspace = usize::try_from(workspace).unwrap_or(usize::MAX);
            if workspace > workspace_cap {
                skipped.push(format!("engine {index}: workspace {} MiB", workspace >> 20));
                continue;
            }
            viable.push(Viable {
                plan,
                cfg,
                rank,
                engine: index,
                workspace,
            });
        }
        if viable.is_empty() {
            return Err(malformed.unwrap_or(Failure {
                step: format!(
                    "none of {total} engine configs finalized [{}]",
                    skipped.join(", ")
                ),
                status: sys::cudnnStatus_t::CUDNN_STATUS_NOT_SUPPORTED,
                detail: String::new(),
            }));
        }
        let (chosen, how) = match pick {
            Pick::First => (0, String::new()),
            Pick::Recorded { engine, rank } => {
                match viable
                    .iter()
                    .position(|v| v.rank == rank && v.engine == engine)
                {
                    Some(i) => (i, ", recorded by a search".to_string()),
                    None => (0, format!(", the recorded engine {engine} is gone")),
                }
            }
            Pick::Timed {
                stream, disk, elem, ..
            } => {
                // A config that fails to run is passed over (its error logged), not fatal.
                let ms: Vec<std::result::Result<f64, String>> = viable
                    .iter()
                    .map(|v| {
                        time_plan(&handle, &stream, &v.plan, v.workspace, shape, elem)
                            .map_err(|e| e.to_string())
                    })
                    .collect();
                let time = |i: usize| ms[i].clone().unwrap_or(f64::INFINITY);
                let best = (0..ms.len())
                    .min_by(|&a, &b| time(a).total_cmp(&time(b)))
                    .unwrap_or(0);
                if time(best).is_finite() {
                    conv_algorithms::record(
                        disk,
                        conv_algorithms::Choice {
                            algo: viable[best].engine as i32,
                            math_type: viable[best].rank as i32,
                            workspace_bytes: viable[best].workspace as u64,
                            time_ms: time(best) as f32,
                        },
                    );
                }
                let times: Vec<String> = viable
                    .iter()
                    .zip(&ms)
                    .map(|(v, t)| match t {
                        Ok(t) => format!("{} {t:.3} ms", v.engine),
                        Err(e) => format!("{} failed ({e})", v.engine),
                    })
                    .collect();
                (best, format!(", timed: {}", times.join(", ")))
            }
        };
        let v = viable.swap_remove(chosen);
        Ok(GraphPlan {
            plan: v.plan,
            _sources: vec![v.cfg, heur, graph, op, conv, x, w, y],
            handle,
            workspace: v.workspace,
            align,
            engine: v.engine,
            rank: v.rank,
            configs: total,
            how,
        })
    }

    fn run(&self, stream: &Arc<CudaStream>, ptrs: [*mut c_void; 3]) -> Result<()> {
        for (p, name) in ptrs.iter().zip(["x", "w", "y"]) {
            if p.addr() % self.align != 0 {
                candle_core::bail!(
                    "cudnn graph conv: {name} at {p:?} is not {}-byte aligned as planned",
                    self.align
                );
            }
        }
        let workspace = if self.workspace > 0 {
            // SAFETY: scratch space only.
            Some(unsafe { stream.alloc::<u8>(self.workspace) }.map_err(candle_core::Error::wrap)?)
        } else {
            None
        };
        let guard = workspace.as_ref().map(|ws| ws.device_ptr(stream));
        let ws_ptr = guard
            .as_ref()
            .map_or(std::ptr::null_mut(), |(p, _)| *p as *mut c_void);
        // SAFETY: the plan describes these buffers (shapes, strides, alignment checked above);
        // the workspace holds what the plan asked for.
        unsafe { execute(&self.handle, &self.plan, ptrs, ws_ptr) }.map_err(|f| {
            candle_core::Error::Msg(format!("cudnn graph conv: {f} (engine {})", self.engine))
        })
    }
}

/// Runs an execution plan on x, w, y with a workspace.
///
/// SAFETY: the buffers are as the plan describes them, and the workspace as large as it asked.
unsafe fn execute(
    handle: &Handle,
    plan: &Desc,
    ptrs: [*mut c_void; 3],
    workspace: *mut c_void,
) -> Step<()> {
    let pack = Desc::new(Kind::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
    pack.set_ptrs(Attr::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, &ptrs)?;
    pack.set_i64s(
        Attr::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
        &[X_UID, W_UID, Y_UID],
    )?;
    pack.set_ptrs(Attr::CUDNN_ATTR_VARIANT_PACK_WORKSPACE, &[workspace])?;
    pack.finalize(|| "finalize variant pack".into())?;
    // SAFETY: as the caller guarantees.
    let status = unsafe { sys::cudnnBackendExecute(handle.0, plan.0, pack.0) };
    check(status, || "execute".into())
}

/// Milliseconds per run of `plan` for `conv`: three runs after a warm-up, on zeroed scratch
/// buffers of the convolution's sizes (the tensor-core kernels' time does not depend on the
/// values).
fn time_plan(
    handle: &Handle,
    stream: &Arc<CudaStream>,
    plan: &Desc,
    workspace: usize,
    conv: &Conv,
    elem: usize,
) -> Result<f64> {
    let bytes = |dims: [usize; 4]| dims.iter().product::<usize>() * elem;
    let alloc = |n: usize| {
        stream
            .alloc_zeros::<u8>(n.max(1))
            .map_err(candle_core::Error::wrap)
    };
    let (x, w, mut y, mut ws) = (
        alloc(bytes(conv.x))?,
        alloc(bytes(conv.w))?,
        alloc(bytes(conv.y))?,
        alloc(workspace)?,
    );
    let (xp, _xg) = x.device_ptr(stream);
    let (wp, _wg) = w.device_ptr(stream);
    let (yp, _yg) = y.device_ptr_mut(stream);
    let (wsp, _wsg) = ws.device_ptr_mut(stream);
    let ptrs = [xp as *mut c_void, wp as *mut c_void, yp as *mut c_void];
    let run = || -> Result<()> {
        // SAFETY: buffers of the sizes the plan describes (cudarc's allocations are at least
        // 256-byte aligned) and a workspace of the size it asked for.
        unsafe { execute(handle, plan, ptrs, wsp as *mut c_void) }
            .map_err(|f| candle_core::Error::Msg(format!("cudnn graph conv: {f}")))
    };
    let sync = || stream.synchronize().map_err(candle_core::Error::wrap);
    run()?;
    sync()?;
    let start = std::time::Instant::now();
    for _ in 0..3 {
        run()?;
    }
    sync()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / 3.0)
}

/// The numerical note that rules an engine out, as PyTorch filters them: inputs down-converted
/// (always) and tensor cores for f32 (as PyTorch with TF32 off: TF32 would break f32's agreement
/// with the CPU, which the legacy path's FMA math keeps).
fn excluded_note(engine: &Desc, f32_math: bool) -> Step<Option<&'static str>> {
    use sys::cudnnBackendNumericalNote_t as Note;
    // Read as plain integers: a newer cuDNN may report notes this binding's enum lacks.
    let mut notes = [0u32; 32];
    // SAFETY: CUDNN_TYPE_NUMERICAL_NOTE elements are cudnnBackendNumericalNote_t, a C enum
    // (32 bits).
    let n = unsafe {
        engine.get_raw(
            Attr::CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
            Type::CUDNN_TYPE_NUMERICAL_NOTE,
            &mut notes,
        )?
    };
    let has = |note: Note| notes[..n].contains(&(note as u32));
    Ok(if has(Note::CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) {
        Some("down-converts inputs")
    } else if f32_math && has(Note::CUDNN_NUMERICAL_NOTE_TENSOR_CORE) {
        Some("tensor cores (TF32) for f32")
    } else {
        None
    })
}

/// Runs a plan on (x, w), channels last or NCHW as the plan was built, into a fresh y.
struct GraphConv2d {
    plan: Rc<GraphPlan>,
    out: Shape,
}

impl CustomOp2 for GraphConv2d {
    fn name(&self) -> &'static str {
        "vivify-cudnn-graph-conv2d"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("vivify-cudnn-graph-conv2d runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        xl: &Layout,
        w: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        if !xl.is_contiguous() || !wl.is_contiguous() {
            candle_core::bail!("cudnn graph conv: operands must be contiguous");
        }
        let y = match x.dtype() {
            DType::F16 => self.launch::<half::f16>((x, xl), (w, wl))?,
            DType::BF16 => self.launch::<half::bf16>((x, xl), (w, wl))?,
            DType::F32 => self.launch::<f32>((x, xl), (w, wl))?,
            other => candle_core::bail!("cudnn graph conv: unsupported dtype {other:?}"),
        };
        Ok((y, self.out.clone()))
    }
}

impl GraphConv2d {
    fn launch<T: CudaDType + DeviceRepr>(
        &self,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        let dev = x.device().clone();
        let stream = dev.cuda_stream();
        // SAFETY: the plan writes every element of the output (beta = 0).
        let mut y = unsafe { dev.alloc::<T>(self.out.elem_count())? };
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        let (xp, _xg) = xs.device_ptr(&stream);
        let (wp, _wg) = ws.device_ptr(&stream);
        let (yp, _yg) = y.device_ptr_mut(&stream);
        self.plan.run(
            &stream,
            [xp as *mut c_void, wp as *mut c_void, yp as *mut c_void],
        )?;
        drop((_xg, _wg, _yg));
        Ok(CudaStorage::wrap_cuda_slice(y, dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::cudnnDataType_t as D;

    fn conv(x: [usize; 4], k: usize, kernel: usize, stride: usize, padding: usize) -> Conv {
        let [n, c, h, w] = x;
        let out = |v: usize| (v + 2 * padding - kernel) / stride + 1;
        Conv {
            x,
            w: [k, c, kernel, kernel],
            y: [n, k, out(h), out(w)],
            stride,
            padding,
            layouts: Layouts::NHWC,
        }
    }

    /// The descriptors up to the convolution operation are finalized on the host, where cuDNN
    /// checks each attribute's type and count and that the shapes agree: this checks the FFI
    /// (cudarc's enum values against the loaded library, the attribute types, float scalars)
    /// without a device. The operation graph onward needs a handle (cuda_ops covers it).
    /// scripts/build-cuda.sh runs this after the build.
    #[test]
    fn the_convolution_operation_finalizes_on_the_host() {
        let cases = [
            conv([2, 320, 64, 64], 320, 3, 1, 1),
            conv([2, 320, 64, 64], 640, 1, 1, 0),
            conv([2, 640, 64, 64], 640, 3, 2, 1),
            conv([1, 4, 16, 16], 320, 3, 1, 1),
        ];
        for dtype in [
            D::CUDNN_DATA_HALF,
            D::CUDNN_DATA_BFLOAT16,
            D::CUDNN_DATA_FLOAT,
        ] {
            for mut case in cases {
                for (nhwc, w_nhwc) in [(true, true), (false, false), (false, true)] {
                    case.layouts = Layouts { nhwc, w_nhwc };
                    let op = Operation::describe(dtype, &case, 16).unwrap_or_else(|f| {
                        panic!("{dtype:?} {:?} {}: {f}", case.x, case.layouts.name())
                    });
                    let mut dims = [0i64; 8];
                    // SAFETY: CUDNN_TYPE_INT64 elements are int64_t.
                    let n = unsafe {
                        op.y.get_raw(
                            Attr::CUDNN_ATTR_TENSOR_DIMENSIONS,
                            Type::CUDNN_TYPE_INT64,
                            &mut dims,
                        )
                    }
                    .unwrap_or_else(|f| panic!("{f}"));
                    assert_eq!(dims[..n], case.y.map(|v| v as i64));
                }
            }
        }
    }

    /// An NCHW half-type convolution may take a workspace as large as the transposes' copies of
    /// x and y (the layout-changing engines need that much at the UNet's 64x64 shapes); the
    /// other layouts and f32 keep the fixed cap.
    #[test]
    fn the_nchw_workspace_cap_covers_copies_of_x_and_y() {
        let mut unet = conv([16, 320, 64, 64], 320, 3, 1, 1);
        let copies = 2 * (16 * 320 * 64 * 64 * 2);
        assert!(copies > WORKSPACE_CAP);
        assert_eq!(unet.workspace_cap(true), WORKSPACE_CAP);
        unet.layouts = Layouts {
            nhwc: false,
            w_nhwc: true,
        };
        assert_eq!(unet.workspace_cap(true), copies);
        assert_eq!(unet.workspace_cap(false), WORKSPACE_CAP);
        let small = Conv {
            layouts: unet.layouts,
            ..conv([2, 320, 16, 16], 320, 3, 1, 1)
        };
        assert_eq!(small.workspace_cap(true), WORKSPACE_CAP);
        let down = Conv {
            layouts: unet.layouts,
            ..conv([1, 128, 512, 512], 128, 3, 2, 1)
        };
        assert_eq!(
            down.workspace_cap(true),
            (128 * 512 * 512 + 128 * 256 * 256) * 2
        );
    }

    /// cuDNN does check: an output shape that disagrees with the convolution fails to finalize.
    #[test]
    fn a_wrong_output_shape_fails_to_finalize() {
        let mut case = conv([2, 320, 64, 64], 320, 3, 1, 1);
        case.y[2] += 1;
        let err = Operation::describe(D::CUDNN_DATA_HALF, &case, 16)
            .err()
            .expect("a malformed operation finalized");
        assert!(err.step.contains("operation"), "{err}");
    }
}
