//! Which way a half-type NCHW convolution runs on CUDA: the ways compute the same result and the
//! fastest depends on the card and the shape. On the H200 vivify's transposes around cuDNN's
//! channels-last engines took 0.95-1.68x PyTorch's time at the UNet's and VAE's 3x3 shapes, and
//! cuBLAS's batched matmul took 2.5x at a 1x1. So the first time a shape comes, each way that
//! applies runs on the real tensors (`nn::timed_choice`, as `torch.backends.cudnn.benchmark`
//! times algorithms), the fastest is kept for the process and recorded with the cuDNN algorithm
//! choices on disk (`nn::conv_algorithms`), so a later process on the same card takes it without
//! timing (and with the same numerics). The convolutions after the channels-last handoff
//! (conv.rs) run channels last without a choice: no layout change is left to save there.
//! `VIVIFY_CUDA_DISABLE=conv_path_choice` keeps the transposes for every shape (cuBLAS for 1x1);
//! `VIVIFY_CONV_LOG=1` prints each shape's timings and choice.

use super::cudnn_conv::{self, disk_key, log_enabled};
use super::cudnn_graph_conv;
use crate::nn::conv_algorithms::{self, Choice};
use crate::nn::timed_choice::{self, Outcome};
use candle_core::cuda_backend::DeviceId;
use candle_core::{DType, Result, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;

/// One way to convolve NCHW x with w (K, C, kh, kw) into NCHW y.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ConvPath {
    /// vivify's transposes of x and y around cuDNN's channels-last engines (graph API, else the
    /// legacy API).
    Transposes,
    /// NCHW strides handed to cuDNN's graph API, whose engines change the layout themselves, as
    /// PyTorch's NCHW tensors run (`VIVIFY_CUDA_DISABLE=conv_nchw_strides`).
    NchwStrides,
    /// 1x1 only: cuBLAS's batched matmul, the weight broadcast over the batch
    /// (`conv1x1_gemm`).
    Cublas,
    /// 1x1 only: one strided-batched cuBLASLt matmul (`conv1x1_cublaslt`).
    CublasLt,
}

impl ConvPath {
    /// In the order they are timed; the first is the fallback that always runs.
    pub const ALL: [ConvPath; 4] = [
        ConvPath::Transposes,
        ConvPath::NchwStrides,
        ConvPath::Cublas,
        ConvPath::CublasLt,
    ];

    /// The name in logs and bench-ops rows.
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Transposes => "transposes",
            ConvPath::NchwStrides => "nchw_strides",
            ConvPath::Cublas => "cublas",
            ConvPath::CublasLt => "cublaslt",
        }
    }

    /// Whether this way may run for w at this stride and padding (its switch on, its kernel
    /// shape).
    pub fn applies(self, w: &Tensor, stride: usize, padding: usize) -> Result<bool> {
        let pointwise = crate::nn::conv::is_pointwise(w, stride, padding)?;
        Ok(match self {
            ConvPath::Transposes => true,
            ConvPath::NchwStrides => {
                super::enabled("cudnn_graph") && super::enabled("conv_nchw_strides")
            }
            ConvPath::Cublas => pointwise && super::enabled("conv1x1_gemm"),
            ConvPath::CublasLt => pointwise && super::enabled("conv1x1_cublaslt"),
        })
    }

    /// The convolution this way; None where it has no kernel for the case (no cuDNN engine
    /// finalizes for the shape, not a 1x1, f32 for cuBLASLt).
    pub fn run(
        self,
        x: &Tensor,
        w: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<Option<Tensor>> {
        match self {
            ConvPath::Transposes => cudnn_conv::conv2d(x, w, stride, padding).map(Some),
            ConvPath::NchwStrides => {
                cudnn_graph_conv::conv2d_in_layout(x, w, stride, padding, false)
            }
            ConvPath::Cublas => crate::nn::conv::conv1x1_gemm(x, w).map(Some),
            ConvPath::CublasLt => {
                let (n, c, h, wd) = x.dims4()?;
                let w2 = w.reshape((w.dim(0)?, c))?;
                let y = super::linear::channel_matmul(&x.reshape((n, c, h * wd))?, &w2)?;
                y.map(|y| y.reshape((n, (), h, wd))).transpose()
            }
        }
    }

    /// Its index in [`ConvPath::ALL`], as recorded on disk.
    fn index(self) -> i32 {
        ConvPath::ALL.iter().position(|&p| p == self).unwrap_or(0) as i32
    }
}

