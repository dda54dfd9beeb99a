//! Fused attention on CUDA (kernels/flash_attn.cu): softmax(q kᵀ·scale) v without the score
//! matrix, for f16/bf16 and head dims 64, 80 and 128. Other cases return None so the caller
//! falls back to the chunked matmul path.

use super::kernel_module::{KernelModule, kernel_module};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, WithDType};

const KERNELS: KernelModule = kernel_module!("flash_attn");

const HEAD_DIMS: [usize; 3] = [64, 80, 128];

/// softmax(q kᵀ / √d) v over (N, H, L, D) q and (N, H, S, D) k, v, as (N, L, H, D), or None when
/// the fused kernel does not cover the case (CPU, f32, another head dim). The inputs may be strided
/// views, such as heads split from a (N, L, H·D) projection, as long as D is contiguous.
pub fn flash_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Option<Tensor>> {
    flash_attention_with(q, k, v, Tiles::from_env())
}

/// How the spatial (4-warp) kernels read K/V tiles. The temporal attention's one-warp blocks
/// always load through registers: a second stage's shared memory would cost them occupancy, and
/// their few keys fit one tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tiles {
    /// Single-buffered, through registers: the first kernel, kept as the fallback
    /// (`VIVIFY_CUDA_DISABLE=attention_async`).
    Registers,
    /// Double-buffered cp.async copies (`VIVIFY_CUDA_DISABLE=attention_ldmatrix`).
    Async,
    /// cp.async copies, fragments through ldmatrix, 128-query blocks for head dim 64 (each
    /// fragment feeds two MMAs) and a head's query blocks launched one after another (they share
    /// its K/V in L2); up to 64 queries take the `Async` kernel. The default.
    Ldmatrix,
}

impl Tiles {
    pub const ALL: [Tiles; 3] = [Tiles::Registers, Tiles::Async, Tiles::Ldmatrix];

    /// The variant VIVIFY_CUDA_DISABLE selects.
    pub fn from_env() -> Self {
        if !super::enabled("attention_async") {
            Tiles::Registers
        } else if !super::enabled("attention_ldmatrix") {
            Tiles::Async
        } else {
            Tiles::Ldmatrix
        }
    }

    /// The name VIVIFY_CUDA_DISABLE knows the variant by.
    pub fn switch(self) -> &'static str {
        match self {
            Tiles::Registers => "attention",
            Tiles::Async => "attention_async",
            Tiles::Ldmatrix => "attention_ldmatrix",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tiles::Registers => "registers",
            Tiles::Async => "async",
            Tiles::Ldmatrix => "ldmatrix",
        }
    }

    /// The kernel family and query tiles (16 rows each) per warp for head dim `d` and `l`
    /// queries (more than 16: fewer take the one-warp kernels).
    fn kernel(self, d: usize, l: usize) -> (&'static str, usize) {
        match self {
            Tiles::Registers => ("flash_attn_sync", 1),
            Tiles::Async => ("flash_attn", 1),
            // Up to 64 queries (a temporal attention over 32 frames) fit the cp.async kernel's
            // 64-query blocks: the ldmatrix kernel's 128-query blocks would hold their registers
            // for warps with no rows, two such blocks per SM.
            Tiles::Ldmatrix if l <= 64 => ("flash_attn", 1),
            // Two tiles per warp need 243 registers at head dim 64; more would spill.
            Tiles::Ldmatrix => ("flash_attn_ldm", if d == 64 { 2 } else { 1 }),
        }
    }
}

/// As `flash_attention`, with the spatial kernels' tile variant chosen by the caller.
pub fn flash_attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tiles: Tiles,
) -> Result<Option<Tensor>> {
    let d = q.dim(3)?;
    let supported = q.device().is_cuda()
        && super::enabled("attention")
        && matches!(q.dtype(), DType::F16 | DType::BF16)
        && HEAD_DIMS.contains(&d)
        && k.dtype() == q.dtype()
        && v.dtype() == q.dtype();
    if !supported {
        return Ok(None);
    }
    let op = FlashAttention {
        scale: 1.0 / (d as f32).sqrt(),
        tiles,
    };
    let (q, k, v) = (aligned(q)?, aligned(k)?, aligned(v)?);
    q.apply_op3_no_bwd(&k, &v, &op).map(Some)
}

/// D contiguous and every row starting on a 16-byte boundary, as the kernel's vector loads need;
/// otherwise a contiguous copy.
fn aligned(x: &Tensor) -> Result<Tensor> {
    let layout = x.layout();
    let strides = layout.stride();
    let rows_aligned = strides[..3].iter().all(|s| s.is_multiple_of(8));
    // The kernel indexes rows in 32 bits.
    let rows_fit = strides[2].saturating_mul(x.dim(2)?) < i32::MAX as usize;
    if strides[3] == 1 && rows_aligned && rows_fit && layout.start_offset().is_multiple_of(8) {
        Ok(x.clone())
    } else {
        x.contiguous()?.copy()
    }
}

