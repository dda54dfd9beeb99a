//! 2-D convolution through cuDNN set up the way PyTorch does it: f32 accumulation for half
//! types, tensor-core math allowed, the heuristic's first algorithm cached per shape. (candle's
//! own cuDNN call accumulates f16 in f16 without tensor-op math and ran 17-22x slower than
//! PyTorch on the H100.) f32 keeps FMA math so CUDA f32 stays comparable with the CPU.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{ConvForward, Cudnn, CudnnDataType, sys};
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, DeviceId};
use candle_core::{
    CudaDevice, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

type AlgoKey = (DeviceId, DType, [usize; 8]);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, as candle does.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
    static ALGOS: RefCell<HashMap<AlgoKey, sys::cudnnConvolutionFwdAlgo_t>> = RefCell::new(HashMap::new());
}

/// Cross-correlation of x (N, C, H, W) with w (K, C, kh, kw), square stride and padding.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let op = CudnnConv2d { stride, padding };
    x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &op)
}

struct CudnnConv2d {
    stride: usize,
    padding: usize,
}

impl CudnnConv2d {
    fn out_shape(
        &self,
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
    ) -> (usize, usize, usize, usize) {
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
        let xd = xl.shape().dims4()?;
        let wd = wl.shape().dims4()?;
        if xd.1 != wd.1 || !xl.is_contiguous() || !wl.is_contiguous() {
            candle_core::bail!(
                "cudnn conv2d: input {:?} and weight {:?}",
                xl.shape(),
                wl.shape()
            );
        }
        let yd = self.out_shape(xd, wd);
        let dev = x.device().clone();
        let y = match x.dtype() {
            DType::F16 => self.launch::<half::f16>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            DType::BF16 => self.launch::<half::bf16>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            DType::F32 => self.launch::<f32>(&dev, (x, xl), (w, wl), xd, wd, yd)?,
            other => candle_core::bail!("cudnn conv2d: unsupported dtype {other:?}"),
        };
        Ok((y, Shape::from(yd)))
    }
}

type Dims4 = (usize, usize, usize, usize);

impl CudnnConv2d {
    fn launch<T>(
        &self,
        dev: &CudaDevice,
        (x, xl): (&CudaStorage, &Layout),
        (w, wl): (&CudaStorage, &Layout),
        xd: Dims4,
        wd: Dims4,
        yd: Dims4,
    ) -> Result<CudaStorage>
    where
        T: CudaDType + WithDType + DeviceRepr + ValidAsZeroBits + CudnnDataType,
    {
        let cudnn = handle(dev)?;
        let i = |v: usize| v as i32;
        let mut conv = cudnn
            .create_conv2d::<f32>(
                [i(self.padding); 2],
                [i(self.stride); 2],
                [1, 1],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(candle_core::Error::wrap)?;
        let math = if T::DTYPE == DType::F32 {
            sys::cudnnMathType_t::CUDNN_FMA_MATH
        } else {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH
        };
        conv.set_math_type(math).map_err(candle_core::Error::wrap)?;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let xdesc = cudnn
            .create_4d_tensor::<T>(nchw, [i(xd.0), i(xd.1), i(xd.2), i(xd.3)])
            .map_err(candle_core::Error::wrap)?;
        let wdesc = cudnn
            .create_4d_filter::<T>(nchw, [i(wd.0), i(wd.1), i(wd.2), i(wd.3)])
            .map_err(candle_core::Error::wrap)?;
        let ydesc = cudnn
            .create_4d_tensor::<T>(nchw, [i(yd.0), i(yd.1), i(yd.2), i(yd.3)])
            .map_err(candle_core::Error::wrap)?;
        let fwd = ConvForward {
            conv: &conv,
            x: &xdesc,
            w: &wdesc,
            y: &ydesc,
        };
        let key = (
            dev.id(),
            T::DTYPE,
            [
                xd.0,
                xd.1,
                xd.2,
                xd.3,
                wd.0,
                wd.2,
                self.stride,
                self.padding,
            ],
        );
        let algo = match ALGOS.with(|a| a.borrow().get(&key).copied()) {
            Some(algo) => algo,
            None => {
                let algo = fwd.pick_algorithm().map_err(candle_core::Error::wrap)?;
                ALGOS.with(|a| a.borrow_mut().insert(key, algo));
                algo
            }
        };
        let workspace_bytes = fwd
            .get_workspace_size(algo)
            .map_err(candle_core::Error::wrap)?;
        let stream = dev.cuda_stream();
        // SAFETY: scratch space, and an output every element of which cuDNN writes (beta = 0).
        let mut workspace = unsafe { stream.alloc::<u8>(workspace_bytes.max(1)) }
            .map_err(candle_core::Error::wrap)?;
        let mut y = unsafe { dev.alloc::<T>(yd.0 * yd.1 * yd.2 * yd.3)? };
        let xs = x.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let ws = w.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        // SAFETY: the descriptors describe exactly these buffers.
        unsafe {
            fwd.launch(
                algo,
                Some(&mut workspace),
                (T::one(), T::zero()),
                &xs,
                &ws,
                &mut y,
            )
        }
        .map_err(candle_core::Error::wrap)?;
        Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
    }
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(candle_core::Error::wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}