/// (device, dtype, [n, c, h, w, k, kh, kw, stride, padding], weight stored channels last).
type ChoiceKey = (DeviceId, DType, [usize; 9], bool);

thread_local! {
    static CHOSEN: RefCell<HashMap<ChoiceKey, ConvPath>> = RefCell::new(HashMap::new());
}

/// The convolution of NCHW x with w by the fastest way for its shape, or None where the choice
/// does not apply: not CUDA, not channels-last math (f32, or `VIVIFY_CONV_LAYOUT=nchw`),
/// cuDNN or the choice switched off.
pub fn convolve(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Option<Tensor>> {
    let applies = x.device().is_cuda()
        && super::enabled("cudnn_conv")
        && super::enabled("conv_path_choice")
        && cudnn_conv::channels_last(x);
    if !applies {
        return Ok(None);
    }
    let path = chosen(x, w, stride, padding)?;
    if let Some(y) = path.run(x, w, stride, padding)? {
        return Ok(Some(y));
    }
    // A way recorded by an earlier process may lack a kernel now (another alignment).
    ConvPath::Transposes.run(x, w, stride, padding)
}

/// The way chosen for this convolution's shape: from this process's choices, else from disk,
/// else by timing each way that applies.
pub fn chosen(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<ConvPath> {
    let dev = x.device().as_cuda_device()?;
    let ((n, c, h, wd), (k, _, kh, kw)) = (x.dims4()?, w.dims4()?);
    let shape = [n, c, h, wd, k, kh, kw, stride, padding];
    let w_nhwc = !w.is_contiguous() && crate::nn::ops::stored_channels_last(w)?.is_some();
    let key: ChoiceKey = (dev.id(), x.dtype(), shape, w_nhwc);
    if let Some(path) = CHOSEN.with(|c| c.borrow().get(&key).copied()) {
        return Ok(path);
    }
    let mut ways = Vec::new();
    for path in ConvPath::ALL {
        if path.applies(w, stride, padding)? {
            ways.push(path);
        }
    }
    let path = if ways.len() == 1 {
        ways[0]
    } else {
        let mut disk = disk_key(dev, x.dtype(), false, shape)?;
        // The ways timed are part of the key: a choice made with one switched off must not
        // stand for a process where it may run.
        let names: Vec<_> = ways.iter().map(|p| p.name()).collect();
        disk.layout = format!(
            "nchw path ({}){}{}",
            names.join(", "),
            if w_nhwc { ", w nhwc" } else { "" },
            match cudnn_graph_conv::search_width() {
                0 => String::new(),
                n => format!(", graph search {n}"),
            }
        );
        let recorded = conv_algorithms::lookup(&disk)
            .and_then(|c| ConvPath::ALL.get(usize::try_from(c.algo).ok()?).copied())
            .filter(|p| ways.contains(p));
        match recorded {
            Some(path) => {
                if log_enabled() {
                    eprintln!(
                        "conv path {shape:?} {:?}: {} (recorded)",
                        x.dtype(),
                        path.name()
                    );
                }
                path
            }
            None => time_ways(x, w, stride, padding, &ways, disk)?,
        }
    };
    CHOSEN.with(|c| c.borrow_mut().insert(key, path));
    Ok(path)
}

/// Times each of `ways` on x and w and gives the fastest; records it under `disk` when every
/// way ran (one that failed, say short of memory now, may be the fastest in a later process).
fn time_ways(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    ways: &[ConvPath],
    disk: conv_algorithms::ConvKey,
) -> Result<ConvPath> {
    let candidates: Vec<_> = ways
        .iter()
        .map(|&path| {
            let run = move || -> Result<bool> { Ok(path.run(x, w, stride, padding)?.is_some()) };
            (path, run)
        })
        .collect();
    let outcomes = timed_choice::time_each(&candidates, 3, &|| x.device().synchronize())?;
    let best = timed_choice::fastest(&outcomes);
    if log_enabled() {
        eprintln!(
            "conv path {:?} {:?}: {} (timed: {})",
            disk.shape,
            x.dtype(),
            best.map_or("transposes, nothing else ran", |(p, _)| p.name()),
            timed_choice::describe(&outcomes, ConvPath::name)
        );
    }
    let Some((path, ms)) = best else {
        return Ok(ConvPath::Transposes);
    };
    if !outcomes
        .iter()
        .any(|(_, o)| matches!(o, Outcome::Failed(_)))
    {
        conv_algorithms::record(
            disk,
            Choice {
                algo: path.index(),
                math_type: 0,
                workspace_bytes: 0,
                time_ms: ms as f32,
            },
        );
    }
    Ok(path)
}