/// Element strides of q, k and v's (batch, head) axes and rows, as kernels/flash_attn.cu's
/// `Strides`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Strides {
    batch_head: [i64; 6],
    rows: [i32; 3],
}

// SAFETY: plain old data laid out as the kernel's struct.
unsafe impl DeviceRepr for Strides {}

struct FlashAttention {
    scale: f32,
    tiles: Tiles,
}

impl CustomOp3 for FlashAttention {
    fn name(&self) -> &'static str {
        "vivify-flash-attention"
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
        candle_core::bail!("vivify-flash-attention runs on CUDA only")
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, h, l, d) = ql.shape().dims4()?;
        let s = kl.shape().dims4()?.2;
        if vl.shape() != kl.shape() || kl.shape().dims4()?.3 != d {
            candle_core::bail!(
                "flash attention: q {:?}, k {:?}, v {:?}",
                ql.shape(),
                kl.shape(),
                vl.shape()
            );
        }
        let dev = q.device().clone();
        // Short sequences (temporal attention) get one-warp blocks, the rest four.
        let kernel = if l <= 16 {
            Kernel {
                family: "flash_attn_sync",
                warps: 1,
                tiles_per_warp: 1,
            }
        } else {
            let (family, tiles_per_warp) = self.tiles.kernel(d, l);
            Kernel {
                family,
                warps: 4,
                tiles_per_warp,
            }
        };
        let dims = (n, h, l, s, d);
        let out = match q.dtype() {
            DType::F16 => {
                launch::<half::f16>(&dev, [(q, ql), (k, kl), (v, vl)], self.scale, kernel, dims)?
            }
            DType::BF16 => {
                launch::<half::bf16>(&dev, [(q, ql), (k, kl), (v, vl)], self.scale, kernel, dims)?
            }
            other => candle_core::bail!("flash attention: unsupported dtype {other:?}"),
        };
        Ok((out, Shape::from((n, l, h, d))))
    }
}

/// An entry point of kernels/flash_attn.cu and its block shape.
struct Kernel {
    family: &'static str,
    warps: u32,
    tiles_per_warp: usize,
}

fn launch<T>(
    dev: &candle_core::CudaDevice,
    [(q, ql), (k, kl), (v, vl)]: [(&CudaStorage, &Layout); 3],
    scale: f32,
    kernel: Kernel,
    (n, h, l, s, d): (usize, usize, usize, usize, usize),
) -> Result<CudaStorage>
where
    T: CudaDType + WithDType + DeviceRepr,
{
    let name = format!(
        "{}_{}_d{d}_w{}",
        kernel.family,
        super::kernel_type_name(T::DTYPE),
        kernel.warps
    );
    let func = KERNELS.kernel(dev, &name)?;
    let qs = q.as_cuda_slice::<T>()?.slice(ql.start_offset()..);
    let ks = k.as_cuda_slice::<T>()?.slice(kl.start_offset()..);
    let vs = v.as_cuda_slice::<T>()?.slice(vl.start_offset()..);
    // SAFETY: every element is written by the kernel.
    let out = unsafe { dev.alloc::<T>(n * h * l * d)? };
    let rows_per_block = 16 * kernel.tiles_per_warp * kernel.warps as usize;
    let tiles = l.div_ceil(rows_per_block);
    // The ldmatrix kernels number their blocks head-major on x (a head's query tiles in
    // consecutive blocks, which share its K/V through L2); the others take heads on x, tiles on y.
    let grid_dim = if kernel.family == "flash_attn_ldm" {
        let blocks = n * h * tiles;
        if blocks > i32::MAX as usize {
            candle_core::bail!("flash attention: {blocks} blocks for {n}x{h} heads of {l} queries");
        }
        (blocks as u32, 1, 1)
    } else {
        ((n * h) as u32, tiles as u32, 1)
    };
    let cfg = LaunchConfig {
        grid_dim,
        block_dim: (32 * kernel.warps, 1, 1),
        shared_mem_bytes: 0,
    };
    let (h32, l32, s32) = (h as i32, l as i32, s as i32);
    let mut strides = Strides {
        batch_head: [0; 6],
        rows: [0; 3],
    };
    for (i, layout) in [ql, kl, vl].into_iter().enumerate() {
        let st = layout.stride();
        strides.batch_head[2 * i] = st[0] as i64;
        strides.batch_head[2 * i + 1] = st[1] as i64;
        strides.rows[i] = st[2] as i32;
    }
    let scale_log2 = scale * std::f32::consts::LOG2_E;
    let mut builder = func.builder();
    builder.arg(&qs);
    builder.arg(&ks);
    builder.arg(&vs);
    builder.arg(&out);
    builder.arg(&h32);
    builder.arg(&l32);
    builder.arg(&s32);
    builder.arg(&strides);
    builder.arg(&scale_log2);
    // SAFETY: the arguments match the kernel's signature; shapes were checked above.
    unsafe { builder.launch(cfg) }.w()?;
    Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
}
